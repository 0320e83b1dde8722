"""psql against a running engine: the live state over the Postgres wire protocol.

`changefold run` folds the bank generator's changes; psql reads the mirrors through
the engine's Postgres endpoint while they change, sees whole source transactions
(every balance is the sum of its transactions) named by their frontier, and gets
the query API's own message for a write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
from engine_support import EngineProcess, wait_for, wait_topics_quiet, workload
from support import free_ports, unique
from test_torn_reads import TORN

from engine.core.config import Settings


def psql(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("psql")
    assert command, "psql is missing: install Debian's postgresql-client"
    return subprocess.run(
        [command, "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "changefold",
         "-d", "changefold", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )  # fmt: skip


def test_psql_reads_the_live_state_and_writes_are_refused(stack: Settings, tmp_path: Path) -> None:
    api_port, pg_port = free_ports(2)
    env = {"CHANGEFOLD_API_PORT": str(api_port), "CHANGEFOLD_PGWIRE_PORT": str(pg_port)}
    engine = EngineProcess(
        stack, tmp_path / "state.duckdb", unique("pgwire"), tmp_path / "engine.log", env=env
    )
    try:
        wait_for(lambda: f"127.0.0.1:{pg_port}" in engine.output(), 60, "the Postgres endpoint")
        # The session's topics already hold the earlier tests' history: the engine folds
        # it first (a loaded machine, or the per-event Avro read, takes a while), so the
        # reads below see the state change with the workload, not the catch-up.
        with psycopg.connect(stack.stack.pg_conninfo()) as pg:
            (source_rows,) = pg.execute("SELECT count(*) FROM bank.transactions").fetchone()

        def caught_up() -> bool:
            done = psql(pg_port, "-c", "select count(*) from bank.transactions")
            return done.returncode == 0 and done.stdout.strip() == str(source_rows)

        wait_for(caught_up, 600, f"the engine to fold the {source_rows} transactions so far", 2)
        reads: list[tuple[int, int, int]] = []
        # Long enough that a slow start (a loaded machine) still leaves psql many reads
        # of a changing state.
        with workload(stack, "bank", rate=200, duration_s=35, seed=41):
            deadline = time.monotonic() + 34
            while time.monotonic() < deadline:
                done = psql(pg_port, "-F", ",", "-c", " ".join(TORN.split()))
                if done.returncode == 0:
                    torn, accounts, transactions = map(int, done.stdout.strip().split(","))
                    reads.append((torn, accounts, transactions))
                time.sleep(0.2)
        wait_topics_quiet(stack, "bank")
        assert reads and not [r for r in reads if r[0]], reads
        assert len({r[2] for r in reads}) >= 3, reads  # the state changed under psql

        # The live state, as the API answers it, once the engine has folded the rest.
        sql = "select count(*) from bank.accounts"

        def same() -> bool:
            api = httpx.post(f"http://127.0.0.1:{api_port}/query", json={"sql": sql}).json()
            rows = api.get("rows") or [[None]]
            return psql(pg_port, "-c", sql).stdout.strip() == str(rows[0][0])

        wait_for(same, 60, "psql and the API to answer the same count")
        line = psql(pg_port, "-c", "select 1", "-c", "show changefold.consistency").stdout
        assert line.splitlines()[1].startswith("consistent as of "), line

        write = "update bank.accounts set balance = 0"
        refused = psql(pg_port, "-c", write)
        api = httpx.post(f"http://127.0.0.1:{api_port}/query", json={"sql": write}).json()
        assert refused.returncode == 1
        assert refused.stderr.strip() == f"ERROR:  {api['message']}"
    finally:
        engine.kill()
