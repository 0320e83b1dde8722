"""Schema changes of a captured table while the stack runs.

Each test writes into a database of its own (created from sql/source/*.sql) captured
by a connector of its own (a new topic prefix), so the session's tables, topics and
registry subjects are untouched.

- A column added (`ALTER TABLE ... ADD COLUMN`) while the bank workload writes: a
  running engine adds it to the mirror without a restart and nothing is lost (the
  mirror equals Postgres row by row, the new column's values included); with
  format=avro the registry holds a new version of the table's value subject.
- format=avro, an incompatible change under the subject's BACKWARD compatibility
  (a column's type changed from integer to text): the registry refuses the new schema,
  the connector's task fails with that reason and nothing reaches the topic, so the
  engine neither sees nor loses anything; the changes wait in the replication slot.
  Once the subject's compatibility allows it and the task is restarted they arrive
  (a new version) and the mirror equals Postgres again.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pytest
from engine_support import (
    EngineProcess,
    compare_with_postgres,
    wait_for,
    wait_topics_quiet,
)
from kafka import KafkaConsumer
from psycopg import sql
from support import unique

from engine.core.config import Settings
from engine.lab.stack.connect import Connect, ConnectorSpec, with_format
from engine.lab.stack.supervisor import trace_summary
from engine.lab.workload.runner import WorkloadOptions, run_workload

CCOMPAT = "/apis/ccompat/v7"
#: Seconds of values written into the added column, under the workload.
NOTES_S = 20


class Source:
    """A database of its own on the stack's server, captured by a connector of its own."""

    def __init__(self, stack: Settings) -> None:
        self.stack = stack
        self.name = unique("cf_sc")
        self.settings = stack.with_(pg_database=self.name)
        self.prefix = self.name
        self.connect = Connect(stack)
        self.connector: str | None = None

    def create(self) -> None:
        with psycopg.connect(self.stack.stack.pg_conninfo("postgres"), autocommit=True) as pg:
            pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        with psycopg.connect(self.settings.stack.pg_conninfo()) as pg:
            for path in sorted(self.settings.source_sql_dir.glob("*.sql")):
                pg.execute(path.read_bytes())

    def execute(self, statement: str, params: Any = None) -> None:
        with psycopg.connect(self.settings.stack.pg_conninfo(), autocommit=True) as pg:
            pg.execute(statement, params)

    def capture(self, **changes: str) -> None:
        """Register a copy of the bank connector for this database and prefix (with the
        stack's converters); `changes` replace or add settings."""
        path = self.stack.connectors_dir / "bank.json"
        config = dict(json.loads(path.read_text())["config"])
        config.update(
            {
                "database.dbname": self.name,
                "topic.prefix": self.prefix,
                "slot.name": self.prefix,
                "publication.name": self.prefix,
                "topic.creation.transactions.include": f"{self.prefix}\\.transaction",
                **changes,
            }
        )
        config = {k: v for k, v in config.items() if v != ""}  # "": the setting removed
        spec = ConnectorSpec(name=self.prefix, config=with_format(self.stack, config), path=path)
        self.connect.register(spec, timeout_s=60)
        self.connector = self.prefix
        self.connect.wait_running(spec, timeout_s=120)

    def status(self) -> dict[str, Any]:
        assert self.connector is not None
        status = self.connect.connector_status(self.connector)
        assert status is not None
        return status

    def drop(self) -> None:
        if self.connector is not None:
            httpx.delete(f"{self.stack.stack.connect_url}/connectors/{self.connector}", timeout=30)
        with psycopg.connect(self.stack.stack.pg_conninfo("postgres"), autocommit=True) as pg:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = pg.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [self.prefix]
                ).fetchone()
                if row is None:
                    break
                if not row[0]:
                    pg.execute("SELECT pg_drop_replication_slot(%s)", [self.prefix])
                    break
                time.sleep(1)
            pg.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


@pytest.fixture
def source(stack: Settings) -> Iterator[Source]:
    src = Source(stack)
    src.create()
    try:
        yield src
    finally:
        src.drop()


def _topics(settings: Settings, prefix: str) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=settings.stack.bootstrap_servers, group_id=None)
    try:
        return sorted(t for t in consumer.topics() if t.startswith(prefix + "."))
    finally:
        consumer.close()


def _versions(settings: Settings, subject: str) -> list[dict[str, Any]]:
    """The registry's versions of `subject` (Confluent API): version, id, Avro schema."""
    with httpx.Client(base_url=settings.stack.registry_url + CCOMPAT, timeout=10) as http:
        listed = http.get(f"/subjects/{subject}/versions")
        if listed.status_code == 404:
            return []
        listed.raise_for_status()
        out = []
        for version in listed.json():
            got = http.get(f"/subjects/{subject}/versions/{version}")
            got.raise_for_status()
            body = got.json()
            out.append({"version": version, "id": body["id"], "schema": json.loads(body["schema"])})
        return out


