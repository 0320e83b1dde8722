"""The frontier on every answer: engine.state.frontier, POST /query, /health, /metrics,
the Prometheus text and `changefold sql`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest
from click.testing import CliRunner
from serve_support import build_state, free_port, settings_for

from engine.app.cli import main
from engine.serve import start_api
from engine.serve.app import ApiOptions
from engine.serve.query import run_query
from engine.state import frontier
from engine.state.reader import StateReader

#: 2026-12-02 15:04:05.123 UTC
COMMIT_MS = 1_796_223_845_123
LINE = "consistent as of 2026-12-02 15:04:05.123 UTC (LSN 0/1A2B3C8, transaction 877)"


def put_frontier(
    con: duckdb.DuckDBPyConnection,
    group: str = "changefold",
    *,
    xid: str = "877",
    lsn: int = 0x1A2B3C8,
    commit_ms: int = COMMIT_MS,
    transactions: int = 877,
    updated: dt.datetime | None = None,
) -> None:
    """The frontier row as engine.state.transactions.apply leaves it."""
    con.execute(
        "INSERT OR REPLACE INTO _changefold.frontier VALUES (?, ?, ?, ?, ?, 12, ?)",
        [group, xid, lsn, commit_ms, transactions, updated or dt.datetime.now(dt.UTC)],
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated state (demo tables, an empty frontier); the writer connection."""
    con = build_state(tmp_path / "state.duckdb")
    yield con
    con.close()


def read(con: duckdb.DuckDBPyConnection, scope: frontier.Scope) -> frontier.Consistency:
    reader = StateReader.for_connection(con)
    try:
        with reader.cursor() as cur:
            return frontier.read(cur, scope)
    finally:
        reader.close()


# -- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lsn", "text"),
    [(0, "0/0"), (0x1A2B3C8, "0/1A2B3C8"), ((0x16 << 32) | 0xB374D848, "16/B374D848")],
)
def test_lsn_in_postgres_text_form(lsn: int, text: str) -> None:
    assert frontier.lsn_text(lsn) == text


def test_the_human_line_and_the_json_fields() -> None:
    as_of = frontier.AsOf("changefold", "877", 0x1A2B3C8, COMMIT_MS, 877, 12)
    consistency = frontier.Consistency(as_of)
    assert consistency.line == LINE
    assert consistency.to_json() == {
        "consistent_as_of": {
            "group_id": "changefold",
            "xid": "877",
            "lsn": 0x1A2B3C8,
            "lsn_text": "0/1A2B3C8",
            "commit_time": "2026-12-02T15:04:05.123+00:00",
            "commit_ts_ms": COMMIT_MS,
            "transactions": 877,
            "batch_id": 12,
            "applied_at": None,
        },
        "consistency": LINE,
    }
    off = frontier.Consistency(None, frontier.ORDERING_OFF)
    assert off.to_json() == {
        "consistent_as_of": None,
        "consistency": "per-event visibility (transaction ordering off)",
    }


# -- reading -------------------------------------------------------------------------------


def test_absent_frontier_says_why(state: duckdb.DuckDBPyConnection) -> None:
    assert read(state, frontier.Scope("changefold", "on")).reason == frontier.NOTHING_APPLIED
    assert read(state, frontier.Scope("changefold", "off")).reason == frontier.ORDERING_OFF
    assert read(state, frontier.Scope()).reason == frontier.UNKNOWN
    assert read(state, frontier.Scope()).as_of is None


def test_present_frontier(state: duckdb.DuckDBPyConnection) -> None:
    put_frontier(state)
    got = read(state, frontier.Scope("changefold", "on"))
    assert got.as_of is not None and got.reason is None
    assert (got.as_of.xid, got.as_of.lsn, got.as_of.commit_ts_ms) == ("877", 0x1A2B3C8, COMMIT_MS)
    assert got.as_of.transactions == 877 and got.as_of.batch_id == 12
    assert got.as_of.applied_at is not None and got.as_of.applied_at.tzinfo == dt.UTC
    assert got.line == LINE
    # ordering switched off since: the row is stale, the state moves on event by event
    assert read(state, frontier.Scope("changefold", "off")).as_of is None


