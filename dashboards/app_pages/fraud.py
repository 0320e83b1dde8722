"""Fraud: live alert feed, filters, flagged accounts, evidence drill-down, counts per rule."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

import data
import queries
import ui

#: The evidence picker's first option: whichever alert tops the feed.
TOP = "top"

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


#: Every time on this page is an event time: the clock of the source rows.
CLOCK = "event time (source clock, UTC)"
#: Rows of the tables with long reasons: taller than 4 rem, where Streamlit's table
#: wraps text, so a reason shows whole on up to three lines.
WRAPPED = 68

st.title(":material/gpp_maybe: Fraud")
st.caption(
    ":material/schedule: Times on this page are event times: the source's own clock "
    "(`created_at` of the bank's rows, which the generator simulates), in UTC; not the "
    "wall clock of detection."
)
# pills over the page's full width: every rule's name shows whole (a multiselect cuts
# its chips off)
rules = st.pills(
    "Rules", queries.RULES, selection_mode="multi", default=list(queries.RULES),
    key="fr_rules", format_func=lambda r: r.replace("_", " "),
) or []  # fmt: skip
c1, _ = st.columns([1, 2])
with c1:
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
        feed.select("event_time", "severity", "level", "rule", "account_id", "evidence", "reason"),
        hide_index=True,
        height=WRAPPED * 8 + 38,
        row_height=WRAPPED,
        column_config={
            "event_time": st.column_config.DatetimeColumn(
                "Event time (UTC)", format="YYYY-MM-DD HH:mm:ss", width=150
            ),
            "severity": st.column_config.ProgressColumn(
                "Severity", min_value=0.0, max_value=1.0, format="%.2f", width=100
            ),
            "level": st.column_config.TextColumn("Level", width=72),
            "rule": st.column_config.TextColumn("Rule", width=190),
            "account_id": st.column_config.NumberColumn("Account", format="%d", width=70),
            "evidence": st.column_config.NumberColumn("Txns", format="%d", width=45),
            "reason": st.column_config.TextColumn("Reason", width=300),
        },
        key="fr_feed",
    )  # fmt: skip
    if alerts.truncated:
        st.caption(f"the newest {alerts.row_count} alerts")
    drill_down(feed)
    st.subheader("Flagged accounts")
    st.dataframe(
        risk.select("account_id", "risk_score", "risk_level", "alerts_7d", "top_rule", "reason"),
        hide_index=True,
        height=WRAPPED * 6 + 38,
        row_height=WRAPPED,
        column_config={
            "account_id": st.column_config.NumberColumn("Account", format="%d", width=70),
            "risk_score": st.column_config.ProgressColumn(
                "Risk", min_value=0.0, max_value=1.0, format="%.2f", width=100
            ),
            "risk_level": st.column_config.TextColumn("Level", width=72),
            "alerts_7d": st.column_config.NumberColumn("Alerts 7 d", format="%d", width=80),
            "top_rule": st.column_config.TextColumn("Top rule", width=190),
            "reason": st.column_config.TextColumn("Why", width=420),
        },
        key="fr_risk",
    )  # fmt: skip
    per_rule()


def drill_down(feed: pl.DataFrame) -> None:
    st.subheader("Evidence")
    if feed.is_empty():
        st.caption("No alert matches the filters.")
        return
    rows = {r["alert_id"]: r for r in feed.head(200).iter_rows(named=True)}
    top = next(iter(rows))

    def label(a: object) -> str:
        if a == TOP:
            # A fixed text: the browser keeps an option's label from the run that drew
            # the widget, so a label naming the top alert would go stale as alerts come.
            return "the top alert of the feed (follows new alerts)"
        r = rows.get(a)  # type: ignore[call-overload]
        if r is None:
            return str(a)
        return (
            f"{r['rule'].replace('_', ' ')} · account {r['account_id']} · "
            f"severity {r['severity']:.2f} · {ui.when(r['event_time'])}"
        )

    # The first option follows the feed's top alert as new alerts arrive; the others
    # stay what the user picked. The alert shown is named below the picker.
    picked = st.selectbox("Alert", [TOP, *rows], format_func=label, key="fr_alert")
    alert = rows.get(top if picked == TOP else picked)
    if alert is None:
        return
    st.markdown(
        f"**{alert['rule'].replace('_', ' ')}** · account {alert['account_id']} · severity "
        f"{alert['severity']:.2f} · {ui.when(alert['event_time'])}: {alert['reason']}"
    )
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
            alt.X("created_at:T", title=CLOCK),
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
        # short labels and widths: ten columns fit the page at 1400 px without scrolling
        # sideways (a device id shows its start; the cell shows it whole when opened)
        column_config={
            "txn_id": st.column_config.NumberColumn("txn", format="%d", width=60),
            "created_at": st.column_config.DatetimeColumn(
                "Event time (UTC)", format="YYYY-MM-DD HH:mm:ss", width=150
            ),
            "kind": st.column_config.TextColumn("kind", width=80),
            "amount": st.column_config.NumberColumn("amount", width=80),
            "status": st.column_config.TextColumn("status", width=70),
            "channel": st.column_config.TextColumn("channel", width=95),
            "country": st.column_config.TextColumn("country", width=60),
            "merchant_id": st.column_config.NumberColumn("merchant", format="%d", width=75),
            "counterparty_account_id": st.column_config.NumberColumn(
                "counterparty", format="%d", width=95
            ),
            "device_id": st.column_config.TextColumn("device", width=150),
        },
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
            alt.X("bucket:T", title=CLOCK),
            alt.Y("sum(alerts):Q", title="alerts"),
            alt.Color("rule:N", title="rule"),
            tooltip=["bucket:T", "rule:N", "alerts:Q"],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, key="fr_per_rule")


ui.live(panels)
