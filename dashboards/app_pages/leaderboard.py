"""Leaderboard: top N with rank changes, a player's score timeline, all-time or the window."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

import data
import queries
import ui

src = data.sources()
ALL_TIME = "All time"
WINDOW = f"Last {src.window_min} min (event time)"

st.title(":material/leaderboard: Leaderboard")
left, right = st.columns([3, 1])
with left:
    choice = st.segmented_control(
        "Board", [ALL_TIME, WINDOW], default=ALL_TIME, key="lb_window", width="content"
    )
with right:
    top_n = st.number_input("Top N", min_value=3, max_value=500, value=20, step=5, key="lb_top")
windowed = choice == WINDOW


def moves(change: pl.Expr) -> pl.Expr:
    """Rank change as an arrow: ▲ 3 up, ▼ 2 down, = unchanged, ★ new on the board."""
    return (
        pl.when(change.is_null())
        .then(pl.lit("★ new"))
        .when(change > 0)
        .then(pl.format("▲ {}", change))
        .when(change < 0)
        .then(pl.format("▼ {}", -change))
        .otherwise(pl.lit("="))
    )


def board() -> None:
    if ui.freshness_caption() is None:
        return
    try:
        result = data.query(
            queries.LEADERBOARD_WINDOW if windowed else queries.LEADERBOARD, max_rows=int(top_n)
        )
    except data.DataError as exc:
        ui.banner(exc)
        return
    frame = result.frame
    if frame.is_empty():
        st.info(
            "No player on the board yet: the arcade generator (`changefold generate arcade`) "
            "writes scores, and the engine folds them in within a second."
        )
        return
    shown = frame.with_columns(moves(pl.col("rank_change")).alias("move"))
    st.dataframe(
        shown.select(
            "rank", "move", "name", "country", "total_points", "best_points", "scores", "player_id"
        ),
        hide_index=True,
        column_config={
            "rank": st.column_config.NumberColumn("Rank", width="small"),
            "move": st.column_config.TextColumn(
                "Move", help="Rank change since the batch before: ▲ up, ▼ down, ★ new"
            ),
            "name": "Player",
            "country": "Country",
            "total_points": st.column_config.NumberColumn("Total points", format="%d"),
            "best_points": st.column_config.NumberColumn("Best score", format="%d"),
            "scores": st.column_config.NumberColumn("Scores", format="%d"),
            "player_id": st.column_config.NumberColumn("Player id", format="%d"),
        },
        key="lb_table",
    )
    st.caption(
        f"{result.row_count} players shown"
        + (" (more on the board)" if result.truncated else "")
        + f" · query {result.elapsed_ms:.1f} ms"
    )
    timeline(frame)


def timeline(frame: pl.DataFrame) -> None:
    st.subheader("Score timeline")
    players = frame.select("player_id", "rank", "name").rows()
    labels = {pid: f"#{rank} {name} (id {pid})" for pid, rank, name in players}
    picked = st.selectbox(
        "Player", list(labels), format_func=lambda pid: labels.get(pid, str(pid)), key="lb_player"
    )
    if picked is None:
        return
    try:
        scores = data.query(
            queries.player_timeline(int(picked), src.window_min if windowed else None),
            max_rows=2000,
        ).frame
    except data.DataError as exc:
        ui.banner(exc)
        return
    if scores.is_empty():
        st.caption("No scores of this player in the range.")
        return
    base = alt.Chart(scores).encode(alt.X("achieved_at:T", title="achieved at (event time)"))
    total = base.mark_line(interpolate="step-after", color="#1f77b4").encode(
        alt.Y("running_total:Q", title="running total"),
        tooltip=["achieved_at:T", "points:Q", "running_total:Q", "match_id:Q"],
    )
    points = base.mark_circle(size=40, color="#ff7f0e").encode(
        alt.Y("points:Q", title="points per score"),
        tooltip=["achieved_at:T", "points:Q", "corrected:N", "match_id:Q"],
    )
    st.altair_chart(
        alt.layer(total, points).resolve_scale(y="independent").properties(height=280),
        key="lb_timeline",
    )


ui.live(board)
