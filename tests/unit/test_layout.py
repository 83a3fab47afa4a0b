"""Pure core, I/O shell (STYLE.md section 2): only the shell may import Kafka or Faust."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streamrec

PACKAGE = Path(streamrec.__file__).parent
KAFKA_PACKAGES = {"faust", "aiokafka", "kafka", "mode"}
PURE_CORE = ("models", "index", "eval")
# Modules allowed to talk to Kafka: the Faust shell, the CLI and the broker launcher.
SHELL = ("streams", "cli.py", "broker.py")


def imported_top_level_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at any depth (in functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(*parts: str) -> list[Path]:
    return sorted(path for part in parts for path in (PACKAGE / part).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def kafka_imports(path: Path) -> set[str]:
    return imported_top_level_packages(path.read_text()) & KAFKA_PACKAGES


@pytest.mark.parametrize("source, expected", [
    ("import faust", {"faust"}),
    ("import aiokafka.errors as e", {"aiokafka"}),
    ("from kafka import KafkaProducer", {"kafka"}),
    ("from mode.utils import x", {"mode"}),
    ("def f():\n    if True:\n        import faust.web\n", {"faust"}),
    ("class C:\n    def m(self):\n        from aiokafka import AIOKafkaClient\n", {"aiokafka"}),
    ("from . import kafka\nfrom .mode import x\nimport kafkaesque\n", set()),
])
def test_import_scanner_finds_nested_and_dotted_imports(source: str, expected: set[str]) -> None:
    assert imported_top_level_packages(source) & KAFKA_PACKAGES == expected


@pytest.mark.parametrize("part", PURE_CORE)
def test_pure_core_package_exists(part: str) -> None:
    assert modules(part), f"streamrec/{part}/ has no modules: the layout check would pass vacuously"


@pytest.mark.parametrize("path", modules(*PURE_CORE), ids=relative)
def test_pure_core_module_does_not_import_kafka_or_faust(path: Path) -> None:
    assert not kafka_imports(path), f"{relative(path)} imports {sorted(kafka_imports(path))}"


def outside_shell() -> list[Path]:
    shell = [PACKAGE / part for part in SHELL]
    return [path for path in sorted(PACKAGE.rglob("*.py"))
            if not any(path == s or s in path.parents for s in shell)]


def test_every_module_outside_the_shell_is_checked() -> None:
    checked = {relative(path) for path in outside_shell()}

    assert {"streamrec/config.py", "streamrec/errors.py", "streamrec/models/popularity.py"} <= checked
    assert "streamrec/streams/app.py" not in checked


@pytest.mark.parametrize("path", outside_shell(), ids=relative)
def test_module_outside_streams_cli_and_broker_does_not_import_kafka_or_faust(path: Path) -> None:
    assert not kafka_imports(path), f"{relative(path)} imports {sorted(kafka_imports(path))}"


def test_scanner_flags_the_faust_app_itself() -> None:
    """Sanity check on a real module: the Faust app factory does import faust."""
    assert "faust" in kafka_imports(PACKAGE / "streams" / "app.py")
    assert "kafka" in kafka_imports(PACKAGE / "streams" / "topics.py"), "a function-level import counts"
