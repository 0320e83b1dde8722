"""The entry script and the Overview page (Streamlit AppTest): navigation, refresh
controls, sources' status and headline figures; with the API up and down."""

from __future__ import annotations

import re

import pytest
from dashboards_support import Served, frame_with, metric, nothing_up, open_page, texts


def test_status_and_headlines_with_the_stack_down(served: Served) -> None:
    at = open_page()
    assert "changefold" in at.title[0].value
    assert any("**Engine**: up" in s and "state as of" in s for s in texts(at.success))
    errors = texts(at.error)
    assert [e.split(":")[0] for e in errors] == ["**Kafka Connect**", "**Postgres**"]
    players = served.rows("SELECT count(*) FROM live.leaderboard")[0][0]
    alerts = served.rows("SELECT count(*) FROM live.fraud_alerts")[0][0]
    high = served.rows("SELECT count(*) FROM live.account_risk WHERE risk_level = 'high'")[0][0]
    assert metric(at, "Players on the board") == str(players)
    assert metric(at, "Fraud alerts") == str(alerts)
    assert metric(at, "High-risk accounts") == str(high)
    assert metric(at, "Consumer lag (records)") == "30"
    assert any(
        "Consistent as of **2026-12-02 15:04:05.123 UTC** (LSN 0/1A2B3C8, transaction 877)" in c
        for c in texts(at.caption)
    )


def test_the_first_charts_and_the_top_five(served: Served) -> None:
    at = open_page()
    assert [h.value for h in at.subheader][:4] == [
        "Folded (records/s)", "Freshness (s)", "Fraud alerts per minute", "Top 5 players",
    ]  # fmt: skip
    assert len(at.get("vega_lite_chart")) == 3, "records/s, freshness, alerts per minute"
    top = frame_with(at, "total_points")
    expected = served.rows("SELECT name, total_points FROM live.leaderboard ORDER BY rank LIMIT 5")
    assert list(zip(top["name"], top["total_points"], strict=True)) == expected
    captions = " ".join(texts(at.caption))
    # engine_figures: 12 batches 0.5 s apart, all within the last 10 minutes
    assert re.search(r"per 10 s of batch finish time, \d\d:\d\d:\d\d to", captions)
    assert "wall clock UTC" in captions


def test_a_fresh_engine_has_applied_no_transaction_yet(served: Served) -> None:
    served.con.execute("DELETE FROM _changefold.frontier")
    at = open_page()
    assert any(
        "Per-event visibility (transaction ordering on, no source transaction applied yet)" in c
        for c in texts(at.caption)
    )
    assert not any("Consistent as of" in c for c in texts(at.caption))


def test_every_page_opens_from_the_entry_script(served: Served) -> None:
    at = open_page()
    for page in ("leaderboard", "fraud", "pipeline", "sql", "overview"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, f"{page}: {at.exception}"
        assert at.title, f"{page} has no title"


def test_refresh_controls_in_the_sidebar(served: Served) -> None:
    at = open_page()
    assert at.sidebar.toggle(key="cf_auto_refresh").value is True
    assert at.sidebar.slider(key="cf_refresh_s").value == 3
    at.sidebar.toggle(key="cf_auto_refresh").set_value(False).run()
    assert at.sidebar.slider(key="cf_refresh_s").disabled
    assert not at.exception


def test_engine_down_banner_and_no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    url = nothing_up(monkeypatch)
    at = open_page()
    errors = texts(at.error)
    assert len(errors) == 3
    assert errors[0].startswith("**Engine**: down") and url in errors[0]
    assert not at.metric
    assert not any("onsistent as of" in c for c in texts(at.caption))
