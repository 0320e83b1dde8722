"""Overview: is everything up, and the headline figures of each page."""

from __future__ import annotations

import datetime as dt
from typing import Any

import altair as alt
import polars as pl
import streamlit as st

import data
import queries
import ui

st.title(":material/cyclone: changefold")
st.markdown(
    "Postgres row changes, captured by Debezium into Kafka, folded by the engine into "
    "DuckDB within about a second, and shown here live."
)


def sources_status() -> None:
    src = data.sources()
    api, connect, postgres = st.columns(3)
    health: dict[str, Any] | None = None
    with api:
        try:
            health = data.health(src)
        except data.DataError as exc:
            st.error(f"**Engine**: down. {exc}", icon=":material/power_off:")
        else:
            st.success(
                f"**Engine**: up · {ui.freshness_line(health)}", icon=":material/check_circle:"
            )
    with connect:
        try:
            conns = data.connectors(src)
        except data.DataError as exc:
            st.error(f"**Kafka Connect**: down. {exc}", icon=":material/power_off:")
        else:
            running = sum(
                c.state == "RUNNING" and all(t[1] == "RUNNING" for t in c.tasks) for c in conns
            )
            ok = conns and running == len(conns)
            text = f"**Kafka Connect**: {running} of {len(conns)} connectors running"
            (st.success if ok else st.warning)(
                text, icon=":material/check_circle:" if ok else ":material/warning:"
            )
    with postgres:
        try:
            slots = data.replication_slots(src)
        except data.DataError as exc:
            st.error(f"**Postgres**: down. {exc}", icon=":material/power_off:")
        else:
            retained = slots["retained_wal_bytes"].sum() if slots.height else 0
            st.success(
                f"**Postgres**: up · {slots.height} replication slot(s), "
                f"{ui.size(retained)} WAL retained",
                icon=":material/check_circle:",
            )
    if health is not None:
        ui.consistency_caption(health)
        headlines()


def headlines() -> None:
    try:
        figures: dict[str, Any] = data.metrics()
        board = data.query(queries.BOARD_SIZE).frame
        alerts = data.query(queries.ALERT_TOTALS).frame
        risk = data.query(queries.ACCOUNT_RISK, max_rows=1000).frame
        views = True
    except data.QueryFailed as exc:
        if not data.missing_table(exc):
            ui.banner(exc)
            return
        views = False  # the engine has not created the views yet: show the pipeline's figures
    except data.DataError as exc:
        ui.banner(exc)
        return
    lag = sum(p["lag"] or 0 for p in figures.get("partitions") or [])
    rate = (figures.get("throughput") or {}).get("records_per_s")
    cols = st.columns(5)
    if views:
        cols[0].metric("Players on the board", ui.count(board["players"][0] if board.height else 0))
        cols[1].metric("Fraud alerts", ui.count(alerts["alerts"].sum() if alerts.height else 0))
        high = risk.filter(risk["risk_level"] == "high").height if risk.height else 0
        cols[2].metric("High-risk accounts", ui.count(high))
    cols[3].metric("Consumer lag (records)", ui.count(lag))
    cols[4].metric("Folded (records/s)", "-" if rate is None else f"{rate:,.1f}")
    if not views:
        st.caption(
            "The derived views (leaderboard, fraud alerts) are not in the state yet: the "
            "engine creates them as it starts."
        )


