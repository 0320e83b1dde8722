"""Helpers for the engine's integration tests: run the engine, wait, compare with Postgres."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from kafka import KafkaConsumer, TopicPartition

from engine.core.config import Settings
from engine.lab.workload.runner import WorkloadOptions, run_workload

#: The broker's minimum: a killed engine's partitions move after this long.
SESSION_TIMEOUT_MS = 6000


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.3
) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def wait_progressing(
    condition: Callable[[], Any],
    progress: Callable[[], Any],
    stall_s: float,
    what: str,
    every_s: float = 0.5,
) -> Any:
    """Poll `condition` until it returns something truthy, for as long as `progress()`
    keeps changing: fail naming `what` once it has not changed for `stall_s` seconds
    (a loaded machine is slow, a stuck engine makes no progress at all)."""
    last = progress()
    since = time.monotonic()
    while True:
        result = condition()
        if result:
            return result
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise AssertionError(
                f"no progress for {stall_s:.0f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(every_s)


def engine_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = settings.child_env()
    env["CHANGEFOLD_CONSUMER_SESSION_TIMEOUT_MS"] = str(SESSION_TIMEOUT_MS)
    # Engines of the tests serve no Postgres endpoint unless a test asks for one on a
    # free port (55433 may be taken by another engine or a user's).
    env["CHANGEFOLD_PGWIRE_PORT"] = "0"
    env.update(extra)
    return env


def changefold(
    settings: Settings, *args: str, timeout_s: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """One `changefold` command against the test stack (more CHANGEFOLD_* in `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=engine_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class EngineProcess:
    """`changefold run` as a child process, its output in a log file."""

    def __init__(
        self,
        settings: Settings,
        state: Path,
        group: str,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """`env`: more CHANGEFOLD_* variables for the child."""
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "-v",
                "run",
                "--state",
                str(state),
                "--group",
                group,
                *args,
            ],
            env=engine_env(settings, **(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def owns_partitions(self) -> bool:
        return " owns " in self.output()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()


def end_offsets(settings: Settings, prefix: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.stack.bootstrap_servers, group_id=None)
    try:
        # The table topics and the transaction topic: the engine follows both.
        topics = [
            t
            for t in consumer.topics()
            if t.startswith(prefix + ".") and (t.count(".") == 2 or t == prefix + ".transaction")
        ]
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def wait_topics_quiet(
    settings: Settings, prefix: str, quiet_s: float = 4.0, timeout_s: float = 120.0
) -> dict[tuple[str, int], int]:
    """Wait until the topics of `prefix` stop growing (Debezium caught up)."""
    deadline = time.monotonic() + timeout_s
    last = end_offsets(settings, prefix)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = end_offsets(settings, prefix)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"topics of {prefix} still growing after {timeout_s:.0f} s")


@contextmanager
def workload(
    settings: Settings, domain: str, *, rate: float, duration_s: float, seed: int
) -> Iterator[threading.Thread]:
    """`changefold generate <domain>` in a thread (inserts, updates and deletes)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_workload(
                settings,
                WorkloadOptions(
                    domain=domain, rate=rate, duration_s=duration_s, seed=seed, population=60
                ),
            )
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"workload-{domain}", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=duration_s * 4 + 120)
    assert not thread.is_alive(), "the workload did not finish"
    if errors:
        raise errors[0]


# -- comparing mirrors with Postgres ------------------------------------------------------


def postgres_tables(settings: Settings, schema: str) -> dict[str, list[str]]:
    """Captured tables of a source schema -> primary key columns."""
    with psycopg.connect(settings.stack.pg_conninfo()) as pg:
        rows = pg.execute(
            """
            SELECT c.relname, array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
            JOIN pg_publication_tables p ON p.schemaname = n.nspname AND p.tablename = c.relname
            WHERE i.indisprimary AND n.nspname = %s
            GROUP BY c.relname
            """,
            [schema],
        ).fetchall()
    return {str(name): list(keys) for name, keys in rows}


def compare_with_postgres(
    settings: Settings, conn: duckdb.DuckDBPyConnection, prefix: str, schema: str
) -> dict[str, int]:
    """Assert every captured table of `schema` equals its mirror `<prefix>.<table>`, all
    columns, row for row. Returns the row count per table."""
    counts = {}
    with psycopg.connect(settings.stack.pg_conninfo()) as pg:
        for table, key in sorted(postgres_tables(settings, schema).items()):
            cols = [
                (str(name), str(dtype))
                for name, dtype in pg.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    [schema, table],
                ).fetchall()
            ]
            names = ", ".join(f'"{c}"' for c, _ in cols)
            order = ", ".join(f'"{k}"' for k in key)
            source = pg.execute(
                f'SELECT {names} FROM "{schema}"."{table}" ORDER BY {order}'
            ).fetchall()
            exists = conn.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = ? AND table_name = ?",
                [prefix, table],
            ).fetchall()[0][0]
            # No mirror yet means no change event yet: it must equal an empty table.
            mirror = (
                conn.execute(
                    f'SELECT {names} FROM "{prefix}"."{table}" ORDER BY {order}'
                ).fetchall()
                if exists
                else []
            )
            want = [_normal_row(r, cols) for r in source]
            got = [_normal_row(r, cols) for r in mirror]
            if want != got:
                raise AssertionError(
                    f"{prefix}.{table} differs from {schema}.{table}: "
                    + _diff(want, got, [c for c, _ in cols], key)
                )
            counts[table] = len(want)
    return counts


def _normal_row(row: tuple[Any, ...], cols: list[tuple[str, str]]) -> tuple[Any, ...]:
    return tuple(_normal(v, dtype) for v, (_, dtype) in zip(row, cols, strict=True))


def _normal(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type in ("json", "jsonb"):
        return json.loads(value) if isinstance(value, str) else value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, list):
        return [_normal(v, "") for v in value]
    return value


def _diff(want: list[tuple], got: list[tuple], names: list[str], key: list[str]) -> str:
    kidx = [names.index(k) for k in key]
    w = {tuple(r[i] for i in kidx): r for r in want}
    g = {tuple(r[i] for i in kidx): r for r in got}
    missing = sorted(set(w) - set(g))[:5]
    extra = sorted(set(g) - set(w))[:5]
    changed = [k for k in w.keys() & g.keys() if w[k] != g[k]][:3]
    parts = [f"{len(want)} rows in Postgres, {len(got)} in the mirror"]
    if missing:
        parts.append(f"missing keys {missing}")
    if extra:
        parts.append(f"extra keys {extra}")
    for k in changed:
        cols = [n for n, a, b in zip(names, w[k], g[k], strict=True) if a != b]
        parts.append(
            f"key {k}: columns {cols}: postgres {[w[k][names.index(c)] for c in cols]} "
            f"mirror {[g[k][names.index(c)] for c in cols]}"
        )
    return "; ".join(parts)


def stored_offsets(conn: duckdb.DuckDBPyConnection, group: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        'SELECT topic, "partition", next_offset FROM _changefold.offsets WHERE group_id = ?',
        [group],
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}
