"""The DuckDB state file: one connection, recorded migrations, serialized writes.

Every write goes through `Store.transaction()`, which holds the store's lock:
with several consumer group members in one process there is still exactly one
writer at a time, and a batch's state, offsets, dead letters and metrics
commit together or not at all.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from engine.core.errors import StateError, StateLockedError
from engine.state.sqlident import INTERNAL_SCHEMA

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")


class Store:
    """An open state file. Use as a context manager, or call `close()`."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.lock = threading.RLock()
        if self.path != ":memory:" and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path, read_only)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, wait_s: float = 60.0) -> None:
        """Close the connection, once no cursor of it runs.

        The query API stops and waits for its queries first (ApiHandle.stop);
        a cursor still running here (a call DuckDB cannot interrupt) is waited for,
        up to `wait_s`, instead of letting DuckDB refuse the close ("connection is
        busy with another call"), which at exit aborts the process.
        """
        deadline = time.monotonic() + wait_s
        with self.lock:
            while True:
                try:
                    self._conn.close()
                    return
                except duckdb.ResourceInUseException as exc:
                    if time.monotonic() > deadline:
                        raise StateError(
                            f"cannot close the state file {self.path}: a reader still runs "
                            f"after {wait_s:g} s ({exc})"
                        ) from None
                    log.info("state %s: waiting for a running reader to close", self.path)
                    time.sleep(0.1)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The raw connection; hold `lock` while using it."""
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT under the writer lock; ROLLBACK if the block raises."""
        with self.lock:
            self._conn.execute("BEGIN TRANSACTION")
            try:
                yield self._conn
            except BaseException:
                try:
                    self._conn.execute("ROLLBACK")
                except duckdb.Error as exc:  # already rolled back by DuckDB
                    log.debug("rollback after failure: %s", exc)
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for reads, under the lock (no writer is mid-transaction)."""
        with self.lock:
            yield self._conn

    # -- migrations -------------------------------------------------------------------

    def migrate(self, sql_dir: Path) -> list[str]:
        """Apply the not yet recorded `NNN_name.sql` files of `sql_dir`, each in a transaction.

        Returns the names applied. A read-only store is only checked: it must be
        fully migrated already.
        """
        files = sorted(
            (int(m.group(1)), p)
            for p in sql_dir.glob("*.sql")
            if (m := _MIGRATION_FILE.match(p.name))
        )
        if not files:
            raise StateError(
                f"no state migrations found in {sql_dir}: run changefold from its checkout "
                "or set CHANGEFOLD_PROJECT_DIR"
            )
        with self.lock:
            if self.read_only:
                done = self._applied()
                missing = [p.name for v, p in files if v not in done]
                if missing:
                    raise StateError(
                        f"the state file {self.path} is not initialised (missing "
                        f"{', '.join(missing)}): run `changefold run` once to create it"
                    )
                return []
            self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.migrations ("
                "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL)"
            )
            done = self._applied()
            applied = []
            for version, path in files:
                if version in done:
                    continue
                with self.transaction() as conn:
                    conn.execute(path.read_text())
                    conn.execute(
                        f"INSERT INTO {INTERNAL_SCHEMA}.migrations VALUES (?, ?, now())",
                        [version, path.name],
                    )
                applied.append(path.name)
                log.info("state %s: applied migration %s", self.path, path.name)
            return applied

    def _applied(self) -> set[int]:
        try:
            rows = self._conn.execute(
                f"SELECT version FROM {INTERNAL_SCHEMA}.migrations"
            ).fetchall()
        except duckdb.CatalogException:
            return set()
        return {int(r[0]) for r in rows}


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            holder = _lock_holder(text)
            raise StateLockedError(
                f"the state file {path} is in use by another process{holder}. DuckDB allows "
                "one writer: stop the other `changefold run` (or whatever holds it), or point "
                "this one at another file with --state / CHANGEFOLD_STATE_PATH"
            ) from None
        raise StateError(f"cannot open the state file {path}: {text}") from None
    except duckdb.Error as exc:
        raise StateError(f"cannot open the state file {path}: {exc}") from None


def _lock_holder(text: str) -> str:
    found = re.search(r"PID (\d+)", text)
    return f" (PID {found.group(1)})" if found else ""
