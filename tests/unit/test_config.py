"""Settings precedence and validation (``streamrec.config``), and client options built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from streamrec.config import (
    CONFIG_PATH_ENV,
    KafkaSettings,
    Settings,
    load_settings,
    with_section,
)
from streamrec.errors import ConfigError
from streamrec.streams.topics import TopicNames, client_options, ssl_context, topic_specs




@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "streamrec.toml"
    path.write_text(
        '[kafka]\nbroker = "file-broker:9092"\n\n'
        '[topics]\npartitions = 7\nprefix = "file."\n\n'
        '[events]\ntypes = { view = 1.0, like = 3.0 }\n'
    )
    return path


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings()

    assert settings == Settings()
    assert settings.kafka.broker == "127.0.0.1:9092"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.topics.prefix == "streamrec."
    assert settings.topics.partitions == 4
    assert settings.model.k == 10
    assert settings.events.types["purchase"] == 8.0


def test_file_overrides_defaults_and_leaves_the_rest(settings_file: Path) -> None:
    settings = load_settings(settings_file)

    assert settings.kafka.broker == "file-broker:9092"
    assert settings.topics.partitions == 7
    assert settings.topics.prefix == "file."
    assert settings.events.types == {"view": 1.0, "like": 3.0}
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.model.k == 10


def test_default_file_in_working_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "streamrec.toml").write_text("[model]\nk = 3\n")

    assert load_settings().model.k == 3


def test_streamrec_config_variable_selects_the_file(monkeypatch: pytest.MonkeyPatch,
                                                     settings_file: Path) -> None:
    monkeypatch.setenv(CONFIG_PATH_ENV, str(settings_file))

    assert load_settings().topics.partitions == 7


def test_explicit_path_wins_over_streamrec_config(monkeypatch: pytest.MonkeyPatch, settings_file: Path,
                                                  tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[topics]\npartitions = 2\n")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(settings_file))

    assert load_settings(other).topics.partitions == 2


def test_environment_wins_over_file(monkeypatch: pytest.MonkeyPatch, settings_file: Path) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__BROKER", "env-broker:9092")
    monkeypatch.setenv("STREAMREC_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("STREAMREC_EVENTS__TYPES", '{"view": 2.5}')

    settings = load_settings(settings_file)

    assert settings.kafka.broker == "env-broker:9092"
    assert settings.topics.partitions == 12
    assert settings.events.types["view"] == 2.5
    assert settings.topics.prefix == "file.", "keys not in the environment still come from the file"


def test_environment_dict_replaces_the_default_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_EVENTS__TYPES", '{"click": 2.5}')

    assert load_settings().events.types == {"click": 2.5}


def test_environment_dict_replaces_the_files_dict(monkeypatch: pytest.MonkeyPatch,
                                                  settings_file: Path) -> None:
    monkeypatch.setenv("STREAMREC_EVENTS__TYPES", '{"click": 2.5}')

    assert load_settings(settings_file).events.types == {"click": 2.5}


def test_explicit_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch,
                                                 settings_file: Path) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__BROKER", "env-broker:9092")
    monkeypatch.setenv("STREAMREC_TOPICS__PARTITIONS", "12")

    settings = load_settings(settings_file, kafka={"broker": "cli-broker:9092"})

    assert settings.kafka.broker == "cli-broker:9092"
    assert settings.topics.partitions == 12


def test_override_with_a_section_object(settings_file: Path) -> None:
    settings = load_settings(settings_file, kafka=KafkaSettings(broker="obj:1"))

    assert settings.kafka == KafkaSettings(broker="obj:1")


def test_unrelated_streamrec_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TEST_BROKER", "127.0.0.1:1")

    assert load_settings() == Settings()


@pytest.mark.parametrize("variable, phrase", [
    ("STREAMREC_KAFKA__BROKR", "has no key 'brokr'"),
    ("STREAMREC_KAKFA__BROKER", "'kakfa' is not a section"),
])
def test_misspelt_streamrec_variable_raises_config_error_naming_it(
        monkeypatch: pytest.MonkeyPatch, variable: str, phrase: str) -> None:
    monkeypatch.setenv(variable, "x:1")

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert variable in str(info.value) and phrase in str(info.value)


def test_k_above_max_k_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.k \(50\) must not exceed model\.max_k \(20\)"):
        load_settings(model={"k": 50, "max_k": 20})


def test_heartbeat_not_below_session_timeout_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__HEARTBEAT_INTERVAL_S", "6")

    with pytest.raises(ConfigError, match=r"kafka\.heartbeat_interval_s"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(Exception, match="frozen"):
        settings.kafka.broker = "x"  # type: ignore[misc]


def test_with_section_replaces_fields_of_one_section_only() -> None:
    settings = load_settings()

    changed = with_section(settings, "worker", web_port=7000)

    assert changed.worker.web_port == 7000
    assert settings.worker.web_port == 6066
    assert changed.kafka == settings.kafka


# -- invalid settings ---------------------------------------------------------------


@pytest.mark.parametrize("variable, value, key", [
    ("STREAMREC_TOPICS__PARTITIONS", "0", "topics.partitions"),
    ("STREAMREC_TOPICS__PARTITIONS", "many", "topics.partitions"),
    ("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL", "kafka.security_protocol"),
    ("STREAMREC_TOPICS__PREFIX", "bad prefix/", "topics.prefix"),
    ("STREAMREC_EVENTS__TYPES", '{"view": -1}', "events.types"),
    ("STREAMREC_EVENTS__TYPES", "{}", "events.types"),
    ("STREAMREC_WORKER__LOG_LEVEL", "loud", "worker.log_level"),
])
def test_invalid_environment_value_raises_config_error_naming_the_key(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings()


def test_invalid_file_value_raises_config_error_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nk = 0\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    assert "model.k" in str(info.value) and str(path) in str(info.value)


def test_unknown_key_in_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[kafka]\nbrokr = "x:1"\n')

    with pytest.raises(ConfigError, match=r"kafka\.brokr"):
        load_settings(path)


def test_invalid_override_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.max_k"):
        load_settings(model={"max_k": 0})


def test_missing_file_named_explicitly_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"

    with pytest.raises(ConfigError, match="missing.toml"):
        load_settings(missing)


def test_missing_file_named_by_streamrec_config_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_PATH_ENV, "/nonexistent/streamrec.toml")

    with pytest.raises(ConfigError, match="STREAMREC_CONFIG"):
        load_settings()


def test_malformed_toml_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[kafka\nbroker = 1\n")

    with pytest.raises(ConfigError, match="broken.toml"):
        load_settings(path)


def test_non_json_environment_value_for_a_dict_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_EVENTS__TYPES", "view=1")

    with pytest.raises(ConfigError, match="STREAMREC_EVENTS__TYPES|events"):
        load_settings()


# -- Kafka connection options --------------------------------------------------------


@pytest.mark.parametrize("broker, expected", [
    ("127.0.0.1:9092", ["127.0.0.1:9092"]),
    ("kafka://a:1, kafka://b:2", ["a:1", "b:2"]),
    ("a:1,,b:2,", ["a:1", "b:2"]),
])
def test_bootstrap_servers_strip_kafka_scheme_and_blanks(broker: str, expected: list[str]) -> None:
    assert KafkaSettings(broker=broker).bootstrap_servers == expected


def test_plaintext_client_options_have_no_sasl_or_ssl_fields() -> None:
    options = client_options(KafkaSettings(broker="kafka://a:1,b:2"))

    assert options == {"bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT"}


def test_sasl_client_options_unwrap_the_secret_password() -> None:
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                          sasl_username="svc", sasl_password=SecretStr("s3cret"))

    options = client_options(kafka)

    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in options


def test_secret_password_is_hidden_in_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", "s3cret")

    settings = load_settings()

    assert settings.kafka.sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_ssl_client_options_carry_an_ssl_context_and_no_sasl_fields() -> None:
    options = client_options(KafkaSettings(security_protocol="SSL"))  # system CA bundle

    assert options["ssl_context"] is not None
    assert not any(key.startswith("sasl") for key in options)
    assert ssl_context(KafkaSettings()) is None


# -- topics ---------------------------------------------------------------------------


def test_topic_names_use_the_prefix() -> None:
    names = TopicNames.for_prefix("t1.")

    assert (names.events, names.dead_letter, names.item_state) == (
        "t1.events", "t1.dead-letter", "t1.internal.item-state")


def test_topic_specs_cover_changelogs_and_compaction() -> None:
    settings = load_settings(topics={"prefix": "p.", "partitions": 3}, worker={"app_id": "app"})

    specs = {spec.name: spec for spec in topic_specs(settings)}

    assert specs["p.events"].partitions == 3 and not specs["p.events"].compacted
    assert specs["p.items"].compacted and specs["p.internal.item-state"].compacted
    assert specs["app-users-changelog"].compacted
    assert "app-items-changelog" not in specs  # the items table's changelog is the item-state topic
    assert specs["app-__assignor-__leader"].partitions == 1
