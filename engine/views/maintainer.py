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

from engine.core.config import Settings
from engine.core.errors import ViewError
from engine.state.deltas import MirrorDelta
from engine.views.contract import MaintainStats, ViewTiming
from engine.views.inputs import drop_inputs, mirror_exists, stage_inputs
from engine.views.sqlfiles import SqlFile, duckdb_message, load_dir, order_views

log = logging.getLogger(__name__)

#: State tables each view writes; emptied when the view is rebuilt from scratch.
VIEW_STATE: Mapping[str, tuple[str, ...]] = {
    "leaderboard": ("live.player_totals", "live.leaderboard"),
    "leaderboard_window": ("live.leaderboard_window",),
    "fraud_alerts": ("live.payment_buckets",),
    "account_risk": ("live.account_risk",),
    "transfer_conservation": ("live.unbalanced_transfers",),
}
#: Findings a view keeps when an input table is truncated (they are cleared only by
#: `recompute_all`): alerts stay raised even if the rows behind them are gone.
VIEW_FINDINGS: Mapping[str, tuple[str, ...]] = {"fraud_alerts": ("live.fraud_alerts",)}
#: Schema of the views' tables (sql/views/state/).
SCHEMA = "live"
#: live.progress row holding the last maintained batch.
_BATCHES = "batches"
#: A transfer leg whose other leg sits in another partition usually arrives a batch or
#: two later; one still unbalanced after this many batches is warned about.
STUCK_AFTER_BATCHES = 20


def view_params(settings: Settings) -> dict[str, object]:
    """The settings the view SQL may use, as named parameters ($fraud_tiny_eur, ...)."""
    names = [n for n in vars(settings) if n.startswith(("fraud_", "leaderboard_"))]
    return {n: getattr(settings, n) for n in sorted(names)}


class ViewMaintainer:
    """Loads sql/views/ and maintains its views in a DuckDB state."""

    def __init__(self, views_dir: Path, settings: Settings) -> None:
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
        self.params = view_params(settings)
        #: Mirror tables some view or check reads.
        self.inputs = tuple(sorted({t for f in self.files for t in f.inputs}))
        self._prepared = False
        #: Transfers reported as stuck half-written (warned again only when more are).
        self._stuck_reported = 0

    @property
    def files(self) -> list[SqlFile]:
        return [*self.views, *self.checks]

    # -- start ------------------------------------------------------------------------

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the views' tables, then dry-run every view and check on an empty batch.

        Call outside any open transaction. A mirror table a view reads that no event
        created yet is created with the shape in sql/views/mirrors/ (the shape the
        engine's fold gives it), so that the dry run checks each view against the
        real tables: a file that does not parse, reads an unknown table or column, or
        uses an unknown parameter raises ViewError naming the file and quoting DuckDB.
        The dry run's effects are rolled back.
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
        False). Views whose inputs the batch did not change are skipped.
        A view with a truncated input is rebuilt from scratch (raised alerts stay).
        """
        started = time.perf_counter()
        if not self._prepared:  # the engine may hand over a state install() never saw
            self.prepare(con)
        last = self._last_batch(con)
        if last is not None and batch_id <= last:
            log.info("batch %d: already maintained (last %d), skipped", batch_id, last)
            return MaintainStats(batch_id, False, _ms(started))
        changed = {
            name for name, c in changes.items() if c.truncated or c.before.height or c.after.height
        }
        truncated = {name for name, c in changes.items() if c.truncated}
        values = self._values(batch_id, detected_at)
        timings: list[ViewTiming] = []
        violations = 0
        stuck = None
        try:
            stage_inputs(con, self.inputs, changes)
            rebuild = [f for f in self.files if truncated & set(f.inputs)]
            for f in self.files:
                t0 = time.perf_counter()
                if f in rebuild:
                    self._rebuild(con, f, values)
                    stage_inputs(con, self.inputs, changes)  # back to this batch's rows
                    result = None
                elif changed & set(f.inputs):
                    result = self._run(con, f, values)
                else:
                    timings.append(ViewTiming(f.name, 0.0, False))
                    continue
                timings.append(ViewTiming(f.name, _ms(t0), True))
                if f.name == "transfer_conservation" and result:
                    violations = int(str(result[0][0]))
                    stuck = _scalar(
                        con,
                        "SELECT count(*) FROM live.unbalanced_transfers WHERE batch_id <= ?",
                        batch_id - STUCK_AFTER_BATCHES,
                    )
            new_alerts = _scalar(
                con, "SELECT count(*) FROM live.fraud_alerts WHERE first_batch = ?", batch_id
            )
            con.execute(
                "INSERT INTO live.progress (name, batch_id, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET batch_id = excluded.batch_id, "
                "updated = excluded.updated",
                [_BATCHES, batch_id, detected_at],
            )
        finally:
            drop_inputs(con, self.inputs)
        if violations:
            # Usual while legs in different partitions arrive in different batches.
            log.debug(
                "batch %d: %d transfer(s) unbalanced in the bank mirror (one leg missing or "
                "not offsetting the other); see live.unbalanced_transfers",
                batch_id,
                violations,
            )
        if stuck is not None:
            if stuck > self._stuck_reported:
                log.warning(
                    "batch %d: %d transfer(s) unbalanced in the bank mirror for %d batches or "
                    "more (a leg missing or not offsetting the other); see "
                    "live.unbalanced_transfers",
                    batch_id,
                    stuck,
                    STUCK_AFTER_BATCHES,
                )
            self._stuck_reported = stuck
        return MaintainStats(
            batch_id,
            True,
            _ms(started),
            tuple(timings),
            new_alerts=new_alerts,
            conservation_violations=violations,
        )

    def recompute_all(
        self,
        con: duckdb.DuckDBPyConnection,
        batch_id: int | None = None,
        detected_at: datetime | None = None,
    ) -> None:
        """Rebuild every view from the mirror tables alone (in the caller's transaction).

        The result is what the views would hold had the whole mirror arrived in one
        batch. Alerts are raised anew (detected now); ranks have no previous batch.
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
        """Rebuild one view from the whole mirror; `findings`: clear its alerts too."""
        tables = [*VIEW_STATE.get(f.name, ()), *(VIEW_FINDINGS.get(f.name, ()) if findings else ())]
        for table in tables:
            con.execute(f"DELETE FROM {table}")
        stage_inputs(con, self.inputs, {}, full=f.inputs)
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
            "SELECT batch_id FROM live.progress WHERE name = ?", [_BATCHES]
        ).fetchall()
        return None if not rows or rows[0][0] is None else int(rows[0][0])


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> int:
    rows = con.execute(sql, list(params)).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def recompute_all(
    con: duckdb.DuckDBPyConnection,
    settings: Settings | None = None,
    views_dir: Path | None = None,
) -> None:
    """Rebuild every derived view from the mirror tables (tests, integration checks)."""
    settings = settings or Settings()
    ViewMaintainer(views_dir or settings.views_sql_dir, settings).recompute_all(con)
