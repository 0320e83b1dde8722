"""The plan feed applies generator statements exactly as Postgres-style SQL would."""

from __future__ import annotations

import duckdb
import pytest

from engine.core.config import Settings
from engine.lab.views.planfeed import KEYS, PlanFeed, batches, duckdb_sql
from engine.lab.views.simulate import take_events
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.plan import PlanConfig
from engine.views import ViewMaintainer

SETTINGS = Settings()


def fresh() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    ViewMaintainer(SETTINGS.views_sql_dir, SETTINGS.views.params()).create_mirror_tables(con)
    return con


@pytest.mark.parametrize("planner", [BankPlanner, ArcadePlanner])
def test_feed_equals_executing_the_statements(planner: type) -> None:
    p = planner(PlanConfig(seed=5, population=20))
    plan = [*p.setup(), *take_events(p.stream(), 1500)]
    fed, executed = fresh(), fresh()
    feed = PlanFeed(fed)
    for batch in batches(plan, 200):
        feed.apply(batch)
    for txn in plan:
        for st in txn.statements:
            if st.captured:
                executed.execute(duckdb_sql(st), list(st.params))
    for table, key in KEYS.items():
        q = f"SELECT * FROM {table} ORDER BY {key}"
        assert fed.execute(q).fetchall() == executed.execute(q).fetchall(), table


def test_changes_collapse_per_key_with_rows_before_and_after() -> None:
    con = fresh()
    p = BankPlanner(PlanConfig(seed=2, population=20))
    feed = PlanFeed(con)
    feed.apply(list(p.setup()))
    stream = p.stream()
    fed = feed.apply(list(take_events(stream, 400)))
    txns = fed.changes["bank.transactions"]
    accounts = fed.changes["bank.accounts"]
    # new transactions have no before row; accounts are never deleted
    assert txns.before.height < txns.after.height
    assert set(accounts.before["account_id"]) <= set(accounts.after["account_id"])
    assert accounts.after["account_id"].is_unique().all()
    # one row per key even when the batch changed a key several times
    assert accounts.after.height == len(set(accounts.after["account_id"]))
    assert fed.events > 0
