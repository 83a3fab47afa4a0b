"""The trainer gives the CPU to the workers: lower nice priority and, on Linux, SCHED_IDLE."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys, threading
from streamrec.streams.trainer import yield_cpu
yield_cpu(int(sys.argv[1]), sys.argv[2] == "idle")
seen = {}
def probe():  # a thread started afterwards, as torch's are
    seen["thread"] = os.sched_getscheduler(0)
thread = threading.Thread(target=probe); thread.start(); thread.join()
print(json.dumps({"nice": os.getpriority(os.PRIO_PROCESS, 0), "policy": os.sched_getscheduler(0), **seen}))
"""


def _run(nice: int, mode: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(nice), mode], capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(done.stdout)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_the_trainer_runs_idle_and_nicer_and_so_do_its_threads() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    idle = _run(5, "idle")
    assert idle["nice"] == min(before + 5, 19)
    assert idle["policy"] == idle["thread"] == os.SCHED_IDLE
    plain = _run(5, "plain")
    assert plain["nice"] == min(before + 5, 19)
    assert plain["policy"] == plain["thread"] == os.sched_getscheduler(0)