def test_several_groups(state: duckdb.DuckDBPyConnection) -> None:
    old = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC)
    put_frontier(state, "replay", xid="500", lsn=100, transactions=500, updated=old)
    put_frontier(state, "changefold", updated=old + dt.timedelta(seconds=5))
    put_frontier(state, "other", xid="900", lsn=999, updated=old - dt.timedelta(hours=1))
    mine = read(state, frontier.Scope("replay", "on")).as_of
    assert mine is not None and (mine.group_id, mine.xid, mine.lsn) == ("replay", "500", 100)
    newest = read(state, frontier.Scope()).as_of
    assert newest is not None and newest.group_id == "changefold" and newest.xid == "877"
    nobody = read(state, frontier.Scope("nobody", "on"))
    assert nobody.as_of is None and nobody.reason == frontier.NOTHING_APPLIED


def test_a_state_without_the_table_keeps_the_transaction_usable(tmp_path: Path) -> None:
    con = build_state(tmp_path / "bare.duckdb", internal=False)
    reader = StateReader.for_connection(con)
    try:
        with reader.cursor() as cur:
            assert frontier.read(cur, frontier.Scope("changefold", "on")).reason == (
                frontier.NO_TABLE
            )
            assert cur.execute("SELECT count(*) FROM bank.accounts").fetchall() == [(50,)]
    finally:
        reader.close()
        con.close()


# -- one snapshot for the rows and the frontier ------------------------------------------------


