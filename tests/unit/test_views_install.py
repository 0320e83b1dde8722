"""Loading and installing the view files; bad files stop the start with a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from engine.core.config import Settings
from engine.core.errors import ViewError
from engine.views import ViewMaintainer
from engine.views.sqlfiles import Column, Count, load_file, order_views

SETTINGS = Settings()
VIEWS = SETTINGS.views_sql_dir
PARAMS = SETTINGS.views.params()


def copy_views(tmp_path: Path) -> Path:
    target = tmp_path / "views"
    shutil.copytree(VIEWS, target, ignore=shutil.ignore_patterns("scratch"))
    return target


def test_views_are_one_file_each_and_ordered_by_their_headers() -> None:
    views = ViewMaintainer(VIEWS, PARAMS)
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
    ViewMaintainer(VIEWS, PARAMS).install(con)
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
    ViewMaintainer(VIEWS, PARAMS).install(con)


def test_install_keeps_an_existing_mirror_as_it_is() -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA arcade")
    con.execute(
        "CREATE TABLE arcade.scores (score_id BIGINT PRIMARY KEY, player_id BIGINT, "
        "match_id BIGINT, points INTEGER, achieved_at TIMESTAMPTZ, corrected BOOLEAN, "
        "extra VARCHAR)"
    )
    con.execute("INSERT INTO arcade.scores (score_id, points) VALUES (1, 5)")
    ViewMaintainer(VIEWS, PARAMS).install(con)
    assert con.execute("SELECT score_id, extra FROM arcade.scores").fetchall() == [(1, None)]


def test_a_view_that_does_not_parse_names_the_file(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "broken.sql").write_text("-- inputs: arcade.scores\nSELEC 1 FROM arcade.scores;\n")
    with pytest.raises(ViewError, match=r"broken\.sql does not parse: Parser Error: syntax error"):
        ViewMaintainer(views, PARAMS)


def test_a_view_reading_an_unknown_table_stops_the_start(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(
        "-- inputs: arcade.scores\nCREATE OR REPLACE TEMP TABLE x AS SELECT * FROM arcade.nope;\n"
    )
    maintainer = ViewMaintainer(views, PARAMS)
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
        ViewMaintainer(views, PARAMS).install(duckdb.connect(":memory:"))


def test_a_parameter_the_header_does_not_declare_is_named_at_load(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(
        "-- inputs: bank.accounts\n-- params: fraud_tiny_eur\n"
        "SELECT $fraud_tiny_eur, $fraud_nonsense, $batch_id;\n"
    )
    with pytest.raises(
        ViewError, match=r"stray\.sql: uses \$fraud_nonsense, which its `-- params:` header"
    ):
        ViewMaintainer(views, PARAMS)


def test_a_declared_parameter_missing_from_the_mapping_is_named_at_load(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(
        "-- inputs: bank.accounts\n-- params: fraud_tiny_eur, fraud_nonsense\n"
        "SELECT $fraud_tiny_eur, $fraud_nonsense;\n"
    )
    with pytest.raises(ViewError, match=r"stray\.sql: its `-- params:` header declares "
                       r"\$fraud_nonsense, which the parameters given"):  # fmt: skip
        ViewMaintainer(views, PARAMS)
    with pytest.raises(ViewError, match=r"leaderboard_window\.sql: .*\$leaderboard_window_min"):
        ViewMaintainer(VIEWS, {k: v for k, v in PARAMS.items() if k != "leaderboard_window_min"})


def test_headers_declare_what_each_view_writes_and_reports(tmp_path: Path) -> None:
    files = {f.name: f for f in ViewMaintainer(VIEWS, PARAMS).files}
    assert files["leaderboard"].state == ("live.player_totals", "live.leaderboard")
    assert files["fraud_alerts"].findings == ("live.fraud_alerts",)
    assert files["fraud_alerts"].counts == (
        Count("new_alerts", Column("live.fraud_alerts", "first_batch")),
    )
    check = files["transfer_conservation"]
    assert check.returns == "conservation_violations"
    assert check.stuck == Column("live.unbalanced_transfers", "batch_id")
    assert str(check.label).startswith("transfer(s) unbalanced in the bank mirror")
    # every file declares exactly the parameters it uses
    for f in files.values():
        assert set(f.params) == f.used_params - {"batch_id", "detected_at"}, f.name


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("-- counts: new_alerts live.fraud_alerts.first_batch", r"is not `<figure> = "),
        ("-- counts: new_alerts = live.fraud_alerts", r"wants schema\.table\.column"),
        ("-- stuck: live.unbalanced_transfers", r"wants schema\.table\.column"),
        ("-- returns: a\n-- returns: b", r"`-- returns:` header is given twice"),
        ("-- label:", r"`-- label:` header is empty"),
        ("-- params: fraud tiny", r"'fraud tiny' in a header is not a name"),
    ],
)
def test_a_malformed_header_names_the_file(tmp_path: Path, header: str, error: str) -> None:
    (tmp_path / "odd.sql").write_text(f"{header}\nSELECT 1;\n")
    with pytest.raises(ViewError, match=r"odd\.sql: .*" + error):
        load_file(tmp_path / "odd.sql")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("-- returns: nonsense", r"unknown figure 'nonsense'"),
        ("-- counts: nonsense = live.fraud_alerts.first_batch", r"unknown figure 'nonsense'"),
        ("-- stuck: live.fraud_alerts.first_batch", r"`-- stuck:` header needs a `-- returns:`"),
    ],
)
def test_a_header_naming_an_unknown_figure_is_refused_at_load(
    tmp_path: Path, header: str, error: str
) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(f"-- inputs: bank.accounts\n{header}\nSELECT 1;\n")
    with pytest.raises(ViewError, match=r"stray\.sql: .*" + error):
        ViewMaintainer(views, PARAMS)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("-- state: live.nope", r"`-- state:` header: Catalog Error: .*nope"),
        ("-- findings: live.nope", r"`-- findings:` header: Catalog Error: .*nope"),
        ("-- counts: new_alerts = live.fraud_alerts.colour", r"`-- counts:` header: .*colour"),
    ],
)
def test_a_header_naming_an_unknown_table_or_column_stops_the_start(
    tmp_path: Path, header: str, error: str
) -> None:
    views = copy_views(tmp_path)
    (views / "stray.sql").write_text(f"-- inputs: bank.accounts\n{header}\nSELECT 1;\n")
    with pytest.raises(ViewError, match=r"stray\.sql: .*" + error):
        ViewMaintainer(views, PARAMS).install(duckdb.connect(":memory:"))


def test_rebuilding_a_view_empties_the_state_its_header_names(tmp_path: Path) -> None:
    views = copy_views(tmp_path)
    (views / "extra.sql").write_text(
        "-- inputs: arcade.scores\n-- state: live.extra\n"
        "INSERT INTO live.extra SELECT count(*) FROM _after_arcade_scores;\n"
    )
    (views / "state" / "009_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS live.extra (n BIGINT);\n"
    )
    con = duckdb.connect(":memory:")
    maintainer = ViewMaintainer(views, PARAMS)
    maintainer.create_mirror_tables(con)
    maintainer.install(con)
    con.execute("INSERT INTO live.extra VALUES (41), (42)")
    con.execute("INSERT INTO arcade.scores (score_id, player_id, points) VALUES (1, 7, 10)")
    maintainer.recompute_all(con)
    assert con.execute("SELECT n FROM live.extra").fetchall() == [(1,)]


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
        ViewMaintainer(tmp_path / "nowhere", PARAMS)


def test_every_threshold_is_a_parameter_and_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CHANGEFOLD_FRAUD_VELOCITY_MIN_COUNT": "9", "CHANGEFOLD_LEADERBOARD_WINDOW_MIN": "15"}
    )
    params = settings.views.params()
    assert params["fraud_velocity_min_count"] == 9
    assert params["leaderboard_window_min"] == 15
    declared = {p for f in ViewMaintainer(VIEWS, params).files for p in f.params}
    assert set(params) - declared == set(), "a setting no view reads"


def test_a_state_file_named_like_the_views_schema_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "live.duckdb"))
    with pytest.raises(ViewError, match="give the state file another name"):
        ViewMaintainer(VIEWS, PARAMS).install(con)
