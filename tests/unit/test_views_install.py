"""Loading and installing the view files; bad files stop the start with a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from engine.core.config import Settings
from engine.core.errors import ViewError
from engine.views import ViewMaintainer, view_params
from engine.views.sqlfiles import load_file, order_views

SETTINGS = Settings()
VIEWS = SETTINGS.views_sql_dir


def copy_views(tmp_path: Path) -> Path:
    target = tmp_path / "views"
    shutil.copytree(VIEWS, target, ignore=shutil.ignore_patterns("scratch"))
    return target


def test_views_are_one_file_each_and_ordered_by_their_headers() -> None:
    views = ViewMaintainer(VIEWS, SETTINGS)
    names = [f.name for f in views.views]
    assert sorted(names) == ["account_risk", "fraud_alerts", "leaderboard", "leaderboard_window"]
    assert names.index("fraud_alerts") < names.index("account_risk")
    assert views.inputs == (
        "arcade.players",
        "arcade.scores",
        "bank.accounts",
        "bank.devices",
        "bank.transactions",
    )


def test_install_on_a_fresh_state_creates_missing_mirrors_and_the_view_tables() -> None:
    con = duckdb.connect(":memory:")
    ViewMaintainer(VIEWS, SETTINGS).install(con)
    tables = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
        ).fetchall()
    }
    assert {
        "bank.transactions",
        "arcade.scores",
        "live.leaderboard",
        "live.fraud_alerts",
    } <= tables
    # installing again (the next engine start) changes nothing and does not fail
    ViewMaintainer(VIEWS, SETTINGS).install(con)


def test_install_keeps_an_existing_mirror_as_it_is() -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA arcade")
    con.execute(
        "CREATE TABLE arcade.scores (score_id BIGINT PRIMARY KEY, player_id BIGINT, "
        "match_id BIGINT, points INTEGER, achieved_at TIMESTAMPTZ, corrected BOOLEAN, "
        "extra VARCHAR)"
    )
    con.execute("INSERT INTO arcade.scores (score_id, points) VALUES (1, 5)")
    ViewMaintainer(VIEWS, SETTINGS).install(con)
    assert con.execute("SELECT score_id, extra FROM arcade.scores").fetchall() == [(1, None)]


def test_a_view_that_does_not_parse_names_the_file(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "broken.sql").write_text("-- inputs: arcade.scores\nSELEC 1 FROM arcade.scores;\n")
    with pytest.raises(ViewError, match=r"broken\.sql does not parse: Parser Error: syntax error"):
        ViewMaintainer(views, SETTINGS)


def test_a_view_reading_an_unknown_table_stops_the_start(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(
        "-- inputs: arcade.scores\nCREATE OR REPLACE TEMP TABLE x AS SELECT * FROM arcade.nope;\n"
    )
    maintainer = ViewMaintainer(views, SETTINGS)
    con = duckdb.connect(":memory:")
    with pytest.raises(ViewError, match=r"stray\.sql \(statement 1 of 1\): Catalog Error: .*nope"):
        maintainer.install(con)
    # nothing of the dry run is left behind, the derived tables are
    assert con.execute("SELECT count(*) FROM live.leaderboard").fetchall() == [(0,)]


def test_a_view_reading_an_unknown_column_stops_the_start(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(
        "-- inputs: bank.accounts\nSELECT colour FROM bank.accounts;\n"
    )
    with pytest.raises(ViewError, match=r"stray\.sql .*Binder Error: .*colour"):
        ViewMaintainer(views, SETTINGS).install(duckdb.connect(":memory:"))


def test_an_unknown_parameter_is_named(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text("-- inputs: bank.accounts\nSELECT $fraud_nonsense;\n")
    with pytest.raises(ViewError, match=r"unknown parameter\(s\) \$fraud_nonsense"):
        ViewMaintainer(views, SETTINGS).install(duckdb.connect(":memory:"))


def test_after_headers_must_name_views_and_not_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- after: b\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- after: a\nSELECT 1;\n")
    with pytest.raises(ViewError, match="cycle: a, b"):
        order_views([load_file(tmp_path / "a.sql"), load_file(tmp_path / "b.sql")])
    (tmp_path / "c.sql").write_text("-- after: nowhere\nSELECT 1;\n")
    with pytest.raises(ViewError, match="unknown view"):
        order_views([load_file(tmp_path / "c.sql")])


def test_missing_views_directory_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ViewError, match="CHANGEFOLD_PROJECT_DIR"):
        ViewMaintainer(tmp_path / "nowhere", SETTINGS)


def test_every_threshold_is_a_parameter_and_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CHANGEFOLD_FRAUD_VELOCITY_MIN_COUNT": "9", "CHANGEFOLD_LEADERBOARD_WINDOW_MIN": "15"}
    )
    params = view_params(settings)
    assert params["fraud_velocity_min_count"] == 9
    assert params["leaderboard_window_min"] == 15
    used = {
        p for f in ViewMaintainer(VIEWS, settings).files for st in f.statements for p in st.params
    }
    assert set(params) - used == set(), "a setting no view reads"


def test_a_state_file_named_like_the_views_schema_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "live.duckdb"))
    with pytest.raises(ViewError, match="give the state file another name"):
        ViewMaintainer(VIEWS, SETTINGS).install(con)
