"""Pipeline: the source position the state is consistent as of, lag and throughput per
partition, batch timings, freshness, group members, connectors and tasks, replication
slots, dead letters, schema versions, and the schema registry's subjects (format avro)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import altair as alt
import polars as pl
import streamlit as st

import data
import queries
import ui

st.title(":material/monitor_heart: Pipeline")


def engine_panels() -> None:
    try:
        figures = data.metrics()
    except data.DataError as exc:
        ui.banner(exc)
        return
    partitions = pl.DataFrame(
        figures.get("partitions") or [],
        schema={
            "group_id": pl.String, "topic": pl.String, "partition": pl.Int64,
            "next_offset": pl.Int64, "end_offset": pl.Int64, "lag": pl.Int64,
            "member": pl.String, "records_per_s": pl.Float64, "last_batch_at": pl.String,
        },
        strict=False,
    )  # fmt: skip
    fresh: dict[str, Any] = figures.get("freshness") or {}
    through: dict[str, Any] = figures.get("throughput") or {}
    dead: dict[str, Any] = figures.get("dead_letters") or {}
    versions: dict[str, Any] = figures.get("schema_versions") or {}

    k = st.columns(6)
    k[0].metric("Lag (records)", ui.count(partitions["lag"].fill_null(0).sum()))
    k[1].metric("Folded (records/s)", f"{through.get('records_per_s', 0):,.1f}")
    fp50, fp95 = fresh.get("freshness_ms_p50"), fresh.get("freshness_ms_p95")
    k[2].metric(
        "Freshness (p50)",
        "-" if fp50 is None else ui.millis(fp50),
        help="From the commit in Postgres to folded into the state: the median over the "
        "metrics window (p95 below)",
    )
    age = fresh.get("newest_source_age_s")
    k[3].metric(
        "State age", "-" if age is None else ui.seconds(age),
        help="How long ago the newest change in the state was committed in Postgres",
    )  # fmt: skip
    k[4].metric("Dead letters", ui.count(dead.get("total", 0)))
    k[5].metric("Schema versions", ui.count(versions.get("versions", 0)))
    st.caption(
        f"these figures: the engine's metrics window, the last {figures.get('window_s', 60):g} s"
        f" · {through.get('batches', 0)} batches, {ui.size(through.get('bytes'))} read"
        + ("" if fp95 is None else f" · freshness p95 {ui.millis(fp95)}")
    )

    st.subheader("Partitions")
    if partitions.is_empty():
        st.info("No partition consumed yet: the engine has not folded a batch.")
    else:
        # "<schema>.<table>[<partition>]": the topic without its connector prefix
        partitions = partitions.with_columns(
            pl.format(
                "{}[{}]",
                pl.coalesce(pl.col("topic").str.splitn(".", 2).struct.field("field_1"), "topic"),
                pl.col("partition"),
            ).alias("tp")
        )  # fmt: skip
        lag_chart = _bars(partitions, "lag", "lag (records)", "d")
        rate_chart = _bars(partitions, "records_per_s", "records/s", ",.1f")
        a, b = st.columns(2)
        a.altair_chart(lag_chart, key="pl_lag")
        behind = partitions.filter(pl.col("lag").fill_null(0) > 0).height
        a.caption(
            f"all {partitions.height} partitions caught up (lag 0)"
            if behind == 0
            else f"{behind} of {partitions.height} partitions behind the end of their topic"
        )
        b.altair_chart(rate_chart, key="pl_rate")
        b.caption(
            f"records folded per second per partition, the last {figures.get('window_s', 60):g} s"
        )
        st.dataframe(
            partitions.select(
                "topic", "partition", "member", "next_offset", "end_offset", "lag", "records_per_s"
            ),
            hide_index=True,
            height=_fit(partitions.height),
            key="pl_partitions",
        )

    st.subheader("Batches")
    timings = figures.get("batches") or {}
    stages = [
        {"stage": s.removesuffix("_ms"), **(timings.get(s) or {})}
        for s in ("decode_ms", "fold_ms", "commit_ms")
    ]
    figures_s = ("avg", "p50", "p95", "max")
    left, right = st.columns([2, 3])
    left.dataframe(
        pl.DataFrame(stages, schema={"stage": pl.String, "avg": pl.Float64, "p50": pl.Float64,
                                     "p95": pl.Float64, "max": pl.Float64})
        .with_columns(pl.col(figures_s) / 1000.0),
        hide_index=True,
        key="pl_timings",
        column_config={
            "stage": "stage",
            **{f: st.column_config.NumberColumn(f"{f} (s)", format="%.2f") for f in figures_s},
        },
    )  # fmt: skip
    left.caption(
        f"seconds per batch and stage, the last {figures.get('window_s', 60):g} s "
        "(two decimals: a commit takes milliseconds)"
    )
    with right:
        recent_batches()

    st.subheader("Consumer group members")
    members = figures.get("members") or []
    if members:
        rows = member_topics(members)
        st.dataframe(pl.DataFrame(rows), hide_index=True, key="pl_members", height=_fit(len(rows)))
        st.caption("one row per member and topic: the partitions of the topic it reads")
    else:
        st.caption("no member holds a partition")

    # one above the other, at full width: side by side, their columns are cut off
    st.subheader("Dead letters")
    st.caption(
        f"{ui.count(dead.get('total', 0))} in total"
        + "".join(f" · {stage}: {n}" for stage, n in (dead.get("by_stage") or {}).items())
    )
    table("pl_dead", queries.DEAD_LETTERS, 20, "no dead letters")
    st.subheader("Schema versions")
    table("pl_versions", queries.SCHEMA_VERSIONS, 200, "no schema recorded yet")


def member_topics(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The members' assignments as one row per member and topic (a member's whole list
    of `topic:partition` names does not fit a column)."""
    rows = []
    for m in members:
        by_topic: dict[str, list[int]] = {}
        for name in m["assigned"]:
            topic, _, partition = str(name).rpartition(":")
            by_topic.setdefault(topic, []).append(int(partition))
        for topic, parts in sorted(by_topic.items()):
            rows.append(
                {
                    "group": m["group_id"],
                    "member": m["member"],
                    "topic": topic,
                    "partitions": ", ".join(str(p) for p in sorted(parts)),
                    "count": len(parts),
                }
            )
    return rows


