"""Surviving a Postgres restart: a progress marker per run, and reconnecting with backoff.

Every run gets a row in `public.changefold_generate_runs` (not captured: the
connectors publish only their own schema's listed tables). Each planned
transaction sets that row's `steps` to its own step number before its COMMIT, in
the same transaction, so after a lost connection the row tells exactly how many
planned transactions committed: the one in flight either committed (with its
marker) or did not (nor did its marker). The writer then sends the rest of the
plan from the next step, so the database ends as an uninterrupted run leaves it.

The same table tells a later run which seeds were generated into this database
before (see `earlier_runs`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from engine.core.config import Settings
from engine.core.errors import WorkloadError
from engine.lab.workload import db

log = logging.getLogger(__name__)

RUNS_TABLE = "public.changefold_generate_runs"
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    run_id     bigserial PRIMARY KEY,
    domain     text NOT NULL,
    seed       bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    -- Options, id bases and simulated start of the run: what its plan was made from.
    plan       jsonb NOT NULL,
    -- Planned transactions committed so far (setup and stream), set in each of them.
    steps      bigint NOT NULL DEFAULT 0
)"""
#: Run in every planned transaction, just before its COMMIT.
MARK_SQL = f"UPDATE {RUNS_TABLE} SET steps = %s WHERE run_id = %s"

#: First wait between reconnect attempts; doubled per attempt up to `_MAX_DELAY_S`.
_FIRST_DELAY_S = 0.25
_MAX_DELAY_S = 5.0


@dataclass(frozen=True)
class EarlierRun:
    run_id: int
    steps: int


def register_run(
    conn: psycopg.Connection,
    domain: str,
    seed: int,
    plan: dict[str, object],
) -> tuple[int | None, list[EarlierRun]]:
    """Create this run's marker row; returns its id (None when the table cannot be
    created here, e.g. no CREATE right on schema public) and the earlier runs of
    the same domain and seed in this database."""
    try:
        with conn.transaction():
            conn.execute(_CREATE)
    except psycopg.errors.UniqueViolation:
        pass  # another generator created it at the same moment
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning(
            "cannot create %s (%s): this run will not survive a Postgres restart",
            RUNS_TABLE,
            str(exc).strip(),
        )
        return None, []
    earlier = [
        EarlierRun(int(r[0]), int(r[1]))
        for r in conn.execute(
            f"SELECT run_id, steps FROM {RUNS_TABLE} "
            "WHERE domain = %s AND seed = %s AND steps > 0 ORDER BY run_id",
            (domain, seed),
        ).fetchall()
    ]
    row = conn.execute(
        f"INSERT INTO {RUNS_TABLE} (domain, seed, plan) VALUES (%s, %s, %s::jsonb) "
        "RETURNING run_id",
        (domain, seed, json.dumps(plan, sort_keys=True)),
    ).fetchone()
    assert row is not None
    return int(row[0]), earlier


def committed_steps(conn: psycopg.Connection, run_id: int) -> int:
    row = conn.execute(f"SELECT steps FROM {RUNS_TABLE} WHERE run_id = %s", (run_id,)).fetchone()
    if row is None:
        raise WorkloadError(
            f"the progress row of this run (run_id {run_id} in {RUNS_TABLE}) is gone, so "
            "it cannot tell which transactions committed before the connection was lost.\n"
            "The database is consistent (every transaction commits whole); run the "
            "generator again."
        )
    return int(row[0])


def _reason(exc: BaseException) -> str:
    return " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) or type(exc).__name__


class Reconnector:
    """Opens a new connection after the old one was lost, retrying with backoff until
    `timeout_s` has passed; returns it with the run's committed step count."""

    def __init__(
        self,
        settings: Settings,
        run_id: int,
        *,
        timeout_s: float,
        async_commit: bool = False,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
        connect: Callable[[], psycopg.Connection] | None = None,
    ) -> None:
        """`wait(seconds)` sleeps between attempts and returns True to give up (by
        default: waiting on `stop`); `clock` and `connect` can be replaced (tests)."""
        self.settings = settings
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.stop = stop or threading.Event()
        self.clock = clock
        self.wait = wait or self.stop.wait
        self._connect = connect or (lambda: db.open_connection(settings, async_commit=async_commit))

    @property
    def where(self) -> str:
        pg = self.settings.stack
        return f"{pg.pg_host}:{pg.pg_port}"

    def reconnect(self, cause: BaseException, steps: int) -> tuple[psycopg.Connection, int]:
        """`steps`: planned transactions known to be committed (for the messages)."""
        where = self.where
        if self.timeout_s <= 0:
            raise WorkloadError(
                f"lost the connection to Postgres at {where}: {_reason(cause)}\n"
                f"{steps:,} planned transactions were committed, each whole; nothing was "
                "half-written. Reconnecting is off (--reconnect-timeout 0)."
            )
        log.warning(
            "lost the connection to Postgres at %s (%s); reconnecting for up to %g s",
            where,
            _reason(cause),
            self.timeout_s,
        )
        started = self.clock()
        deadline = started + self.timeout_s
        delay = _FIRST_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = self._connect()
                try:
                    done = committed_steps(conn, self.run_id)
                except BaseException:
                    conn.close()
                    raise
            except psycopg.Error as exc:
                left = deadline - self.clock()
                if left <= 0:
                    raise WorkloadError(
                        f"Postgres at {where} did not come back within {self.timeout_s:g} s "
                        f"({attempt} attempts; last: {_reason(exc)}).\n"
                        f"At least {steps:,} planned transactions were committed, each whole; "
                        "nothing was half-written. Start the server (`changefold stack up` "
                        "for the local stack) and run the generator again (ids and time "
                        "continue), or allow a longer outage with --reconnect-timeout."
                    ) from exc
                wait = min(delay, left)
                log.warning(
                    "reconnect attempt %d to Postgres at %s failed (%s); next in %.2f s, "
                    "giving up in %.0f s",
                    attempt,
                    where,
                    _reason(exc),
                    wait,
                    left,
                )
                if self.wait(wait):
                    raise WorkloadError(
                        f"stopped while waiting for Postgres at {where} to come back; at "
                        f"least {steps:,} planned transactions were committed, each whole."
                    ) from exc
                delay = min(delay * 2, _MAX_DELAY_S)
                continue
            log.warning(
                "reconnected to Postgres at %s (attempt %d, after %.1f s); %d planned "
                "transactions are committed, resuming at step %d",
                where,
                attempt,
                self.clock() - started,
                done,
                done + 1,
            )
            return conn, done
