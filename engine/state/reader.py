"""Read cursors over the DuckDB state, locked down for SQL typed by anyone.

DuckDB allows one writer process, and the engine is that process. The API
therefore runs inside it and reads through cursors of the engine's own
connection: `con.cursor()` is a new connection to the same database instance,
so readers see committed batches (MVCC snapshots) while the engine keeps
writing. With the engine stopped, `changefold sql` opens the file read-only
instead. Both ways hand out the same kind of cursor, each inside a
`BEGIN TRANSACTION READ ONLY`.

What DuckDB (2.0.1) offers, and what is used here:

- Every relevant setting is GLOBAL, that is per database instance:
  `enable_external_access`, `lock_configuration`, `disabled_filesystems`,
  `autoinstall_known_extensions`, `autoload_known_extensions`,
  `allow_community_extensions`. A cursor shares the engine's instance, so
  setting them for the query connection sets them for the engine's writer too.
- `enable_external_access = false` makes `read_csv`, `read_text`, `glob`,
  `COPY`, `ATTACH`, `INSTALL` and file scans like `FROM '/etc/passwd'` fail with
  a Permission Error, and cannot be turned back on while the database runs.
  The engine is not hurt: `con.register(name, arrow_or_polars_frame)` and
  `from_arrow` still work, spilling to the database's temp directory still
  works, and so do checkpoints. What stops working is the Python replacement
  scan (`SELECT * FROM df` naming a local variable): the engine must register
  its frames by name, which it does.
- Extension auto-install/auto-load and community extensions are switched off:
  a query cannot pull in code. The extensions the engine needs (json, parquet,
  icu, core functions) are built into the Python package.
- `disabled_filesystems = 'LocalFileSystem'` is NOT used: DuckDB then cannot
  checkpoint its own file (a FATAL error that invalidates the database).
- `lock_configuration = true` blocks every later SET, even connection-local
  ones such as TimeZone, and cannot be undone. It is set where the reader owns
  the database (`open_file`), not inside the engine, which may still set its
  own options. Queries cannot change settings in either case: only SELECT and
  EXPLAIN pass the statement check (engine.serve.safety), table functions with
  side effects (`enable_logging`, `checkpoint`, ...) are refused, and every
  query runs in a READ ONLY transaction, where any write, `nextval()` or
  `EXPLAIN ANALYZE INSERT` included, fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from engine.core.errors import ApiError, StateLockedError

if TYPE_CHECKING:
    from engine.state.store import Store

log = logging.getLogger(__name__)

#: Settings applied to the database instance before any query runs (see above).
HARDENING: tuple[tuple[str, bool], ...] = (
    ("enable_external_access", False),
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
)


class StateReader:
    """Hands out read-only cursors of one DuckDB database. Thread-safe.

    Build it with `for_store` / `for_connection` inside the engine, or
    `open_file` when no engine runs.
    """

    def __init__(self, root: duckdb.DuckDBPyConnection, *, state_file: str, mode: str) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._closed = False
        self.state_file = state_file
        #: "engine" (cursors of the engine's connection) or "file" (opened read-only here).
        self.mode = mode

    # -- construction -----------------------------------------------------------------

    @classmethod
    def for_connection(cls, con: duckdb.DuckDBPyConnection, *, state_file: str = "") -> StateReader:
        """Readers over a connection that another component (the engine) writes through.

        Locks the database instance down (HARDENING) and keeps one cursor of
        `con` from which every query cursor is made, so `con` itself is touched
        only here: call it before the engine starts folding, or while holding
        the lock that guards `con`.
        """
        root = con.cursor()
        harden(root, lock_configuration=False)
        return cls(root, state_file=state_file or _database_path(root), mode="engine")

    @classmethod
    def for_store(cls, store: Store) -> StateReader:
        """`for_connection` on the engine's `Store`, under the store's writer lock."""
        with store.lock:
            return cls.for_connection(store.connection, state_file=store.path)

    @classmethod
    def open_file(cls, path: Path | str) -> StateReader:
        """Open a state file read-only, for when no engine holds it."""
        path = Path(path)
        if not path.is_file():
            raise ApiError(
                f"no state file at {path}: start the engine (`changefold run`) to create it, "
                "or point at another file with --state / CHANGEFOLD_STATE_PATH"
            )
        config: dict[str, str | bool | int | float | list[str]] = dict(HARDENING)
        config["lock_configuration"] = True
        try:
            con = duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StateLockedError(
                    f"the state file {path} is held by a running engine, and its query API "
                    "did not answer: check CHANGEFOLD_API_PORT (or pass --api URL) so that "
                    "queries go through the engine"
                ) from None
            raise ApiError(f"cannot open the state file {path}: {exc}") from None
        except duckdb.Error as exc:
            raise ApiError(f"cannot open the state file {path}: {exc}") from None
        return cls(con, state_file=str(path), mode="file")

    # -- use --------------------------------------------------------------------------

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor inside a READ ONLY transaction; rolled back and closed after."""
        with self._lock:
            if self._closed:
                raise ApiError("the state reader is closed: the engine is shutting down")
            try:
                cur = self._root.cursor()
            except duckdb.Error as exc:
                raise ApiError(f"the state {self.state_file} cannot be read: {exc}") from None
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            yield cur
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error as exc:  # interrupted or already aborted
                log.debug("rollback of a read cursor: %s", exc)
            cur.close()

    def close(self) -> None:
        """Close this reader's cursor; the engine's own connection stays open."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._root.close()


def harden(con: duckdb.DuckDBPyConnection, *, lock_configuration: bool) -> None:
    """Switch off external access and extension loading for the whole database instance."""
    for name, value in HARDENING:
        current = con.execute("SELECT current_setting(?)", [name]).fetchall()
        if current and current[0][0] == value:
            continue  # already so (external access cannot even be set to false twice)
        con.execute(f"SET {name} = {'true' if value else 'false'}")
    if lock_configuration:
        con.execute("SET lock_configuration = true")


def _database_path(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return str(rows[0][0]) if rows and rows[0][0] else ":memory:"
