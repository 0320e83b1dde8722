"""Overview: is everything up, and the headline figures of each page."""

from __future__ import annotations

from typing import Any

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


ui.live(sources_status)

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
