"""leaderboard and leaderboard_window: hand-built batches on in-memory DuckDB."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from engine.core.config import Settings
from engine.decode.model import MirrorName
from engine.lab.views.handbatch import HandBatch
from engine.lab.views.scratch import differences
from engine.lab.views.simulate import run_plan
from engine.lab.workload.plan import PlanConfig
from engine.state.deltas import MirrorDelta
from engine.views import ViewMaintainer

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(leaderboard_window_min=60)


class Board:
    """A state with the views installed, fed by hand-built batches."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        self.views = ViewMaintainer(SETTINGS.views_sql_dir, SETTINGS.views.params())
        self.views.create_mirror_tables(self.con)
        self.views.install(self.con)
        self.batch_ids = itertools.count(1)
        self.last_changes: dict[str, MirrorDelta] = {}

    def batch(self) -> HandBatch:
        return HandBatch(self.con)

    def commit(self, edit: HandBatch, batch_id: int | None = None) -> None:
        self.last_changes = edit.apply()
        self.maintain(self.last_changes, batch_id)

    def maintain(self, changes: dict[str, MirrorDelta], batch_id: int | None = None) -> bool:
        bid = next(self.batch_ids) if batch_id is None else batch_id
        stats = self.views.maintain(self.con, changes, bid, T0)
        return stats.applied

    def board(self, view: str = "leaderboard") -> dict[int, tuple[object, ...]]:
        rows = self.con.execute(
            f"SELECT player_id, total_points, best_points, scores, rank, rank_change "
            f"FROM live.{view} ORDER BY player_id"
        ).fetchall()
        return {int(r[0]): r[1:] for r in rows}

    def assert_matches_scratch(self) -> None:
        diffs = differences(self.con, SETTINGS.views_sql_dir, self.views.params)
        assert diffs == {"leaderboard": [], "leaderboard_window": []}


def player(edit: HandBatch, pid: int, name: str = "", banned: bool = False) -> HandBatch:
    return edit.insert(
        "arcade.players", player_id=pid, name=name or f"p{pid}", country="US", banned=banned
    )


def score(edit: HandBatch, sid: int, pid: int, points: int, at: datetime = T0) -> HandBatch:
    return edit.insert(
        "arcade.scores", score_id=sid, player_id=pid, match_id=1, points=points, achieved_at=at
    )


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board()
    yield b
    b.con.close()


def test_inserts_total_best_and_rank(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 100)
    score(e, 11, 1, 300)
    score(e, 12, 2, 350)
    board.commit(e)
    # (total, best, scores, rank, rank_change); one score only: rank_change NULL. Player
    # 1's latest score (same time, higher id) took it from 2nd to 1st.
    assert board.board() == {1: (400, 300, 2, 1, 1), 2: (350, 350, 1, 2, None)}
    board.assert_matches_scratch()


def test_rank_change_is_what_the_latest_score_gained(board: Board) -> None:
    """prev_rank: the rank without the player's latest score, against the others'
    current totals (not the rank before the previous batch: that depends on the cut)."""
    e = board.batch()
    player(e, 1)
    player(e, 2)
    player(e, 3)
    score(e, 10, 1, 300)
    score(e, 11, 2, 200)
    score(e, 12, 3, 100)
    board.commit(e)
    board.commit(score(board.batch(), 13, 3, 250))  # player 3: 350, overtakes both
    assert board.board() == {
        1: (300, 300, 1, 2, None),
        2: (200, 200, 1, 3, None),
        3: (350, 250, 2, 1, 2),
    }
    board.commit(score(board.batch(), 14, 2, 1))  # player 2's point moves nobody
    assert [r[4] for r in board.board().values()] == [None, 0, 2]
    board.assert_matches_scratch()


