"""Compare incrementally maintained views with their from-scratch definitions.

`sql/views/scratch/<view>.sql` defines a view's rows directly over the mirror
tables (a plain SELECT). `differences` runs it and reports every row where the
maintained table disagrees; tests and the integration check assert it is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import duckdb

from engine.views.sqlfiles import load_file, quote

#: Columns compared, in the order the scratch queries return them.
COLUMNS = (
    "player_id",
    "name",
    "country",
    "total_points",
    "best_points",
    "scores",
    "rank",
    "prev_rank",
    "rank_change",
)


def scratch_rows(
    con: duckdb.DuckDBPyConnection, views_dir: Path, view: str, params: Mapping[str, object]
) -> list[tuple[object, ...]]:
    f = load_file(views_dir / "scratch" / f"{view}.sql")
    rows: list[tuple[object, ...]] = []
    for st in f.statements:
        rows = con.execute(st.sql, f.bind(st, params)).fetchall()
    return rows


def maintained_rows(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[object, ...]]:
    cols = ", ".join(COLUMNS)
    return con.execute(f"SELECT {cols} FROM live.{quote(view)} ORDER BY player_id").fetchall()


def differences(
    con: duckdb.DuckDBPyConnection,
    views_dir: Path,
    params: Mapping[str, object],
    views: tuple[str, ...] = ("leaderboard", "leaderboard_window"),
) -> dict[str, list[str]]:
    """Per view, a description of each disagreeing row (empty lists: all equal)."""
    out: dict[str, list[str]] = {}
    for view in views:
        want = {r[0]: r for r in scratch_rows(con, views_dir, view, params)}
        have = {r[0]: r for r in maintained_rows(con, view)}
        diffs = []
        for key in sorted(want.keys() | have.keys(), key=str):
            w, h = want.get(key), have.get(key)
            if w != h:
                diffs.append(f"player {key}: maintained {h}, from scratch {w}")
        out[view] = diffs
    return out
