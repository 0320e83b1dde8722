"""POST /snapshot and the tools on a state another process holds (a real child engine
process serving the API: DuckDB's lock is per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from click.testing import CliRunner
from serve_support import build_state, fold_batches, free_port, settings_for

from engine.app.cli import main
from engine.serve import start_api
from engine.state.reader import StateReader

_ENGINE = """
import sys, time
sys.path[:0] = {paths!r}
from serve_support import build_state, fold_batches, settings_for
from pathlib import Path
from engine.serve import start_api
from engine.state.reader import StateReader
tmp = Path({tmp!r})
con = build_state(tmp / "state.duckdb")
fold_batches(con)
settings = settings_for(tmp, api_port={port})
api = start_api(settings, StateReader.for_connection(con))
print("serving", flush=True)
time.sleep(120)
"""


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A child process holding the state file and serving the API, like `changefold run`."""
    port = free_port()
    here = str(Path(__file__).parent)
    code = _ENGINE.format(paths=[here, *sys.path], tmp=str(tmp_path), port=port)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "serving"
        yield {
            "CHANGEFOLD_HOME": str(tmp_path / "home"),
            "CHANGEFOLD_STATE_PATH": str(tmp_path / "state.duckdb"),
            "CHANGEFOLD_API_PORT": str(port),
        }
    finally:
        child.kill()
        child.wait()


def test_the_endpoint_writes_a_fresh_file_under_the_engines_home(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    fold_batches(con)
    settings = settings_for(tmp_path)
    api = start_api(settings, StateReader.for_connection(con))
    try:
        answer = httpx.post(f"{api.url}/snapshot", timeout=60).json()
        again = httpx.post(f"{api.url}/snapshot", json={"path": "/tmp/x.duckdb"}, timeout=60)
    finally:
        api.stop()
        con.close()
    path = Path(answer["path"])
    assert path.name == "state.duckdb"
    assert path.parent.parent == tmp_path / "home" / "snapshots"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert answer["rows"] > 5000 and answer["tables"] >= 10
    assert "consistency" in answer and answer["state_file"] == str(tmp_path / "state.duckdb")
    # A body naming a path is ignored: the file is again a new one under the home.
    other = Path(again.json()["path"])
    assert other != path and other.parent.parent == path.parent.parent
    assert not Path("/tmp/x.duckdb").exists()
    copy = duckdb.connect(str(path), read_only=True)
    try:
        assert copy.execute("SELECT count(*) FROM _changefold.dead_letters").fetchall() == [(1,)]
    finally:
        copy.close()


def test_tools_read_a_held_state_through_a_snapshot(engine: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "state.duckdb"
    dlq = runner.invoke(main, ["dlq", "--json"], env=engine)
    assert dlq.exit_code == 0, dlq.output
    assert "bad JSON" in dlq.stdout
    assert "held by the running engine: read a snapshot" in dlq.stderr

    into = tmp_path / "out" / "copy.duckdb"
    snap = runner.invoke(main, ["snapshot", "--into", str(into)], env=engine)
    assert snap.exit_code == 0, snap.output
    assert "the running engine wrote a snapshot" in snap.stdout and into.is_file()
    refused = runner.invoke(main, ["snapshot", "--into", str(into)], env=engine)
    assert refused.exit_code == 2 and "exists already" in refused.stderr

    same = runner.invoke(main, ["diff", str(state), str(into)], env=engine)
    assert same.exit_code == 0, same.output
    assert "states are equal" in same.stdout
    assert "held by the running engine" in same.stderr

    rows = runner.invoke(
        main, ["sql", "--state", str(state), "SELECT count(*) AS n FROM bank.events"], env=engine
    )
    assert rows.exit_code == 0, rows.output
    assert "5000" in rows.stdout and "read a snapshot" in rows.stderr
    # Every snapshot taken for a tool is gone again.
    left = list((tmp_path / "home" / "snapshots").iterdir())
    assert left == [], left


def test_snapshot_of_a_state_no_engine_holds_and_a_holder_without_api(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    con = build_state(state)
    fold_batches(con)
    con.close()
    env = {
        "CHANGEFOLD_HOME": str(tmp_path / "home"),
        "CHANGEFOLD_STATE_PATH": str(state),
        "CHANGEFOLD_API_PORT": str(free_port()),
    }
    into = tmp_path / "copy.duckdb"
    done = CliRunner().invoke(main, ["snapshot", "--into", str(into)], env=env)
    assert done.exit_code == 0, done.output
    assert "no engine holds it" in done.stdout
    # A process holds the file and serves no API: a clear error, exit 3.
    child = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(state)!r}); "
         "print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        started = time.monotonic()
        held = CliRunner().invoke(main, ["dlq"], env=env)
    finally:
        child.kill()
        child.wait()
    assert held.exit_code == 3, held.output
    assert "no engine API answers" in held.stderr
    assert time.monotonic() - started < 10
