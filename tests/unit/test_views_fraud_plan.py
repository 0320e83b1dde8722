"""Fraud rules against the generator's ground truth, without servers.

The bank planner (engine.lab.workload) runs for a generated run's worth of events with
three seeds; its transactions are applied to mirror tables in 1,000-event batches
and the views are maintained after each batch, as the engine does. The planned
fraud cases are the ground truth (engine.lab.views.evaluate explains the matching).
"""

from __future__ import annotations

import duckdb
import pytest

from engine.core.config import Settings
from engine.lab.views.evaluate import evaluate, format_report
from engine.lab.views.simulate import read_alerts, run_plan
from engine.lab.workload.plan import PlanConfig
from engine.views import ViewMaintainer

#: About two and a half simulated days of the default mix (~15 cases per seed).
EVENTS = 15_000


@pytest.mark.parametrize("seed", [11, 22, 33])
def test_precision_and_recall_on_generated_fraud(seed: int) -> None:
    settings = Settings()
    con = duckdb.connect(":memory:")
    views = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    result = run_plan(
        con, views, "bank", PlanConfig(seed=seed), events=EVENTS, events_per_batch=1000
    )
    report = evaluate(read_alerts(con), result.cases)
    print(f"\nseed {seed}, {result.events} events")
    print("\n".join(format_report(report)))
    overall = report.overall
    assert overall.cases >= 10, "too few finished cases to judge the rules"
    assert overall.precision is not None and overall.precision >= 0.9
    assert overall.recall is not None and overall.recall >= 0.9
    # every scenario is found at least once when it occurred
    for rule in report.rules:
        if rule.cases:
            assert rule.found > 0, f"{rule.rule}: none of {rule.cases} cases found"
    assert sum(s.conservation_violations for s in result.stats) == 0
