"""The query API's limits (issue 13): body and SQL size, timeout from the first parse,
memory and answer size, one error shape, hidden settings, shutdown with queries in flight."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest
from serve_support import build_state, settings_for

from engine.core.config import Settings
from engine.core.errors import ConfigError, QueryError
from engine.serve import ApiHandle, query, start_api
from engine.serve.guard import MEMORY, SHUTDOWN, Watchdog
from engine.state.reader import StateReader
from engine.state.store import Store


@pytest.fixture
def state(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = build_state(tmp_path / "state.duckdb")
    yield con
    con.close()


def serve(con: duckdb.DuckDBPyConnection, tmp_path: Path, **settings: object) -> ApiHandle:
    return start_api(settings_for(tmp_path, **settings), StateReader.for_connection(con), port=0)


def post(api: ApiHandle, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{api.url}/query", timeout=60, **kwargs)  # type: ignore[arg-type]


def error_of(response: httpx.Response) -> dict[str, str]:
    """The one error shape: exactly `error` and `message`, both text."""
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    return body


# -- request size ---------------------------------------------------------------------------


def test_a_10_mb_body_is_refused_at_once_with_413_naming_the_setting(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    sql = "select 1" + " union all select 1" * 550_000  # ~10 MB
    with serve(state, tmp_path) as api:
        started = time.perf_counter()
        r = post(api, json={"sql": sql})
        elapsed = time.perf_counter() - started
        assert r.status_code == 413, r.text
        body = error_of(r)
        assert body["error"] == "too_large"
        assert "CHANGEFOLD_API_MAX_BODY_BYTES" in body["message"] and "1 MiB" in body["message"]
        assert elapsed < 5
        # A body without Content-Length is counted as it arrives.
        chunks = (b'{"sql": "select 1' + b" union all select 1" * 5000 for _ in range(20))
        streamed = post(api, content=chunks, headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert "CHANGEFOLD_API_MAX_BODY_BYTES" in error_of(streamed)["message"]
        assert post(api, json={"sql": "select 42 AS x"}).json()["rows"] == [[42]]


def test_a_million_literals_are_refused_by_the_sql_length_limit_promptly(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    sql = "select 1 where 1 in (" + ",".join(["1"] * 1_000_000) + ")"
    with serve(state, tmp_path, api_max_body_bytes=16 * 1024 * 1024) as api:
        started = time.perf_counter()
        r = post(api, json={"sql": sql})
        assert time.perf_counter() - started < 5
        assert r.status_code == 400, r.text
        body = error_of(r)
        assert body["error"] == "too_large"
        assert "CHANGEFOLD_API_MAX_SQL_CHARS" in body["message"]
        assert "2,000,021 characters" in body["message"] and "65,536" in body["message"]


def test_the_statement_timeout_counts_the_parse_and_check(
    state: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = query.checked_statement

    def slow_check(cur: duckdb.DuckDBPyConnection, sql: str, **limits: int) -> str:
        time.sleep(0.5)  # a parse that takes long
        return real(cur, sql, **limits)

    monkeypatch.setattr(query, "checked_statement", slow_check)
    reader = StateReader.for_connection(state)
    with pytest.raises(QueryError, match="parse, plan and execution") as caught:
        query.run_query(reader, "select 1", max_rows=10, timeout_s=0.2)
    assert caught.value.kind == "timeout"
    reader.close()


def test_a_long_plan_is_interrupted_at_the_statement_timeout(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    sql = "select 1" + " union all select 1" * 3400  # under 64 KiB; seconds to plan and run
    with serve(state, tmp_path, api_statement_timeout_s=0.3) as api:
        started = time.perf_counter()
        r = post(api, json={"sql": sql})
        elapsed = time.perf_counter() - started
    assert r.status_code == 400, r.text
    assert error_of(r)["error"] == "timeout"
    assert elapsed < 1.5


# -- memory and answer size ---------------------------------------------------------------


def test_a_value_built_while_planning_is_refused_before_it_runs(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """repeat('x', 1e9) is folded while DuckDB plans it, where no interrupt reaches:
    refused from the syntax tree, at once, naming the bound."""
    with serve(state, tmp_path, api_query_memory_bytes=256 * 2**20) as api:
        started = time.perf_counter()
        r = post(api, json={"sql": "select repeat('x', 1000000000)"})
        elapsed = time.perf_counter() - started
        small = post(api, json={"sql": "select repeat('x', 1000) as x"})
    assert r.status_code == 400, r.text
    assert error_of(r)["error"] == "memory"
    assert "64 MiB allowed" in error_of(r)["message"]
    assert elapsed < 1.0
    assert small.status_code == 200, small.text


def _peak_growth(during: threading.Thread) -> int:
    process = psutil.Process()
    base = peak = process.memory_info().rss
    during.start()
    while during.is_alive():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.005)
    return peak - base


def test_a_query_that_grows_the_engine_past_the_memory_bound_is_stopped(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    bound = 256 * 1024 * 1024
    answers: list[httpx.Response] = []
    with serve(state, tmp_path, api_query_memory_bytes=bound) as api:
        sql = "select len(list(range)) from range(200000000)"  # 3.3 GB unbounded
        worker = threading.Thread(target=lambda: answers.append(post(api, json={"sql": sql})))
        grown = _peak_growth(worker)
        assert answers[0].status_code == 400, answers[0].text
        body = error_of(answers[0])
        assert body["error"] == "memory"
        assert "CHANGEFOLD_API_QUERY_MEMORY_BYTES" in body["message"]
        assert "256 MiB" in body["message"]
        assert grown < 3 * bound, f"grew by {grown / 2**20:.0f} MiB"
        assert post(api, json={"sql": "select count(*) AS n FROM bank.events"}).status_code == 200


def test_sorts_get_a_quarter_of_the_bound_as_operator_memory(
    state: duckdb.DuckDBPyConnection,
) -> None:
    reader = StateReader.for_connection(state)
    limits = query.QueryLimits(memory_bytes=400 * 1024 * 1024)
    result = query.run_query(
        reader,
        "select current_setting('operator_memory_limit') AS m",
        max_rows=1,
        timeout_s=5,
        limits=limits,
    )
    assert result.table.column("m").to_pylist() == ["100.0 MiB"]
    reader.close()


def test_an_answer_past_the_result_size_is_refused(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with serve(state, tmp_path, api_max_result_bytes=8 * 1024 * 1024) as api:
        r = post(api, json={"sql": "select repeat('x', 1000000) AS big FROM range(50)"})
        assert r.status_code == 400, r.text
        body = error_of(r)
        assert body["error"] == "too_large"
        assert "CHANGEFOLD_API_MAX_RESULT_BYTES" in body["message"] and "8 MiB" in body["message"]
        small = post(api, json={"sql": "select repeat('x', 1000) AS s FROM range(5)"})
        assert small.status_code == 200


def test_queries_run_on_threads_of_lower_priority(state: duckdb.DuckDBPyConnection) -> None:
    reader = StateReader.for_connection(state)
    seen: list[int] = []

    def run() -> None:
        query.run_query(reader, "select 1", max_rows=1, timeout_s=5)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert seen == [max(10, os.getpriority(os.PRIO_PROCESS, 0))]
    reader.close()


def test_the_limits_are_checked_settings() -> None:
    with pytest.raises(ConfigError, match="CHANGEFOLD_API_QUERY_NICE=25"):
        Settings.from_env({"CHANGEFOLD_API_QUERY_NICE": "25"})
    with pytest.raises(ConfigError, match="CHANGEFOLD_API_MAX_SQL_CHARS=0"):
        Settings.from_env({"CHANGEFOLD_API_MAX_SQL_CHARS": "0"})
    limits = query.QueryLimits.from_settings(
        Settings.from_env({"CHANGEFOLD_API_MAX_RESULT_BYTES": "1000"})
    )
    assert limits.max_result_bytes == 1000 and limits.max_sql_chars == 65536


# -- one error shape, no 500 -----------------------------------------------------------------


def test_every_error_has_one_shape(state: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with serve(state, tmp_path) as api:
        missing = httpx.get(f"{api.url}/nowhere")
        assert missing.status_code == 404
        assert error_of(missing)["error"] == "not_found"
        wrong = httpx.get(f"{api.url}/query")
        assert wrong.status_code == 405
        assert error_of(wrong)["message"] == "GET is not allowed on /query; use POST"
        for content in (b"\xff\xfe{not utf-8", b'{"sql": ', b'["select 1"]', b'{"format": 1}'):
            r = post(api, content=content, headers={"content-type": "application/json"})
            assert r.status_code == 400, (content, r.text)
            assert error_of(r)["error"] == "invalid"


def test_a_lone_surrogate_is_a_400_with_a_message(
    state: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with serve(state, tmp_path) as api:
        raw = b'{"sql": "select \'\\ud800\' AS s"}'
        r = post(api, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        body = error_of(r)
        assert body["error"] == "invalid" and "lone surrogate (U+D800)" in body["message"]


# -- settings that show paths or the OS user ----------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select * from duckdb_settings()",
        "select value from duckdb_settings() where name = 'temp_directory'",
        "select current_setting('temp_directory')",
        "select current_setting('SECRET_DIRECTORY')",
        "select current_setting(name) from (select 'temp_directory' AS name)",
        "show temp_directory",
        "select * from (show secret_directory)",
    ],
)
def test_settings_with_paths_are_not_readable(
    state: duckdb.DuckDBPyConnection, tmp_path: Path, sql: str
) -> None:
    with serve(state, tmp_path) as api:
        r = post(api, json={"sql": sql})
    assert r.status_code == 400, r.text
    body = error_of(r)
    assert body["error"] == "refused"
    assert str(tmp_path) not in r.text and "/root" not in r.text


def test_harmless_settings_stay_readable(state: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with serve(state, tmp_path) as api:
        r = post(api, json={"sql": "select current_setting('TimeZone') AS tz, 1 AS one"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"][0][1] == 1


# -- shutdown with queries in flight ---------------------------------------------------------


def test_stop_interrupts_running_queries_then_the_store_closes(tmp_path: Path) -> None:
    build_state(tmp_path / "state.duckdb").close()
    store = Store(tmp_path / "state.duckdb")
    settings = settings_for(tmp_path, api_statement_timeout_s=120)
    api = start_api(settings, StateReader.for_store(store), port=0)
    answers: list[httpx.Response] = []
    slow = "select count(*) from range(100000000000) t(a), range(10) u(b) where a + b = -1"
    clients = [
        threading.Thread(target=lambda: answers.append(post(api, json={"sql": slow})))
        for _ in range(2)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 10
    while api.running and time.monotonic() < deadline:
        from engine.serve.guard import watchdog

        if watchdog().running(api.reader) == 2:
            break
        time.sleep(0.02)
    started = time.perf_counter()
    api.stop()
    store.close()  # was: "connection is busy with another call", then SIGABRT at exit
    assert time.perf_counter() - started < 5
    for client in clients:
        client.join(10)
    assert [a.status_code for a in answers] == [503, 503]
    assert error_of(answers[0])["error"] == "unavailable"


def test_store_close_waits_for_a_running_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.duckdb")
    cursor = store.connection.cursor()
    running = threading.Event()

    def long_query() -> None:
        running.set()
        with pytest.raises(duckdb.InterruptException):
            cursor.execute("select count(*) from range(100000000000) t(a) where a = -1")

    worker = threading.Thread(target=long_query)
    worker.start()
    running.wait(5)
    time.sleep(0.2)
    threading.Timer(0.5, cursor.interrupt).start()
    store.close()
    worker.join(10)
    assert not worker.is_alive()


def test_watchdog_stops_for_memory_and_refuses_a_stopping_owner() -> None:
    rss = [1000]
    dog = Watchdog(interval_s=0.01, rss=lambda: rss[0])
    con = duckdb.connect()
    owner = object()
    with dog.watch(con, owner=owner, timeout_s=60, memory_bytes=500) as watch:
        dog.tick([watch])
        assert watch.reason is None
        rss[0] = 1600
        dog.tick([watch])
        assert watch.reason == MEMORY and watch.grown == 600
        assert "CHANGEFOLD_API_QUERY_MEMORY_BYTES" in watch.error().message
    assert dog.stop_all(owner) == 0
    with pytest.raises(QueryError) as caught, dog.watch(con, owner=owner, timeout_s=60):
        pass
    assert caught.value.kind == "unavailable" and SHUTDOWN == "shutdown"
    con.close()
