"""The Leaderboard page (Streamlit AppTest) against a real query API, and with it down."""

from __future__ import annotations

import pytest
from dashboards_support import Served, data, nothing_up, open_page, queries, texts

BOARD_ORDER = "ORDER BY rank, total_points DESC, player_id"


def shown(at: object) -> list[tuple[object, ...]]:
    frame = at.dataframe[0].value  # type: ignore[attr-defined]
    return list(frame[["rank", "name", "total_points"]].itertuples(index=False, name=None))


def test_top_n_of_the_all_time_board_with_freshness(served: Served) -> None:
    at = open_page("leaderboard")
    expected = served.rows(f"SELECT rank, name, total_points FROM live.leaderboard {BOARD_ORDER}")
    assert shown(at) == expected[:20]
    assert any("state as of" in c and "ago" in c for c in texts(at.caption))
    assert any("20 players shown (more on the board)" in c for c in texts(at.caption))
    assert not at.error

    at.number_input(key="lb_top").set_value(5).run()
    assert shown(at) == expected[:5]


def test_rank_changes_are_arrows(served: Served) -> None:
    top = [r[0] for r in served.rows(f"SELECT player_id FROM live.leaderboard {BOARD_ORDER}")]
    for player, change in zip(top[:4], (3, -2, None, 0), strict=True):
        served.con.execute(
            "UPDATE live.leaderboard SET rank_change = ? WHERE player_id = ?", [change, player]
        )
    at = open_page("leaderboard")
    moves = list(at.dataframe[0].value["move"])
    assert moves[:4] == ["▲ 3", "▼ 2", "★ new", "="]


def test_window_switch_shows_the_windowed_board(served: Served) -> None:
    at = open_page("leaderboard")
    window = next(o for o in at.button_group(key="lb_window").options if "Last" in str(o))
    assert "60 min" in str(window)
    at.button_group(key="lb_window").set_value(window).run()
    expected = served.rows(
        f"SELECT rank, name, total_points FROM live.leaderboard_window {BOARD_ORDER}"
    )
    all_time = served.rows(f"SELECT rank, name, total_points FROM live.leaderboard {BOARD_ORDER}")
    assert expected[:20] != all_time[:20], "the fixture's window must differ from all time"
    assert shown(at) == expected[:20]


def test_score_timeline_of_the_picked_player(served: Served) -> None:
    at = open_page("leaderboard")
    players = at.selectbox(key="lb_player").options
    assert players[0].startswith("#1 ")
    assert at.get("vega_lite_chart"), "no timeline chart"
    second = served.rows(f"SELECT player_id, total_points FROM live.leaderboard {BOARD_ORDER}")[1]
    at.selectbox(key="lb_player").set_value(second[0]).run()
    assert not at.exception and at.get("vega_lite_chart")
    # the chart's query: the running total ends at the player's total
    frame = data.query(queries.player_timeline(second[0], None)).frame
    assert frame["running_total"].max() == second[1]


def test_no_player_yet_says_how_to_get_some(served: Served) -> None:
    served.con.execute("DELETE FROM live.leaderboard")
    at = open_page("leaderboard")
    assert not at.dataframe
    assert any("No player on the board yet" in i for i in texts(at.info))


def test_api_down_shows_a_banner_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    url = nothing_up(monkeypatch)
    at = open_page("leaderboard")
    errors = texts(at.error)
    assert len(errors) == 1 and "Engine down" in errors[0] and url in errors[0]
    assert "changefold run" in errors[0]
    assert not at.dataframe


def test_views_not_created_yet_is_a_wait_not_an_error(served: Served) -> None:
    served.con.execute("DROP SCHEMA live CASCADE")
    for page in ("leaderboard", "fraud", None):
        at = open_page(page)
        assert not [e for e in texts(at.error) if "query failed" in e], page
        if page is None:  # the overview shows the pipeline's figures and says why no more
            assert [m.label for m in at.metric] == ["Consumer lag (records)", "Folded (records/s)"]
            assert any("not in the state yet" in c for c in texts(at.caption))
            continue
        warnings = texts(at.warning)
        assert len(warnings) == 1 and "Not in the state yet" in warnings[0], (page, warnings)
