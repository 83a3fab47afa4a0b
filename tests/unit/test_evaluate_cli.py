"""`streamrec evaluate` end to end on a small synthetic stream (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from streamrec.cli import app


def test_evaluate_prints_json_and_writes_the_json_file_and_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "evaluate", "synthetic:users=60,items=40,events=1500,seed=3", "--k", "5",
        "--models", "popular,trending,covisit", "--json", str(tmp_path / "out.json"),
        "--plot", str(tmp_path / "hr.png")])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary["models"]) == ["popular", "trending", "covisit"]
    for figures in summary["models"].values():
        assert figures["events"] == 1500 and 0.0 <= figures["hr@5"] <= 1.0
    assert json.loads((tmp_path / "out.json").read_text()) == summary
    assert (tmp_path / "hr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Co-visitation knows the synthetic users' tastes; global popularity does not.
    assert summary["models"]["covisit"]["hr@5"] > summary["models"]["popular"]["hr@5"]


def test_evaluate_rejects_an_unknown_model_with_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["evaluate", "synthetic:events=100", "--models", "magic"])

    assert result.exit_code == 1
    assert "unknown model(s) magic" in result.output and "covisit" in result.output
