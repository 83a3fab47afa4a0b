"""`streamrec evaluate --live`: the same stream through the broker and a real worker agrees with offline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streamrec.cli import app

pytestmark = pytest.mark.integration


def test_live_replay_scores_the_pushed_lists_and_agrees_with_the_offline_replay(broker_url: str) -> None:
    result = CliRunner().invoke(app, [
        "evaluate", "synthetic:users=50,items=100,events=1500,seed=1", "--models", "streamrec",
        "--live", "--rate", "300", "--broker", broker_url])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    live = summary["live"]
    assert (live["events"], live["pushed"], live["missing"]) == (1500, 1500, 0)
    hr = live["returning_users"]["hr@10"]
    scored = live["returning_users"]["events"]
    assert scored["offline"] == scored["live"] == summary["models"]["streamrec"]["returning_users"]["events"]
    # Offline and live run the same code; only the replica's staleness differs (measured: -3.7%).
    assert abs(hr["relative_difference"]) < 0.15, hr
    assert hr["live"] > 1.5 * 10 / 100  # well above a random list of 10 from 100 items: it learnt, live
