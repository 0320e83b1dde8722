"""format=avro in the local stack: settings, the registry component, the connectors'
converters. (A real avro stack: tests/integration/test_avro.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import Settings
from engine.core.errors import ConfigError
from engine.lab.stack.connect import Connect, load_connector_specs
from engine.lab.stack.jars import registry_runner, registry_version
from engine.lab.stack.registry import AVRO_CONVERTER, Registry
from engine.lab.stack.supervisor import Stack


def test_json_is_the_default_and_changes_nothing(tmp_path: Path) -> None:
    s = Settings.from_env({}, home=tmp_path)
    assert s.stack.format == "json" and not s.stack.avro
    stack = Stack(s)
    assert [c.name for c in stack.components] == ["postgres", "kafka", "connect"]
    for spec in load_connector_specs(s):
        assert spec.config["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert Connect(s).properties()["value.converter"] == (
        "org.apache.kafka.connect.json.JsonConverter"
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="CHANGEFOLD_FORMAT='xml'"):
        Settings.from_env({"CHANGEFOLD_FORMAT": "xml"})


def test_avro_adds_the_registry_and_the_converters(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"CHANGEFOLD_FORMAT": "avro", "CHANGEFOLD_REGISTRY_PORT": "51234"}, home=tmp_path
    )
    stack = Stack(s)
    assert [c.name for c in stack.components] == ["postgres", "kafka", "registry", "connect"]
    assert stack.registry.port == 51234
    assert s.stack.registry_url == "http://127.0.0.1:51234"
    for spec in load_connector_specs(s):
        for side in ("key", "value"):
            assert spec.config[f"{side}.converter"] == AVRO_CONVERTER
            assert spec.config[f"{side}.converter.apicurio.registry.url"] == (
                "http://127.0.0.1:51234/apis/registry/v2"
            )
            assert spec.config[f"{side}.converter.apicurio.registry.use-id"] == "contentId"
            assert f"{side}.converter.schemas.enable" not in spec.config
        assert spec.config["provide.transaction.metadata"] == "true"  # the rest is kept
    props = Connect(s).properties()
    assert props["value.converter"] == AVRO_CONVERTER


def test_registry_command_line(tmp_path: Path) -> None:
    s = Settings.from_env({"CHANGEFOLD_FORMAT": "avro"}, home=tmp_path)
    reg = Registry(s)
    cmd = reg.command(registry_runner(s))
    assert "-Xmx512m" in cmd and "-Dquarkus.http.host=127.0.0.1" in cmd
    assert f"-Dquarkus.http.port={s.stack.registry_port}" in cmd
    assert reg.marker in cmd  # liveness is judged by it
    assert cmd[-2:] == ["-jar", str(registry_runner(s))]
    assert registry_version(s).endswith(".Final")
    # Nothing runs: no pid file.
    assert reg.process.pid() is None


def test_schemas_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.app.commands.schemas import schemas
    from engine.lab.stack import registry

    json_settings = Settings.from_env({}, home=tmp_path)
    out = CliRunner().invoke(schemas, [], obj=json_settings)
    assert out.exit_code != 0 and "the format is json" in str(out.exception)

    listed = [
        {"subject": "bank.bank.accounts-value", "versions": [{"version": 1, "id": 7}],
         "compatibility": "NONE"},
    ]  # fmt: skip
    monkeypatch.setattr(registry, "list_subjects", lambda url: listed)
    avro_settings = Settings.from_env({"CHANGEFOLD_FORMAT": "avro"}, home=tmp_path)
    out = CliRunner().invoke(schemas, [], obj=avro_settings)
    assert out.exit_code == 0, out.output
    assert "bank.bank.accounts-value" in out.output and "1:7" in out.output
    assert "NONE" in out.output
