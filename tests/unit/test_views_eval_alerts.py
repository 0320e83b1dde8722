"""`changefold eval fraud` reads the same alerts from a state file and through the API."""

from __future__ import annotations

import socket
from pathlib import Path

import duckdb
import pytest
from test_views_fraud import T0, Bank, payments

from engine.app.commands.eval import _read_alerts
from engine.core.config import Settings
from engine.core.errors import ViewError
from engine.lab.views.simulate import read_alerts
from engine.serve.server import start_api
from engine.state.reader import StateReader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def file_with_an_alert(path: Path) -> duckdb.DuckDBPyConnection:
    bank = Bank()
    bank.con.close()
    bank.con = duckdb.connect(str(path))
    bank.views.create_mirror_tables(bank.con)
    bank.views.install(bank.con)
    bank.commit(bank.account(bank.edit(), 1))
    e = bank.edit()
    payments(bank, e, 8, T0)
    bank.commit(e)
    return bank.con


def test_alerts_from_the_file_and_through_the_api_agree(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    con = file_with_an_alert(path)
    expected = read_alerts(con)
    assert len(expected) == 1
    settings = Settings.from_env({}, home=tmp_path, api_port=free_port())
    with start_api(settings, StateReader.for_connection(con, state_file=str(path))) as api:
        via_api, clock = _read_alerts(settings, api.url, None)
    assert via_api == expected
    assert clock is not None and clock > T0
    con.close()
    from_file, file_clock = _read_alerts(settings, None, path)
    assert from_file == expected and file_clock == clock


def test_a_state_without_views_says_so(tmp_path: Path) -> None:
    path = tmp_path / "plain.duckdb"
    duckdb.connect(str(path)).close()
    settings = Settings.from_env({}, home=tmp_path, api_port=free_port())
    with pytest.raises(ViewError, match=r"no live\.fraud_alerts table"):
        _read_alerts(settings, None, path)
