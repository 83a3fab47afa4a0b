"""Two workers in one consumer group split the partitions, answer every event once, share item vectors."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from streamrec.broker import free_port
from streamrec.config import Settings, with_section

from tests.harness import collect, metric, send, topic_names, values, wait_until_balanced

pytestmark = pytest.mark.integration


def test_two_workers_split_partitions_and_each_event_gets_one_recommendation(
        settings: Settings, start_worker: Any) -> None:
    names = topic_names(settings)
    first = start_worker(settings, name="first")
    second_settings = with_section(settings, "worker", web_port=free_port(),
                                   data_dir=settings.worker.data_dir.with_name("state-second"))
    second = start_worker(second_settings, name="second")
    wait_until_balanced([settings, second_settings])

    events = [{"user_id": f"user{n % 40}", "item_id": f"item{n % 17}", "type": "click",
               "event_id": f"scale-{n}", "ts": 1_700_000_000_000 + n} for n in range(200)]
    send(settings, names.events, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    wanted = {e["event_id"] for e in events}

    def all_answered(records: list[Any]) -> bool:
        return wanted <= {v.get("event_id") for v in values(records, trigger="event")}

    collect(settings, names.recommendations, all_answered, timeout_s=90)
    time.sleep(2)
    pushed = values(collect(settings, names.recommendations, lambda r: False, 4), trigger="event")
    counts = Counter(v["event_id"] for v in pushed if v["event_id"] in wanted)
    assert counts == Counter(dict.fromkeys(wanted, 1)), (first.log()[-1500:], second.log()[-1500:])

    # Both workers did part of the work: the partitions were split between them.
    applied = [metric(s, 'streamrec_events_in_total{outcome="applied"}')
               for s in (settings, second_settings)]
    assert sum(applied) == len(events) and min(applied) > 0, applied

    # Either worker answers over HTTP for any user, from the owner's state: the answer
    # never contains an item the user has seen, whichever worker was asked.
    for n in range(8):
        user = f"user{n}"
        seen = {e["item_id"] for e in events if e["user_id"] == user}
        answers = [_get_json(s, f"/recommendations/{user}") for s in (settings, second_settings)]
        assert answers[0]["items"] == answers[1]["items"]
        assert answers[0]["user_id"] == user
        assert not {i["item_id"] for i in answers[0]["items"]} & seen


    # Both workers score with the same item vectors: each replicates every item from the
    # item-state topic, whichever worker owns it (within the publish + replication delay).
    items = sorted({e["item_id"] for e in events})

    def replicas_agree() -> bool:
        try:
            replicas = [[_get_json(s, f"/items/{item}") for item in items] for s in (settings, second_settings)]
        except urllib.error.HTTPError:  # 404: not replicated yet
            return False
        return replicas[0] == replicas[1] and all(len(r["vector"]) == settings.model.dim for r in replicas[0])

    deadline = time.monotonic() + 10
    while not replicas_agree():
        assert time.monotonic() < deadline, "the workers' item replicas did not converge within 10 s"
        time.sleep(0.2)
    learnt = _get_json(settings, f"/items/{items[0]}")
    assert learnt["popularity"] > 0 and learnt["neighbours"]  # learnt state, not an empty placeholder


def _get_json(settings: Settings, path: str) -> Any:
    url = f"http://127.0.0.1:{settings.worker.web_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
