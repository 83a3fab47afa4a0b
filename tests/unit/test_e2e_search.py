"""The search for the highest sustained rate in ``bench e2e`` (the steps themselves are faked here)."""

from __future__ import annotations

from typing import Any

from streamrec.load.e2e import _find_max, sustained


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
