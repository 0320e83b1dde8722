"""The Fraud page (Streamlit AppTest) against a real query API, and with it down."""

from __future__ import annotations

import pytest
from dashboards_support import Served, frame_with, metric, nothing_up, open_page, texts


def test_alert_feed_flagged_accounts_and_counts(served: Served) -> None:
    at = open_page("fraud")
    total, rules = served.rows("SELECT count(*), count(DISTINCT rule) FROM live.fraud_alerts")[0]
    assert total > 10 and rules == 6, "the fixture should fire every rule"
    feed = frame_with(at, "evidence")
    assert len(feed) == total
    assert metric(at, "Alerts") == str(total)
    assert metric(at, "Rules that fired") == "6 of 6"
    # one clock on the page: event times (source), newest first; no wall-clock column
    assert "detected_at" not in feed.columns
    newest_first = list(feed["event_time"])
    assert newest_first == sorted(newest_first, reverse=True)
    assert any("Times on this page are event times" in c for c in texts(at.caption))
    assert set(feed["level"]) <= {"high", "medium", "low"}
    assert (feed[feed["severity"] >= 0.85]["level"] == "high").all()

    risk = frame_with(at, "risk_score")
    expected = served.rows(
        "SELECT account_id FROM live.account_risk ORDER BY risk_score DESC, account_id"
    )
    assert list(risk["account_id"]) == [r[0] for r in expected][:200]
    assert at.get("vega_lite_chart"), "no chart (evidence, alerts per rule)"


def test_filters_by_rule_and_severity(served: Served) -> None:
    at = open_page("fraud")
    at.button_group(key="fr_rules").set_value(["structuring", "card_testing"]).run()
    feed = frame_with(at, "evidence")
    expected = served.rows(
        "SELECT count(*) FROM live.fraud_alerts WHERE rule IN ('structuring', 'card_testing')"
    )[0][0]
    assert 0 < len(feed) == expected
    assert set(feed["rule"]) == {"structuring", "card_testing"}

    at.slider(key="fr_severity").set_value(0.8).run()
    feed = frame_with(at, "evidence")
    expected = served.rows(
        "SELECT count(*) FROM live.fraud_alerts "
        "WHERE rule IN ('structuring', 'card_testing') AND severity >= 0.8"
    )[0][0]
    assert len(feed) == expected and (feed["severity"] >= 0.8).all()

    at.button_group(key="fr_rules").set_value([]).run()
    assert len(frame_with(at, "evidence")) == 0
    assert any("No alert matches the filters" in c for c in texts(at.caption))


ORDER = "ORDER BY event_time DESC, severity DESC, alert_id"


def test_the_evidence_shown_first_is_the_top_alert_and_follows_it(served: Served) -> None:
    at = open_page("fraud")
    top, evidence = served.rows(
        f"SELECT alert_id, evidence_txn_ids FROM live.fraud_alerts {ORDER}"
    )[0]
    picker = at.selectbox(key="fr_alert")
    assert picker.value == "top" and picker.options[0].startswith("the top alert of the feed")
    assert set(frame_with(at, "txn_id")["txn_id"]) == set(evidence)
    # a newer alert arrives: the default follows the feed's top
    served.con.execute(
        "UPDATE live.fraud_alerts SET event_time = event_time + INTERVAL 30 DAY "
        "WHERE alert_id = (SELECT alert_id FROM live.fraud_alerts "
        f"{ORDER} OFFSET 5 LIMIT 1)"
    )
    newer, evidence, account = served.rows(
        f"SELECT alert_id, evidence_txn_ids, account_id FROM live.fraud_alerts {ORDER}"
    )[0]
    assert newer != top
    at.run()
    assert at.selectbox(key="fr_alert").value == "top"
    assert set(frame_with(at, "txn_id")["txn_id"]) == set(evidence)
    # the picker's first label is fixed (a browser keeps an option's label); the alert
    # shown is named under it
    assert (
        at.selectbox(key="fr_alert").options[0] == "the top alert of the feed (follows new alerts)"
    )
    assert any(f"account {account} ·" in m.value for m in at.markdown)


def test_evidence_drill_down_shows_the_alerts_transactions(served: Served) -> None:
    at = open_page("fraud")
    picker = at.selectbox(key="fr_alert")
    assert len(picker.options) == 1 + len(frame_with(at, "evidence")), "the top, then each"
    for index in (0, 3):
        alert_id = served.rows(f"SELECT alert_id FROM live.fraud_alerts {ORDER}")[index][0]
        at.selectbox(key="fr_alert").set_value(alert_id).run()
        account, evidence, reason = served.rows(
            "SELECT account_id, evidence_txn_ids, reason FROM live.fraud_alerts WHERE alert_id = ?",
            [alert_id],
        )[0]
        shown = frame_with(at, "txn_id")
        assert set(shown["txn_id"]) == set(evidence)
        assert any(reason in m for m in texts(at.markdown))
        in_account = served.rows(
            "SELECT count(*) FROM bank.transactions WHERE account_id = ? "
            "AND list_contains(?, txn_id)",
            [account, evidence],
        )[0][0]
        assert in_account == len(evidence)


def test_no_alert_yet_says_how_to_get_some(served: Served) -> None:
    served.con.execute("DELETE FROM live.fraud_alerts")
    at = open_page("fraud")
    assert any("No alert yet" in i for i in texts(at.info))
    assert metric(at, "Alerts") == "0"


def test_api_down_shows_a_banner_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    url = nothing_up(monkeypatch)
    at = open_page("fraud")
    errors = texts(at.error)
    assert len(errors) == 1 and "Engine down" in errors[0] and url in errors[0]
    assert not at.dataframe and not at.metric
