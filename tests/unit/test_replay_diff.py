"""changefold diff: rows only in A, only in B, changed; exit codes; internal tables skipped."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from engine.app.cli import main
from engine.core.errors import ReplayError
from engine.replay.diff import diff_states


def _state(path: Path, players: list[tuple[int, str, int]], log: tuple[str, ...] = ()) -> Path:
    conn = duckdb.connect(str(path))
    conn.execute("CREATE SCHEMA arcade")
    conn.execute(
        "CREATE TABLE arcade.players (player_id BIGINT PRIMARY KEY, name VARCHAR, pts INT)"
    )
    conn.executemany("INSERT INTO arcade.players VALUES (?, ?, ?)", players)
    conn.execute("CREATE TABLE arcade.events (what VARCHAR)")  # no key: compared as a multiset
    for line in log:
        conn.execute("INSERT INTO arcade.events VALUES (?)", [line])
    conn.execute("CREATE SCHEMA _changefold")
    conn.execute("CREATE TABLE _changefold.batches (batch_id BIGINT)")
    conn.execute("INSERT INTO _changefold.batches VALUES (?)", [len(players)])
    conn.close()
    return path


def test_equal_states(tmp_path: Path) -> None:
    rows = [(1, "ann", 10), (2, "bob", 20)]
    a = _state(tmp_path / "a.duckdb", rows, ("x", "x"))
    b = _state(tmp_path / "b.duckdb", list(reversed(rows)), ("x", "x"))
    result = diff_states(a, b)
    assert not result.differs
    assert {t.table for t in result.tables} == {"arcade.players", "arcade.events"}


def test_only_in_a_only_in_b_and_changed(tmp_path: Path) -> None:
    a = _state(tmp_path / "a.duckdb", [(1, "ann", 10), (2, "bob", 20), (3, "cy", 5)], ("x",))
    b = _state(tmp_path / "b.duckdb", [(1, "ann", 10), (2, "bob", 21), (4, "di", 7)], ("x", "x"))
    result = diff_states(a, b)
    players = next(t for t in result.tables if t.table == "arcade.players")
    assert (players.only_a, players.only_b, players.changed) == (1, 1, 1)
    assert players.samples["only_a"][0]["player_id"] == 3
    assert players.samples["only_b"][0]["player_id"] == 4
    changed = players.samples["changed"][0]
    assert changed["player_id"] == 2
    assert (changed["a"]["pts"], changed["b"]["pts"]) == (20, 21)
    events = next(t for t in result.tables if t.table == "arcade.events")
    assert (events.only_a, events.only_b) == (0, 1)  # duplicates count
    assert result.differs


def test_ignored_column_and_excluded_table(tmp_path: Path) -> None:
    a = _state(tmp_path / "a.duckdb", [(1, "ann", 10)], ("x",))
    b = _state(tmp_path / "b.duckdb", [(1, "ann", 11)], ("y",))
    assert diff_states(a, b).differs
    assert not diff_states(a, b, exclude=("arcade.events",), ignore_columns=("pts",)).differs


def test_cli_exit_codes(tmp_path: Path) -> None:
    a = _state(tmp_path / "a.duckdb", [(1, "ann", 10)])
    same = _state(tmp_path / "same.duckdb", [(1, "ann", 10)])
    other = _state(tmp_path / "other.duckdb", [(1, "ann", 12)])
    runner = CliRunner()
    ok = runner.invoke(main, ["diff", str(a), str(same)])
    assert ok.exit_code == 0, ok.output
    assert "states are equal" in ok.output
    bad = runner.invoke(main, ["diff", str(a), str(other), "--json"])
    assert bad.exit_code == 1
    assert '"changed": 1' in bad.output


def test_missing_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    a = _state(tmp_path / "a.duckdb", [(1, "ann", 10)])
    with pytest.raises(ReplayError, match="no state file"):
        diff_states(a, tmp_path / "nope.duckdb")
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(ReplayError, match="cannot open"):
        diff_states(a, junk)


def _views_state(path: Path, batch: int, detected: str, severity: float) -> Path:
    conn = duckdb.connect(str(path))
    conn.execute("CREATE SCHEMA live")
    conn.execute(
        "CREATE TABLE live.fraud_alerts (alert_id VARCHAR PRIMARY KEY, severity DOUBLE, "
        "detected_at TIMESTAMPTZ, first_batch BIGINT, last_batch BIGINT)"
    )
    conn.execute(
        "INSERT INTO live.fraud_alerts VALUES ('a1', ?, ?::TIMESTAMPTZ, ?, ?)",
        [severity, detected, batch, batch],
    )
    conn.execute("CREATE SCHEMA arcade")
    conn.execute("CREATE TABLE arcade.players (player_id BIGINT PRIMARY KEY, last_batch BIGINT)")
    conn.execute("INSERT INTO arcade.players VALUES (1, ?)", [batch])
    conn.close()
    return path


def test_views_bookkeeping_columns_are_skipped_unless_asked(tmp_path: Path) -> None:
    """Batch ids and wall-clock detection times follow the batching, not the history:
    not compared by default, in schema live only; view data still is."""
    a = _views_state(tmp_path / "a.duckdb", 3, "2026-01-01 10:00:00+00", 0.7)
    b = _views_state(tmp_path / "b.duckdb", 9, "2026-01-01 10:05:00+00", 0.7)
    result = diff_states(a, b)
    by_table = {t.table: t for t in result.tables}
    assert not by_table["live.fraud_alerts"].differs
    # a mirror's column of the same name is data: compared
    assert by_table["arcade.players"].changed == 1
    assert diff_states(a, b, bookkeeping=True, exclude=("arcade.players",)).differs
    assert not diff_states(a, b, exclude=("arcade.players",)).differs
    c = _views_state(tmp_path / "c.duckdb", 3, "2026-01-01 10:00:00+00", 0.9)
    assert diff_states(a, c).differs  # severity is view data
