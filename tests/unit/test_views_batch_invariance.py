"""Every view is a function of the committed history, not of where batches were cut.

The same change history (a bank with injected fraud and an arcade, merged in commit
order) is folded through the views in batches of 1, 7, 977 and 20,000 records (a
small history) and of 977, 5,000 and 20,000 records, in commit order and as a
consumer of three partitions per topic reads it (a larger one), with whole source
transactions applied in commit order as the engine does (`transaction_batches`);
and the larger one with batches that split transactions (whole transactions off).
Every `live.*` table must come out identical, every column compared except the bookkeeping columns
`changefold diff` skips by its documented rule (batch ids, wall-clock times); and
equal to a recompute of every view from the final mirrors alone (the from-scratch
definition; the leaderboards also against sql/views/scratch/).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

import duckdb
import pytest

from engine.core.config import Settings
from engine.lab.views.planfeed import PlanFeed, partitioned_batches, transaction_batches
from engine.lab.views.scratch import differences
from engine.lab.views.simulate import take_events
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.plan import PgTxn, PlanConfig, to_datetime
from engine.replay.diff import BOOKKEEPING_COLUMNS
from engine.views import ViewMaintainer

SETTINGS = Settings()
Snapshot = dict[str, list[tuple[object, ...]]]


def history(events: int, population: int, seed: int, fraud_rate: float = 0.08) -> list[PgTxn]:
    """Bank (with fraud) and arcade transactions merged by commit time."""
    bank = BankPlanner(PlanConfig(seed=seed, population=population, fraud_rate=fraud_rate))
    arcade = ArcadePlanner(PlanConfig(seed=seed + 1, population=population))

    def stream(planner: BankPlanner | ArcadePlanner) -> Iterator[PgTxn]:
        return itertools.chain(planner.setup(), take_events(planner.stream(), events // 2))

    return list(heapq.merge(stream(bank), stream(arcade), key=lambda t: t.at_us))


def snapshot(con: duckdb.DuckDBPyConnection) -> Snapshot:
    """Every live.* table, every column but the bookkeeping ones, rows sorted."""
    out: Snapshot = {}
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'live' ORDER BY 1"
    ).fetchall()
    for (table,) in tables:
        cols = [
            str(c)
            for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'live' "
                "AND table_name = ? ORDER BY column_index",
                [table],
            ).fetchall()
            if c not in BOOKKEEPING_COLUMNS
        ]
        select = ", ".join(f'"{c}"::VARCHAR' for c in cols)
        out[f"live.{table}"] = con.execute(
            f'SELECT {select} FROM live."{table}" ORDER BY ALL'
        ).fetchall()
    return out


_FOLDED: dict[tuple[int, int, int, bool], tuple[Snapshot, Snapshot]] = {}


def fold(
    txns: list[PgTxn], records: int, partitions: int = 1, *, whole: bool = True
) -> tuple[Snapshot, Snapshot]:
    """`fold_once`, each history and cut folded once per module."""
    key = (id(txns), records, partitions, whole)
    if key not in _FOLDED:
        _FOLDED[key] = fold_once(txns, records, partitions, whole=whole)
    return _FOLDED[key]


def fold_once(
    txns: list[PgTxn], records: int, partitions: int = 1, *, whole: bool = True
) -> tuple[Snapshot, Snapshot]:
    """The views after folding `txns` in batches of `records` records, and the same
    state's views recomputed from its mirrors alone. `whole` False: as with whole
    transactions off, a batch may hold part of a transaction (`partitioned_batches`)."""
    con = duckdb.connect(":memory:")
    views = ViewMaintainer(SETTINGS.views_sql_dir, SETTINGS.views.params())
    views.create_mirror_tables(con)
    views.install(con)
    feed = PlanFeed(con)
    ids = itertools.count(1)
    delivered = (
        transaction_batches(txns, records, partitions, seed=records)
        if whole
        else partitioned_batches(txns, records, partitions, seed=records)
    )
    for batch in delivered:
        con.execute("BEGIN TRANSACTION")
        fed = feed.apply(batch)
        views.maintain(con, fed.changes, next(ids), to_datetime(fed.last_us))
        con.execute("COMMIT")
    assert differences(con, SETTINGS.views_sql_dir, views.params) == {
        "leaderboard": [],
        "leaderboard_window": [],
    }
    maintained = snapshot(con)
    con.execute("BEGIN TRANSACTION")
    views.recompute_all(con)
    con.execute("COMMIT")
    return maintained, snapshot(con)


def assert_same(a: Snapshot, b: Snapshot, what: str) -> None:
    assert a.keys() == b.keys()
    problems = []
    for table in a:
        only_a = sorted(set(a[table]) - set(b[table]))
        only_b = sorted(set(b[table]) - set(a[table]))
        if only_a or only_b:
            problems.append(
                f"{table}: {len(only_a)} rows only in the first, {len(only_b)} only in the "
                f"second; e.g. {only_a[:2]} / {only_b[:2]}"
            )
    assert not problems, f"{what}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def small() -> list[PgTxn]:
    return history(events=600, population=30, seed=3, fraud_rate=0.6)


@pytest.fixture(scope="module")
def large() -> list[PgTxn]:
    return history(events=30_000, population=150, seed=8)


def test_history_has_something_to_compare(small: list[PgTxn], large: list[PgTxn]) -> None:
    for txns in (small, large):
        maintained, _ = fold(txns, 20_000)
        assert len(maintained["live.leaderboard"]) > 10
        assert len(maintained["live.fraud_alerts"]) >= 3
        assert len(maintained["live.account_risk"]) >= 3


def test_small_history_in_batches_of_1_7_977_20000(small: list[PgTxn]) -> None:
    reference, scratch = fold(small, 1)
    assert_same(reference, scratch, "batches of 1 vs recomputed from the mirrors")
    for records, partitions in ((7, 1), (977, 1), (20_000, 1)):
        maintained, rebuilt = fold(small, records, partitions)
        what = f"{records} records x {partitions} partition(s)"
        assert_same(reference, maintained, f"batches of 1 vs {what}")
        assert_same(maintained, rebuilt, f"{what} vs recomputed from the mirrors")


def test_large_history_in_batches_of_977_20000_and_partitions(large: list[PgTxn]) -> None:
    reference, scratch = fold(large, 977)
    assert_same(reference, scratch, "batches of 977 vs recomputed from the mirrors")
    for records, partitions in ((20_000, 1), (977, 3), (5_000, 3)):
        maintained, rebuilt = fold(large, records, partitions)
        what = f"{records} records x {partitions} partition(s)"
        assert_same(reference, maintained, f"batches of 977 vs {what}")
        assert_same(maintained, rebuilt, f"{what} vs recomputed from the mirrors")


def test_final_views_equal_when_batches_split_transactions(large: list[PgTxn]) -> None:
    """With whole transactions off a batch can hold half a transfer (the account row
    without its transaction, one leg without the other); once everything arrived, the
    views equal those of whole transactions in commit order."""
    reference, _ = fold(large, 977)
    for records in (5_000,):
        maintained, rebuilt = fold(large, records, 3, whole=False)
        assert_same(reference, maintained, f"whole transactions vs {records} records split")
        assert_same(maintained, rebuilt, f"{records} records split vs recomputed")