def test_correction_of_the_best_score_recomputes_best(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    score(e, 10, 1, 500)
    score(e, 11, 1, 200)
    board.commit(e)
    board.commit(board.batch().update("arcade.scores", 10, points=150, corrected=True))
    assert board.board()[1][:3] == (350, 200, 2)
    board.commit(board.batch().update("arcade.scores", 11, points=900, corrected=True))
    assert board.board()[1][:3] == (1050, 900, 2)
    board.assert_matches_scratch()


def test_deleted_scores_are_retracted_and_an_empty_player_leaves(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 500)
    score(e, 11, 1, 200)
    score(e, 12, 2, 50)
    board.commit(e)
    board.commit(board.batch().delete("arcade.scores", 10))
    assert board.board()[1][:3] == (200, 200, 1)
    board.commit(board.batch().delete("arcade.scores", 12))
    assert 2 not in board.board()
    board.assert_matches_scratch()


def test_banned_player_disappears_and_returns_when_unbanned(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 500)
    score(e, 11, 2, 100)
    score(e, 12, 2, 100)
    board.commit(e)
    # the ban and the deletion of the season's scores commit together
    board.commit(board.batch().update("arcade.players", 1, banned=True).delete("arcade.scores", 10))
    # rank_change 0: player 2's latest score moved it nowhere (1's ban is no score of 2's)
    assert board.board() == {2: (200, 100, 2, 1, 0)}
    board.commit(score(board.batch(), 13, 1, 50))  # a banned player's score stays hidden
    assert 1 not in board.board()
    board.commit(board.batch().update("arcade.players", 1, banned=False))
    assert board.board()[1][:4] == (50, 50, 1, 2)
    board.assert_matches_scratch()


def test_score_moved_to_another_player_touches_both(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 500)
    score(e, 11, 2, 100)
    board.commit(e)
    board.commit(board.batch().update("arcade.scores", 10, player_id=2))
    assert board.board() == {2: (600, 500, 2, 1, 0)}
    board.assert_matches_scratch()


def test_score_before_its_player_waits_off_the_board(board: Board) -> None:
    board.commit(score(board.batch(), 10, 1, 500))  # the players topic lags behind
    assert board.board() == {}
    board.commit(player(board.batch(), 1, name="late"))
    assert board.board() == {1: (500, 500, 1, 1, None)}
    assert board.con.execute("SELECT name FROM live.leaderboard").fetchall() == [("late",)]


def test_rename_shows_on_the_board(board: Board) -> None:
    e = board.batch()
    player(e, 1, name="old")
    score(e, 10, 1, 5)
    board.commit(e)
    board.commit(board.batch().update("arcade.players", 1, name="new"))
    assert board.con.execute("SELECT name FROM live.leaderboard").fetchall() == [("new",)]


def test_replayed_batch_is_not_counted_twice(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    score(e, 10, 1, 100)
    board.commit(e, batch_id=5)
    before = board.board()
    # The same batch maintained again (same id, same before/after rows): skipped.
    assert board.maintain(board.last_changes, batch_id=5) is False
    # Its events delivered again in a later batch: each key's before equals its after.
    redelivered = {
        t: MirrorDelta(c.mirror, c.after, c.after) for t, c in board.last_changes.items()
    }
    assert board.maintain(redelivered, batch_id=6) is True
    assert {k: v[:4] for k, v in board.board().items()} == {k: v[:4] for k, v in before.items()}
    board.assert_matches_scratch()


def test_truncated_scores_rebuild_the_views(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    score(e, 10, 1, 100)
    board.commit(e)
    gone = board.con.sql("SELECT * FROM arcade.scores").pl()
    board.con.execute("DELETE FROM arcade.scores")
    empty = gone.clear()
    assert board.maintain(
        {"arcade.scores": MirrorDelta(MirrorName("arcade", "scores"), gone, empty, truncated=True)}
    )
    assert board.board() == {}
    assert board.board("leaderboard_window") == {}
    board.assert_matches_scratch()


def test_window_counts_by_event_time_and_takes_late_scores(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 100, T0 - timedelta(minutes=90))  # before the window
    score(e, 11, 1, 40, T0 - timedelta(minutes=30))
    score(e, 12, 2, 70, T0)  # the newest event: the window ends here
    board.commit(e)
    assert board.board("leaderboard_window") == {1: (40, 40, 1, 2, None), 2: (70, 70, 1, 1, None)}
    # A late score whose own time is inside the window counts...
    board.commit(score(board.batch(), 13, 1, 50, T0 - timedelta(minutes=59)))
    assert board.board("leaderboard_window")[1][:4] == (90, 50, 2, 1)
    # ...one older than the window does not (it still counts on the all-time board).
    board.commit(score(board.batch(), 14, 2, 500, T0 - timedelta(minutes=61)))
    assert board.board("leaderboard_window")[2][:3] == (70, 70, 1)
    assert board.board()[2][:3] == (570, 500, 2)
    board.assert_matches_scratch()


def test_window_slides_as_event_time_advances(board: Board) -> None:
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 100, T0)
    board.commit(e)
    board.commit(score(board.batch(), 11, 2, 5, T0 + timedelta(minutes=45)))
    assert set(board.board("leaderboard_window")) == {1, 2}
    # The clock moves to T0 + 70 min: player 1's only score slides out of the window.
    board.commit(score(board.batch(), 12, 2, 5, T0 + timedelta(minutes=70)))
    assert board.board("leaderboard_window") == {2: (10, 5, 2, 1, 0)}
    board.assert_matches_scratch()


def test_random_edits_match_the_from_scratch_definition(board: Board) -> None:
    """Many small batches of inserts, corrections, moves, deletes, bans and late
    events; after every batch the maintained views equal the from-scratch ones."""
    rng = random.Random(7)
    players = list(range(1, 16))
    e = board.batch()
    for pid in players:
        player(e, pid)
    board.commit(e)
    live: dict[int, int] = {}
    sid = itertools.count(100)
    clock = T0
    for _ in range(60):
        e = board.batch()
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.5 or not live:
                s = next(sid)
                clock += timedelta(minutes=rng.randint(0, 9))
                late = timedelta(minutes=rng.choice([0, 0, 0, 20, 75]))
                live[s] = rng.choice(players)
                score(e, s, live[s], rng.randint(0, 1000), clock - late)
            elif roll < 0.7:
                e.update("arcade.scores", rng.choice(sorted(live)), points=rng.randint(0, 1000))
            elif roll < 0.8:
                s = rng.choice(sorted(live))
                live[s] = rng.choice(players)
                e.update("arcade.scores", s, player_id=live[s])
            elif roll < 0.9:
                gone = rng.choice(sorted(live))
                del live[gone]
                e.delete("arcade.scores", gone)
            else:
                e.update("arcade.players", rng.choice(players), banned=rng.random() < 0.5)
        board.commit(e)
        board.assert_matches_scratch()


def test_incremental_equals_recompute_all_after_a_generated_run(board: Board) -> None:
    """A generated arcade run (matches, corrections, bans, removals) in 300-event
    batches; the maintained views equal the from-scratch definitions and a rebuild."""
    run_plan(
        board.con, board.views, "arcade", PlanConfig(seed=3), events=6000, events_per_batch=300
    )
    assert len(board.board()) > 50
    board.assert_matches_scratch()
    incremental = [_ranked(board.board(v)) for v in ("leaderboard", "leaderboard_window")]
    board.views.recompute_all(board.con)
    rebuilt = [_ranked(board.board(v)) for v in ("leaderboard", "leaderboard_window")]
    assert rebuilt == incremental


def _ranked(rows: dict[int, tuple[object, ...]]) -> dict[int, tuple[object, ...]]:
    """Every column read, rank_change included (a function of the mirror rows too)."""
    return rows


def test_window_end_moves_back_when_the_newest_score_goes(board: Board) -> None:
    """The window ends at the newest achieved_at among the mirror's scores: deleting
    that score brings the older ones back, as a history without it would have."""
    e = board.batch()
    player(e, 1)
    player(e, 2)
    score(e, 10, 1, 100, T0)
    board.commit(e)
    board.commit(score(board.batch(), 11, 2, 5, T0 + timedelta(minutes=70)))
    assert set(board.board("leaderboard_window")) == {2}
    board.commit(board.batch().delete("arcade.scores", 11))
    assert board.board("leaderboard_window") == {1: (100, 100, 1, 1, None)}
    board.assert_matches_scratch()
