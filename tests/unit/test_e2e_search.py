"""The search for the highest sustained rate in ``bench e2e`` (the steps themselves are faked here)."""

from __future__ import annotations

from typing import Any

from streamrec.load.e2e import _find_max, search_maxima, sustained


def fake_steps(limit: float) -> tuple[list[dict[str, Any]], list[float], Any]:
    """A target that keeps up to ``limit`` events/s; records the rates the search tries."""
    steps: list[dict[str, Any]] = []
    tried: list[float] = []

    def step(target: str, rate: float, phase: str = "") -> dict[str, Any]:
        tried.append(rate)
        result = {"target": target, "rate": rate, "missing": 0 if rate <= limit else 10,
                  "lag_max": rate / 10 if rate <= limit else rate * 5}
        steps.append(result)
        return result
    return steps, tried, step


def test_a_step_is_sustained_only_with_every_event_answered_and_little_backlog() -> None:
    assert sustained({"rate": 1000, "missing": 0, "lag_max": 900})
    assert not sustained({"rate": 1000, "missing": 1, "lag_max": 10})
    assert not sustained({"rate": 1000, "missing": 0, "lag_max": 1500})


def test_the_search_climbs_from_the_best_fixed_rate_and_bisects_to_within_20_percent() -> None:
    steps, tried, step = fake_steps(limit=700)
    for rate in (200, 500):
        step("relay", rate)
    assert _find_max("relay", steps, step) == 625 and tried[2:] == [750, 625]


def test_a_failed_fixed_rate_bounds_the_search_and_none_kept_up_searches_down() -> None:
    steps, tried, step = fake_steps(limit=300)
    for rate in (200, 1000):
        step("streamrec", rate)
    assert _find_max("streamrec", steps, step) == 300 and tried[2:] == [600, 400, 300, 350]

    steps, tried, step = fake_steps(limit=120)
    step("streamrec", 500)
    assert _find_max("streamrec", steps, step) == 110 and tried[1:] == [250, 125, 62.5, 94, 110]  # halving, then bisecting


def test_repeated_searches_take_turns_start_from_the_fixed_steps_and_give_the_median() -> None:
    # The targets' limits change between searches (a noisy machine): 700, 500 then 900 events/s for the
    # relay, 600 throughout for streamrec. Every search from these fixed steps starts at 750 events/s.
    limits = {"relay": iter([700, 500, 900]), "streamrec": iter([600, 600, 600])}
    current: dict[str, float] = {}
    order: list[str] = []

    def step(target: str, rate: float, phase: str = "") -> dict[str, Any]:
        if rate == 750:
            current[target] = next(limits[target])
            order.append(target)
        limit = current[target]
        return {"target": target, "rate": rate, "missing": 0 if rate <= limit else 10,
                "lag_max": rate / 10 if rate <= limit else rate * 5}

    fixed = [{"target": target, "rate": rate, "missing": 0, "lag_max": 10} for rate in (200, 500)
             for target in ("relay", "streamrec")]
    maxima, searches = search_maxima(3, fixed, step)

    assert order == ["relay", "streamrec"] * 3
    assert searches == {"relay": [625, 500, 844], "streamrec": [562, 562, 562]}
    assert maxima == {"relay": 625, "streamrec": 562}


def test_the_report_gives_the_median_of_the_searches_and_each_one() -> None:
    from streamrec.load.e2e_report import _maxima_lines

    [once] = _maxima_lines({"max_sustained": {"relay": 625, "streamrec": 500}})[1:]
    assert once.endswith("x1.5 steps: relay 625 events/s, streamrec 500 events/s (streamrec / relay = 0.80).")
    [repeated] = _maxima_lines({"max_sustained": {"relay": 625, "streamrec": None},
                                "max_sustained_runs": {"relay": [625, 500, 844], "streamrec": [None, 300, None]}})[1:]
    assert "3 times" in repeated and repeated.endswith(
        ": relay 625 events/s (625, 500, 844), streamrec: none (none, 300, none).")
