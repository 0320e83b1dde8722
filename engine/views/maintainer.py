"""Keep the derived views of sql/views/ current, one batch at a time.

The engine calls `install` once at start (outside any transaction) and `maintain`
inside the DuckDB transaction of every batch, after the mirror tables were
updated: the views then commit (or roll back) together with the mirrors and the
offsets, so a reader never sees a view ahead of or behind its mirrors.

Python stays thin: it stages the batch's before/after rows as temp tables
(`_before_<schema>_<table>`, `_after_<schema>_<table>`, typed like the mirror),
runs each view's SQL file with bound parameters, and reports timings.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from engine.core.errors import ViewError
from engine.state.deltas import MirrorDelta
from engine.views.contract import FIGURES, MaintainStats, ViewTiming
from engine.views.inputs import drop_inputs, mirror_exists, moved, stage_inputs
from engine.views.sqlfiles import (
    Column,
    SqlFile,
    duckdb_message,
    load_dir,
    order_views,
    quote,
    quote_table,
)

log = logging.getLogger(__name__)

#: Schema of the views' tables (sql/views/state/).
SCHEMA = "live"
#: The maintainer's bookkeeping table (sql/views/state/) and its row holding the last
#: maintained batch.
_PROGRESS = f"{SCHEMA}.progress"
_BATCHES = "batches"
#: Named parameters the engine binds in every batch; view files use them undeclared.
ENGINE_PARAMS = frozenset({"batch_id", "detected_at"})
#: A row of a `-- stuck:` table usually goes away a batch or two later (a transfer leg
#: whose other leg sits in another partition); one still there after this many
#: batches is warned about.
STUCK_AFTER_BATCHES = 20


class ViewMaintainer:
    """Loads sql/views/ and maintains its views in a DuckDB state.

    `params` holds the named parameters the view files declare in their `-- params:`
    headers ($fraud_tiny_eur, ...); the engine adds $batch_id and $detected_at.
    """

    def __init__(self, views_dir: Path, params: Mapping[str, object]) -> None:
        self.views_dir = Path(views_dir)
        if not self.views_dir.is_dir():
            raise ViewError(
                f"the views directory {self.views_dir} does not exist; point "
                "CHANGEFOLD_PROJECT_DIR at the checkout that holds sql/views/"
            )
        self.views = order_views(load_dir(self.views_dir))
        self.checks = load_dir(self.views_dir / "checks")
        self.state_ddl = load_dir(self.views_dir / "state")
        self.mirror_ddl = load_dir(self.views_dir / "mirrors")
        if not isinstance(params, Mapping):
            raise TypeError(
                "ViewMaintainer takes the views' parameters as a mapping (name -> value), "
                f"not a {type(params).__name__}"
            )
        self.params = dict(params)
        for f in self.files:
            _check_headers(f, self.params)
        #: Mirror tables some view or check reads.
        self.inputs = tuple(sorted({t for f in self.files for t in f.inputs}))
        #: Per file, the mirror tables whose change makes it run: its own inputs and
        #: those of the views it comes after (it may read what they wrote).
        self._triggers = _triggers(self.views, self.checks)
        self._prepared = False
        #: Per file with a `-- stuck:` header: the rows warned about (warned again only
        #: when more are).
        self._stuck_reported: dict[str, int] = {}

    @property
    def files(self) -> list[SqlFile]:
        return [*self.views, *self.checks]

    # -- start ------------------------------------------------------------------------

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the views' tables, then dry-run every view and check on an empty batch.

        Call outside any open transaction. A mirror table a view reads that no event
        created yet is created with the shape in sql/views/mirrors/ (the shape the
        engine's fold gives it), so that the dry run checks each view against the
        real tables: a file that reads an unknown table or column, or whose headers
        name one, raises ViewError naming the file and quoting DuckDB (a file that
        does not parse, or uses a parameter its header does not declare, was refused
        when loaded). The dry run's effects are rolled back.
        """
        con.execute("BEGIN TRANSACTION")
        try:
            self.prepare(con)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        con.execute("BEGIN TRANSACTION")
        try:
            stage_inputs(con, self.inputs, {})
            for f in self.files:
                self._run(con, f, self._values(0, datetime.now(UTC)))
                _check_tables(con, f)
        finally:
            con.execute("ROLLBACK")
        log.info("views installed: %s", ", ".join(f.name for f in self.files))

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create what is missing: the mirror tables the views read (empty, in the shape
        of sql/views/mirrors/) and the views' own tables. Idempotent; runs in the
        caller's transaction, if any (no validation: see `install`)."""
        database = con.execute("SELECT current_database()").fetchall()[0][0]
        if database == SCHEMA:
            raise ViewError(
                f"the state file is named {SCHEMA}.duckdb: DuckDB names the database after "
                f"the file, which makes the views' schema `{SCHEMA}` ambiguous; give the "
                "state file another name"
            )
        for table in self.inputs:
            if not mirror_exists(con, table):
                schema = table.split(".", 1)[0]
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                self._create_mirror(con, table)
        for f in self.state_ddl:
            self._run(con, f, {})
        self._prepared = True

    def create_mirror_tables(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create every mirror table of sql/views/mirrors/ that does not exist yet (tests,
        simulations; the engine creates its mirrors from the change events)."""
        for f in self.mirror_ddl:
            for st in f.statements:
                schema = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)\.", st.sql)
                if schema:
                    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema[1]}"')
                con.execute(st.sql)

    def _create_mirror(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        wanted = f"CREATE TABLE IF NOT EXISTS {table} ("
        for f in self.mirror_ddl:
            for st in f.statements:
                if wanted in st.sql:
                    con.execute(st.sql)
                    log.info("created the empty mirror table %s (shape from %s)", table, f.path)
                    return
        raise ViewError(
            f"a view reads the mirror table {table}, which does not exist yet and has no "
            f"shape in {self.views_dir / 'mirrors'}; add its CREATE TABLE there"
        )

    # -- per batch --------------------------------------------------------------------

    def maintain(
        self,
        con: duckdb.DuckDBPyConnection,
        changes: Mapping[str, MirrorDelta],
        batch_id: int,
        detected_at: datetime,
    ) -> MaintainStats:
        """Bring every view up to date with one batch; runs in the caller's transaction.

        `changes`: the batch's deltas by mirror name (`schema.table`). A batch id at
        or below the last maintained one is a replay: nothing is done (`applied`
        False). A file runs when the batch changed one of its inputs or one of the
        inputs of a view it runs after (`-- after:`); the others do nothing, and only
        the tables the files that run read are staged. A delta whose keys' rows are the
        same before and after (events delivered again) changes nothing. A view with a
        truncated input is rebuilt from scratch (its findings stay).
        """
        started = time.perf_counter()
        if not self._prepared:  # the engine may hand over a state install() never saw
            self.prepare(con)
        last = self._last_batch(con)
        if last is not None and batch_id <= last:
            log.info("batch %d: already maintained (last %d), skipped", batch_id, last)
            return MaintainStats(batch_id, False, _ms(started))
        changed = {name for name, c in changes.items() if moved(c)}
        truncated = {name for name, c in changes.items() if c.truncated}
        values = self._values(batch_id, detected_at)
        timings: list[ViewTiming] = []
        figures = dict.fromkeys(FIGURES, 0)
        #: Files with a `-- returns:` header that ran on the batch, and their count.
        returned: list[tuple[SqlFile, int]] = []
        #: Files with a `-- stuck:` header that ran on the batch, and their old rows.
        stuck: list[tuple[SqlFile, int]] = []
        rebuild = {f.name for f in self.files if truncated & set(f.inputs)}
        run = [f for f in self.files if f.name in rebuild or changed & self._triggers[f.name]]
        runs = {f.name for f in run}
        # Only the tables the files that run read are staged.
        staged = sorted({t for f in run for t in f.inputs})
        try:
            stage_inputs(con, staged, changes)
            for f in self.files:
                if f.name not in runs:
                    timings.append(ViewTiming(f.name, 0.0, False))
                    continue
                t0 = time.perf_counter()
                if f.name in rebuild:
                    self._rebuild(con, f, values)
                    stage_inputs(con, f.inputs, changes)  # back to this batch's rows
                    result = None
                else:
                    result = self._run(con, f, values)
                timings.append(ViewTiming(f.name, _ms(t0), True))
                if f.returns is not None and result:
                    n = int(str(result[0][0]))
                    figures[f.returns] += n
                    returned.append((f, n))
                    if f.stuck is not None:
                        old = _count_rows(con, f.stuck, "<=", batch_id - STUCK_AFTER_BATCHES)
                        stuck.append((f, old))
            # A file that did not run wrote no row in this batch: only those that ran count.
            for f in run:
                for count in f.counts:
                    figures[count.figure] += _count_rows(con, count.rows, "=", batch_id)
            con.execute(
                f"INSERT INTO {_PROGRESS} (name, batch_id, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET batch_id = excluded.batch_id, "
                "updated = excluded.updated",
                [_BATCHES, batch_id, detected_at],
            )
        finally:
            drop_inputs(con, staged)
        for f, n in returned:
            if n:
                # At debug level: what a check counts often resolves a batch later (the
                # other leg of a transfer, in another partition); see `-- stuck:`.
                log.debug("batch %d: %d %s; see %s", batch_id, n, _label(f), _where(f))
        for f, n in stuck:
            if n > self._stuck_reported.get(f.name, 0):
                log.warning(
                    "batch %d: %d %s for %d batches or more; see %s",
                    batch_id,
                    n,
                    _label(f),
                    STUCK_AFTER_BATCHES,
                    _where(f),
                )
            self._stuck_reported[f.name] = n
        return MaintainStats(
            batch_id,
            True,
            _ms(started),
            tuple(timings),
            new_alerts=figures["new_alerts"],
            conservation_violations=figures["conservation_violations"],
        )

    def recompute_all(
        self,
        con: duckdb.DuckDBPyConnection,
        batch_id: int | None = None,
        detected_at: datetime | None = None,
    ) -> None:
        """Rebuild every view from the mirror tables alone (in the caller's transaction).

        The result is what the views would hold had the whole mirror arrived in one
        batch, which is what they hold after any batching of the same history (the
        views are functions of the mirror rows), bookkeeping aside: alerts are raised
        anew (detected now, in this batch).
        """
        if batch_id is None:
            batch_id = self._last_batch(con) or 0
        values = self._values(batch_id, detected_at or datetime.now(UTC))
        try:
            for f in self.files:
                self._rebuild(con, f, values, findings=True)
        finally:
            drop_inputs(con, self.inputs)

    def _rebuild(
        self,
        con: duckdb.DuckDBPyConnection,
        f: SqlFile,
        values: Mapping[str, object],
        *,
        findings: bool = False,
    ) -> None:
        """Rebuild one view from the whole mirror (its `-- state:` tables emptied first);
        `findings`: empty its `-- findings:` tables too."""
        for table in [*f.state, *(f.findings if findings else ())]:
            con.execute(f"DELETE FROM {quote_table(table)}")
        stage_inputs(con, f.inputs, {}, full=f.inputs)
        self._run(con, f, values)

    # -- helpers ----------------------------------------------------------------------

    def _values(self, batch_id: int, detected_at: datetime) -> dict[str, object]:
        return {**self.params, "batch_id": batch_id, "detected_at": detected_at}

    def _run(
        self, con: duckdb.DuckDBPyConnection, f: SqlFile, values: Mapping[str, object]
    ) -> list[tuple[object, ...]] | None:
        """Run a file's statements in order; returns the last statement's rows."""
        rows: list[tuple[object, ...]] | None = None
        for i, st in enumerate(f.statements, 1):
            params = f.bind(st, values)
            try:
                cur = con.execute(st.sql, params) if params else con.execute(st.sql)
                rows = cur.fetchall() if cur.description else None
            except duckdb.Error as exc:
                raise ViewError(
                    f"{f.path} (statement {i} of {len(f.statements)}): {duckdb_message(exc)}"
                ) from exc
        return rows

    def _last_batch(self, con: duckdb.DuckDBPyConnection) -> int | None:
        rows = con.execute(
            f"SELECT batch_id FROM {_PROGRESS} WHERE name = ?", [_BATCHES]
        ).fetchall()
        return None if not rows or rows[0][0] is None else int(rows[0][0])


def _triggers(views: list[SqlFile], checks: list[SqlFile]) -> dict[str, frozenset[str]]:
    """Per file, its inputs and, transitively, those of the views it runs after (views
    in their run order, then the checks)."""
    out: dict[str, frozenset[str]] = {}
    for f in [*views, *checks]:
        found = set(f.inputs)
        for name in f.after:
            found |= out.get(name, frozenset())
        out[f.name] = frozenset(found)
    return out


def _check_headers(f: SqlFile, params: Mapping[str, object]) -> None:
    """A file's headers against its SQL and the parameters given (at load)."""
    undeclared = sorted(f.used_params - ENGINE_PARAMS - set(f.params))
    if undeclared:
        raise ViewError(
            f"{f.path}: uses {', '.join('$' + p for p in undeclared)}, which its "
            "`-- params:` header does not declare"
        )
    missing = sorted(set(f.params) - ENGINE_PARAMS - params.keys())
    if missing:
        raise ViewError(
            f"{f.path}: its `-- params:` header declares "
            f"{', '.join('$' + p for p in missing)}, which the parameters given to the views "
            f"do not hold (given: {', '.join(sorted(params)) or 'none'})"
        )
    for figure in [*(c.figure for c in f.counts), *([f.returns] if f.returns else [])]:
        if figure not in FIGURES:
            raise ViewError(
                f"{f.path}: unknown figure {figure!r} in a header; known: {', '.join(FIGURES)}"
            )
    if f.stuck is not None and f.returns is None:
        raise ViewError(f"{f.path}: a `-- stuck:` header needs a `-- returns:` header")


def _check_tables(con: duckdb.DuckDBPyConnection, f: SqlFile) -> None:
    """The tables and columns a file's headers name exist (in the dry run)."""
    named: list[tuple[str, str, str]] = [
        *(("state", t, "*") for t in f.state),
        *(("findings", t, "*") for t in f.findings),
        *(("counts", c.rows.table, quote(c.rows.column)) for c in f.counts),
    ]
    if f.stuck is not None:
        named.append(("stuck", f.stuck.table, quote(f.stuck.column)))
    for header, table, select in named:
        try:
            con.execute(f"SELECT {select} FROM {quote_table(table)} LIMIT 0")
        except duckdb.Error as exc:
            raise ViewError(f"{f.path}: its `-- {header}:` header: {duckdb_message(exc)}") from exc


def _count_rows(con: duckdb.DuckDBPyConnection, rows: Column, op: str, batch_id: int) -> int:
    """Rows of `rows.table` whose `rows.column` is `op` `batch_id`."""
    sql = f"SELECT count(*) FROM {quote_table(rows.table)} WHERE {quote(rows.column)} {op} ?"
    found = con.execute(sql, [batch_id]).fetchall()
    return int(found[0][0]) if found and found[0][0] is not None else 0


def _label(f: SqlFile) -> str:
    return f.label or f"{f.returns} ({f.name})"


def _where(f: SqlFile) -> str:
    return f.stuck.table if f.stuck is not None else ", ".join(f.state) or str(f.path)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def recompute_all(
    con: duckdb.DuckDBPyConnection, views_dir: Path, params: Mapping[str, object]
) -> None:
    """Rebuild every derived view from the mirror tables (tests, integration checks)."""
    ViewMaintainer(views_dir, params).recompute_all(con)
