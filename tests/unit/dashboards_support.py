"""A state file for the dashboard tests, served by a real query API in this process.

The views' rows come from the generators' own plans folded through the real view
SQL (engine.lab.views.simulate, no servers): a small arcade season and a bank run with
a high fraud rate, so every page has real content. The engine's internal tables get
batch figures, partitions, assignments, a dead letter and schema versions as the
engine writes them.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import importlib
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from engine.core.config import PACKAGE_PROJECT_DIR, Settings
from engine.lab.views.simulate import run_plan
from engine.lab.workload.plan import PlanConfig
from engine.serve import ApiHandle, start_api
from engine.state.reader import StateReader
from engine.state.store import Store
from engine.views.maintainer import ViewMaintainer

DASHBOARDS = PACKAGE_PROJECT_DIR / "dashboards"
APP = DASHBOARDS / "app.py"
# The pages import their modules (data, queries, ...) by bare name, as under Streamlit.
if str(DASHBOARDS) not in sys.path:
    sys.path.insert(0, str(DASHBOARDS))
#: The dashboards' own modules, for tests of them.
data = importlib.import_module("data")
export = importlib.import_module("export")
queries = importlib.import_module("queries")

GROUP = "changefold"
#: The frontier engine_figures records: the last source transaction applied.
FRONTIER = {"xid": "877", "lsn": 0x1A2B3C8, "commit_ts_ms": 1_796_223_845_123, "transactions": 877}
#: (topic, partitions, records per batch and partition): bank.transactions is the busy one.
TOPICS = (("arcade.arcade.scores", 3, 40), ("bank.bank.transactions", 3, 90))


def build_dashboard_state(path: Path) -> duckdb.DuckDBPyConnection:
    """Create the state at `path` with the views' rows (no engine figures: see
    `engine_figures`); the returned connection is its writer (the 'engine')."""
    settings = Settings.from_env({})
    store = Store(path)
    store.migrate(settings.state_sql_dir)
    store.close()
    con = duckdb.connect(str(path))
    views = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    run_plan(con, views, "arcade", PlanConfig(seed=3, population=60), events=1500,
             events_per_batch=300)  # fmt: skip
    run_plan(
        con, views, "bank", PlanConfig(seed=2, population=80, fraud_rate=0.2), events=3000,
        events_per_batch=500, first_batch_id=100,
    )  # fmt: skip
    return con


def engine_figures(con: duckdb.DuckDBPyConnection, batches: int = 12) -> None:
    """Rows of _changefold.* as the engine writes them, the newest batch just now."""
    now = dt.datetime.now(dt.UTC)
    con.execute("BEGIN TRANSACTION")
    for i in range(batches):
        finished = now - dt.timedelta(seconds=(batches - 1 - i) * 0.5)
        records = sum(p * n for _, p, n in TOPICS)
        con.execute(
            "INSERT INTO _changefold.batches VALUES "
            "(?, ?, 'engine-1', ?, ?, ?, 0, 0, 0, ?, 0, ?, ?, ?, ?, ?)",
            [
                i + 1, GROUP, finished, records, records * 900, records, 2.0 + i % 3,
                9.0 + i % 4, 1.5, finished - dt.timedelta(milliseconds=300 + 10 * i),
                300.0 + 10 * i,
            ],
        )  # fmt: skip
        for topic, partitions, per_partition in TOPICS:
            for p in range(partitions):
                n = per_partition * (3 if p == 0 else 1)  # partition 0 is hot: skew
                end = (i + 1) * n
                con.execute(
                    "INSERT INTO _changefold.batch_partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [i + 1, topic, p, i * n, end, n, end + 5 * p, 5 * p],
                )
    for topic, partitions, per_partition in TOPICS:
        for p in range(partitions):
            n = per_partition * (3 if p == 0 else 1)
            con.execute(
                'INSERT OR REPLACE INTO _changefold.offsets (group_id, topic, "partition", '
                "next_offset, updated_at) VALUES (?, ?, ?, ?, ?)",
                [GROUP, topic, p, batches * n, now],
            )
            con.execute(
                "INSERT OR REPLACE INTO _changefold.assignments VALUES (?, ?, ?, ?, ?)",
                [GROUP, topic, p, f"engine-{1 + p % 2}", now],
            )
    con.execute(
        'INSERT INTO _changefold.dead_letters (id, group_id, topic, "partition", "offset", '
        '"key", "value", error, stage, failed_at) VALUES '
        "(1, ?, 'bank.bank.transactions', 1, 17, 'k'::BLOB, 'not json'::BLOB, "
        "'value is not JSON: Expecting value at line 1', 'decode', ?)",
        [GROUP, now],
    )
    con.execute(
        "INSERT OR REPLACE INTO _changefold.frontier VALUES (?, ?, ?, ?, ?, ?, ?)",
        [GROUP, FRONTIER["xid"], FRONTIER["lsn"], FRONTIER["commit_ts_ms"],
         FRONTIER["transactions"], batches, now],
    )  # fmt: skip
    for version, table in enumerate(("transactions", "transactions", "accounts"), start=1):
        con.execute(
            "INSERT INTO _changefold.schema_versions VALUES "
            "('bank', ?, ?, ?, ?, '[]', '[{\"name\": \"id\"}]', NULL, 0, 0, ?)",
            [table, 1 if table == "accounts" else version, f"fp{version}",
             f"bank.bank.{table}", now],
        )  # fmt: skip
    con.execute("COMMIT")


@functools.cache
def template_state() -> Path:
    """The state file, built once per test process (a few seconds); copy it to use it."""
    directory = Path(tempfile.mkdtemp(prefix="changefold-dash-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "template.duckdb"
    build_dashboard_state(path).close()
    return path


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """The engine's side of a dashboard test: its writer connection and its API."""

    con: duckdb.DuckDBPyConnection
    api: ApiHandle

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, list(params)).fetchall()


