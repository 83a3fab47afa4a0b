"""config/streamrec.toml documents every setting and never drifts from the code defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamrec.config import Settings, load_settings

CONFIG_FILE = Path(__file__).resolve().parents[2] / "config" / "streamrec.toml"
ENV_COMMENT = re.compile(r"\benv:\s*(STREAMREC_\w+)")
SECTION_HEADER = re.compile(r"^\[(\w+)\]\s*(#.*)?$")


def env_name(section: str, key: str) -> str:
    """The environment variable pydantic-settings reads for ``section.key``."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    return f"{prefix}{section}{delimiter}{key}".upper()


def section_model(section: str) -> type[BaseModel]:
    return Settings.model_fields[section].annotation


def all_fields() -> list[tuple[str, str]]:
    return [(section, key) for section in Settings.model_fields
            for key in section_model(section).model_fields]


def unset_by_default(section: str, key: str) -> bool:
    field = section_model(section).model_fields[key]
    return not field.is_required() and field.default is None and field.default_factory is None


def sections_of(lines: list[str]) -> dict[str, tuple[int, int]]:
    """``{section: (first line index, end index)}`` of each ``[section]`` of the file."""
    headers = [(i, m.group(1)) for i, line in enumerate(lines) if (m := SECTION_HEADER.match(line))]
    bounds = {}
    for n, (start, name) in enumerate(headers):
        end = headers[n + 1][0] if n + 1 < len(headers) else len(lines)
        assert name not in bounds, f"section [{name}] appears twice"
        bounds[name] = (start, end)
    return bounds


def key_line(lines: list[str], section: str, key: str) -> int:
    """Index of the line setting ``section.key``: ``key = ...``, or ``# key = ...`` when unset.

    Commented examples elsewhere are indented (``#   key = ...``) and never match.
    """
    start, end = sections_of(lines)[section]
    active = [i for i in range(start, end) if re.match(rf"^{key}\s*=", lines[i])]
    commented = [i for i in range(start, end) if re.match(rf"^# ?{key}\s*=", lines[i])]
    if unset_by_default(section, key):
        assert not active, f"{section}.{key} defaults to None; it must stay commented out (# {key} = ...)"
        assert len(commented) == 1, f"{section}.{key}: expected one '# {key} = ...' line in [{section}]"
        return commented[0]
    assert len(active) == 1, f"{section}.{key}: expected exactly one '{key} = ...' line in [{section}]"
    return active[0]


def comment_block_above(lines: list[str], index: int) -> list[str]:
    """The contiguous comment lines directly above ``lines[index]`` (nearest last)."""
    block = []
    i = index - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        block.append(lines[i])
        i -= 1
    return block[::-1]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return CONFIG_FILE.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAMREC_* variable and no default config file can leak into the settings."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_file_loads_to_exactly_the_code_defaults(clean_env: None) -> None:
    from_file = load_settings(CONFIG_FILE)
    defaults = Settings()
    for section in Settings.model_fields:
        assert getattr(from_file, section) == getattr(defaults, section), (
            f"[{section}] in {CONFIG_FILE.name} differs from the defaults in streamrec/config.py")
    assert from_file.model_dump() == defaults.model_dump()


def test_file_values_equal_defaults_key_by_key() -> None:
    """Stricter than loading: each written value is the default itself, not one that coerces to it."""
    data = tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    assert set(data) == set(Settings.model_fields), "the file's sections must be exactly Settings' sections"
    defaults = Settings.model_construct().model_dump(mode="json")
    for section, values in data.items():
        for key, value in values.items():
            assert key in section_model(section).model_fields, f"unknown key {section}.{key}"
            assert value == defaults[section][key], f"{section}.{key} = {value!r}, default is {defaults[section][key]!r}"


@pytest.mark.parametrize(("section", "key"), all_fields(), ids=lambda v: v)
def test_every_field_is_in_the_file_with_a_comment_naming_its_env_var(
        lines: list[str], section: str, key: str) -> None:
    index = key_line(lines, section, key)
    block = comment_block_above(lines, index)
    assert block, f"{section}.{key} needs a comment line directly above it"
    described = [line for line in block if not ENV_COMMENT.search(line)]
    assert any(len(line.strip("# ")) > 10 for line in described), f"{section}.{key}: describe what it does"
    names = [m.group(1) for line in block for m in ENV_COMMENT.finditer(line)]
    assert names == [env_name(section, key)], (
        f"{section}.{key}: the comment above must say 'env: {env_name(section, key)}', found {names}")


def test_every_env_name_in_the_file_is_a_real_variable(lines: list[str]) -> None:
    real = {env_name(section, key) for section, key in all_fields()}
    mentioned = [m.group(1) for line in lines for m in ENV_COMMENT.finditer(line)]
    assert mentioned, "the file names no env variables"
    unknown = sorted(set(mentioned) - real)
    assert not unknown, f"env names in {CONFIG_FILE.name} that streamrec does not read: {unknown}"
    duplicates = sorted({name for name in mentioned if mentioned.count(name) > 1})
    assert not duplicates, f"env names documented twice: {duplicates}"


def test_env_names_really_override_the_fields(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented naming scheme is the one pydantic-settings applies."""
    monkeypatch.setenv(env_name("kafka", "broker"), "kafka-1:9093")
    monkeypatch.setenv(env_name("topics", "partitions"), "12")
    monkeypatch.setenv(env_name("events", "types"), '{"view": 1.5}')
    settings = load_settings(CONFIG_FILE)
    assert settings.kafka.broker == "kafka-1:9093"
    assert settings.topics.partitions == 12
    # A table from the environment replaces the file's table (documented in the file).
    assert settings.events.types == {"view": 1.5}


def test_checks_catch_a_missing_comment_and_a_wrong_env_name(lines: list[str]) -> None:
    """The helpers above fail on a broken file (so the tests can fail)."""
    index = key_line(lines, "kafka", "broker")
    no_comment = lines[:index - 1] + ["", lines[index]] + lines[index + 1:]
    assert not comment_block_above(no_comment, key_line(no_comment, "kafka", "broker"))
    wrong = [line.replace("STREAMREC_KAFKA__BROKER", "STREAMREC_KAFKA_BROKER") for line in lines]
    block = comment_block_above(wrong, key_line(wrong, "kafka", "broker"))
    assert env_name("kafka", "broker") not in [m.group(1) for b in block for m in ENV_COMMENT.finditer(b)]
    with pytest.raises(AssertionError):
        key_line([line for line in lines if not line.startswith("partitions")], "topics", "partitions")
