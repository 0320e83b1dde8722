"""The fold's batch observer hands the views one MirrorDelta per mirror."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl

from engine.core.config import Settings
from engine.decode.model import MirrorName
from engine.state.deltas import MirrorDelta
from engine.views import MaintainStats, ViewMaintainer
from engine.views.observer import ViewsObserver, by_mirror

T = datetime(2024, 1, 1, tzinfo=UTC)


def scores(*rows: tuple[int, int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "score_id": [r[0] for r in rows],
            "player_id": [r[1] for r in rows],
            "points": [r[2] for r in rows],
        },
        schema={"score_id": pl.Int64, "player_id": pl.Int64, "points": pl.Int32},
    )


def test_two_deltas_of_one_mirror_join_per_key() -> None:
    con = duckdb.connect(":memory:")
    settings = Settings()
    ViewMaintainer(settings.views_sql_dir, settings.views.params()).create_mirror_tables(con)
    name = MirrorName("arcade", "scores")
    first = MirrorDelta(name, scores((1, 7, 10)), scores((1, 7, 20), (2, 7, 5)))
    # the second delta saw the first one's result: key 1 is 20 before it, then deleted
    second = MirrorDelta(name, scores((1, 7, 20), (3, 8, 1)), scores((3, 8, 2)))
    [(table, changes)] = by_mirror(con, [first, second]).items()
    assert table == "arcade.scores"
    assert sorted(changes.before.rows()) == [(1, 7, 10), (3, 8, 1)]
    assert sorted(changes.after.rows()) == [(2, 7, 5), (3, 8, 2)]


def test_observer_maintains_and_reports() -> None:
    settings = Settings()
    con = duckdb.connect(":memory:")
    maintainer = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    maintainer.create_mirror_tables(con)
    con.execute("INSERT INTO arcade.players (player_id, name, banned) VALUES (7, 'x', false)")
    con.execute(
        "INSERT INTO arcade.scores (score_id, player_id, points, achieved_at) VALUES (1, 7, 10, ?)",
        [T],
    )
    seen: list[MaintainStats] = []
    observer = ViewsObserver(maintainer, seen.append)
    after = con.sql("SELECT * FROM arcade.scores").pl()
    observer(con, 1, (MirrorDelta(MirrorName("arcade", "scores"), after.clear(), after),))
    assert observer.last is not None and observer.last.applied and seen == [observer.last]
    assert con.execute("SELECT player_id, total_points FROM live.leaderboard").fetchall() == [
        (7, 10)
    ]