def _row_fields(avro_schema: dict[str, Any]) -> list[str]:
    """Field names of the row record (`Value`) of a Debezium envelope's Avro schema: it is
    defined in the `before` field's union, which `after` names."""
    record = next(
        branch
        for field in avro_schema["fields"]
        if field["name"] in ("before", "after")
        for branch in field["type"]
        if isinstance(branch, dict)
    )
    return [f["name"] for f in record["fields"]]


def _mirror_schema_versions(state: Path, prefix: str, table: str) -> list[list[str]]:
    with duckdb.connect(str(state), read_only=True) as conn:
        rows = conn.execute(
            'SELECT "columns" FROM _changefold.schema_versions '
            "WHERE table_schema = ? AND table_name = ? ORDER BY version",
            [prefix, table],
        ).fetchall()
    return [[c["name"] for c in json.loads(cols)] for (cols,) in rows]


def _start_engine(src: Source, state: Path, group: str, log: Path, *args: str) -> EngineProcess:
    topics = _topics(src.stack, src.prefix)
    return EngineProcess(
        src.stack,
        state,
        group,
        log,
        "--no-api",
        *[a for t in topics for a in ("--topic", t)],
        *args,
    )


def test_a_column_added_under_load_reaches_the_mirror_without_a_restart(
    source: Source, tmp_path: Path
) -> None:
    stack, prefix = source.stack, source.prefix
    source.capture()
    wanted = {"customers", "accounts", "merchants", "devices", "transactions"}
    state, group = tmp_path / "state.duckdb", unique("sc")
    engine: EngineProcess | None = None
    written: list[int] = []
    try:
        # The bank workload runs until stopped: through the engine's start, however long
        # a loaded machine takes, and NOTES_S past the change.
        stop_load = threading.Event()
        failed: list[BaseException] = []

        def load_target() -> None:
            options = WorkloadOptions(domain="bank", rate=100, duration_s=0, seed=41, population=60)
            try:
                run_workload(source.settings, options, stop=stop_load)
            except BaseException as exc:  # reported by the test
                failed.append(exc)

        load = threading.Thread(target=load_target, name="workload-bank", daemon=True)
        load.start()
        try:

            def have_topics() -> bool:
                topics = _topics(stack, prefix)
                tables = {t.rsplit(".", 1)[1] for t in topics if t.count(".") == 2}
                return wanted <= tables and f"{prefix}.transaction" in topics

            wait_for(have_topics, 180, f"the topics of {prefix}")
            engine = _start_engine(
                source, state, group, tmp_path / "engine.log", "--idle-exit", "8"
            )
            wait_for(engine.owns_partitions, 180, "the engine to own its partitions")
            time.sleep(3)  # it folds the table as it was first

            # The change, while the workload writes (it waits for the transactions in
            # flight on the table, then they go on).
            source.execute("ALTER TABLE bank.accounts ADD COLUMN note text")

            # Values of the new column, written while the workload goes on.
            rng = random.Random(5)
            with psycopg.connect(source.settings.stack.pg_conninfo(), autocommit=True) as pg:
                until = time.monotonic() + NOTES_S
                while time.monotonic() < until:
                    ids = [r[0] for r in pg.execute("SELECT account_id FROM bank.accounts")]
                    account = rng.choice(ids)
                    pg.execute(
                        "UPDATE bank.accounts SET note = %s WHERE account_id = %s",
                        [f"note {len(written)} of {account}", account],
                    )
                    written.append(account)
                    time.sleep(0.1)
            assert load.is_alive(), failed
        finally:
            stop_load.set()
            load.join(timeout=120)
        assert not failed, failed
        assert not load.is_alive(), "the workload did not stop"
        assert written, "no value was written into the new column"
        assert engine.proc.poll() is None, "the engine stopped during the load"

        wait_topics_quiet(stack, prefix)
        assert engine.wait(timeout_s=300) == 0, engine.output()[-3000:]
    finally:
        if engine is not None and engine.proc.poll() is None:
            engine.kill()

    log = engine.output()
    # One run of the engine saw the table before and after the change.
    assert log.count(" owns ") >= 1 and "Traceback" not in log, log[-3000:]
    with duckdb.connect(str(state), read_only=True) as conn:
        counts = compare_with_postgres(source.settings, conn, prefix, "bank")
        assert counts["accounts"] > 10, counts
        (notes,) = conn.execute(
            f'SELECT count(*) FROM "{prefix}".accounts WHERE note IS NOT NULL'
        ).fetchone()
        assert notes > 0
        (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
        assert dead == 0
        (held,) = conn.execute("SELECT count(*) FROM _changefold.txn_events").fetchone()
        assert held == 0
    versions = _mirror_schema_versions(state, prefix, "accounts")
    assert len(versions) >= 2 and "note" not in versions[0] and "note" in versions[-1], versions

    if stack.stack.avro:
        registered = _versions(stack, f"{prefix}.bank.accounts-value")
        print("registry versions of accounts-value:", [(v["version"], v["id"]) for v in registered])
        assert len(registered) >= 2, registered
        assert "note" not in _row_fields(registered[0]["schema"])
        assert "note" in _row_fields(registered[-1]["schema"])
        assert len({v["id"] for v in registered}) == len(registered)


PROBE = """
CREATE SCHEMA probe;
CREATE TABLE probe.items (id int PRIMARY KEY, qty int NOT NULL, label text);
"""


@pytest.mark.formats(
    "avro", reason="schema compatibility is a rule of the schema registry (format=avro)"
)
def test_an_incompatible_change_stops_the_connector_and_loses_nothing(
    source: Source, tmp_path: Path
) -> None:
    stack, prefix = source.stack, source.prefix
    subject = f"{prefix}.probe.items-value"
    source.execute(PROBE)
    source.capture(
        **{
            "schema.include.list": "probe",
            "table.include.list": "probe.items",
            "heartbeat.action.query": "",
            "heartbeat.interval.ms": "0",
        }
    )
    source.execute("INSERT INTO probe.items VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c')")
    wait_for(lambda: _versions(stack, subject), 90, f"a version of {subject}")
    with httpx.Client(base_url=stack.stack.registry_url + CCOMPAT, timeout=10) as http:
        resp = http.put(f"/config/{subject}", json={"compatibility": "BACKWARD"})
        assert resp.status_code == 200, resp.text
        assert http.get(f"/config/{subject}").json()["compatibilityLevel"] == "BACKWARD"
    wait_topics_quiet(stack, prefix, quiet_s=3)
    topic = f"{prefix}.probe.items"

    # An int becomes text: a reader of the new schema cannot read the old records.
    source.execute("ALTER TABLE probe.items ALTER COLUMN qty TYPE text")
    source.execute("UPDATE probe.items SET qty = 'many' WHERE id = 1")
    source.execute("INSERT INTO probe.items VALUES (4, 'four', 'd')")

    def task_failed() -> str | None:
        tasks = source.status().get("tasks") or []
        failed = [t for t in tasks if t["state"] == "FAILED"]
        return failed[0].get("trace", "") if failed else None

    trace = wait_for(task_failed, 120, f"the task of connector {prefix} to fail")
    # `changefold stack status` names the reason, the registry's refusal.
    summary = trace_summary(trace)
    print("connector task trace:", summary)
    assert "RuleViolationException" in summary and "ncompatible" in summary, trace[:3000]
    assert [v["version"] for v in _versions(stack, subject)] == [1]

    # The engine folds what reached the topic: the rows before the change, no dead letter.
    state, group = tmp_path / "state.duckdb", unique("sc")
    engine = _start_engine(source, state, group, tmp_path / "engine-1.log", "--idle-exit", "4")
    assert engine.wait(timeout_s=180) == 0, engine.output()[-3000:]
    with duckdb.connect(str(state), read_only=True) as conn:
        before = conn.execute(f'SELECT id, qty FROM "{prefix}".items ORDER BY id').fetchall()
        (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
    assert before == [(1, 10), (2, 20), (3, 30)] and dead == 0

    # The changes wait in the slot: allow the change, restart the task, they arrive.
    with psycopg.connect(stack.stack.pg_conninfo("postgres")) as pg:
        (pending,) = pg.execute(
            "SELECT pg_current_wal_lsn() > confirmed_flush_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [prefix],
        ).fetchone()
    assert pending, "the replication slot confirmed changes the topic never got"
    with httpx.Client(base_url=stack.stack.registry_url + CCOMPAT, timeout=10) as http:
        resp = http.put(f"/config/{subject}", json={"compatibility": "NONE"})
        assert resp.status_code == 200, resp.text
    source.connect.restart_failed(prefix)
    wait_for(lambda: len(_versions(stack, subject)) == 2, 120, f"version 2 of {subject}")
    wait_for(lambda: source.status()["tasks"][0]["state"] == "RUNNING", 60, "the task to run")
    wait_topics_quiet(stack, prefix, quiet_s=3)

    engine = _start_engine(source, state, group, tmp_path / "engine-2.log", "--idle-exit", "4")
    assert engine.wait(timeout_s=180) == 0, engine.output()[-3000:]
    with duckdb.connect(str(state), read_only=True) as conn:
        compare_with_postgres(source.settings, conn, prefix, "probe")
        after = conn.execute(f'SELECT id, qty FROM "{prefix}".items ORDER BY id').fetchall()
        (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
    assert after == [(1, "many"), (2, "20"), (3, "30"), (4, "four")] and dead == 0
    assert topic in _topics(stack, prefix)
