"""Which view files run in a batch, what is staged for them, and the views' clocks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from engine.core.config import Settings
from engine.lab.views.handbatch import HandBatch
from engine.state.deltas import MirrorDelta
from engine.views import MaintainStats, ViewMaintainer
from engine.views.inputs import moved
from engine.views.observer import ViewsObserver

SETTINGS = Settings()
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


class State:
    def __init__(self, views_dir: Path = SETTINGS.views_sql_dir) -> None:
        self.con = duckdb.connect(":memory:")
        self.views = ViewMaintainer(views_dir, SETTINGS.views.params())
        self.views.create_mirror_tables(self.con)
        self.views.install(self.con)
        self.batch_id = 0

    def maintain(self, changes: dict[str, MirrorDelta]) -> MaintainStats:
        self.batch_id += 1
        return self.views.maintain(self.con, changes, self.batch_id, T0)

    def commit(self, edit: HandBatch) -> MaintainStats:
        return self.maintain(edit.apply())

    def ran(self, stats: MaintainStats) -> set[str]:
        return {v.view for v in stats.views if v.ran}

    def clock(self, name: str) -> object:
        rows = self.con.execute("SELECT clock FROM live.progress WHERE name = ?", [name])
        return rows.fetchall()[0][0]

    def temp_tables(self) -> set[str]:
        rows = self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '\\_%' "
            "ESCAPE '\\'"
        ).fetchall()
        return {str(r[0]) for r in rows}


@pytest.fixture
def state() -> Iterator[State]:
    s = State()
    yield s
    s.con.close()


def txn(edit: HandBatch, txn_id: int, at: datetime, status: str = "pending") -> HandBatch:
    return edit.insert(
        "bank.transactions",
        txn_id=txn_id,
        account_id=1,
        kind="purchase",
        amount=-20,
        currency="EUR",
        channel="card_present",
        country="DE",
        status=status,
        created_at=at,
        updated_at=at,
    )


def score(edit: HandBatch, sid: int, points: int, at: datetime) -> HandBatch:
    return edit.insert(
        "arcade.scores", score_id=sid, player_id=7, match_id=1, points=points, achieved_at=at
    )


def test_the_observer_declares_the_mirrors_the_views_read() -> None:
    views = ViewMaintainer(SETTINGS.views_sql_dir, SETTINGS.views.params())
    observer = ViewsObserver(views)
    assert observer.mirrors == frozenset(views.inputs)
    assert "bank.transactions" in observer.mirrors and "arcade.scores" in observer.mirrors
    assert "bank.merchants" not in observer.mirrors  # no view reads it: not captured


def test_only_the_views_of_changed_inputs_run_and_nothing_is_left_staged(state: State) -> None:
    e = HandBatch(state.con)
    e.insert("arcade.players", player_id=7, name="p7", country="US", banned=False)
    stats = state.commit(score(e, 1, 10, T0))
    assert state.ran(stats) == {"leaderboard", "leaderboard_window"}
    assert not {t for t in state.temp_tables() if t.startswith(("_before_", "_after_"))}
    stats = state.commit(txn(HandBatch(state.con), 1, T0))
    assert state.ran(stats) == {"fraud_alerts", "account_risk", "transfer_conservation"}


def test_a_batch_delivered_again_runs_no_view_and_changes_nothing(state: State) -> None:
    e = HandBatch(state.con)
    e.insert("arcade.players", player_id=7, name="p7", country="US", banned=False)
    changes = score(e, 1, 10, T0).apply()
    state.maintain(changes)
    board = state.con.execute("SELECT * EXCLUDE (updated_batch) FROM live.leaderboard").fetchall()
    again = {t: MirrorDelta(c.mirror, c.after, c.after.reverse()) for t, c in changes.items()}
    assert not any(moved(c) for c in again.values())
    stats = state.maintain(again)
    assert stats.applied and state.ran(stats) == set()
    after = state.con.execute("SELECT * EXCLUDE (updated_batch) FROM live.leaderboard").fetchall()
    assert after == board


def test_a_delta_moves_when_one_row_differs_or_a_key_comes_or_goes(state: State) -> None:
    e = HandBatch(state.con)
    changes = txn(txn(e, 1, T0), 2, T0).apply()
    [delta] = changes.values()
    assert moved(delta)  # new keys
    assert not moved(MirrorDelta(delta.mirror, delta.after, delta.after))
    changed = delta.after.with_columns(delta.after["status"].set(delta.after["txn_id"] == 2, "x"))
    assert moved(MirrorDelta(delta.mirror, delta.after, changed))
    assert moved(MirrorDelta(delta.mirror, delta.after, delta.after, truncated=True))
    assert not moved(MirrorDelta(delta.mirror, delta.after.clear(), delta.after.clear()))


def test_a_view_runs_when_a_view_it_comes_after_had_its_inputs_changed(tmp_path: Path) -> None:
    views = tmp_path / "views"
    shutil.copytree(SETTINGS.views_sql_dir, views, ignore=shutil.ignore_patterns("scratch"))
    (views / "zz_first.sql").write_text(
        "-- inputs: arcade.scores\n-- state: live.zz\n"
        "CREATE OR REPLACE TEMP TABLE _zz_seen AS SELECT count(*) AS n FROM _after_arcade_scores;\n"
    )
    (views / "zz_then.sql").write_text(
        "-- inputs: bank.merchants\n-- after: zz_first\n-- state: live.zz\n"
        "INSERT INTO live.zz SELECT n FROM _zz_seen;\n"
    )
    (views / "state" / "009_zz.sql").write_text("CREATE TABLE IF NOT EXISTS live.zz (n BIGINT);\n")
    s = State(views)
    stats = s.commit(score(HandBatch(s.con), 1, 10, T0))
    assert {"zz_first", "zz_then"} <= s.ran(stats)
    assert s.con.execute("SELECT n FROM live.zz").fetchall() == [(1,)]


def test_the_fraud_clock_follows_the_newest_transaction(state: State) -> None:
    state.commit(txn(txn(HandBatch(state.con), 1, T0), 2, T0 + timedelta(minutes=5)))
    assert state.clock("fraud_alerts") == T0 + timedelta(minutes=5)
    # the newest one settles (its before-row is at the clock; its after-row still is)
    state.commit(HandBatch(state.con).update("bank.transactions", 2, status="settled"))
    assert state.clock("fraud_alerts") == T0 + timedelta(minutes=5)
    # the newest one moves back in time while a newer one comes
    e = HandBatch(state.con).update("bank.transactions", 2, created_at=T0 - timedelta(hours=1))
    state.commit(txn(e, 3, T0 + timedelta(minutes=1)))
    assert state.clock("fraud_alerts") == T0 + timedelta(minutes=1)
    # the newest one goes: the clock is looked up in the mirror
    state.commit(HandBatch(state.con).delete("bank.transactions", 3))
    assert state.clock("fraud_alerts") == T0
    # and further back than a day
    state.commit(txn(HandBatch(state.con), 4, T0 + timedelta(days=3)))
    state.commit(HandBatch(state.con).delete("bank.transactions", 4))
    assert state.clock("fraud_alerts") == T0
    # every transaction gone: no clock
    e = HandBatch(state.con).delete("bank.transactions", 1)
    state.commit(e.delete("bank.transactions", 2))
    assert state.clock("fraud_alerts") is None


def test_the_window_end_follows_the_newest_score(state: State) -> None:
    e = HandBatch(state.con)
    e.insert("arcade.players", player_id=7, name="p7", country="US", banned=False)
    state.commit(score(score(e, 1, 10, T0), 2, 20, T0 + timedelta(minutes=5)))
    assert state.clock("leaderboard_window") == T0 + timedelta(minutes=5)
    state.commit(HandBatch(state.con).update("arcade.scores", 2, points=25, corrected=True))
    assert state.clock("leaderboard_window") == T0 + timedelta(minutes=5)
    state.commit(HandBatch(state.con).delete("arcade.scores", 2))
    assert state.clock("leaderboard_window") == T0
    state.commit(score(HandBatch(state.con), 3, 5, T0 + timedelta(days=2)))
    state.commit(HandBatch(state.con).delete("arcade.scores", 3))
    assert state.clock("leaderboard_window") == T0
