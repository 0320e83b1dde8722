"""Fraud: live alert feed, filters, flagged accounts, evidence drill-down, counts per rule."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

import data
import queries
import ui

#: Severity bands (the rules give 0.6 .. 1.0).
HIGH, MEDIUM = 0.85, 0.7


def bands(severity: pl.Expr) -> pl.Expr:
    return (
        pl.when(severity >= HIGH)
        .then(pl.lit("high"))
        .when(severity >= MEDIUM)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
    )


st.title(":material/gpp_maybe: Fraud")
c1, c2 = st.columns([3, 1])
with c1:
    rules = st.multiselect(
        "Rules", queries.RULES, default=list(queries.RULES), key="fr_rules",
        format_func=lambda r: r.replace("_", " "),
    )  # fmt: skip
with c2:
    min_severity = st.slider(
        "Minimum severity", 0.0, 1.0, 0.0, step=0.05, key="fr_severity",
        help=f"high ≥ {HIGH}, medium ≥ {MEDIUM}",
    )  # fmt: skip


def panels() -> None:
    if ui.freshness_caption() is None:
        return
    try:
        alerts = data.query(queries.ALERTS, max_rows=1000)
        totals = data.query(queries.ALERT_TOTALS).frame
        risk = data.query(queries.ACCOUNT_RISK, max_rows=200).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    feed = alerts.frame.filter(
        pl.col("rule").is_in(rules) & (pl.col("severity") >= min_severity)
    ).with_columns(bands(pl.col("severity")).alias("level"))

    total = int(totals["alerts"].sum()) if totals.height else 0
    k = st.columns(4)
    k[0].metric("Alerts", ui.count(total))
    k[1].metric("Shown (filters)", ui.count(feed.height))
    k[2].metric(
        "Accounts at high risk", ui.count(risk.filter(pl.col("risk_level") == "high").height)
    )
    k[3].metric("Rules that fired", f"{totals.height} of {len(queries.RULES)}")

    if alerts.frame.is_empty():
        st.info(
            "No alert yet. The bank generator (`changefold generate bank --fraud-rate 0.05`) "
            "injects fraud patterns; the rules flag them as their events are folded."
        )
        return

    st.subheader("Alert feed")
    st.dataframe(
        feed.select(
            "detected_at", "level", "severity", "rule", "account_id", "reason", "evidence",
            "event_time",
        ),
        hide_index=True,
        height=360,
        column_config={
            "detected_at": st.column_config.DatetimeColumn("Detected", format="HH:mm:ss"),
            "level": "Level",
            "severity": st.column_config.ProgressColumn(
                "Severity", min_value=0.0, max_value=1.0, format="%.2f"
            ),
            "rule": "Rule",
            "account_id": st.column_config.NumberColumn("Account", format="%d"),
            "reason": st.column_config.TextColumn("Reason", width="large"),
            "evidence": st.column_config.NumberColumn("Txns", format="%d"),
            "event_time": st.column_config.DatetimeColumn("Event time"),
        },
        key="fr_feed",
    )  # fmt: skip
    if alerts.truncated:
        st.caption(f"the newest {alerts.row_count} alerts")
    drill_down(feed)
    risk_col, rules_col = st.columns(2)
    with rules_col:
        per_rule()
    with risk_col:
        st.subheader("Flagged accounts")
        st.dataframe(
            risk.select(
                "account_id", "risk_score", "risk_level", "alerts_7d", "top_rule", "reason"
            ),
            hide_index=True,
            height=360,
            column_config={
                "account_id": st.column_config.NumberColumn("Account", format="%d"),
                "risk_score": st.column_config.ProgressColumn(
                    "Risk", min_value=0.0, max_value=1.0, format="%.2f"
                ),
                "risk_level": "Level",
                "alerts_7d": st.column_config.NumberColumn("Alerts 7 d", format="%d"),
                "top_rule": "Top rule",
                "reason": st.column_config.TextColumn("Why", width="large"),
            },
            key="fr_risk",
        )


def drill_down(feed: pl.DataFrame) -> None:
    st.subheader("Evidence")
    if feed.is_empty():
        st.caption("No alert matches the filters.")
        return
    rows = {r["alert_id"]: r for r in feed.head(200).iter_rows(named=True)}
    picked = st.selectbox(
        "Alert",
        list(rows),
        format_func=lambda a: (
            f"{rows[a]['rule']} · account {rows[a]['account_id']} · "
            f"severity {rows[a]['severity']:.2f} · {ui.when(rows[a]['event_time'])}"
            if a in rows else str(a)
        ),
        key="fr_alert",
    )  # fmt: skip
    if picked not in rows:
        return
    alert = rows[picked]
    st.markdown(f"**{alert['rule'].replace('_', ' ')}**: {alert['reason']}")
    try:
        txns = data.query(
            queries.evidence(int(alert["account_id"]), [int(t) for t in alert["evidence_txn_ids"]]),
            max_rows=1000,
        ).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    if txns.is_empty():
        st.caption("The evidence transactions are not in the state (any more).")
        return
    txns = txns.with_columns(
        pl.col("amount").cast(pl.Float64),
        pl.when(pl.col("is_evidence")).then(pl.lit("evidence")).otherwise(pl.lit("other"))
        .alias("role"),
    )  # fmt: skip
    chart = (
        alt.Chart(txns)
        .mark_point(filled=True, size=90)
        .encode(
            alt.X("created_at:T", title="event time"),
            alt.Y("amount:Q", title="amount (EUR)"),
            alt.Color(
                "role:N",
                scale=alt.Scale(domain=["evidence", "other"], range=["#d62728", "#9e9e9e"]),
                title=None,
            ),
            alt.Shape("kind:N", title="kind"),
            tooltip=[
                "txn_id:Q",
                "created_at:T",
                "kind:N",
                "amount:Q",
                "status:N",
                "channel:N",
                "country:N",
                "merchant_id:Q",
            ],
        )
        .properties(height=260)
    )
    st.altair_chart(chart, key="fr_evidence_chart")
    st.dataframe(
        txns.filter(pl.col("is_evidence")).drop("is_evidence", "role"),
        hide_index=True,
        key="fr_evidence",
    )


def per_rule() -> None:
    st.subheader("Alerts per rule over event time")
    try:
        counts = data.query(queries.ALERTS_OVER_TIME, max_rows=5000).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    if counts.is_empty():
        return
    chart = (
        alt.Chart(counts)
        .mark_bar()
        .encode(
            alt.X("bucket:T", title="event time"),
            alt.Y("sum(alerts):Q", title="alerts"),
            alt.Color("rule:N", title="rule"),
            tooltip=["bucket:T", "rule:N", "alerts:Q"],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, key="fr_per_rule")


ui.live(panels)
