"""With `changefold demo` running on the real stack, headless Chromium opens the app
and goes through every page from the sidebar, as a user does; it waits for real
content (the overview's charts and top five, leaderboard rows, a fraud alert, lag
figures, query rows, the schema registry's subjects or the json format's note),
saves a screenshot per page under artifacts/screenshots/ and fails on a Streamlit
exception or error box, on a browser console error, on a request that leaves the
machine, and on a table whose columns are cut off at 1400 px."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from e2e_support import SCREENSHOTS, DemoRun, wait_for
from playwright.sync_api import Error as PlaywrightError

#: Seconds a page may take to show its real content (a first fraud alert needs the
#: bank generator's setup, some fraud scenarios and the engine's folding).
CONTENT_TIMEOUT_S = float(os.environ.get("CHANGEFOLD_E2E_CONTENT_TIMEOUT_S", "300"))


#: Hosts a page may talk to: this machine (the dashboards' server).
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: Schemes that fetch nothing from a network (inline images, the favicon's SVG).
LOCAL_SCHEMES = {"data", "blob", "about"}


@dataclass
class Browsing:
    """What the browser saw besides the page: console errors, page errors, requests
    that left the machine, failed requests."""

    console_errors: list[str] = field(default_factory=list)
    off_machine: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def request(self, request: Any) -> None:
        url = str(request.url)
        parts = urlsplit(url)
        if parts.scheme not in LOCAL_SCHEMES and parts.hostname not in LOCAL_HOSTS:
            self.off_machine.append(url)

    def problems(self) -> list[str]:
        return (
            [f"console: {e}" for e in self.console_errors]
            + [f"off the machine: {u}" for u in self.off_machine]
            + [f"failed: {f}" for f in self.failed]
        )


@pytest.fixture(scope="module")
def browsing() -> Browsing:
    return Browsing()


@pytest.fixture(scope="module")
def page(browser: Any, demo: DemoRun, browsing: Browsing) -> Iterator[Any]:
    # tall enough for the longest page (Streamlit scrolls inside the page, so a
    # full-page screenshot is the viewport)
    context = browser.new_context(viewport={"width": 1400, "height": 3400})
    context.on("request", browsing.request)
    tab = context.new_page()
    tab.on(
        "console",
        lambda m: (
            browsing.console_errors.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error"
            else None
        ),
    )
    tab.on("pageerror", lambda e: browsing.console_errors.append(f"page error: {e}"))
    tab.on(
        "requestfailed",
        lambda r: (
            browsing.failed.append(f"{r.url}: {r.failure}")
            # a fragment's rerun cancels the previous one's pending fetches
            if "ERR_ABORTED" not in str(r.failure)
            else None
        ),
    )
    tab.on(
        "response",
        lambda r: browsing.failed.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
    )
    tab.set_default_timeout(10_000)
    try:
        yield tab
    finally:
        context.close()


def metric(tab: Any, label: str) -> str | None:
    """The value of the metric with this label, or None while it is not shown."""
    # all_inner_texts reads what is there now: the page reruns and replaces elements,
    # and a locator of a replaced element would wait for it
    for text in tab.locator('[data-testid="stMetric"]').all_inner_texts():
        name, _, value = text.strip().partition("\n")
        if name.strip() == label:
            return value.strip()
    return None


def number(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.search(r"-?[\d,]+(\.\d+)?", text)
    return float(match.group(0).replace(",", "")) if match else None


def cells(tab: Any, table: int = 0) -> list[str]:
    """Texts of the accessible cells of the page's `table`-th dataframe."""
    frames = tab.locator('[data-testid="stDataFrame"]')
    if frames.count() <= table:
        return []
    frame = frames.nth(table)
    with contextlib.suppress(PlaywrightError):  # replaced by a rerun meanwhile
        frame.scroll_into_view_if_needed(timeout=2_000)  # off screen, cells may not render
    return [str(t) for t in frame.locator("td").all_text_contents()]


def texts(tab: Any, testid: str) -> list[str]:
    return [str(t) for t in tab.locator(f'[data-testid="{testid}"]').all_inner_texts()]