def _fit(rows: int) -> int:
    """Pixels of a table that shows `rows` rows and its header without scrolling."""
    return 35 * (rows + 1) + 3


def _bars(frame: pl.DataFrame, field: str, title: str, number_format: str) -> alt.LayerChart:
    """One bar per partition with its value written next to it, so that a zero (no lag)
    reads as "0" on an axis that still spans at least 0..10."""
    peak = float(frame[field].fill_null(0).max() or 0)
    base = alt.Chart(frame).encode(
        alt.X(
            f"{field}:Q",
            title=title,
            axis=alt.Axis(format=number_format, tickMinStep=1),
            scale=alt.Scale(domain=[0, max(10.0, peak * 1.15)], nice=True),
        ),
        alt.Y("tp:N", title=None, sort=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
        tooltip=["topic:N", "partition:Q", "member:N", "lag:Q", "records_per_s:Q"],
    )
    bars = base.mark_bar().encode(alt.Color("member:N", title="member"))
    labels = base.mark_text(align="left", dx=4, color="#31333f").encode(
        alt.Text(f"{field}:Q", format=number_format)
    )
    return (bars + labels).properties(height=max(120, 26 * frame.height))


def recent_batches() -> None:
    try:
        batches = data.query(queries.RECENT_BATCHES, max_rows=300).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    if batches.is_empty():
        st.caption("no batch yet")
        return
    long = (
        batches.select("finished_at", "decode_ms", "fold_ms", "commit_ms")
        .unpivot(index="finished_at", variable_name="stage", value_name="ms")
        .with_columns(
            (pl.col("ms") / 1000.0).alias("seconds"), pl.col("stage").str.strip_suffix("_ms")
        )
    )
    chart = (
        alt.Chart(long)
        .mark_area()
        .encode(
            alt.X("finished_at:T", title="batch finished (wall clock, UTC)",
                  axis=alt.Axis(format="%H:%M:%S")),
            alt.Y("seconds:Q", stack=True, title="seconds per batch"),
            alt.Color("stage:N", sort=["decode", "fold", "commit"]),
            tooltip=["finished_at:T", "stage:N", alt.Tooltip("seconds:Q", format=".2f")],
        )
        .properties(height=220)
    )  # fmt: skip
    st.altair_chart(chart, key="pl_batches")
    lo, hi = batches["finished_at"].min(), batches["finished_at"].max()
    span = (
        f", {lo.astimezone(dt.UTC):%H:%M:%S} to {hi.astimezone(dt.UTC):%H:%M:%S} UTC "
        f"({ui.seconds((hi - lo).total_seconds())})"
        if isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime)
        else ""
    )
    st.caption(f"the newest {batches.height} batches{span}")


