"""`changefold eval fraud`: fraud alerts in the state against the generator's ground truth."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.core.config import Settings
from engine.core.errors import ViewError
from engine.lab.views.evaluate import Alert, Case, evaluate, format_report

if TYPE_CHECKING:
    from engine.serve.client import ApiClient

log = logging.getLogger(__name__)

_ALERTS = (
    "SELECT alert_id, rule, account_id, evidence_txn_ids, event_time, detected_at, "
    "detected_event_time FROM live.fraud_alerts"
)
_CLOCK = "SELECT clock FROM live.progress WHERE name = 'fraud_alerts'"
_TRUTH = (
    "SELECT case_id, scenario, account_id, txn_ids, started_at, ended_at, "
    "steps_done >= steps_planned AS finished FROM bank.fraud_truth ORDER BY case_id"
)


@click.group("eval")
def eval_group() -> None:
    """Measure the derived views against ground truth."""


@eval_group.command("fraud")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the alerts from this state file, opened read-only (while the engine holds "
    "it: a snapshot the engine writes). Default: through the running engine's API, else "
    "CHANGEFOLD_STATE_PATH.",
)
@click.option("--api", "api_url", help="URL of the engine's query API (default CHANGEFOLD_API_*).")
@click.option(
    "--fail-under",
    type=click.FloatRange(0, 1),
    help="Exit 1 when overall precision or recall is below this (e.g. 0.9).",
)
@click.pass_obj
def fraud(
    settings: Settings, state_path: Path | None, api_url: str | None, fail_under: float | None
) -> None:
    """Score fraud_alerts against bank.fraud_truth: precision, recall, F1, delays.

    The ground truth is read from Postgres (CHANGEFOLD_PG_*), where `changefold
    generate bank` records every injected case; the alerts from the engine's state.

    \b
    Matching: an alert matches a case when it is on the case's account and its
    evidence shares a transaction with the case or its event time lies within the
    case's span. Rule X targets scenario X: its alerts are true positives when they
    match a case of X. Recall counts finished cases the engine has seen (ended
    before the state's event-time clock); cases still running are listed apart.
    Delays, all in source time (the event times the source wrote; the
    generator's clock is simulated, so never against the wall clock): "into
    case" = alert event time - case start; "detection delay" = the event time the
    engine had folded when it raised the alert - the alert's event time. The
    wall-clock latency of the pipeline is the freshness metric (Pipeline page,
    GET /metrics).
    """
    if api_url and state_path:
        raise click.UsageError("give --api or --state, not both")
    alerts, clock = _read_alerts(settings, api_url, state_path)
    cases = _read_truth(settings, clock)
    report = evaluate(alerts, cases)
    click.echo(
        f"{len(alerts)} alerts, {len(cases)} fraud cases; state event clock "
        f"{clock.isoformat() if clock else '-'}"
    )
    for line in format_report(report):
        click.echo(line)
    o = report.overall
    if fail_under is not None and (
        o.precision is None or o.recall is None or min(o.precision, o.recall) < fail_under
    ):
        raise SystemExit(1)


def _read_alerts(
    settings: Settings, api_url: str | None, state_path: Path | None
) -> tuple[list[Alert], datetime | None]:
    from engine.app.commands.snapshot import readable
    from engine.serve.client import ApiClient
    from engine.state.reader import StateReader

    if state_path is None:
        client = ApiClient(api_url or settings.api.url)
        if api_url or client.health() is not None:
            log.info("reading alerts through the API at %s", client.url)
            rows: list[Any] = _api_rows(client, _ALERTS, settings.api.api_max_rows)
            clock = _api_rows(client, _CLOCK, 1)
            return [_alert(_api_alert_row(r)) for r in rows], _when(clock[0][0]) if clock else None
    # A file the running engine holds is read through a snapshot it writes.
    with readable(settings, Path(state_path or settings.engine.state_path)) as source:
        reader = StateReader.open_file(source)
        try:
            with reader.cursor() as cur:
                _require_views(cur)
                rows = cur.execute(_ALERTS).fetchall()
                clock_rows = cur.execute(_CLOCK).fetchall()
        finally:
            reader.close()
    return [_alert(r) for r in rows], clock_rows[0][0] if clock_rows else None


def _require_views(cur: Any) -> None:
    found = cur.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'live' AND table_name = 'fraud_alerts'"
    ).fetchall()
    if not found[0][0]:
        raise ViewError(
            "the state has no live.fraud_alerts table: it was written by an engine without "
            "the derived views; run the engine (`changefold run`) on it first"
        )


def _api_rows(client: ApiClient, sql: str, max_rows: int) -> list[list[Any]]:
    answer = client.query(sql, max_rows=max_rows)
    if answer.get("truncated"):
        raise ViewError(
            f"the API returned only {answer.get('row_count')} alerts (row cap); raise "
            "CHANGEFOLD_API_MAX_ROWS or stop the engine and use --state"
        )
    return list(answer.get("rows", []))


def _api_alert_row(row: list[Any]) -> tuple[Any, ...]:
    return (row[0], row[1], row[2], row[3], _when(row[4]), _when(row[5]), _when(row[6]))


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _alert(r: tuple[Any, ...] | list[Any]) -> Alert:
    return Alert(str(r[0]), str(r[1]), int(r[2]), frozenset(int(x) for x in r[3]), r[4], r[5], r[6])


def _read_truth(settings: Settings, clock: datetime | None) -> list[Case]:
    import psycopg

    try:
        with psycopg.connect(settings.stack.pg_conninfo()) as conn:
            rows = conn.execute(_TRUTH).fetchall()
    except psycopg.errors.UndefinedTable:
        raise ViewError(
            f"database {settings.stack.pg_database!r} has no bank.fraud_truth table: load "
            "sql/source/bank.sql and generate a run (`changefold generate bank`)"
        ) from None
    except psycopg.Error as exc:
        raise ViewError(
            f"cannot read the fraud ground truth from Postgres at {settings.stack.pg_host}:"
            f"{settings.stack.pg_port}: {str(exc).strip()}\nFix: start the stack (`changefold "
            "stack up`) or set CHANGEFOLD_PG_HOST/_PORT/_USER/_PASSWORD/_DATABASE"
        ) from None
    return [
        Case(
            int(cid),
            str(scenario),
            int(account),
            frozenset(int(t) for t in txns),
            started,
            ended,
            # a case the engine has not seen to its end yet is not scored for recall
            finished=bool(finished) and (clock is None or ended <= clock),
        )
        for cid, scenario, account, txns, started, ended, finished in rows
    ]
