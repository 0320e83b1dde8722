"""connectors/*.json: well-formed, consistent with the settings and the source schemas."""

from __future__ import annotations

import re

import pytest

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.connect import load_connector_specs
from engine.lab.stack.kafka import new_cluster_id

SETTINGS = Settings.from_env({})
SPECS = load_connector_specs(SETTINGS)


def _source_tables() -> set[str]:
    tables = set()
    for path in SETTINGS.source_sql_dir.glob("*.sql"):
        for m in re.finditer(r"CREATE TABLE (?:IF NOT EXISTS )?([\w.]+)", path.read_text(), re.I):
            tables.add(m.group(1).lower())
    return tables


def test_one_connector_per_domain() -> None:
    assert {s.name for s in SPECS} == {"bank", "arcade"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_connector_settings(spec) -> None:  # type: ignore[no-untyped-def]
    c = spec.config
    assert c["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert c["plugin.name"] == "pgoutput"
    assert c["topic.prefix"] == spec.name
    assert c["slot.name"] == f"changefold_{spec.name}"
    assert c["publication.autocreate.mode"] == "filtered"
    assert c["provide.transaction.metadata"] == "true"
    assert c["decimal.handling.mode"] == "precise"
    assert int(c["heartbeat.interval.ms"]) > 0
    assert c["value.converter.schemas.enable"] == "true"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_env_reference_is_provided(spec) -> None:  # type: ignore[no-untyped-def]
    refs = set(re.findall(r"\$\{env:(\w+)\}", str(spec.config)))
    assert refs, "connector reads its connection settings from the worker's environment"
    assert refs <= set(SETTINGS.connector_env())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_included_tables_exist_in_the_source_schema(spec) -> None:  # type: ignore[no-untyped-def]
    included = {t.strip().lower() for t in spec.config["table.include.list"].split(",")}
    assert included, "a filtered publication needs its tables listed"
    assert included <= _source_tables()
    assert all(t.startswith(f"{spec.name}.") for t in included)
    # The heartbeat table is written by the connector but never captured.
    assert f"{spec.name}.cdc_heartbeat" not in included
    assert f"{spec.name}.cdc_heartbeat" in spec.config["heartbeat.action.query"]


def test_a_malformed_connector_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "broken.json").write_text('{"name": "x"}')
    with pytest.raises(StackError) as err:
        load_connector_specs(SETTINGS.with_(project_dir=tmp_path))
    assert "broken.json" in str(err.value)


def test_kraft_cluster_ids_never_look_like_an_option() -> None:
    # One id in 64 started with "-" and the storage tool refused it as an option.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)
