"""Unit-test fixtures: every test runs without STREAMREC_* variables, in an empty directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAMREC_* variables and no config/streamrec.toml from the developer's checkout."""
    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


from tests.unit.faust_harness import (  # noqa: E402 - fixtures for the Faust processor tests
    app,
    dead_letters_out,
    events_out,
    item_state_out,
    item_updates_out,
    outputs,
    pipeline,
    recommendations_out,
    requests_out,
)

__all__ = ["app", "dead_letters_out", "events_out", "item_state_out", "item_updates_out", "outputs",
           "pipeline", "recommendations_out", "requests_out"]
