"""The workload generator against real Postgres (the stack's server, fresh databases).

Each test writes into its own database created from sql/source/*.sql, so runs are
independent of each other and of what other tests captured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support import unique

from engine.core.config import Settings
from engine.core.errors import WorkloadError
from engine.lab.stack.connect import Connect, load_connector_specs
from engine.lab.stack.postgres import Postgres
from engine.lab.stack.process import wait_until
from engine.lab.workload import arcade_sql
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.fraud import SCENARIOS
from engine.lab.workload.plan import EPOCH_US, PgTxn, PlanConfig
from engine.lab.workload.runner import WorkloadOptions, run_workload
from engine.lab.workload.writer import Tally, Writer

BANK_TABLES = ("customers", "accounts", "merchants", "devices", "transactions", "fraud_truth")
ARCADE_TABLES = ("players", "matches", "scores")
CAPTURED = {
    "bank": ("customers", "accounts", "merchants", "devices", "transactions"),
    "arcade": ARCADE_TABLES,
}

MakeDb = Callable[..., Settings]

#: The generator against Postgres only: no change event is read, so the wire format
#: plays no part, and the avro run would repeat these minutes for nothing.
pytestmark = pytest.mark.formats(
    "json", reason="the workload generator writes Postgres only; no event is read"
)


@pytest.fixture
def fresh_db(stack: Settings) -> Iterator[MakeDb]:
    """Creates databases on the stack's server (schema loaded unless load=False)."""
    made: list[str] = []

    def make(*, load: bool = True) -> Settings:
        name = unique("cf_wl")
        with psycopg.connect(stack.stack.pg_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        settings = stack.with_(pg_database=name)
        if load:
            with psycopg.connect(settings.stack.pg_conninfo()) as conn:
                for path in sorted(settings.source_sql_dir.glob("*.sql")):
                    conn.execute(path.read_bytes())
        return settings

    yield make
    with psycopg.connect(stack.stack.pg_conninfo("postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _rows(settings: Settings, schema: str, tables: tuple[str, ...]) -> dict[str, list[str]]:
    """Every row of every table as text, in key order."""
    out = {}
    with psycopg.connect(settings.stack.pg_conninfo()) as conn:
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} AS t ORDER BY 1").format(
                sql.Identifier(schema, table)
            )
            out[table] = [r[0] for r in conn.execute(query).fetchall()]
    return out


def _one(settings: Settings, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(settings.stack.pg_conninfo()) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# -- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["bank", "arcade"])
def test_same_seed_writes_identical_rows(fresh_db: MakeDb, domain: str) -> None:
    tables = BANK_TABLES if domain == "bank" else ARCADE_TABLES
    opts = WorkloadOptions(
        domain, rate=2500, duration_s=2, seed=21, fraud_rate=0.05, hot_keys=0.2, population=120
    )
    first, second, other = fresh_db(), fresh_db(), fresh_db()
    run_workload(first, opts)
    run_workload(second, opts)
    run_workload(other, WorkloadOptions(**{**opts.__dict__, "seed": 22}))
    rows1, rows2 = _rows(first, domain, tables), _rows(second, domain, tables)
    assert all(rows1[t] for t in CAPTURED[domain])
    assert rows1 == rows2
    assert _rows(other, domain, tables) != rows1


def test_a_second_run_continues_ids_and_time_and_leaves_the_sequences_ahead(
    fresh_db: MakeDb,
) -> None:
    db = fresh_db()
    opts = WorkloadOptions("arcade", rate=3000, duration_s=1, population=50)
    one = run_workload(db, opts)
    top = _one(db, "SELECT max(score_id) FROM arcade.scores")
    newest = _one(db, "SELECT max(achieved_at) FROM arcade.scores")
    two = run_workload(db, opts)
    assert two.id_bases[arcade_sql.SCORES] == top + 1  # type: ignore[operator]
    assert two.sim_start > newest > one.sim_start  # type: ignore[operator]
    # An insert relying on the key default gets an id above everything generated.
    with psycopg.connect(db.stack.pg_conninfo()) as conn:
        row = conn.execute(
            "INSERT INTO arcade.players (name) VALUES ('by hand') RETURNING player_id"
        ).fetchone()
        most = conn.execute("SELECT max(player_id) FROM arcade.players").fetchone()
    assert row is not None and most is not None and row[0] == most[0]


# -- rate -------------------------------------------------------------------------------------


def _stat_events(settings: Settings, schema: str, tables: tuple[str, ...]) -> int:
    with psycopg.connect(settings.stack.pg_conninfo()) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = ANY(%s)",
            (schema, list(tables)),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_achieved_rate_is_within_10_percent_at_500_events_per_second(fresh_db: MakeDb) -> None:
    db = fresh_db()
    marks: dict[str, float] = {}

    def stream_starts(_: Tally) -> None:
        marks["stream"] = time.monotonic()

    summary = run_workload(
        db, WorkloadOptions("bank", rate=500, duration_s=10, seed=3), on_setup_done=stream_starts
    )
    wall = time.monotonic() - marks["stream"]
    events = summary.stream.events
    print(f"achieved {summary.achieved_rate:.1f} events/s, {events} events in {wall:.2f} s")
    assert 5000 <= events < 5020  # the last transaction may carry a few events past 5000
    assert summary.achieved_rate == pytest.approx(500, rel=0.10)
    assert events / wall == pytest.approx(500, rel=0.10)
    # Independent count of row changes, by Postgres itself: one event = one row change.
    expected = summary.setup.events + events
    deadline = time.monotonic() + 30
    counted = _stat_events(db, "bank", CAPTURED["bank"])
    while counted != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        counted = _stat_events(db, "bank", CAPTURED["bank"])
    assert counted == expected


# -- ground truth and money -----------------------------------------------------------------

_MISMATCHED_BALANCES = """
SELECT count(*) FROM bank.accounts a
LEFT JOIN (SELECT account_id, sum(amount) AS live FROM bank.transactions
           WHERE status IN ('pending', 'settled') GROUP BY account_id) t USING (account_id)
WHERE a.balance <> coalesce(t.live, 0)
"""
_TRANSFERS_NET = """
SELECT coalesce(sum(amount), 0) FROM bank.transactions
WHERE kind IN ('transfer_out', 'transfer_in') AND status IN ('pending', 'settled')
"""
_BALANCES_MINUS_EXTERNAL = """
SELECT (SELECT sum(balance) FROM bank.accounts)
     - (SELECT coalesce(sum(amount), 0) FROM bank.transactions
        WHERE kind IN ('purchase', 'withdrawal', 'deposit') AND status IN ('pending', 'settled'))
"""
_TRUTH_IDS_MISSING = """
SELECT count(*) FROM bank.fraud_truth f CROSS JOIN LATERAL unnest(f.txn_ids) AS id
WHERE NOT EXISTS (SELECT 1 FROM bank.transactions t WHERE t.txn_id = id
                  AND f.account_id IN (t.account_id, t.counterparty_account_id))
"""


def _assert_money_is_conserved(db: Settings) -> None:
    assert _one(db, _MISMATCHED_BALANCES) == 0
    assert _one(db, _TRANSFERS_NET) == 0
    assert _one(db, _BALANCES_MINUS_EXTERNAL) == 0


def test_every_scenario_is_in_the_ground_truth_and_money_is_conserved(fresh_db: MakeDb) -> None:
    db = fresh_db()
    opts = WorkloadOptions("bank", rate=6000, duration_s=3, seed=5, fraud_rate=0.08)
    summary = run_workload(db, opts)
    assert set(summary.fraud_cases) == set(SCENARIOS)

    with psycopg.connect(db.stack.pg_conninfo()) as conn:
        truth = conn.execute(
            "SELECT case_id, scenario, customer_id, account_id, txn_ids, steps_done "
            "FROM bank.fraud_truth ORDER BY case_id"
        ).fetchall()
        # Scenario shapes, checked on the written rows.
        structuring = conn.execute(
            "SELECT min(t.amount), max(t.amount), bool_and(t.kind = 'deposit') "
            "FROM bank.fraud_truth f, unnest(f.txn_ids) id, bank.transactions t "
            "WHERE f.scenario = 'structuring' AND t.txn_id = id"
        ).fetchone()
        travel = conn.execute(
            "SELECT bool_and(a.country <> b.country "
            "AND b.created_at - a.created_at <= interval '45 minutes') "
            "FROM bank.fraud_truth f JOIN bank.transactions a ON a.txn_id = f.txn_ids[1] "
            "JOIN bank.transactions b ON b.txn_id = f.txn_ids[2] "
            "WHERE f.scenario = 'impossible_travel' AND f.steps_done = 2"
        ).fetchone()
    assert structuring is not None and structuring[2] is True
    assert 9000 <= structuring[0] <= structuring[1] < 10_000
    assert travel == (True,)
    for case_id, scenario, *_, txn_ids, steps_done in truth:
        if scenario != "account_takeover" or steps_done > 1:
            assert txn_ids, (case_id, scenario)
    assert _one(db, _TRUTH_IDS_MISSING) == 0

    # The ground truth is exactly what the plan says: replan and compare.
    planner = BankPlanner(
        PlanConfig(seed=5, fraud_rate=0.08, start_us=EPOCH_US, id_bases=summary.id_bases)
    )
    list(planner.setup())
    stream = planner.stream()
    for _ in range(summary.stream.txns):
        next(stream)
    planned = [
        (c.case_id, c.scenario, c.customer_id, c.account_id, c.txn_ids, c.steps_done)
        for c in planner.cases
    ]
    assert [tuple(r) for r in truth] == planned

    _assert_money_is_conserved(db)


# -- failures and interruption ----------------------------------------------------------------


def test_a_failing_transaction_leaves_nothing_behind(fresh_db: MakeDb) -> None:
    db = fresh_db()
    ok = PgTxn("ok", EPOCH_US, (arcade_sql.insert_player(1, "ok", "US", "pc", EPOCH_US, EPOCH_US),))
    bad = PgTxn(
        "bad",
        EPOCH_US,
        (
            arcade_sql.insert_player(2, "half", "US", "pc", EPOCH_US, EPOCH_US),
            arcade_sql.insert_player(1, "duplicate", "US", "pc", EPOCH_US, EPOCH_US),
        ),
    )
    with psycopg.connect(db.stack.pg_conninfo(), autocommit=True) as conn:
        writer = Writer(conn)
        with pytest.raises(WorkloadError, match="duplicate key"):
            writer.write([ok, bad], Tally())
        # The connection is usable again and only the good transaction is there.
        names = conn.execute("SELECT name FROM arcade.players ORDER BY player_id").fetchall()
    assert names == [("ok",)]


def test_missing_schema_is_a_clear_error(fresh_db: MakeDb) -> None:
    db = fresh_db(load=False)
    with pytest.raises(WorkloadError, match=r"bank schema is not loaded .*missing: bank\."):
        run_workload(db, WorkloadOptions("bank", rate=10, duration_s=1))


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CHANGEFOLD_PG_PORT": str(settings.stack.pg_port),
        "CHANGEFOLD_PG_DATABASE": settings.stack.pg_database,
    }


def test_ctrl_c_finishes_the_transactions_in_hand_and_exits_130(fresh_db: MakeDb) -> None:
    db = fresh_db()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "generate",
            "bank",
            "--rate",
            "400",
            "--duration",
            "0",
            "--fraud-rate",
            "0.1",
        ],
        env=_cli_env(db),
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if int(_one(db, "SELECT count(*) FROM bank.transactions")) >= 1500:  # type: ignore[call-overload]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the generator wrote too little within 60 s")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "bank interrupted:" in out
    assert "Traceback" not in err
    _assert_money_is_conserved(db)
    assert _one(db, _TRUTH_IDS_MISSING) == 0