def stack_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the dashboards at a Connect and a Postgres that do not answer."""
    monkeypatch.setenv("CHANGEFOLD_CONNECT_PORT", str(closed_port()))
    monkeypatch.setenv("CHANGEFOLD_PG_PORT", str(closed_port()))
    monkeypatch.delenv("CHANGEFOLD_CONNECT_URL", raising=False)


@contextmanager
def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, transactions: str = "on"
) -> Iterator[Served]:
    """A copy of the state served by a real query API; the dashboards pointed at it (and
    at a Connect and a Postgres that do not answer). The engine orders transactions
    (`transactions`), and its frontier is FRONTIER."""
    path = tmp_path / "state.duckdb"
    shutil.copyfile(template_state(), path)
    con = duckdb.connect(str(path))
    engine_figures(con)  # batches of just now
    settings = Settings.from_env({}, home=tmp_path, transactions=transactions)
    api = start_api(settings, StateReader.for_connection(con), port=0)
    monkeypatch.setenv("CHANGEFOLD_API_URL", api.url)
    stack_down(monkeypatch)
    try:
        yield Served(con, api)
    finally:
        api.stop()
        con.close()


def nothing_up(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the dashboards at an API (and a stack) that do not answer; the API's URL."""
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CHANGEFOLD_API_URL", url)
    stack_down(monkeypatch)
    return url


def open_page(page: str | None = None) -> AppTest:
    """Run the app's entry script, then switch to `page` (e.g. "fraud"); fail on exceptions."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page is not None:
        at.switch_page(f"app_pages/{page}.py").run()
    assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, "the page raised: " + "\n".join(
        f"{e.message}\n{''.join(e.stack_trace)}" for e in at.exception
    )


def texts(elements: object) -> list[str]:
    """The values of a list of text elements (errors, captions, markdown, ...)."""
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def frame_with(at: Any, column: str) -> Any:
    """The page's table that has `column` (pandas, as AppTest gives it)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a {column!r} column"
    return found[0]


def metric(at: Any, label: str) -> str:
    return next(str(m.value) for m in at.metric if m.label == label)
