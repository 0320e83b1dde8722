"""With `changefold demo` running on the real stack, headless Chromium opens every page,
waits for real content (leaderboard rows, a fraud alert, lag figures, query rows),
saves a screenshot per page under artifacts/screenshots/ and fails on a Streamlit
exception or error box."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_support import SCREENSHOTS, DemoRun, wait_for
from playwright.sync_api import Error as PlaywrightError

#: Seconds a page may take to show its real content (a first fraud alert needs the
#: bank generator's setup, some fraud scenarios and the engine's folding).
CONTENT_TIMEOUT_S = float(os.environ.get("CHANGEFOLD_E2E_CONTENT_TIMEOUT_S", "300"))


@pytest.fixture(scope="module")
def page(browser: Any, demo: DemoRun) -> Iterator[Any]:
    # tall enough for the longest page (Streamlit scrolls inside the page, so a
    # full-page screenshot is the viewport)
    context = browser.new_context(viewport={"width": 1400, "height": 3400})
    tab = context.new_page()
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


def visit(tab: Any, demo: DemoRun, path: str, name: str, ready: Callable[[], Any]) -> None:
    """Open the page, wait for `ready()` (failing at once on an exception box), check
    there is no exception or error box, and save the screenshot."""
    tab.goto(f"{demo.url}/{path}")

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


@pytest.mark.timeout(1800)
def test_every_page_shows_live_content(page: Any, demo: DemoRun) -> None:
    """Fraud comes last: its first alert needs the most time (generator set-up, a fraud
    scenario, the views folding it)."""

    def overview() -> bool:
        ok = texts(page, "stAlertContentSuccess")
        return (
            len(ok) == 3
            and any("2 of 2 connectors running" in t for t in ok)
            and (number(metric(page, "Players on the board")) or 0) > 0
        )

    visit(page, demo, "", "overview", overview)

    def leaderboard() -> bool:
        captions = " ".join(texts(page, "stCaptionContainer"))
        table = cells(page)
        return "state as of" in captions and "players shown" in captions and len(table) >= 8 * 3

    visit(page, demo, "leaderboard", "leaderboard", leaderboard)
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

    visit(page, demo, "pipeline", "pipeline", pipeline)

    def sql() -> bool:
        captions = " ".join(texts(page, "stCaptionContainer"))
        return re.search(r"\b([1-9]\d*) row\(s\)", captions) is not None and len(cells(page)) > 0

    visit(page, demo, "sql", "sql", sql)

    def fraud() -> bool:
        alerts = number(metric(page, "Alerts")) or 0
        return alerts >= 1 and len(cells(page)) > 0 and "Evidence" in page.inner_text("body")

    visit(page, demo, "fraud", "fraud", fraud)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 1, "no evidence chart"