def test_cli_missing_schema_exits_1_with_the_fix(fresh_db: MakeDb) -> None:
    db = fresh_db(load=False)
    done = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "arcade", "--duration", "1"],
        env=_cli_env(db),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "arcade schema is not loaded" in done.stderr
    assert "sql/source/arcade.sql" in done.stderr


def _generate(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "generate", *args]


# -- a second run of the same seed ---------------------------------------------------------


def test_a_second_run_of_the_same_seed_continues_after_the_first(fresh_db: MakeDb) -> None:
    opts = WorkloadOptions("bank", rate=3000, duration_s=1, seed=7, fraud_rate=0.05, population=60)
    db, twin = fresh_db(), fresh_db()
    first = run_workload(db, opts)
    assert first.earlier_runs == []
    second = run_workload(db, opts)  # device ids were a duplicate key here
    assert [r.steps for r in second.earlier_runs] == [first.setup.txns + first.stream.txns]
    # Its customers come after the first run's, each with its own devices.
    start = second.id_bases["bank.customers"]
    assert start > 60
    devices = _one(
        db, "SELECT count(DISTINCT customer_id) FROM bank.devices WHERE customer_id >= %s", (start,)
    )
    assert devices >= 60  # type: ignore[operator]
    _assert_money_is_conserved(db)
    # Still deterministic: the same two runs on another fresh database, row for row.
    run_workload(twin, opts)
    run_workload(twin, opts)
    assert _rows(db, "bank", BANK_TABLES) == _rows(twin, "bank", BANK_TABLES)
    # The CLI says that the seed ran here before, and goes on.
    done = subprocess.run(
        _generate("bank", "--seed", "7", "--rate", "2000", "--duration", "1", "--population", "60"),
        env=_cli_env(db),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "seed 7 was generated into this database before (2 run(s)" in done.stdout


# -- Postgres restarts during a run ----------------------------------------------------------


def _server(stack: Settings) -> Postgres:
    return Postgres(stack)


def _start_postgres(stack: Settings) -> None:
    pg = _server(stack)
    if pg.process.pid() is None:
        pg.start()
    ok, last = wait_until(pg.healthy, timeout_s=120)
    assert ok, f"Postgres did not come back: {last}"


def _stop_postgres(stack: Settings, *, crash: bool) -> None:
    """Fast shutdown (what `stack down` does) or an immediate one: no checkpoint, so
    the next start runs crash recovery, as after a power cut."""
    pg = _server(stack)
    pid = pg.process.pid()
    assert pid is not None
    if crash:
        os.kill(pid, signal.SIGQUIT)
        ok, _ = wait_until(lambda: not pg.process.alive(pid), timeout_s=60)
        assert ok
    else:
        assert pg.process.stop(timeout_s=60)


@pytest.fixture
def restarts(stack: Settings) -> Iterator[Callable[..., None]]:
    """Restarts the stack's Postgres; afterwards the stack is healthy again (server up,
    connectors RUNNING) whatever the test did."""

    def restart(*, crash: bool = False, down_s: float = 1.0) -> None:
        _stop_postgres(stack, crash=crash)
        time.sleep(down_s)
        _start_postgres(stack)

    yield restart
    _start_postgres(stack)
    connect = Connect(stack)
    for spec in load_connector_specs(stack):
        connect.wait_running(spec, timeout_s=180)


def _restart_once_streaming(
    restart: Callable[..., None], after_events: int, **how: object
) -> tuple[Callable[[Tally], None], threading.Thread]:
    """A progress callback that restarts Postgres (in a thread) once the stream has
    written `after_events` events."""
    thread = threading.Thread(target=lambda: restart(**how), daemon=True)

    def progress(tally: Tally) -> None:
        if tally.events >= after_events and not thread.is_alive() and not thread.ident:
            thread.start()

    return progress, thread


@pytest.mark.parametrize(("domain", "crash"), [("arcade", True), ("bank", False)])
def test_a_postgres_restart_mid_run_ends_with_the_rows_of_an_uninterrupted_run(
    fresh_db: MakeDb, restarts: Callable[..., None], domain: str, crash: bool
) -> None:
    tables = BANK_TABLES if domain == "bank" else ARCADE_TABLES
    opts = WorkloadOptions(domain, rate=1000, duration_s=6, seed=31, fraud_rate=0.05)
    calm, bumpy = fresh_db(), fresh_db()
    plain = run_workload(calm, opts)
    in_stream = [False]

    def setup_done(_: Tally) -> None:
        in_stream[0] = True

    trigger, thread = _restart_once_streaming(restarts, 1500, crash=crash)
    summary = run_workload(
        bumpy,
        opts,
        progress=lambda t: trigger(t) if in_stream[0] else None,
        on_setup_done=setup_done,
    )
    thread.join(timeout=120)
    assert summary.reconnects >= 1
    assert summary.stream.txns == plain.stream.txns
    assert summary.stream.events == plain.stream.events
    rows = _rows(bumpy, domain, tables)
    assert rows == _rows(calm, domain, tables)
    # The progress marker counts every planned transaction once.
    steps = _one(bumpy, "SELECT steps FROM public.changefold_generate_runs")
    assert steps == plain.setup.txns + plain.stream.txns
    if domain == "bank":
        _assert_money_is_conserved(bumpy)


def _start_generate(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """`changefold generate ARGS` against `settings`' database, its output piped."""
    return subprocess.Popen(
        _generate(*args),
        env=_cli_env(settings),
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_rows(proc: subprocess.Popen[str], settings: Settings, table: str, rows: int) -> None:
    """Wait (60 s at most) until the running generator has written `rows` to `table`."""
    deadline = time.monotonic() + 60
    while int(_one(settings, f"SELECT count(*) FROM {table}")) < rows:  # type: ignore[call-overload]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the generator wrote too little within 60 s"
        time.sleep(0.2)


def test_cli_reconnects_logging_each_attempt_and_resumes_the_plan(
    fresh_db: MakeDb, stack: Settings, restarts: Callable[..., None]
) -> None:
    opts = WorkloadOptions("bank", rate=800, duration_s=6, seed=32, population=100)
    calm, bumpy = fresh_db(), fresh_db()
    run_workload(calm, opts)
    proc = _start_generate(
        bumpy, "bank", "--seed", "32", "--rate", "800", "--duration", "6", "--population=100"
    )
    try:
        _wait_rows(proc, bumpy, "bank.transactions", 1000)
        restarts(down_s=3.0)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    where = f"127.0.0.1:{stack.stack.pg_port}"
    assert f"lost the connection to Postgres at {where}" in err
    assert f"reconnect attempt 1 to Postgres at {where} failed" in err
    assert f"reconnected to Postgres at {where}" in err
    assert "lost the connection to Postgres 1 time(s); reconnected" in out
    assert "Traceback" not in err
    assert _rows(bumpy, "bank", BANK_TABLES) == _rows(calm, "bank", BANK_TABLES)


def test_cli_exits_with_a_clear_message_when_postgres_stays_down(
    fresh_db: MakeDb, stack: Settings, restarts: Callable[..., None]
) -> None:
    db = fresh_db()
    proc = _start_generate(
        db, "arcade", "--rate", "500", "--duration", "0", "--reconnect-timeout", "3"
    )
    try:
        _wait_rows(proc, db, "arcade.scores", 200)
        _stop_postgres(stack, crash=False)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _start_postgres(stack)
    assert proc.returncode == 1, err
    where = f"127.0.0.1:{stack.stack.pg_port}"
    assert f"Postgres at {where} did not come back within 3 s" in err
    assert "--reconnect-timeout" in err
    assert "Traceback" not in err
