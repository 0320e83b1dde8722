"""dashboards/data.py: settings from the environment, SQL values, and each source's
answers and failures (a real query API; Connect and Postgres not running)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from dashboards_support import Served, data, export, nothing_up


@pytest.fixture
def api_down(monkeypatch: pytest.MonkeyPatch) -> str:
    return nothing_up(monkeypatch)


def test_sources_default_to_the_local_stack() -> None:
    src = data.Sources.from_env({})
    assert src.api_url == "http://127.0.0.1:58000"
    assert src.connect_url == "http://127.0.0.1:58083"
    assert src.pg_address == "127.0.0.1:55432"
    assert "port=55432" in src.pg_conninfo and "dbname=changefold" in src.pg_conninfo
    assert src.refresh_s == data.DEFAULT_REFRESH_S
    assert src.window_min == data.DEFAULT_WINDOW_MIN


def test_sources_follow_the_engine_variables() -> None:
    src = data.Sources.from_env(
        {
            "CHANGEFOLD_API_HOST": "0.0.0.0",  # the engine in a container listens on all
            "CHANGEFOLD_API_PORT": "58100",
            "CHANGEFOLD_CONNECT_PORT": "58200",
            "CHANGEFOLD_PG_PORT": "58300",
            "CHANGEFOLD_PG_PASSWORD": "it's secret",
            "CHANGEFOLD_DASHBOARD_REFRESH_S": "1.5",
            "CHANGEFOLD_LEADERBOARD_WINDOW_MIN": "15",
        }
    )
    assert src.api_url == "http://127.0.0.1:58100"
    assert src.connect_url == "http://127.0.0.1:58200"
    assert src.pg_address == "127.0.0.1:58300"
    assert "password='it\\'s secret'" in src.pg_conninfo
    assert (src.refresh_s, src.window_min) == (1.5, 15)
    url = data.Sources.from_env({"CHANGEFOLD_API_URL": "http://engine:58000/"})
    assert url.api_url == "http://engine:58000"


def test_a_bad_number_in_the_environment_is_named() -> None:
    with pytest.raises(data.DataError, match=r"CHANGEFOLD_API_PORT='x' is not a whole number"):
        data.Sources.from_env({"CHANGEFOLD_API_PORT": "x"})


def test_only_integers_go_into_sql() -> None:
    assert data.int_literal(42) == "42"
    assert data.int_list([3, -1]) == "3, -1"
    assert data.int_list([]) == "NULL"
    for bad in ("1; DROP TABLE x", 1.5, True, None):
        with pytest.raises(TypeError, match="only integers"):
            data.int_literal(bad)  # type: ignore[arg-type]


def test_query_returns_typed_rows_through_arrow(served: Served) -> None:
    result = data.query(
        "SELECT account_id, balance, opened_at, [1, 2] AS ids FROM bank.accounts "
        "ORDER BY account_id",
        max_rows=5,
    )
    assert result.row_count == 5 and result.truncated
    frame = result.frame
    expected = served.rows("SELECT account_id, balance FROM bank.accounts ORDER BY 1 LIMIT 5")
    assert frame.select("account_id", "balance").rows() == expected
    assert isinstance(frame["balance"][0], Decimal)
    assert isinstance(frame["opened_at"][0], dt.datetime) and frame["opened_at"][0].tzinfo
    assert frame["ids"].to_list()[0] == [1, 2]
    assert result.elapsed_ms > 0


def test_refused_and_failing_queries_carry_the_api_message(served: Served) -> None:
    with pytest.raises(data.QueryFailed) as refused:
        data.query("DELETE FROM bank.accounts")
    assert refused.value.kind == "refused" and "DELETE" in refused.value.message
    with pytest.raises(data.QueryFailed) as invalid:
        data.query("SELEC 1")
    assert "syntax error" in invalid.value.message.lower()
    assert served.rows("SELECT count(*) FROM bank.accounts")[0][0] > 0


def test_a_down_api_raises_unavailable_with_the_fix(api_down: str) -> None:
    for call in (data.health, data.metrics, lambda: data.query("SELECT 1")):
        with pytest.raises(data.Unavailable) as down:
            call()
        assert down.value.source == "api"
        assert api_down in str(down.value) and "changefold run" in str(down.value)


def test_a_down_stack_raises_unavailable_naming_connect_and_postgres(api_down: str) -> None:
    with pytest.raises(data.Unavailable, match=r"Kafka Connect's REST API at http://127\.0\.0\.1"):
        data.connectors()
    with pytest.raises(data.Unavailable, match=r"Postgres at 127\.0\.0\.1:[0-9]+ does not answer"):
        data.replication_slots()


def test_an_address_that_is_not_the_api_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class NotTheApi(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"nothing here")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotTheApi)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CHANGEFOLD_API_URL", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(data.Unavailable, match=r"HTTP 404.*Is that address"):
            data.health()
    finally:
        server.shutdown()


def test_exports_keep_values_and_flatten_nested_ones_for_csv() -> None:
    import io

    frame = pl.DataFrame(
        {"id": [1, 2], "ids": [[1, 2], None], "amount": [Decimal("1.50"), Decimal("-2.00")]}
    )
    csv = export.to_csv(frame).decode()
    lines = csv.splitlines()
    assert lines[0] == "id,ids,amount"
    assert lines[1] == '1,"[1, 2]",1.50'
    assert lines[2] == "2,,-2.00"
    back = pl.read_parquet(io.BytesIO(export.to_parquet(frame)))
    assert back.equals(frame)
