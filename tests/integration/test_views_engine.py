"""The derived views over real change events: generator -> Postgres -> Debezium -> Kafka
-> the engine's decode and fold (a replay into a fresh state file) with the views
maintained per batch -> checks against from-scratch definitions and ground truth."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg
import pytest
from click.testing import CliRunner
from engine_support import engine_env, wait_topics_quiet

from engine.app.build import replay_job
from engine.app.cli import main
from engine.core.config import Settings
from engine.ingest.topics import subscription
from engine.lab.views.evaluate import Case, evaluate, format_report
from engine.lab.views.scratch import differences
from engine.lab.views.simulate import read_alerts
from engine.lab.workload.runner import RunSummary, WorkloadOptions, run_workload
from engine.replay.bounds import StartSpec, UntilSpec
from engine.views import ViewMaintainer

pytestmark = pytest.mark.integration


def _generate(settings: Settings, domain: str, seed: int, events: int) -> RunSummary:
    # The same rows as a paced run of `events` (pacing only decides when rows are written).
    return run_workload(
        settings,
        WorkloadOptions(domain=domain, rate=2000.0, duration_s=events / 2000.0, seed=seed),
    )


def _replay(settings: Settings, target: Path) -> None:
    """`changefold replay` into a fresh file: the engine's decode and fold, with the views
    attached to the state writer as in `changefold run`."""
    job = replay_job(
        settings,
        target,
        subscription((), settings.connectors_dir),
        StartSpec("earliest"),
        UntilSpec(),
    )
    result = job.run(threading.Event())
    assert result.complete, "the replay did not reach the end of the topics"


def _cases(settings: Settings, first_case: int, sim_end: datetime) -> list[Case]:
    with psycopg.connect(settings.stack.pg_conninfo()) as pg:
        rows = pg.execute(
            "SELECT case_id, scenario, account_id, txn_ids, started_at, ended_at, "
            "steps_done >= steps_planned FROM bank.fraud_truth WHERE case_id >= %s",
            (first_case,),
        ).fetchall()
    return [
        Case(
            int(r[0]), r[1], int(r[2]), frozenset(r[3]), r[4], r[5], bool(r[6]) and r[5] <= sim_end
        )
        for r in rows
    ]


def test_views_follow_a_generated_run(
    stack: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _generate(stack, "arcade", seed=41, events=8000)
    bank = _generate(stack, "bank", seed=42, events=30000)
    wait_topics_quiet(stack, "arcade")
    wait_topics_quiet(stack, "bank")

    target = tmp_path / "replayed.duckdb"
    with caplog.at_level(logging.DEBUG, logger="engine.views.maintainer"):
        _replay(stack, target)
    cuts = [
        r.getMessage() for r in caplog.records if "unbalanced in the bank mirror" in r.getMessage()
    ]

    settings = Settings()
    views = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    con = duckdb.connect(str(target))
    try:
        # Every folded batch was maintained, in its own transaction.
        batches = con.execute("SELECT count(*), max(batch_id) FROM _changefold.batches").fetchall()
        maintained = con.execute(
            "SELECT batch_id FROM live.progress WHERE name = 'batches'"
        ).fetchall()
        assert maintained == [(batches[0][1],)]
        print(f"\n{batches[0][0]} batches; {len(cuts)} left transfers half-written: {cuts}")
        # Leaderboards: maintained batch by batch == computed from scratch, row for row.
        assert con.execute("SELECT count(*) FROM live.leaderboard").fetchall()[0][0] > 50
        assert differences(con, settings.views_sql_dir, views.params) == {
            "leaderboard": [],
            "leaderboard_window": [],
        }
        # Every transfer whose legs were split across batches is whole again at the end.
        assert con.execute("SELECT * FROM live.unbalanced_transfers").fetchall() == []
        # Fraud: the alerts of this run against this run's ground truth.
        alerts = [a for a in read_alerts(con) if a.event_time >= bank.sim_start]
        cases = _cases(stack, bank.id_bases.get("bank.fraud_truth", 1), bank.sim_end)
    finally:
        con.close()
    report = evaluate(alerts, cases)
    print("\n".join(format_report(report)))
    assert report.overall.cases >= 20
    assert report.overall.precision is not None and report.overall.precision >= 0.9
    assert report.overall.recall is not None and report.overall.recall >= 0.9

    # The command line prints the same kind of table from the state file.
    env = {k: v for k, v in engine_env(stack).items() if k.startswith("CHANGEFOLD_")}
    out = CliRunner().invoke(main, ["eval", "fraud", "--state", str(target)], env=env)
    assert out.exit_code == 0, out.output
    assert "overall" in out.output and "precision" in out.output