def test_rows_and_frontier_come_from_one_snapshot(
    state: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine commits the next transaction (a row and the frontier) after the query's
    frontier read and before its statement: the answer pairs the old rows with the old
    frontier; the next answer pairs the new ones."""
    put_frontier(state)
    real_read = frontier.read
    commits = []

    def read_then_the_engine_commits(
        cur: duckdb.DuckDBPyConnection, scope: frontier.Scope
    ) -> frontier.Consistency:
        got = real_read(cur, scope)
        if not commits:
            state.execute("BEGIN TRANSACTION")
            state.execute("INSERT INTO bank.events VALUES (5000, 0)")
            put_frontier(state, xid="878", lsn=0x1A2C3C8, transactions=878)
            state.execute("COMMIT")
            commits.append(1)
        return got

    monkeypatch.setattr(frontier, "read", read_then_the_engine_commits)
    reader = StateReader.for_connection(state)
    scope = frontier.Scope("changefold", "on")
    sql = "SELECT count(*) AS n FROM bank.events"
    try:
        first = run_query(reader, sql, max_rows=10, timeout_s=5, scope=scope)
        second = run_query(reader, sql, max_rows=10, timeout_s=5, scope=scope)
    finally:
        reader.close()
    assert commits, "the engine committed in between"
    assert first.consistency is not None and first.consistency.as_of is not None
    assert (first.table.column("n")[0].as_py(), first.consistency.as_of.xid) == (5000, "877")
    assert second.consistency is not None and second.consistency.as_of is not None
    assert (second.table.column("n")[0].as_py(), second.consistency.as_of.xid) == (5001, "878")


# -- the API ---------------------------------------------------------------------------------


@contextmanager
def client_for(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, **engine: Any
) -> Iterator[httpx.Client]:
    """The API over `con`, for an engine of the given settings (group_id, transactions)."""
    settings = settings_for(tmp_path, **engine)
    with (
        start_api(settings, StateReader.for_connection(con), port=0) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        yield client


def test_every_api_answer_carries_the_frontier(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    put_frontier(state)
    put_frontier(state, "other", xid="5", lsn=5)
    with client_for(state, tmp_path, group_id="changefold", transactions="on") as api:
        answers = (
            api.post("/query", json={"sql": "SELECT 1 AS one"}),
            api.post("/query", json={"sql": "SELECT 1 AS one", "format": "arrow"}),
            api.get("/health"),
            api.get("/metrics"),
        )
    body, arrow, health_r, figures_r = answers
    body = body.json()
    assert body["rows"] == [[1]]
    assert body["consistency"] == LINE
    assert body["consistent_as_of"]["lsn_text"] == "0/1A2B3C8"
    assert body["consistent_as_of"]["commit_time"] == "2026-12-02T15:04:05.123+00:00"
    assert body["consistent_as_of"]["commit_ts_ms"] == COMMIT_MS
    assert body["consistent_as_of"]["transactions"] == 877

    assert arrow.headers["x-changefold-consistency"] == LINE
    metadata = pa.ipc.open_stream(arrow.content).read_all().schema.metadata
    assert json.loads(metadata[b"changefold.consistent_as_of"])["xid"] == "877"
    assert metadata[b"changefold.consistency"].decode() == LINE

    health = health_r.json()
    assert health["consistency"] == LINE and health["consistent_as_of"]["xid"] == "877"
    figures = figures_r.json()
    assert figures["consistency"] == LINE
    assert figures["consistent_as_of"]["group_id"] == "changefold"


def test_api_without_transaction_ordering(state: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with client_for(state, tmp_path, transactions="off") as api:
        answers = [
            api.post("/query", json={"sql": "SELECT 1"}).json(),
            api.get("/health").json(),
            api.get("/metrics").json(),
        ]
        text = api.get("/metrics/prometheus").text
    for answer in answers:
        assert answer["consistent_as_of"] is None
        assert answer["consistency"] == "per-event visibility (transaction ordering off)"
    assert "changefold_frontier" not in text


def test_prometheus_frontier_gauges(state: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    put_frontier(state)
    with client_for(state, tmp_path, group_id="changefold", transactions="on") as api:
        text = api.get("/metrics/prometheus").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name: (s.labels, s.value) for f in families.values() for s in f.samples}
    group = {"group": "changefold"}
    assert samples["changefold_frontier_commit_timestamp_seconds"] == (group, COMMIT_MS / 1000)
    assert samples["changefold_frontier_lsn"] == (group, 0x1A2B3C8)
    assert samples["changefold_frontier_transactions_total"] == (group, 877)
    assert families["changefold_frontier_lsn"].type == "gauge"
    assert families["changefold_frontier_transactions"].type == "counter"


def test_options_from_settings_name_the_engine_group(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, group_id="g7", transactions="on")
    options = ApiOptions.from_settings(settings)
    assert options.frontier_scope == frontier.Scope("g7", "on")


# -- changefold sql ----------------------------------------------------------------------------


def env_for(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "CHANGEFOLD_HOME": str(tmp_path / "home"),
        "CHANGEFOLD_STATE_PATH": str(tmp_path / "state.duckdb"),
        "CHANGEFOLD_API_PORT": str(port),
    }


def test_sql_prints_the_line_on_stderr_and_keeps_stdout_data(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    put_frontier(con, "replay-x")  # a state file: the group is not known, the newest row
    con.close()
    env = env_for(tmp_path, free_port())
    result = CliRunner().invoke(main, ["sql", "SELECT 7 AS seven", "-f", "csv"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["seven", "7"]
    assert LINE in result.stderr
    as_json = CliRunner().invoke(main, ["sql", "SELECT 7 AS seven", "-f", "json"], env=env)
    assert json.loads(as_json.stdout) == [{"seven": 7}]
    assert LINE in as_json.stderr


def test_sql_without_a_frontier_says_so(tmp_path: Path) -> None:
    build_state(tmp_path / "state.duckdb").close()
    result = CliRunner().invoke(
        main, ["sql", "SELECT 1 AS one", "-f", "csv"], env=env_for(tmp_path, free_port())
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["one", "1"]
    assert frontier.UNKNOWN in result.stderr


def test_sql_through_the_api_prints_the_engines_frontier(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    put_frontier(con, "g1")
    put_frontier(con, "newer-but-not-mine", xid="9", updated=dt.datetime.now(dt.UTC))
    settings = settings_for(tmp_path, group_id="g1", transactions="on")
    api = start_api(settings, StateReader.for_connection(con), port=0)
    try:
        result = CliRunner().invoke(
            main,
            ["sql", "SELECT 1 AS one", "--api", api.url, "-f", "csv"],
            env=env_for(tmp_path, free_port()),
        )
    finally:
        api.stop()
        con.close()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["one", "1"]
    assert LINE in result.stderr