def settled(tab: Any) -> bool:
    """No script or fragment run in progress, and no element greyed out as stale."""
    state = tab.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
    return state == "notRunning" and tab.locator('[data-stale="true"]').count() == 0


def clipped_tables(tab: Any) -> list[int]:
    """Indexes of the page's tables whose columns run past the table's right edge (the
    grid then scrolls sideways: a column is cut off)."""
    widths: list[list[int] | None] = tab.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')].map(f => {
            const s = f.querySelector('.dvn-scroller');
            return s ? [s.scrollWidth, s.clientWidth] : null;
        })"""
    )
    return [i for i, w in enumerate(widths) if w is not None and w[0] > w[1] + 1]


def off_screen_pills(tab: Any) -> list[str]:
    """Labels of pills (the Fraud page's rules) that end past the main area's right edge."""
    found: list[str] = tab.evaluate(
        """() => {
            const main = document.querySelector('[data-testid="stMainBlockContainer"]');
            const edge = main.getBoundingClientRect().right;
            return [...document.querySelectorAll('[data-testid="stButtonGroup"] button')]
                .filter(b => b.getBoundingClientRect().right > edge + 1
                             || b.scrollWidth > b.clientWidth + 1)
                .map(b => b.innerText);
        }"""
    )
    return found


def screenshot(tab: Any, name: str) -> None:
    """Save the page as it is between two refreshes (live panels rerun every few
    seconds and grey out while they do); after a bounded wait, as it is."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    deadline = time.monotonic() + 30
    while True:
        calm = settled(tab)
        if calm or time.monotonic() > deadline:
            tab.screenshot(path=str(path), full_page=True)
            if not calm or settled(tab):
                return
        time.sleep(0.1)


def visit(
    tab: Any, demo: DemoRun, browsing: Browsing, link: str | None, name: str,
    ready: Callable[[], Any],
) -> None:  # fmt: skip
    """Open the app (`link` None) or follow the sidebar's link to a page, wait for
    `ready()` (failing at once on an exception box), check there is no exception or
    error box, no console error and no request off the machine, and save the screenshot.

    Pages are reached from the sidebar as a user does: a deep link as the first
    request makes Streamlit's client probe `<page>/_stcore/health` and
    `<page>/_stcore/host-config` (two 404s, streamlit/streamlit#7074) before it finds
    the server's root."""
    if link is None:
        tab.goto(demo.url)
    else:
        tab.locator('[data-testid="stSidebarNav"] a', has_text=link).click()

    def check() -> Any:
        exceptions = texts(tab, "stException")
        assert not exceptions, f"{name} shows an exception: {exceptions}"
        return ready()

    started = time.monotonic()
    try:
        wait_for(f"real content on the {name} page", check, timeout_s=CONTENT_TIMEOUT_S)
        print(f"{name}: content after {time.monotonic() - started:.1f} s", flush=True)
    finally:
        screenshot(tab, name)
    assert not texts(tab, "stException"), f"{name} shows an exception"
    errors = texts(tab, "stAlertContentError")
    assert not errors, f"{name} shows error boxes with the whole stack up: {errors}"
    assert not browsing.problems(), f"up to the {name} page: {browsing.problems()}"


#: Headings of the Overview's charts and board, in order.
OVERVIEW_CHARTS = [
    "Folded (records/s)",
    "Freshness (s)",
    "Fraud alerts per minute",
    "Top 5 players",
]


@pytest.mark.timeout(1800)
def test_every_page_shows_live_content(page: Any, demo: DemoRun, browsing: Browsing) -> None:
    """Fraud comes last: its first alert needs the most time (generator set-up, a fraud
    scenario, the views folding it)."""

    def overview() -> bool:
        ok = texts(page, "stAlertContentSuccess")
        headings = [h.strip() for h in texts(page, "stHeading")]
        return (
            len(ok) == 3
            and any("2 of 2 connectors running" in t for t in ok)
            and (number(metric(page, "Players on the board")) or 0) > 0
            and all(h in headings for h in OVERVIEW_CHARTS)
            and page.locator('[data-testid="stVegaLiteChart"]').count() >= 3
            and len(cells(page)) >= 5 * 4  # the top five: rank, name, country, points
        )

    visit(page, demo, browsing, None, "overview", overview)
    captions = " ".join(texts(page, "stCaptionContainer"))
    assert "per 10 s of batch finish time" in captions and "wall clock UTC" in captions
    assert cells(page)[0] == "1", f"the top five start at rank 1: {cells(page)[:4]}"

    def leaderboard() -> bool:
        captions = " ".join(texts(page, "stCaptionContainer"))
        table = cells(page)
        return "state as of" in captions and "players shown" in captions and len(table) >= 8 * 3

    visit(page, demo, browsing, "Leaderboard", "leaderboard", leaderboard)
    first_row = cells(page)[:8]
    assert first_row[0] == "1", f"the first row is rank 1: {first_row}"
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 1, "no score timeline"

    def pipeline() -> bool:
        body = page.inner_text("body")
        lag = metric(page, "Lag (records)")
        rate = number(metric(page, "Folded (records/s)")) or 0
        tables = " ".join(" ".join(cells(page, i)) for i in range(6))
        return (
            number(lag) is not None
            and rate > 0
            and "bank.bank.transactions" in tables
            and "RUNNING" in tables
            and "pgoutput" in tables
            and "Replication slots" in body
        )

    visit(page, demo, browsing, "Pipeline", "pipeline", pipeline)
    # one unit: seconds with one decimal (no "ms" figure next to an "s" one)
    shown = texts(page, "stMetric") + texts(page, "stCaptionContainer")
    assert not [t for t in shown if re.search(r"\d ms\b", t)], shown
    assert re.search(r"Freshness \(p50\)\s+[\d,]+\.\d s", "\n".join(shown)), shown
    captions = " ".join(texts(page, "stCaptionContainer"))
    assert re.search(
        r"all \d+ partitions caught up \(lag 0\)|\d+ of \d+ partitions behind", captions
    )
    assert re.search(r"the newest \d+ batches, [\d:]+ to [\d:]+ UTC", captions), captions
    assert "Schema registry" in [h.strip() for h in texts(page, "stHeading")]
    if demo.settings.stack.avro:
        # the registry's subjects: a key and a value subject per captured table
        def subjects() -> bool:
            frames = page.locator('[data-testid="stDataFrame"]').count()
            shown = " ".join(" ".join(cells(page, i)) for i in range(frames))
            return "bank.bank.transactions-value" in shown and "bank.bank.transactions-key" in shown

        wait_for("the registry's subjects on the Pipeline page", subjects, 60)
        captions = " ".join(texts(page, "stCaptionContainer"))
        assert re.search(r"format avro: \d+ subjects", captions), captions
        screenshot(page, "pipeline")
    else:
        assert "format json: no schema registry, every message carries its own schema" in captions
    assert not clipped_tables(page), f"pipeline tables cut off: {clipped_tables(page)}"

    def sql() -> bool:
        captions = " ".join(texts(page, "stCaptionContainer"))
        return re.search(r"\b([1-9]\d*) row\(s\)", captions) is not None and len(cells(page)) > 0

    visit(page, demo, browsing, "SQL", "sql", sql)

    def fraud() -> bool:
        alerts = number(metric(page, "Alerts")) or 0
        return alerts >= 1 and len(cells(page)) > 0 and "Evidence" in page.inner_text("body")

    visit(page, demo, browsing, "Fraud", "fraud", fraud)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 1, "no evidence chart"
    body = page.inner_text("body")
    # one clock, labelled: event times of the source; no wall-clock "Detected" column
    assert "Times on this page are event times" in body
    assert "Detected" not in body

    def top_alert_shown() -> bool:
        """The evidence shown (named under the picker) is the feed's first row (the
        feed refreshes: read both until they agree)."""
        row = cells(page)[:7]  # event time, severity, level, rule, account, txns, reason
        if len(row) < 5:
            return False
        rule, account = row[3].strip(), row[4].strip()
        shown = " ".join(texts(page, "stMarkdown"))
        return f"{rule.replace('_', ' ')} · account {account} ·" in shown

    wait_for("the evidence shown first: the feed's top alert", top_alert_shown, 30)
    assert not off_screen_pills(page), f"rules cut off: {off_screen_pills(page)}"
    assert not clipped_tables(page), f"fraud tables cut off: {clipped_tables(page)}"
