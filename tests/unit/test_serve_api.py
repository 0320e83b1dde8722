"""The query API over real HTTP: a uvicorn thread serving cursors of a writer's connection."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pyarrow as pa
import pytest
from serve_support import build_state, fingerprint, fold_batches, settings_for

from engine.core.config import Settings
from engine.serve import ApiHandle, start_api
from engine.state.reader import StateReader


@dataclass
class Engine:
    """The engine's side of a test: its writer connection and the API it serves."""

    con: duckdb.DuckDBPyConnection
    api: ApiHandle
    settings: Settings
    directory: Path

    def post(self, sql: str, **extra: object) -> httpx.Response:
        return httpx.post(f"{self.api.url}/query", json={"sql": sql, **extra}, timeout=30)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    con = build_state(tmp_path / "state.duckdb")
    fold_batches(con)
    settings = settings_for(tmp_path, api_max_rows=100, api_statement_timeout_s=1.0)
    api = start_api(settings, StateReader.for_connection(con), port=0)
    try:
        yield Engine(con, api, settings, tmp_path)
    finally:
        api.stop()
        con.close()


# -- reads --------------------------------------------------------------------------------


def test_json_answer_has_columns_rows_and_exact_values(engine: Engine) -> None:
    r = engine.post("SELECT id, owner, balance, opened, tags, hold FROM bank.accounts ORDER BY id")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == [
        "id",
        "owner",
        "balance",
        "opened",
        "tags",
        "hold",
    ]
    assert body["columns"][2]["type"] == "DECIMAL(18,2)"
    assert body["row_count"] == 50 and body["truncated"] is False
    assert body["rows"][0] == [
        1,
        "owner 1",
        "100.25",
        "2024-01-02T00:00:00+00:00",
        ["t1"],
        "PT0.001S",
    ]
    assert r.headers["x-changefold-row-count"] == "50"


def test_arrow_answer_decodes_with_pyarrow_and_polars(engine: Engine) -> None:
    r = engine.post("SELECT id, balance, hold FROM bank.accounts ORDER BY id", format="arrow")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert r.headers["x-changefold-truncated"] == "false"
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.num_rows == 50
    assert table.schema.field("balance").type == pa.decimal128(18, 2)
    assert table.column("balance")[0].as_py() == Decimal("100.25")
    assert table.schema.metadata[b"changefold.truncated"] == b"false"
    frame = pl.read_ipc_stream(io.BytesIO(r.content))
    assert frame.height == 50
    assert frame["hold"].dtype == pl.Duration("us")
    assert frame["hold"][1].total_seconds() == pytest.approx(0.002)


@pytest.mark.parametrize(
    "sql",
    [
        "WITH x AS (SELECT count(*) AS n FROM bank.events) SELECT n FROM x",
        "SHOW ALL TABLES",
        "DESCRIBE bank.accounts",
        "SUMMARIZE bank.events",
        "EXPLAIN SELECT * FROM bank.events",
        "EXPLAIN ANALYZE SELECT count(*) FROM bank.events",
        "FROM bank.events LIMIT 3",
        "SELECT * FROM range(5)",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM _changefold.offsets",
    ],
)
def test_read_forms_are_answered(engine: Engine, sql: str) -> None:
    r = engine.post(sql)
    assert r.status_code == 200, r.text
    assert r.json()["row_count"] >= 1


def test_row_cap_truncates_and_flags(engine: Engine) -> None:
    body = engine.post("SELECT * FROM bank.events ORDER BY id").json()
    assert body["row_count"] == 100 and body["truncated"] is True
    assert body["rows"][-1] == [99, 99 % 7]
    exact = engine.post("SELECT * FROM bank.events LIMIT 100").json()
    assert exact["row_count"] == 100 and exact["truncated"] is False
    fewer = engine.post("SELECT * FROM bank.events", max_rows=10).json()
    assert fewer["row_count"] == 10 and fewer["truncated"] is True
    capped = engine.post("SELECT * FROM bank.events", max_rows=10_000).json()
    assert capped["row_count"] == 100 and capped["truncated"] is True
    arrow = engine.post("SELECT * FROM bank.events", format="arrow")
    assert arrow.headers["x-changefold-truncated"] == "true"
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 100


