"""Pieces every page shares: auto-refresh, the banner when a source is down, freshness,
number formats. No data access here (that is data.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import streamlit as st

import data

#: session_state keys of the sidebar's refresh controls (set in app.py).
AUTO_KEY = "cf_auto_refresh"
EVERY_KEY = "cf_refresh_s"


def refresh_every() -> float | None:
    """Seconds between refreshes of the live panels, or None when switched off."""
    if not st.session_state.get(AUTO_KEY, True):
        return None
    every = st.session_state.get(EVERY_KEY)
    return float(every) if every else data.sources().refresh_s


def live(panel: Callable[[], None]) -> None:
    """Run `panel` as a fragment that reruns on its own (only it, not the whole page)."""
    st.fragment(run_every=refresh_every())(panel)()


def banner(exc: data.DataError, *, own_query: bool = False) -> None:
    """What the user sees instead of a traceback when a source does not answer.

    A page's query on a table that does not exist yet is a wait, not an error; a query
    the user typed (`own_query`) gets the plain error."""
    if isinstance(exc, data.Unavailable):
        what = {
            "api": "Engine down",
            "connect": "Kafka Connect down",
            "postgres": "Postgres down",
            "registry": "Schema registry down",
        }
        st.error(f"**{what.get(exc.source, 'Source down')}.** {exc}", icon=":material/power_off:")
    elif isinstance(exc, data.QueryFailed) and not own_query and data.missing_table(exc):
        st.warning(
            "**Not in the state yet.** The engine creates the derived views (schema `live`) "
            "and the mirror tables as it starts and folds the first changes; this page fills "
            f"in once they exist. ({exc.message})",
            icon=":material/hourglass_empty:",
        )
    elif isinstance(exc, data.QueryFailed):
        st.error(f"**The query failed** ({exc.kind}): {exc.message}", icon=":material/error:")
    else:
        st.error(f"**Cannot load the data.** {exc}", icon=":material/error:")


def state_age_s(health: dict[str, Any]) -> float | None:
    """How old the newest source change in the state is: last batch age + its freshness."""
    age = health.get("last_batch_age_s")
    if age is None:
        return None
    return float(age) + float(health.get("freshness_ms") or 0.0) / 1000.0


def freshness_line(health: dict[str, Any]) -> str:
    """'state as of 0.4 s ago · last batch 0.1 s ago · end to end 300 ms'."""
    age = state_age_s(health)
    if age is None:
        return "no batch folded yet: the engine waits for change events"
    parts = [f"state as of **{seconds(age)} ago**"]
    parts.append(f"last batch {seconds(float(health['last_batch_age_s']))} ago")
    if health.get("freshness_ms") is not None:
        parts.append(f"end to end {millis(float(health['freshness_ms']))}")
    return " · ".join(parts)


def freshness_caption() -> dict[str, Any] | None:
    """Show the freshness line (or the banner); the health answer, None when down."""
    try:
        health = data.health()
    except data.DataError as exc:
        banner(exc)
        return None
    st.caption(freshness_line(health))
    return health


def consistency_line(answer: dict[str, Any]) -> str | None:
    """'Consistent as of **2026-12-02 15:04:05.123 UTC** (LSN 0/1A2B3C8, transaction 877)'
    from an API answer's `consistent_as_of` (the frontier: the last source transaction
    applied); without one, the API's reason (e.g. per-event visibility, transaction
    ordering off); None when the API says nothing about it."""
    as_of = answer.get("consistent_as_of")
    if isinstance(as_of, dict):
        return (
            f"Consistent as of **{when_ms(as_of.get('commit_time'))} UTC** "
            f"(LSN {as_of.get('lsn_text')}, transaction {as_of.get('xid')})"
        )
    reason = answer.get("consistency")
    if not reason:
        return None
    text = str(reason)
    return text[:1].upper() + text[1:]


def consistency_caption(answer: dict[str, Any]) -> None:
    """Show `consistency_line` (nothing when the API does not say)."""
    line = consistency_line(answer)
    if line is not None:
        st.caption(f":material/verified: {line}")


def when_ms(value: Any) -> str:
    """An ISO timestamp as UTC 'YYYY-MM-DD HH:MM:SS.mmm'."""
    if not isinstance(value, str):
        return "-"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"


def seconds(value: float) -> str:
    """A duration in seconds with one decimal ('0.3 s', '12.0 s', '431.5 s'), the one
    unit of every page; beyond 10 minutes in minutes or hours (a stalled state)."""
    if value < 600:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def millis(value: float) -> str:
    """A duration given in milliseconds, shown as `seconds` (one unit everywhere)."""
    return seconds(value / 1000)


def size(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def count(n: Any) -> str:
    return "-" if n is None else f"{float(n):,.0f}"


def when(value: Any) -> str:
    """A timestamp (datetime or ISO text) as UTC 'YYYY-MM-DD HH:MM:SS'."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
