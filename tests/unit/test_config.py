"""Settings: defaults, environment overrides and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import Settings
from engine.core.errors import ConfigError


def test_defaults_avoid_the_standard_ports() -> None:
    s = Settings.from_env({})
    assert (
        s.stack.pg_port,
        s.stack.kafka_port,
        s.stack.kafka_controller_port,
        s.stack.connect_port,
    ) == (
        55432,
        59092,
        59093,
        58083,
    )
    assert {5432, 9092, 9093, 8083}.isdisjoint(
        {s.stack.pg_port, s.stack.kafka_port, s.stack.connect_port}
    )
    assert s.stack.bootstrap_servers == "127.0.0.1:59092"
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
    ],
)
def test_bad_values_name_the_variable_and_the_fix(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)


def test_connector_env_covers_what_connectors_reference() -> None:
    s = Settings.from_env({"CHANGEFOLD_PG_PORT": "6000"})
    env = s.connector_env()
    assert env["CHANGEFOLD_PG_PORT"] == "6000"
    assert env["CHANGEFOLD_TOPIC_PARTITIONS"] == "3"