# -- refusals -------------------------------------------------------------------------------

FORBIDDEN = {
    "insert": ("INSERT INTO bank.events VALUES (-1, 0)", "refused", "INSERT statements"),
    "update": ("UPDATE bank.accounts SET balance = 0", "refused", "UPDATE statements"),
    "delete": ("DELETE FROM bank.events", "refused", "DELETE statements"),
    "create": ("CREATE TABLE bank.x (a INT)", "refused", "CREATE statements"),
    "create_macro": ("CREATE MACRO m(a) AS a", "refused", "CREATE"),
    "drop": ("DROP TABLE bank.events", "refused", "DROP statements"),
    "alter": ("ALTER TABLE bank.events ADD COLUMN b INT", "refused", "ALTER statements"),
    "copy_to": ("COPY bank.events TO 'events.csv'", "refused", "COPY statements"),
    "copy_from": ("COPY bank.events FROM '/etc/passwd'", "refused", "COPY statements"),
    "attach": ("ATTACH 'other.duckdb' AS other", "refused", "ATTACH statements"),
    "detach": ("DETACH DATABASE state", "refused", "DETACH statements"),
    "install": ("INSTALL httpfs", "refused", "INSTALL/LOAD statements"),
    "load": ("LOAD httpfs", "refused", "INSTALL/LOAD statements"),
    "pragma_set": ("PRAGMA threads = 1", "refused", "PRAGMA name = value"),
    "pragma_profiling": ("PRAGMA enable_profiling", "refused", "PRAGMA"),
    "set": ("SET threads = 1", "refused", "SET/RESET/USE"),
    "set_tz": ("SET TimeZone = 'Asia/Tokyo'", "refused", "SET/RESET/USE"),
    "reset": ("RESET memory_limit", "refused", "SET/RESET/USE"),
    "set_variable": ("SET VARIABLE v = 1", "refused", "SET/RESET/USE"),
    "call": ("CALL pragma_version()", "refused", "CALL/CHECKPOINT"),
    "checkpoint": ("CHECKPOINT", "refused", "CALL/CHECKPOINT"),
    "export": ("EXPORT DATABASE 'dump'", "refused", "EXPORT DATABASE"),
    "import": ("IMPORT DATABASE 'dump'", "refused", "PRAGMA"),
    "begin": ("BEGIN TRANSACTION", "refused", "transaction"),
    "vacuum": ("VACUUM", "refused", "VACUUM"),
    "with_insert": (
        "WITH x AS (SELECT 1, 2) INSERT INTO bank.events SELECT * FROM x",
        "refused",
        "INSERT statements",
    ),
    "explain_analyze_delete": ("EXPLAIN ANALYZE DELETE FROM bank.events", "refused", "EXPLAIN of"),
    "multiple": ("SELECT 1; DROP TABLE bank.events", "refused", "2 statements"),
    "multiple_reads": ("SELECT 1; SELECT 2", "refused", "2 statements"),
    "read_csv": ("SELECT * FROM read_csv('/etc/passwd')", "refused", "read_csv()"),
    "read_text": ("SELECT * FROM read_text('/etc/passwd')", "refused", "read_text()"),
    "read_blob_nested": (
        "SELECT (SELECT count(*) FROM read_blob('/etc/hostname')) AS n",
        "refused",
        "read_blob()",
    ),
    "glob": ("SELECT * FROM glob('/etc/*')", "refused", "glob()"),
    "file_scan": ("SELECT * FROM '/etc/passwd'", "refused", "not files or URLs"),
    "query_function": ("SELECT * FROM query('SELECT 1')", "refused", "query()"),
    "side_effect_function": ("SELECT * FROM checkpoint()", "refused", "checkpoint()"),
    "nextval": ("SELECT nextval('bank.ids')", "refused", "read-only"),
    "malformed": ("SELEC * FRM bank.events", "invalid", "syntax error"),
    "unknown_table": ("SELECT * FROM bank.nope", "invalid", "nope"),
    "empty": ("   ", "invalid", "empty"),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_forbidden_statement_is_refused_and_state_unchanged(engine: Engine, case: str) -> None:
    sql, kind, words = FORBIDDEN[case]
    before = fingerprint(engine.con, engine.directory)
    r = engine.post(sql)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == kind, body
    assert words in body["message"], body
    assert "Traceback" not in r.text
    assert fingerprint(engine.con, engine.directory) == before
    # the server goes on answering
    assert engine.post("SELECT count(*) FROM bank.events").json()["rows"] == [[5000]]


def test_bad_request_bodies_get_a_clear_400(engine: Engine) -> None:
    missing = httpx.post(f"{engine.api.url}/query", json={"format": "json"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid" and "sql" in missing.json()["message"]
    bad_format = engine.post("SELECT 1", format="xml")
    assert bad_format.status_code == 400 and "format" in bad_format.json()["message"]
    not_json = httpx.post(
        f"{engine.api.url}/query", content=b"SELECT 1", headers={"content-type": "text/plain"}
    )
    assert not_json.status_code == 400


def test_query_error_returns_duckdb_message(engine: Engine) -> None:
    r = engine.post("SELECT error('custom failure')")
    assert r.status_code == 400
    assert r.json() == {"error": "failed", "message": "Invalid Input Error: custom failure"}


def test_query_past_the_timeout_is_interrupted_and_server_goes_on(engine: Engine) -> None:
    started = time.monotonic()
    r = engine.post("SELECT count(*) FROM range(1000000000000) AS a, range(10) AS b")
    took = time.monotonic() - started
    assert r.status_code == 400
    assert r.json()["error"] == "timeout"
    assert "statement timeout of 1 s" in r.json()["message"]
    assert took < 10
    assert httpx.get(f"{engine.api.url}/health").json()["status"] == "ok"
    assert engine.post("SELECT 42").json()["rows"] == [[42]]


# -- concurrency with the writer --------------------------------------------------------------


def test_writer_keeps_writing_while_queries_run(engine: Engine) -> None:
    """The engine's connection commits batches while the API answers reads of the same table."""
    engine.con.execute("CREATE TABLE bank.stream (batch INTEGER, i INTEGER)")
    rows_per_batch = 500
    stop = threading.Event()
    written: list[int] = []
    failure: list[BaseException] = []

    def fold() -> None:
        try:
            for b in range(100_000):
                if stop.is_set():
                    return
                engine.con.execute("BEGIN TRANSACTION")
                engine.con.execute(
                    "INSERT INTO bank.stream SELECT ?, i FROM range(?) AS r(i)",
                    [b, rows_per_batch],
                )
                engine.con.execute("COMMIT")
                written.append(b)
        except BaseException as exc:  # surfaced by the assertion below
            failure.append(exc)

    writer = threading.Thread(target=fold, name="test-writer")
    writer.start()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(set(seen)) < 5 and writer.is_alive() and time.monotonic() < deadline:
            r = engine.post("SELECT count(*) AS n FROM bank.stream")
            assert r.status_code == 200, r.text
            seen.append(r.json()["rows"][0][0])
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not failure, failure
    # reads saw the writer progress: five different committed states
    assert len(set(seen)) >= 5, seen
    # every answer is a committed snapshot: whole batches only, never going back
    assert all(n % rows_per_batch == 0 for n in seen), seen
    assert seen == sorted(seen)
    final = engine.post("SELECT count(*) FROM bank.stream").json()["rows"][0][0]
    assert final == len(written) * rows_per_batch


# -- health and metrics ------------------------------------------------------------------------


def test_health_names_the_state_and_its_freshness(engine: Engine) -> None:
    body = httpx.get(f"{engine.api.url}/health").json()
    assert body["status"] == "ok" and body["mode"] == "engine"
    assert body["state_file"] == str(engine.directory / "state.duckdb")
    assert body["last_batch_at"] is not None
    assert 0 <= body["last_batch_age_s"] < 60
    assert body["freshness_ms"] > 0


def test_metrics_json_reads_the_engine_tables(engine: Engine) -> None:
    engine.post("SELECT 1")
    engine.post("DROP TABLE bank.events")
    body = httpx.get(f"{engine.api.url}/metrics").json()
    lags = {(p["topic"], p["partition"]): p["lag"] for p in body["partitions"]}
    assert lags == {
        ("bank.public.accounts", 0): 70,
        ("bank.public.accounts", 1): 71,
        ("bank.public.accounts", 2): 72,
    }
    assert body["partitions"][0]["member"] == "member-1"
    assert body["partitions"][0]["records_in_window"] == 30
    assert body["throughput"]["records"] == 90 and body["throughput"]["batches"] == 3
    assert body["batches"]["fold_ms"]["p50"] == 4.0
    assert body["batches"]["last"]["records"] == 30
    assert body["freshness"]["freshness_ms"] > 0
    assert body["dead_letters"] == {
        "total": 1,
        "by_stage": {"decode": 1},
        "latest_at": body["dead_letters"]["latest_at"],
    }
    assert body["members"][0]["assigned"] == ["bank.public.accounts:0"]
    assert body["missing_tables"] == []
    assert body["api"]["queries"]["ok"] >= 1 and body["api"]["queries"]["refused"] >= 1


def test_metrics_prometheus_text(engine: Engine) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{engine.api.url}/metrics/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    lag = (
        "changefold_partition_lag",
        (("group", "g1"), ("member", ""), ("partition", "2"), ("topic", "bank.public.accounts")),
    )
    assert samples[lag] == 72
    assert samples[("changefold_records_per_second", ())] == pytest.approx(90 / 60)
    assert samples[("changefold_dead_letters", (("stage", "decode"),))] == 1
    assert samples[("changefold_batch_stage_seconds", (("stage", "fold"), ("stat", "p95")))] == (
        pytest.approx(0.004)
    )
    assert ("changefold_freshness_seconds", ()) in samples


def test_metrics_without_engine_tables_report_what_exists(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb", internal=False)
    settings = settings_for(tmp_path)
    with start_api(settings, StateReader.for_connection(con), port=0) as api:
        body = httpx.get(f"{api.url}/metrics").json()
        assert body["partitions"] is None and body["throughput"] is None
        assert "_changefold.batches" in body["missing_tables"]
        health = httpx.get(f"{api.url}/health").json()
        assert health["status"] == "ok" and health["last_batch_at"] is None
        assert httpx.get(f"{api.url}/metrics/prometheus").status_code == 200
    con.close()


def test_busy_port_is_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    from engine.core.errors import ApiError

    other = duckdb.connect()
    with pytest.raises(ApiError, match="CHANGEFOLD_API_PORT"):
        start_api(engine.settings, StateReader.for_connection(other), port=engine.api.port)
    other.close()


def test_binds_loopback_by_default(engine: Engine) -> None:
    assert engine.settings.api.api_host == "127.0.0.1"
    assert engine.api.host == "127.0.0.1"


def test_openapi_schema_describes_the_endpoints(engine: Engine) -> None:
    schema = httpx.get(f"{engine.api.url}/openapi.json").json()
    assert {"/query", "/health", "/metrics", "/metrics/prometheus"} <= set(schema["paths"])
    assert httpx.get(f"{engine.api.url}/docs").status_code == 404
