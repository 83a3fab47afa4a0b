"""Static checks of docker-compose.yml and the Dockerfile (there is no Docker engine here).

Each check is a function that raises AssertionError with a readable message; the
tests run them on the real file, and on deliberately broken copies to show they fail.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml

from streamrec.cli import app
from streamrec.config import CONFIG_PATH_ENV, Settings, load_settings
from streamrec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_VAR = re.compile(r"^STREAMREC_(?P<section>[A-Z0-9_]+?)__(?P<key>[A-Z0-9_]+)$")
LOCAL_HOSTS = {"0.0.0.0", "127.0.0.1", "localhost", "::", "::1", ""}
#: Errors the CLI parser raises (recent typer vendors click as ``typer._click``; older uses click).
CLI_ERRORS: tuple[type[Exception], ...] = (typer.TyperException,)
try:
    import click

    CLI_ERRORS += (click.ClickException,)
except ImportError:  # pragma: no cover - typer without click
    pass
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

Compose = dict[str, Any]


# --- reading the compose model -------------------------------------------------------------


def load_compose() -> Compose:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict), \
        "docker-compose.yml must be a mapping with a 'services' mapping"
    return compose


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (compose allows a mapping or a list of KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        env = {pair[0]: pair[1] if len(pair) > 1 else None for pair in pairs}
    assert all(value is not None for value in env.values()), "environment values must be set in the file"
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    assert cmd, "a streamrec service needs an explicit command"
    return list(cmd) if isinstance(cmd, list) else cmd.split()


def streamrec_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """Services built from this repository (they run the streamrec CLI)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def is_group(cmd: Any) -> bool:
    """A click/typer group (has sub-commands), not a leaf command."""
    return isinstance(getattr(cmd, "commands", None), dict)


def subcommand(service: dict[str, Any]) -> tuple[str, ...]:
    """The streamrec sub-command path of a service, e.g. ``("topics", "create")``."""
    cmd, args, path = typer.main.get_command(app), command(service)[1:], []
    while is_group(cmd) and args and args[0] in cmd.commands:
        cmd, args = cmd.commands[args[0]], args[1:]
        path.append(cmd.name)
    return tuple(path)


def services_running(compose: Compose, *path: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in streamrec_services(compose).items() if subcommand(svc) == path}


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings a container with exactly ``env`` would build (no settings file)."""
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("STREAMREC_"):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(tmp_path)
        return load_settings(None)


def parse_host_port(address: str) -> tuple[str, int]:
    address = address.strip().removeprefix("kafka://")
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not host:port"
    return host, int(port)


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``"PLAINTEXT://kafka:9092,CONTROLLER://:9093"`` -> ``{"PLAINTEXT": ("kafka", 9092), ...}``."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """``[(host port, container port)]`` of a service's short-syntax or long-syntax ports."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append((int(port["published"]), int(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            assert len(parts) >= 2, f"port {port!r} must say which host port it publishes"
            result.append((int(parts[-2]), int(parts[-1])))
    return result


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{target path: source}`` of a service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    return mounts


# --- checks ---------------------------------------------------------------------------------


def check_services_exist(compose: Compose) -> None:
    services = compose["services"]
    assert "kafka" in services, "a 'kafka' service is needed"
    assert services_running(compose, "topics", "create"), "a service must run `streamrec topics create`"
    assert len(services_running(compose, "worker")) >= 2, "at least two `streamrec worker` services"
    assert "load" in services and subcommand(services["load"]) == ("produce",), \
        "a 'load' service must run `streamrec produce`"