def charts() -> None:
    """The few charts a person wants first: records folded per second and freshness
    over time, fraud alerts per minute, the top five of the board. One clock: the wall
    clock (batch finish and alert detection times, UTC)."""
    try:
        fold = data.query(queries.FOLD_OVER_TIME, max_rows=100).frame
        per_minute = data.query(queries.ALERTS_PER_MINUTE, max_rows=1000).frame
        top = data.query(queries.TOP_FIVE).frame
    except data.QueryFailed as exc:
        if not data.missing_table(exc):
            ui.banner(exc)
        return  # no views yet: headlines() says so
    except data.DataError:
        return  # the engine is down: sources_status() shows the banner
    rate_col, fresh_col = st.columns(2)
    with rate_col:
        st.subheader("Folded (records/s)")
        if fold.is_empty():
            st.caption("no batch folded yet")
        else:
            st.altair_chart(
                _over_time(fold, "records_per_s", "records/s", ",.0f", "#1f77b4"),
                key="ov_rate",
            )
            st.caption(f"per 10 s of batch finish time, {_span(fold['bucket'])}, wall clock UTC")
    with fresh_col:
        st.subheader("Freshness (s)")
        if fold.is_empty():
            st.caption("no batch folded yet")
        else:
            st.altair_chart(_freshness(fold), key="ov_freshness")
            st.caption(
                "commit in Postgres to folded into the state: median and max per 10 s, "
                f"{_span(fold['bucket'])}, wall clock UTC"
            )
    alerts_col, board_col = st.columns(2)
    with alerts_col:
        st.subheader("Fraud alerts per minute")
        if per_minute.is_empty():
            st.caption("no alert yet")
        else:
            chart = (
                alt.Chart(per_minute)
                .mark_bar()
                .encode(
                    alt.X("minute:T", title="detected (wall clock, UTC)",
                          axis=alt.Axis(format="%H:%M")),
                    alt.Y("sum(alerts):Q", title="alerts per minute"),
                    alt.Color("rule:N", title="rule"),
                    tooltip=["minute:T", "rule:N", "alerts:Q"],
                )
                .properties(height=220)
            )  # fmt: skip
            st.altair_chart(chart, key="ov_alerts")
            st.caption(f"by detection time, {_span(per_minute['minute'])}, wall clock UTC")
    with board_col:
        st.subheader("Top 5 players")
        if top.is_empty():
            st.caption("no score folded yet")
        else:
            st.dataframe(
                top,
                hide_index=True,
                key="ov_top",
                column_config={
                    "rank": st.column_config.NumberColumn("Rank", format="%d"),
                    "name": "Player",
                    "country": "Country",
                    "total_points": st.column_config.ProgressColumn(
                        "Points", min_value=0, max_value=int(top["total_points"].max() or 1),
                        format="%d",
                    ),
                },
            )  # fmt: skip
            st.page_link(
                "app_pages/leaderboard.py", label="the whole board", icon=":material/leaderboard:"
            )


def _over_time(
    frame: pl.DataFrame, field: str, title: str, number_format: str, color: str
) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_area(line=True, point=True, opacity=0.3, color=color)
        .encode(
            alt.X("bucket:T", title="batch finished (wall clock, UTC)",
                  axis=alt.Axis(format="%H:%M:%S")),
            alt.Y(f"{field}:Q", title=title, axis=alt.Axis(format=number_format),
                  scale=alt.Scale(domainMin=0)),
            tooltip=["bucket:T", alt.Tooltip(f"{field}:Q", format=number_format)],
        )
        .properties(height=220)
    )  # fmt: skip


def _freshness(frame: pl.DataFrame) -> alt.Chart:
    long = frame.select("bucket", "freshness_p50_s", "freshness_max_s").unpivot(
        index="bucket", variable_name="figure", value_name="seconds"
    )
    long = long.with_columns(pl.col("figure").str.extract(r"freshness_(\w+)_s"))
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            alt.X("bucket:T", title="batch finished (wall clock, UTC)",
                  axis=alt.Axis(format="%H:%M:%S")),
            alt.Y("seconds:Q", title="freshness (s)", axis=alt.Axis(format=".1f"),
                  scale=alt.Scale(domainMin=0)),
            alt.Color("figure:N", title=None,
                      scale=alt.Scale(domain=["p50", "max"], range=["#2ca02c", "#ff7f0e"])),
            tooltip=["bucket:T", "figure:N", alt.Tooltip("seconds:Q", format=".1f")],
        )
        .properties(height=220)
    )  # fmt: skip


def _span(moments: pl.Series) -> str:
    """'12:03:10 to 12:13:00 UTC (9.8 min)' of a column of times."""
    lo, hi = moments.min(), moments.max()
    if not isinstance(lo, dt.datetime) or not isinstance(hi, dt.datetime):
        return ""
    lo, hi = lo.astimezone(dt.UTC), hi.astimezone(dt.UTC)
    return f"{lo:%H:%M:%S} to {hi:%H:%M:%S} ({ui.seconds((hi - lo).total_seconds())})"


def panels() -> None:
    sources_status()
    charts()


ui.live(panels)

st.divider()
st.page_link(
    "app_pages/leaderboard.py",
    label="Leaderboard: top players, rank moves",
    icon=":material/leaderboard:",
)
st.page_link(
    "app_pages/fraud.py",
    label="Fraud: alerts, risky accounts, evidence",
    icon=":material/gpp_maybe:",
)
st.page_link(
    "app_pages/pipeline.py",
    label="Pipeline: lag, batches, connectors, WAL",
    icon=":material/monitor_heart:",
)
st.page_link(
    "app_pages/sql.py",
    label="SQL: ask the state anything (read-only)",
    icon=":material/database_search:",
)