def table(key: str, sql: str, rows: int, empty: str) -> None:
    try:
        frame = data.query(sql, max_rows=rows).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    if frame.is_empty():
        st.caption(empty)
    else:
        st.dataframe(frame, hide_index=True, key=key)


def stack_panels() -> None:
    src = data.sources()
    # one above the other, at full width: side by side, their columns are cut off
    st.subheader("Connectors")
    try:
        conns = data.connectors(src)
    except data.DataError as exc:
        ui.banner(exc)
    else:
        if not conns:
            st.caption(f"no connector registered at {src.connect_url}")
        rows = [
            {
                "connector": c.name,
                "state": _state(c.state),
                "task": f"{c.name}-{task_id}",
                "task state": _state(state),
                "worker": worker,
                "error": (trace or "").strip().split("\n", 1)[0],
            }
            for c in conns
            for task_id, state, worker, trace in (c.tasks or ((0, "NO TASK", "", ""),))
        ]
        if rows:
            st.dataframe(pl.DataFrame(rows), hide_index=True, key="pl_connectors")
    st.subheader("Replication slots")
    try:
        slots = data.replication_slots(src)
    except data.DataError as exc:
        ui.banner(exc)
    else:
        if slots.is_empty():
            st.caption("no replication slot")
        else:
            st.dataframe(
                slots.with_columns(
                    pl.col("retained_wal_bytes")
                    .map_elements(ui.size, return_dtype=pl.String)
                    .alias("retained WAL")
                ).select("slot_name", "plugin", "active", "wal_status", "retained WAL"),
                hide_index=True,
                key="pl_slots",
            )
    registry_panel(src)


def registry_panel(src: data.Sources) -> None:
    """Format avro: the registry's subjects; format json: where the schemas are instead."""
    st.subheader("Schema registry")
    if src.fmt != "avro":
        st.caption(
            "format json: no schema registry, every message carries its own schema; the "
            "engine records each version it sees (Schema versions, with the engine's figures)"
        )
        return
    try:
        reg = data.schema_registry(src)
    except data.Unavailable as exc:
        ui.banner(exc)
        return
    except data.DataError as exc:
        st.caption(str(exc))
        return
    if not reg.subjects:
        st.caption(f"no subject in the registry at {reg.url} yet")
        return
    rows = [
        {
            "subject": s.subject,
            "latest version": s.latest_version,
            "versions": s.versions,
            "latest schema id": s.latest_id,
            "compatibility": s.compatibility,
        }
        for s in reg.subjects
    ]
    st.dataframe(pl.DataFrame(rows), hide_index=True, key="pl_registry", height=_fit(len(rows)))
    st.caption(
        f"format avro: {len(rows)} subjects (a key and a value subject per topic) at "
        f"{reg.url}, its Confluent-compatible API; default compatibility "
        f"{reg.compatibility}; messages carry the schema id"
    )


def _state(state: str) -> str:
    mark = {"RUNNING": "●", "PAUSED": "◐", "UNASSIGNED": "◐", "RESTARTING": "◐"}
    return f"{mark.get(state, '✖')} {state}"


def panels() -> None:
    health = ui.freshness_caption()
    if health is not None:
        ui.consistency_caption(health)
        engine_panels()
    stack_panels()


ui.live(panels)
