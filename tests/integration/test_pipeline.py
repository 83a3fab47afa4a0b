"""End to end on a real broker with a real worker: events in, recommendations and dead letters out.

The acceptance test of the walking skeleton: exactly one recommendation per
valid event, for the right user, never an item the user has seen; every
invalid event dead-lettered with its reason; every request answered once;
and after SIGKILL + restart (without the state directory) the seen-sets and
popularity are recovered from the changelogs.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

from streamrec.config import Settings, with_section
from streamrec.eval.synthetic import invalid_events
from streamrec.models.online_recommender import MODEL_VERSION
from streamrec.models.popularity import decay
from streamrec.load.request import request_recommendations

from tests.harness import collect, send, topic_names, values

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
USERS = [f"u{n}" for n in range(6)]
POPULAR = ["i0", "i1", "i2", "i3", "i4"]  # everyone sees these: top-K would be all seen


def valid_events() -> list[dict[str, Any]]:
    """Interleaved users; each sees the popular items and a few of their own."""
    events = []
    for round_ in range(10):
        for n, user in enumerate(USERS):
            item = POPULAR[round_ % 5] if round_ < 5 else f"i{5 + (n * 3 + round_) % 15}"
            kind = ("view", "click", "purchase")[(round_ + n) % 3]
            events.append({"user_id": user, "item_id": item, "type": kind,
                           "ts": T0 + 1000 * len(events), "event_id": f"e{len(events)}"})
    return events


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def seen_before(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """event_id -> items its user had seen up to and including that event."""
    seen: dict[str, set[str]] = {}
    result = {}
    for event in events:
        seen.setdefault(event["user_id"], set()).add(event["item_id"])
        result[event["event_id"]] = set(seen[event["user_id"]])
    return result


def http_json(settings: Settings, path: str) -> Any:
    url = f"http://127.0.0.1:{settings.worker.web_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return body if path == "/metrics" else json.loads(body)


def test_worker_serves_events_requests_and_dead_letters_then_recovers_after_sigkill(
        settings: Settings, start_worker: Any) -> None:
    names = topic_names(settings)
    events = valid_events()
    bad = invalid_events(settings.events.max_id_length, settings.events.max_payload_bytes)
    worker = start_worker(settings)

    # 1. valid events keyed by user, one mis-keyed (must be rerouted), one duplicate, invalid ones
    misrouted = {**events[-1], "event_id": "e-misrouted", "ts": T0 + 10**6}
    messages = [(e["user_id"].encode(), encode(e)) for e in events]
    messages.insert(7, (events[3]["user_id"].encode(), encode(events[3])))  # duplicate event_id
    messages.append((b"not-the-user", encode(misrouted)))
    messages += [(b"bad-" + kind.encode(), raw) for kind, (raw, _) in bad.items()]
    send(settings, names.events, messages)
    all_valid = [*events, misrouted]
    expected_ids = {e["event_id"] for e in all_valid}

    def recommended(records: list[Any]) -> bool:
        return expected_ids <= {v.get("event_id") for v in values(records, trigger="event")}

    collect(settings, names.recommendations, recommended, timeout_s=60)
    time.sleep(2)  # any extra (duplicate) recommendation would arrive by now
    pushed = values(collect(settings, names.recommendations, lambda r: False, timeout_s=4),
                    trigger="event")
    counts = Counter(v["event_id"] for v in pushed)
    assert counts == Counter({event_id: 1 for event_id in expected_ids}), worker.log()[-2000:]
    users_of = {e["event_id"]: e["user_id"] for e in all_valid}
    seen = seen_before(all_valid)
    for rec in pushed:
        assert rec["user_id"] == users_of[rec["event_id"]]
        items = {item["item_id"] for item in rec["items"]}
        assert not items & seen[rec["event_id"]], f"recommended seen items to {rec['user_id']}"
        assert rec["model_version"] == MODEL_VERSION and rec["source"] in ("trending", "online")
        assert rec["emitted_ts"] >= rec["event_ts"] - 60_000

    # 2. exactly one dead letter per invalid event, with the reason and the original payload
    letters = values(collect(settings, names.dead_letter, lambda r: len(r) >= len(bad), 30))
    time.sleep(1)
    letters = values(collect(settings, names.dead_letter, lambda r: False, timeout_s=3))
    assert len(letters) == len(bad)
    by_key = {r.key: r.value for r in collect(settings, names.dead_letter, lambda r: False, 3)}
    for kind, (raw, reason) in bad.items():
        letter = by_key[f"bad-{kind}"]
        assert reason in letter["error"], (kind, letter["error"])
        assert letter["topic"] == names.events and letter["offset"] >= 0
        if letter.get("payload_encoding") == "base64":
            import base64
            assert base64.b64decode(letter["payload"]) == raw
        else:
            assert letter["payload"] == raw.decode()

    # 3. each request answered exactly once, with its request_id, excluding seen items
    answers = {user: request_recommendations(settings, user, timeout_s=15) for user in USERS}
    final_seen = {user: {e["item_id"] for e in all_valid if e["user_id"] == user} for user in USERS}
    for user, answer in answers.items():
        assert answer["user_id"] == user and answer["trigger"] == "request"
        assert len(answer["items"]) == settings.model.k
        assert not {i["item_id"] for i in answer["items"]} & final_seen[user]
    responses = values(collect(settings, names.recommendations, lambda r: False, 4), trigger="request")
    request_counts = Counter(v["request_id"] for v in responses)
    assert all(request_counts[a["request_id"]] == 1 for a in answers.values())

    # 4. HTTP answers from the same state; metrics count what happened
    over_http = http_json(settings, "/recommendations/u0")
    assert [i["item_id"] for i in over_http["items"]] == [i["item_id"] for i in answers["u0"]["items"]]
    metrics = http_json(settings, "/metrics").decode()
    assert f'streamrec_events_in_total{{outcome="applied"}} {float(len(all_valid))}' in metrics
    assert 'streamrec_events_in_total{outcome="duplicate"} 1.0' in metrics
    assert f'streamrec_dead_lettered_total{{topic="{names.events}"}} {float(len(bad))}' in metrics
    figures = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(figures["streamrec_gc_frozen_objects"]) > 10_000  # the loaded worker's objects, frozen
    assert float(figures['streamrec_gc_pause_seconds_count{generation="2"}']) >= 1  # that freeze's collection

    # 5. crash, restart without the local state: tables come back from the changelogs, item
    #    vectors from the item-state topic, so every user gets the same list as before the crash
    state_before = {r.key: r.value for r in collect(settings, names.item_state, lambda r: False, 3)}
    worker.kill()
    restarted = with_section(settings, "worker", data_dir=settings.worker.data_dir.with_name("state2"))
    start_worker(restarted, name="restarted")
    for user in USERS:
        answer = request_recommendations(restarted, user, timeout_s=15)
        items = [i["item_id"] for i in answer["items"]]
        assert not set(items) & final_seen[user], f"{user}'s seen-set was lost in the crash"
        assert items == [i["item_id"] for i in answers[user]["items"]], (
            f"{user}'s list changed across the crash: user vector or item state was not recovered")
    new_ts = T0 + 2 * 10**6
    send(restarted, names.events, [(b"newcomer", encode(
        {"user_id": "newcomer", "item_id": "i0", "type": "view", "ts": new_ts, "event_id": "e-new"}))])

    def i0_updated(records: list[Any]) -> bool:
        return any(r.key == "i0" and r.value["ts_ms"] == new_ts for r in records)

    after = [r.value for r in collect(restarted, names.item_state, i0_updated, 30) if r.key == "i0"]
    before = state_before["i0"]
    expected = decay(before["popularity"], before["ts_ms"], new_ts, settings.model.popularity_half_life_s)
    assert after[-1]["popularity"] == pytest.approx(expected + 1.0, rel=1e-6), (
        "item popularity restarted from zero: the items table was not recovered")
    # The items table recovered from its changelog, the item-state topic itself: the new
    # event continued from i0's state before the crash (co-visits kept, vector moved on).
    assert after[-2] == before, "i0 was published between the crash and the new event"
    assert set(before["neighbours"]) <= set(after[-1]["neighbours"])
    assert after[-1]["vector"] != before["vector"]
