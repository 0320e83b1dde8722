"""Fraud alerts do not depend on how the changes were cut into batches.

The engine reads each topic's partitions at their own pace, so one transaction's
insert can be folded a batch before or after its neighbours in event time, and a
replay cuts batches differently from the live run that saw the same changes. The
bank plan is maintained once in commit order and once as a consumer of three
partitions per topic receives it (lanes advancing by random amounts, transactions
split across batches); once everything arrived the alerts must be the same: rule,
account, every evidence transaction, severity and reason (the alerts are a function
of the mirror rows; a takeover's balance is computed from the account's rows).
"""

from __future__ import annotations

import duckdb
import pytest

from engine.core.config import Settings
from engine.lab.views.simulate import run_plan
from engine.lab.workload.plan import PlanConfig
from engine.views import ViewMaintainer

EVENTS = 15_000


def _alerts(seed: int, partitions: int | None, events_per_batch: int) -> list[tuple[object, ...]]:
    settings = Settings()
    con = duckdb.connect(":memory:")
    run_plan(
        con,
        ViewMaintainer(settings.views_sql_dir, settings.views.params()),
        "bank",
        PlanConfig(seed=seed),
        events=EVENTS,
        events_per_batch=events_per_batch,
        partitions=partitions,
    )
    return con.execute(
        "SELECT rule, account_id, list_sort(evidence_txn_ids)::VARCHAR, severity, reason, "
        "event_time, alert_id FROM live.fraud_alerts ORDER BY ALL"
    ).fetchall()


# Seeds on which cutting the changes differently once changed an impossible-travel
# alert's evidence (a card-present use folded a batch late hid a hit).
@pytest.mark.parametrize("seed", [11, 22])
def test_alerts_equal_in_commit_order_and_as_partitions_deliver(seed: int) -> None:
    in_order = _alerts(seed, None, 1000)
    partitioned = _alerts(seed, 3, 2000)
    assert len(in_order) >= 5, "too few alerts to compare"
    assert partitioned == in_order
