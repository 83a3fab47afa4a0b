"""`streamrec demo` (what `make demo` runs) completes, accounts for every event and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


def test_demo_answers_every_event_dead_letters_every_invalid_one_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamrec", "demo", "--rate", "100", "--duration", "4",
         "--invalid-every", "10"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["events_sent"] >= 300 and summary["invalid_sent"] >= 30
    assert summary["recommendations_received"] == summary["events_sent"]
    assert summary["dead_lettered"] == summary["invalid_sent"]
    assert summary["latency_p50_ms"] > 0

    banner = re.search(r"embedded broker on ([\d.]+):(\d+); logs in (\S+)", result.stderr)
    assert banner, result.stderr[:2000]
    host, port, workdir = banner.group(1), int(banner.group(2)), banner.group(3)
    with socket.socket() as probe:
        assert probe.connect_ex((host, port)) != 0, "the broker's port is still open"
    assert processes_mentioning(workdir) == [], "the demo left its worker running"