def check_commands(compose: Compose) -> None:
    """Every streamrec command names a real sub-command and options the CLI accepts."""
    root = typer.main.get_command(app)
    for name, service in streamrec_services(compose).items():
        args = command(service)
        assert args[0] == "streamrec", f"{name}: the command must start with 'streamrec', got {args[0]!r}"
        cmd, rest, path = root, args[1:], ["streamrec"]
        while is_group(cmd):
            assert rest and rest[0] in cmd.commands, (
                f"{name}: {' '.join(path)} has no sub-command {rest[:1]}; known: {sorted(cmd.commands)}")
            path.append(rest[0])
            cmd, rest = cmd.commands[rest[0]], rest[1:]
        try:
            cmd.make_context(" ".join(path), list(rest))
        except CLI_ERRORS as exc:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            raise AssertionError(f"{name}: `{' '.join(args)}` is rejected by the CLI: {message}") from exc


def check_env_vars(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every STREAMREC_* variable names a real setting and its value validates."""
    for name, service in streamrec_services(compose).items():
        env = environment(service)
        for var in env:
            if not var.upper().startswith("STREAMREC_") or var == CONFIG_PATH_ENV:
                continue
            match = ENV_VAR.match(var)
            assert match, f"{name}: {var} is not STREAMREC_<SECTION>__<KEY>"
            section, key = match["section"].lower(), match["key"].lower()
            assert section in Settings.model_fields, (
                f"{name}: {var}: no settings section {section!r}; known: {sorted(Settings.model_fields)}")
            fields = Settings.model_fields[section].annotation.model_fields
            assert key in fields, f"{name}: {var}: no key {key!r} in [{section}]; known: {sorted(fields)}"
        assert CONFIG_PATH_ENV not in env, f"{name}: configure with STREAMREC_* variables, not a settings file"
        try:
            settings = settings_for(env, monkeypatch, tmp_path)
        except ConfigError as exc:
            raise AssertionError(f"{name}: invalid STREAMREC_* values: {exc}") from exc
        for var, value in env.items():
            if (match := ENV_VAR.match(var)) is not None:
                section, key = match["section"].lower(), match["key"].lower()
                loaded = getattr(getattr(settings, section), key)
                expected = type(loaded)(value) if isinstance(loaded, (int, float, str, Path)) \
                    and not isinstance(loaded, bool) else loaded
                assert loaded == expected, f"{name}: {var}={value!r} was read as {loaded!r}"


def check_broker_address(compose: Compose) -> None:
    """STREAMREC_KAFKA__BROKER is a listener the kafka service advertises on the compose network."""
    kafka = compose["services"]["kafka"]
    kenv = environment(kafka)
    advertised = listeners(kenv["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(kenv["KAFKA_LISTENERS"])
    controllers = set(kenv.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(","))
    kafka_names = {"kafka", kafka.get("hostname"), kafka.get("container_name")} - {None}
    for name, service in streamrec_services(compose).items():
        broker = environment(service).get("STREAMREC_KAFKA__BROKER")
        assert broker, f"{name}: set STREAMREC_KAFKA__BROKER (the default 127.0.0.1 is the container itself)"
        for address in broker.split(","):
            host, port = parse_host_port(address)
            assert host in kafka_names, f"{name}: broker host {host!r} is not the kafka service {kafka_names}"
            match = [listener for listener, hp in advertised.items() if hp == (host, port)]
            assert match, f"{name}: {host}:{port} is not an advertised Kafka listener: {advertised}"
            assert match[0] not in controllers, f"{name}: {host}:{port} is the controller listener"
            assert match[0] in bound and bound[match[0]][1] == port, \
                f"{name}: Kafka does not listen on port {port} for {match[0]}: {bound}"


def check_kraft(compose: Compose) -> None:
    env = environment(compose["services"]["kafka"])
    roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
    assert roles == {"broker", "controller"}, "single-node KRaft: KAFKA_PROCESS_ROLES=broker,controller"
    for required in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_LISTENER_NAMES",
                     "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
        assert env.get(required), f"kafka: {required} is required in KRaft mode"
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"], "the quorum voter must be this node"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert int(voter.rpartition(":")[2]) == listeners(env["KAFKA_LISTENERS"])[controller][1]
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners(env["KAFKA_LISTENERS"])) <= set(protocol_map), "every listener needs a protocol"
    assert "zookeeper" not in str(compose).lower(), "KRaft mode has no ZooKeeper"


def check_workers(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Workers: one group, own state volume, own published web port, a routable web host."""
    workers = services_running(compose, "worker")
    declared_volumes = set(compose.get("volumes") or {})
    data_sources, host_ports, app_ids = {}, {}, set()
    for name, service in workers.items():
        settings = settings_for(environment(service), monkeypatch, tmp_path)
        worker = settings.worker
        app_ids.add(worker.app_id)
        mounts = volume_mounts(service)
        data_dir = str(worker.data_dir)
        assert data_dir in mounts, f"{name}: data_dir {data_dir} must be a mounted volume, mounts: {mounts}"
        source = mounts[data_dir]
        assert source in declared_volumes, f"{name}: {source!r} must be a named volume declared under volumes:"
        assert source not in data_sources, f"{name} and {data_sources.get(source)} share the volume {source!r}"
        data_sources[source] = name
        ports = published_ports(service)
        assert (worker.web_port in [target for _, target in ports]), \
            f"{name}: web_port {worker.web_port} is not published: {ports}"
        for published, _ in ports:
            assert published not in host_ports, f"{name} and {host_ports[published]} both publish {published}"
            host_ports[published] = name
        own_names = {name, service.get("hostname"), service.get("container_name")} - {None}
        assert worker.web_host not in LOCAL_HOSTS, (
            f"{name}: web_host {worker.web_host!r} is advertised to the other workers for HTTP "
            "routing and must be this worker's network name")
        assert worker.web_host in own_names, f"{name}: web_host {worker.web_host!r} is not one of {own_names}"
    assert len(app_ids) == 1, f"workers must share one app_id (one consumer group), got {app_ids}"


def check_unique_host_ports(compose: Compose) -> None:
    ports = [p for svc in compose["services"].values() for p, _ in published_ports(svc)]
    assert len(ports) == len(set(ports)), f"a host port is published twice: {sorted(ports)}"


def check_same_topic_layout(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Topic creation, workers and producer agree on prefix, partitions and app id."""
    layouts = {}
    for name, service in streamrec_services(compose).items():
        settings = settings_for(environment(service), monkeypatch, tmp_path)
        layouts[name] = (settings.topics, settings.worker.app_id, settings.kafka.broker)
    assert len(set(layouts.values())) == 1, f"streamrec services disagree on topics/app_id/broker: {layouts}"
    partitions = next(iter(layouts.values()))[0].partitions
    assert partitions >= len(services_running(compose, "worker")), "fewer partitions than workers"


def check_dependencies(compose: Compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name, f"{name} depends on itself"
            condition = (spec or {}).get("condition", "service_started")
            assert condition in DEPENDS_CONDITIONS, f"{name} -> {dep}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"
    topics = services_running(compose, "topics", "create")
    for name, service in services_running(compose, "worker").items():
        depends = service.get("depends_on") or {}
        assert any(isinstance(depends, dict) and (depends.get(t) or {}).get("condition")
                   == "service_completed_successfully" for t in topics), \
            f"{name} must wait for the topics service to complete successfully"
    for name in topics:
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict) and (depends.get("kafka") or {}).get("condition") == "service_healthy", \
            f"{name} must wait for kafka to be healthy"
        assert services[name].get("restart", "no") == "no", f"{name} is one-shot: restart must be 'no'"


def check_pinned_images(compose: Compose) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image or "build" in service, f"{name} has neither image nor build"
        if image:
            assert_pinned(image, name)


def assert_pinned(image: str, where: str) -> None:
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    assert ":" in last, f"{where}: image {image!r} has no tag (that means 'latest'); pin a version"
    tag = last.rsplit(":", 1)[1]
    assert tag and tag.lower() not in {"latest", "stable", "edge", "nightly"}, \
        f"{where}: image {image!r} must be pinned to a version"


def check_dockerfile(compose: Compose) -> None:
    for name, service in streamrec_services(compose).items():
        build = service["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
        assert dockerfile.resolve() == DOCKERFILE, f"{name}: build the repository's root Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases, "the Dockerfile has no FROM"
    for base in bases:
        assert_pinned(base, "Dockerfile")
    for sources in re.findall(r"^COPY\s+(.+)\s+\S+\s*$", text, flags=re.MULTILINE):
        for source in sources.split():
            if source.startswith("--") or any(c in source for c in "*?["):
                continue  # options; globs may match nothing as long as another source exists
            assert (ROOT / source).exists(), f"Dockerfile copies {source!r}, which is not in the repository"
    patterns = [line.strip().lstrip("/") for line in
                (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.strip().startswith(("#", "!"))]
    needed = ["pyproject.toml", "README.md",
              *(str(p.relative_to(ROOT)) for p in (ROOT / "streamrec").rglob("*.py"))]
    for path in needed:
        prefixes = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
        hits = [pat for pat in patterns for prefix in prefixes if fnmatch.fnmatchcase(prefix, pat.rstrip("/"))]
        assert not hits, f".dockerignore pattern(s) {hits} exclude {path}, which the build needs"
    assert ".venv" in patterns and ".git" in patterns, ".dockerignore should exclude .venv and .git"


# --- tests on the real files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def test_compose_parses(compose: Compose) -> None:
    assert compose["services"]


def test_services_exist(compose: Compose) -> None:
    check_services_exist(compose)


def test_commands_are_real_cli_invocations(compose: Compose) -> None:
    check_commands(compose)


def test_env_vars_are_real_settings(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_env_vars(compose, monkeypatch, tmp_path)


def test_broker_address_is_an_advertised_kafka_listener(compose: Compose) -> None:
    check_broker_address(compose)


def test_kafka_runs_in_kraft_mode(compose: Compose) -> None:
    check_kraft(compose)


def test_workers_have_own_state_and_ports(compose: Compose, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    check_workers(compose, monkeypatch, tmp_path)


def test_services_agree_on_topics(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_same_topic_layout(compose, monkeypatch, tmp_path)


def test_real_kafka_tuning(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The embedded-broker defaults (short timeouts, 10 ms fetch wait) are overridden for Kafka."""
    defaults = Settings.model_construct().kafka
    for name, service in services_running(compose, "worker").items():
        kafka = settings_for(environment(service), monkeypatch, tmp_path).kafka
        assert kafka.session_timeout_s > defaults.session_timeout_s, f"{name}: use a longer session timeout"
        assert kafka.fetch_max_wait_ms >= 50, f"{name}: use a longer fetch wait on Kafka (~100 ms)"
        assert kafka.heartbeat_interval_s * 3 <= kafka.session_timeout_s, f"{name}: heartbeat too slow"


def test_host_ports_are_unique(compose: Compose) -> None:
    check_unique_host_ports(compose)


def test_dependencies(compose: Compose) -> None:
    check_dependencies(compose)


def test_images_are_pinned(compose: Compose) -> None:
    check_pinned_images(compose)


def test_dockerfile(compose: Compose) -> None:
    check_dockerfile(compose)


# --- the checks fail on broken files --------------------------------------------------------


def _broken(compose: Compose, edit: Any) -> Compose:
    copy_ = copy.deepcopy(compose)
    edit(copy_["services"])
    return copy_


def _workers(services: dict[str, Any]) -> list[dict[str, Any]]:
    return [svc for svc in services.values() if list(svc.get("command") or [])[1:2] == ["worker"]]


def _first_worker(services: dict[str, Any]) -> dict[str, Any]:
    return _workers(services)[0]


def _share_volume(services: dict[str, Any]) -> None:
    first, second = _workers(services)[:2]
    second["volumes"] = list(first["volumes"])


def _env(service: dict[str, Any]) -> dict[str, Any]:
    service["environment"] = dict(service["environment"])  # YAML anchors share the mapping
    return service["environment"]


@pytest.mark.parametrize(("label", "edit", "check"), [
    ("typo'd key", lambda s: _env(s["load"]).update(STREAMREC_KAFKA__BROKR="kafka:9092"), "env"),
    ("typo'd section", lambda s: _env(s["load"]).update(STREAMREC_KAFKAA__BROKER="kafka:9092"), "env"),
    ("single underscore", lambda s: _env(s["load"]).update(STREAMREC_KAFKA_BROKER="kafka:9092"), "env"),
    ("invalid value", lambda s: _env(s["load"]).update(STREAMREC_TOPICS__PARTITIONS="0"), "env"),
    ("wrong type", lambda s: _env(s["load"]).update(STREAMREC_KAFKA__SESSION_TIMEOUT_S="soon"), "env"),
    ("unknown option", lambda s: s["load"].update(command=["streamrec", "produce", "--rat", "500"]), "cmd"),
    ("bad option value", lambda s: s["load"].update(command=["streamrec", "produce", "--rate", "x"]), "cmd"),
    ("unknown command", lambda s: s["load"].update(command=["streamrec", "producer"]), "cmd"),
    ("missing sub-command", lambda s: s["load"].update(command=["streamrec", "topics"]), "cmd"),
    ("not streamrec", lambda s: s["load"].update(command=["python", "-m", "streamrec"]), "cmd"),
    ("wrong broker host", lambda s: _env(s["load"]).update(STREAMREC_KAFKA__BROKER="broker:9092"), "broker"),
    ("wrong broker port", lambda s: _env(s["load"]).update(STREAMREC_KAFKA__BROKER="kafka:9093"), "broker"),
    ("host listener", lambda s: _env(s["load"]).update(STREAMREC_KAFKA__BROKER="localhost:9094"), "broker"),
    ("latest image", lambda s: s["kafka"].update(image="apache/kafka:latest"), "images"),
    ("untagged image", lambda s: s["kafka"].update(image="apache/kafka"), "images"),
    ("unknown dependency", lambda s: s["load"].update(depends_on={"kafak": {"condition": "service_started"}}),
     "depends"),
    ("shared volume", _share_volume, "workers"),
    ("undeclared volume", lambda s: _first_worker(s).update(volumes=["state:/var/lib/streamrec"]), "workers"),
    ("same host port", lambda s: s["kafka"].update(ports=["6066:9094"]), "ports"),
    ("worker before topics", lambda s: _first_worker(s).update(depends_on={"kafka": {}}), "depends"),
    ("wildcard web host", lambda s: _env(_first_worker(s)).update(STREAMREC_WORKER__WEB_HOST="0.0.0.0"),
     "workers"),
    ("unpublished web port", lambda s: _env(_first_worker(s)).update(STREAMREC_WORKER__WEB_PORT="7000"),
     "workers"),
    ("partitions differ", lambda s: _env(s["load"]).update(STREAMREC_TOPICS__PARTITIONS="2"), "layout"),
])
def test_checks_fail_on_broken_compose(compose: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       label: str, edit: Any, check: str) -> None:
    broken = _broken(compose, edit)
    run = {
        "env": lambda c: check_env_vars(c, monkeypatch, tmp_path),
        "cmd": check_commands,
        "broker": check_broker_address,
        "images": check_pinned_images,
        "depends": check_dependencies,
        "ports": check_unique_host_ports,
        "workers": lambda c: check_workers(c, monkeypatch, tmp_path),
        "layout": lambda c: check_same_topic_layout(c, monkeypatch, tmp_path),
    }[check]
    with pytest.raises(AssertionError):
        run(broken)
