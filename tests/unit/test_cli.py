"""The ``streamrec`` command line, run through Typer's ``CliRunner`` (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from streamrec.cli import app

COMMANDS = ("broker", "worker", "produce", "consume", "recommend", "topics", "demo")
KEY_OPTIONS = {
    ("broker",): ["--port", "--host", "--config"],
    ("worker",): ["--broker", "--web-port", "--data-dir", "--prefix", "--config"],
    ("produce",): ["--file", "--rate", "--count", "--duration", "--seed", "--topic", "--broker"],
    ("consume",): ["--topic", "--from-beginning", "--json", "--count", "--timeout"],
    ("recommend",): ["The user_id to recommend for", "--k", "--timeout", "--broker"],
    ("topics",): ["create"],
    ("topics", "create"): ["--broker", "--prefix", "--config"],
    ("demo",): ["--rate", "--duration", "--invalid-every", "--config"],
}


@pytest.fixture(autouse=True)
def wide_plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal without colours, so help text is not wrapped or styled."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(text: str) -> str:
    """Output with line wrapping undone, so phrases can be matched whatever the width."""
    return " ".join(text.replace("│", " ").split())


def test_help_lists_every_command() -> None:
    result = run("--help")

    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert f" {command} " in flat(result.output), command


def test_no_arguments_shows_help() -> None:
    result = run()

    assert "Usage" in result.output
    assert "produce" in result.output


@pytest.mark.parametrize("command", list(KEY_OPTIONS), ids=" ".join)
def test_subcommand_help_mentions_its_key_options(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")

    assert result.exit_code == 0, result.output
    for option in KEY_OPTIONS[command]:
        assert option in result.output, f"{' '.join(command)} --help lacks {option}"


def test_produce_without_count_duration_or_file_exits_1_with_the_fix() -> None:
    result = run("produce")

    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "never ends" in message
    assert "--count" in message and "--duration" in message
    assert result.stdout == "", "errors go to stderr, stdout carries data only"


@pytest.mark.parametrize("command", [
    ("produce", "--count", "1"), ("worker",), ("consume",), ("recommend", "u1"),
    ("topics", "create"), ("demo",), ("broker",),
])
def test_missing_config_file_exits_1_naming_the_file(command: tuple[str, ...]) -> None:
    result = run(*command, "--config", "missing.toml")

    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "missing.toml" in message and "does not exist" in message
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_invalid_setting_in_config_file_exits_1_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[topics]\npartitions = 0\n")

    result = run("produce", "--count", "1", "--config", str(path))

    assert result.exit_code == 1
    assert "topics.partitions" in flat(result.stderr)


def test_invalid_environment_setting_exits_1_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL")

    result = run("topics", "create")

    assert result.exit_code == 1
    assert "kafka.security_protocol" in flat(result.stderr)


def test_produce_file_option_requires_an_existing_file() -> None:
    result = run("produce", "--file", "no-such-events.jsonl")

    assert result.exit_code == 2
    assert "no-such-events.jsonl" in flat(result.output)


def test_recommend_requires_a_user() -> None:
    result = run("recommend")

    assert result.exit_code == 2
    assert "Missing argument 'user'" in flat(result.output)


def test_malformed_config_file_exits_1_with_a_message_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[kafka\n")

    result = run("topics", "create", "--config", str(path))

    assert result.exit_code == 1
    assert "broken.toml" in flat(result.stderr)
