"""Readers see whole source transactions, across a kill -9 of the engine.

In Postgres, at every commit, an account's balance equals the sum of the amounts
of its pending and settled transactions: the bank generator writes a transaction
row and the balance it changes in one Postgres transaction (sql/source/bank.sql).
Those rows travel on different topics and partitions. This polls the query API
while the generator runs, kills the engine with SIGKILL in the middle and starts
it again, and checks the equality for every account in every answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
from engine_support import EngineProcess, wait_for, wait_topics_quiet, workload
from support import free_ports, unique

from engine.core.config import Settings

#: Accounts whose balance is not the sum of their pending and settled transactions,
#: and how much there is to check (so that a read of an empty state cannot pass).
TORN = """
WITH held AS (
    SELECT account_id, sum(amount) AS total, count(*) AS n
    FROM bank.transactions WHERE status IN ('pending', 'settled') GROUP BY account_id
)
SELECT
    count(*) FILTER (WHERE a.balance <> coalesce(h.total, 0)) AS torn,
    count(*) AS accounts,
    coalesce(sum(h.n), 0) AS transactions
FROM bank.accounts AS a LEFT JOIN held AS h USING (account_id)
"""

MIN_READS = 300


def test_no_read_sees_part_of_a_source_transaction(stack: Settings, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = {"CHANGEFOLD_API_PORT": str(port), "CHANGEFOLD_TRANSACTIONS": "on"}
    url = f"http://127.0.0.1:{port}/query"
    state, group = tmp_path / "state.duckdb", unique("torn")
    engines: list[EngineProcess] = []

    def start() -> EngineProcess:
        engine = EngineProcess(
            stack, state, group, tmp_path / f"engine-{len(engines)}.log", env=env
        )
        engines.append(engine)
        return engine

    reads: list[tuple[int, int, int, object]] = []  # (torn, accounts, transactions, as of)
    refused = 0

    def read() -> None:
        nonlocal refused
        try:
            answer = httpx.post(url, json={"sql": TORN, "format": "json"}, timeout=10).json()
        except (httpx.TransportError, ValueError):
            refused += 1  # the engine is down (killed, restarting) or starting
            return
        if "rows" not in answer:
            refused += 1  # e.g. the mirrors do not exist yet
            return
        ((torn, accounts, txns),) = [tuple(r) for r in answer["rows"]]
        reads.append((int(torn), int(accounts), int(txns), answer.get("consistent_as_of")))

    engine = start()
    try:
        # The session's topics already hold the earlier tests' history: the engine folds
        # it first (a loaded machine, or the per-event Avro read, takes a while), so the
        # reads below see the state change with the workload, not the catch-up.
        with psycopg.connect(stack.stack.pg_conninfo()) as pg:
            (source_rows,) = pg.execute("SELECT count(*) FROM bank.transactions").fetchone()

        def caught_up() -> bool:
            sql = "select count(*) from bank.transactions"
            try:
                answer = httpx.post(url, json={"sql": sql}, timeout=10).json()
            except (httpx.TransportError, ValueError):
                return False
            return bool(answer.get("rows")) and answer["rows"][0][0] == source_rows

        wait_for(caught_up, 600, f"the engine to fold the {source_rows} transactions so far", 2)
        with workload(stack, "bank", rate=300, duration_s=60, seed=23):
            t0 = time.monotonic()
            killed = False
            while time.monotonic() - t0 < 58:
                read()
                if not killed and time.monotonic() - t0 > 25 and len(reads) > 50:
                    engine.kill()  # anywhere: polling, folding, mid-transaction
                    killed = True
                    engine = start()
                time.sleep(0.1)
            assert killed, "the engine was never killed: too few reads before the kill"
        wait_topics_quiet(stack, "bank")
        # Then read on until the engine has folded the rest, still checking every read.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(reads) < MIN_READS or not reads[-1][1]):
            read()
            time.sleep(0.1)
    finally:
        for e in engines:
            if e.proc.poll() is None:
                e.kill()
    after_restart = [r for r in reads[-50:] if r[1] > 0]
    assert len(reads) >= MIN_READS, (len(reads), refused)
    torn = [r for r in reads if r[0]]
    assert not torn, (
        f"{len(torn)} of {len(reads)} reads saw part of a source transaction: {torn[:5]}"
    )
    # The reads saw a state that changed under them, not one empty or frozen state.
    # (one state per batch the engine committed: a batch every second or two).
    assert len({r[2] for r in reads}) >= 15, sorted({r[2] for r in reads})
    assert after_restart and max(r[1] for r in after_restart) >= 10
    # Every answer said which source transaction it is consistent as of.
    assert all(r[3] for r in reads if r[2] > 0), [r for r in reads if not r[3]][:3]
    assert "owns" in engines[-1].output()
    print(f"{len(reads)} reads, 0 torn, {len({r[2] for r in reads})} states, {refused} refused")
