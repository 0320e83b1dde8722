"""Run a generator plan through the views without servers: plan -> mirrors -> maintain.

Used by the fraud-rule test, the benchmark and for trying thresholds: the bank or
arcade planner's transactions are applied to mirror tables batch by batch
(`PlanFeed`), and `ViewMaintainer.maintain` runs after each batch in the same
DuckDB transaction, as in the engine. The batch's `detected_at` is the simulated
time of its last transaction, so detection delays are in the plan's clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb

from engine.lab.views.evaluate import Alert, Case
from engine.lab.views.planfeed import PlanFeed, batches, partitioned_batches
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.plan import PgTxn, PlanConfig, to_datetime
from engine.views.contract import MaintainStats
from engine.views.maintainer import ViewMaintainer


@dataclass
class SimResult:
    stats: list[MaintainStats] = field(default_factory=list)
    events: int = 0
    cases: list[Case] = field(default_factory=list)


def take_events(txns: Iterator[PgTxn], events: int) -> Iterator[PgTxn]:
    """Transactions until `events` captured row changes were produced."""
    n = 0
    for t in txns:
        if n >= events:
            return
        yield t
        n += t.events


def run_plan(
    con: duckdb.DuckDBPyConnection,
    maintainer: ViewMaintainer,
    domain: str,
    cfg: PlanConfig,
    *,
    events: int,
    events_per_batch: int = 500,
    first_batch_id: int = 1,
    partitions: int | None = None,
) -> SimResult:
    """Setup and `events` stream events of a plan, maintained batch by batch.

    Creates the mirror tables and installs the maintainer on `con` first. Batches
    hold whole Postgres transactions in commit order, or with `partitions` the
    changes as a consumer of that many partitions per topic receives them
    (`partitioned_batches`, shuffled with the plan's seed)."""
    maintainer.create_mirror_tables(con)
    maintainer.install(con)
    planner: BankPlanner | ArcadePlanner = (
        BankPlanner(cfg) if domain == "bank" else ArcadePlanner(cfg)
    )
    feed = PlanFeed(con)
    result = SimResult()
    ids = itertools.count(first_batch_id)
    stream = itertools.chain(planner.setup(), take_events(planner.stream(), events))
    delivered = (
        batches(stream, events_per_batch)
        if partitions is None
        else partitioned_batches(stream, events_per_batch, partitions, cfg.seed)
    )
    for batch in delivered:
        con.execute("BEGIN TRANSACTION")
        try:
            fed = feed.apply(batch)
            stats = maintainer.maintain(con, fed.changes, next(ids), to_datetime(fed.last_us))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        result.stats.append(stats)
        result.events += fed.events
    if isinstance(planner, BankPlanner):
        result.cases = [
            Case(
                c.case_id,
                c.scenario,
                c.account_id,
                frozenset(c.txn_ids),
                to_datetime(c.started_us),
                to_datetime(c.ended_us),
                finished=c.steps_done >= c.steps_planned,
            )
            for c in planner.cases
        ]
    return result


def read_alerts(con: duckdb.DuckDBPyConnection) -> list[Alert]:
    rows = con.execute(
        "SELECT alert_id, rule, account_id, evidence_txn_ids, event_time, detected_at, "
        "detected_event_time FROM live.fraud_alerts"
    ).fetchall()
    return [Alert(str(r[0]), str(r[1]), int(r[2]), frozenset(r[3]), r[4], r[5], r[6]) for r in rows]
