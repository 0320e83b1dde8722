"""Settings: defaults, environment overrides, sections and clear errors for bad values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest

from engine.core.config import ApiSettings, EngineSettings, Settings, StackSettings, ViewSettings
from engine.core.errors import ConfigError


def test_defaults_avoid_the_standard_ports() -> None:
    s = Settings.from_env({}).stack
    assert (s.pg_port, s.kafka_port, s.kafka_controller_port, s.connect_port) == (
        55432,
        59092,
        59093,
        58083,
    )
    assert {5432, 9092, 9093, 8083}.isdisjoint({s.pg_port, s.kafka_port, s.connect_port})
    assert s.bootstrap_servers == "127.0.0.1:59092"


def test_derived_paths_default_under_the_project_and_home() -> None:
    s = Settings.from_env({})
    assert s.home == s.project_dir / ".stack"
    assert s.jars_dir == s.project_dir / ".stack" / "jars"


def test_environment_overrides(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "CHANGEFOLD_PG_PORT": "6000",
            "CHANGEFOLD_HOME": str(tmp_path),
            "CHANGEFOLD_TOPIC_PARTITIONS": "6",
            "CHANGEFOLD_STARTUP_TIMEOUT_S": "30.5",
        }
    )
    assert s.stack.pg_port == 6000
    assert s.home == tmp_path
    assert s.stack.topic_partitions == 6
    assert s.stack.startup_timeout_s == 30.5
    assert "port=6000" in s.stack.pg_conninfo()


def test_keyword_overrides_win_over_environment() -> None:
    s = Settings.from_env({"CHANGEFOLD_PG_PORT": "6000"}, pg_port=7000)
    assert s.stack.pg_port == 7000


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CHANGEFOLD_PG_PORT": "five"}, "CHANGEFOLD_PG_PORT='five' is not a whole number"),
        ({"CHANGEFOLD_KAFKA_PORT": "70000"}, "CHANGEFOLD_KAFKA_PORT=70000 is not a TCP port"),
        ({"CHANGEFOLD_TOPIC_PARTITIONS": "0"}, "at least 1 partition"),
        ({"CHANGEFOLD_STARTUP_TIMEOUT_S": "soon"}, "is not a number"),
        ({"CHANGEFOLD_KAFKA_WAIT_S": "-1"}, "CHANGEFOLD_KAFKA_WAIT_S=-1.0: use 0 (one attempt)"),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)


def test_the_engine_waits_for_kafka_two_minutes_unless_told() -> None:
    assert Settings.from_env({}).engine.kafka_wait_s == 120.0
    assert Settings.from_env({"CHANGEFOLD_KAFKA_WAIT_S": "0"}).engine.kafka_wait_s == 0.0
    assert Settings(kafka_wait_s=5).engine.kafka_wait_s == 5


def test_connector_env_covers_what_connectors_reference() -> None:
    s = Settings.from_env({"CHANGEFOLD_PG_PORT": "6000"})
    env = s.connector_env()
    assert env["CHANGEFOLD_PG_PORT"] == "6000"
    assert env["CHANGEFOLD_TOPIC_PARTITIONS"] == "3"


@pytest.mark.parametrize(
    ("section", "cls"),
    [("stack", StackSettings), ("engine", EngineSettings), ("api", ApiSettings),
     ("views", ViewSettings)],
)  # fmt: skip
def test_every_setting_of_a_section_reads_its_own_variable(section: str, cls: type) -> None:
    defaults = Settings.from_env({})
    for f in fields(cls):
        value = getattr(getattr(defaults, section), f.name)
        wanted: object
        if isinstance(value, str):
            choices = {
                "commit_mode": "async",
                "transactions": "off",
                "format": "avro",
                "kafka_client": "confluent",
            }
            raw = wanted = choices.get(f.name, "a,b")
        elif isinstance(value, int):
            raw, wanted = str(value + 1), value + 1
        elif isinstance(value, float):
            raw, wanted = str(value / 2), value / 2
        else:  # a path, or None (pg_bin_dir)
            raw, wanted = "/somewhere/else", Path("/somewhere/else")
        s = Settings.from_env({f"CHANGEFOLD_{f.name.upper()}": raw})
        assert getattr(getattr(s, section), f.name) == wanted, f.name


def test_flat_names_go_to_their_section(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"CHANGEFOLD_BATCH_MAX_RECORDS": "7", "CHANGEFOLD_FRAUD_TINY_EUR": "2.5"},
        api_port=6100,
        home=tmp_path,
    )
    assert s.engine.batch_max_records == 7
    assert s.views.fraud_tiny_eur == 2.5
    assert s.api.api_port == 6100
    changed = s.with_(batch_max_records=9, pg_port=6001)
    assert (changed.engine.batch_max_records, changed.stack.pg_port) == (9, 6001)
    assert changed.views == s.views and changed.home == tmp_path
    assert s.engine.batch_max_records == 7, "with_ makes a copy"
    assert Settings(leaderboard_window_min=30).views.leaderboard_window_min == 30


@pytest.mark.parametrize(
    "build",
    [
        lambda: Settings.from_env({}, batch_max_record=5),
        lambda: Settings.from_env({}).with_(batch_max_record=5),
        lambda: Settings(batch_max_record=5),
        lambda: Settings.from_env({}).child_env("batch_max_record"),
    ],
)
def test_an_unknown_setting_is_refused_with_the_closest_name(
    build: Callable[[], object],
) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    assert "unknown setting 'batch_max_record' (did you mean 'batch_max_records'?)" in str(
        err.value
    )


def test_the_state_path_is_one_path_under_home_unless_set(tmp_path: Path) -> None:
    s = Settings.from_env({"CHANGEFOLD_HOME": str(tmp_path)})
    assert s.engine.state_path == tmp_path / "engine" / "state.duckdb"
    explicit = Settings.from_env({"CHANGEFOLD_STATE_PATH": str(tmp_path / "x.duckdb")})
    assert explicit.engine.state_path == tmp_path / "x.duckdb"
    assert s.with_(state_path=tmp_path / "y.duckdb").engine.state_path == tmp_path / "y.duckdb"
    # Resolved once, when built: another home alone does not move it.
    assert s.with_(home=tmp_path / "other").engine.state_path == s.engine.state_path


def test_section_values_are_checked_when_routed_there() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({}).with_(commit_mode="later")
    assert "CHANGEFOLD_COMMIT_MODE='later': use 'sync' or 'async'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"CHANGEFOLD_FRAUD_STRUCTURING_BAND": "1.5"})
    assert "CHANGEFOLD_FRAUD_STRUCTURING_BAND=1.5: must be below 1" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"CHANGEFOLD_API_PORT": "0"})
    assert "CHANGEFOLD_API_PORT=0 is not a TCP port" in str(err.value)


def test_child_env_passes_flat_names_as_their_variables(tmp_path: Path) -> None:
    s = Settings.from_env({}, home=tmp_path, workers=3)
    env = s.child_env("workers", "state_path")
    assert env["CHANGEFOLD_HOME"] == str(tmp_path)
    assert env["CHANGEFOLD_WORKERS"] == "3"
    assert env["CHANGEFOLD_STATE_PATH"] == str(s.engine.state_path)
    assert env["CHANGEFOLD_KAFKA_PORT"] == str(s.stack.kafka_port)
