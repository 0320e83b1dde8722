"""Hook the views into the engine's fold: a `BatchObserver` for `StateWriter`.

    maintainer = ViewMaintainer(views_dir, params)   # params: the views' $parameters
    maintainer.install(store.connection)             # once, outside a transaction
    writer = StateWriter(store, group, observers=[ViewsObserver(maintainer)])

The writer calls the observer inside each batch's transaction, after the mirrors
changed and before the offsets are written; an exception rolls the batch back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import duckdb
import polars as pl

from engine.state.deltas import MirrorDelta
from engine.views.contract import MaintainStats
from engine.views.maintainer import ViewMaintainer

log = logging.getLogger(__name__)


def by_mirror(
    conn: duckdb.DuckDBPyConnection, deltas: Sequence[MirrorDelta]
) -> dict[str, MirrorDelta]:
    """The fold's deltas by mirror name (`schema.table`), as the views take them.

    Two deltas of one mirror in a batch (two topics feeding one table) are joined
    per key: the first delta's before-row and the last delta's after-row.
    """
    out: dict[str, MirrorDelta] = {}
    for d in deltas:
        name = str(d.mirror)
        prev = out.get(name)
        if prev is None:
            out[name] = d
            continue
        key = primary_key(conn, d.mirror.schema, d.mirror.table)
        seen = prev.before.select(key).vstack(prev.after.select(key)).unique()
        before = pl.concat(
            [prev.before, d.before.join(seen, on=key, how="anti")], how="diagonal_relaxed"
        )
        after = pl.concat(
            [prev.after.join(d.before.select(key), on=key, how="anti"), d.after],
            how="diagonal_relaxed",
        )
        out[name] = MirrorDelta(
            d.mirror, before, after, prev.truncated or d.truncated, d.columns or prev.columns
        )
    return out


def primary_key(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [schema, table],
    ).fetchall()
    return [str(c) for c in rows[0][0]] if rows else []


class ViewsObserver:
    """Maintains the views with each folded batch; `last` holds the latest stats.

    `mirrors`: the mirror tables the views and checks read (their `-- inputs:`
    headers); the writer captures before/after rows of those only.
    """

    def __init__(
        self,
        maintainer: ViewMaintainer,
        on_stats: Callable[[MaintainStats], None] | None = None,
    ) -> None:
        self.maintainer = maintainer
        self.on_stats = on_stats
        self.last: MaintainStats | None = None
        self.mirrors: frozenset[str] = frozenset(maintainer.inputs)

    def __call__(
        self, conn: duckdb.DuckDBPyConnection, batch_id: int, deltas: tuple[MirrorDelta, ...]
    ) -> None:
        stats = self.maintainer.maintain(conn, by_mirror(conn, deltas), batch_id, datetime.now(UTC))
        self.last = stats
        log.debug(
            "batch %d: views maintained in %.1f ms (%s)",
            batch_id,
            stats.ms,
            ", ".join(f"{v.view} {v.ms:.1f}" for v in stats.views if v.ran),
        )
        if self.on_stats is not None:
            self.on_stats(stats)
