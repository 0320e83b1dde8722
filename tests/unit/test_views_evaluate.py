"""Scoring alerts against fraud ground truth (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.lab.views.evaluate import Alert, Case, evaluate, format_report, matches, percentile

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def case(cid: int, scenario: str, account: int, txns: set[int], finished: bool = True) -> Case:
    return Case(cid, scenario, account, frozenset(txns), T0, T0 + timedelta(minutes=10), finished)


def alert(
    rule: str, account: int, evidence: set[int], at: timedelta = timedelta(minutes=5)
) -> Alert:
    return Alert(
        f"{rule}-{account}-{min(evidence, default=0)}",
        rule,
        account,
        frozenset(evidence),
        T0 + at,
        T0 + at + timedelta(seconds=30),
        T0 + at + timedelta(seconds=20),
    )


def test_match_by_evidence_or_by_time_on_the_same_account() -> None:
    c = case(1, "velocity_burst", 7, {100, 101})
    assert matches(alert("velocity_burst", 7, {101}, timedelta(hours=5)), c)
    assert matches(alert("velocity_burst", 7, {999}), c)  # inside the case's span
    assert not matches(alert("velocity_burst", 7, {999}, timedelta(hours=1)), c)
    assert not matches(alert("velocity_burst", 8, {101}), c)  # another account


def test_scores_per_rule_and_overall() -> None:
    cases = [
        case(1, "velocity_burst", 1, {10}),
        case(2, "velocity_burst", 2, {20}),
        case(3, "structuring", 3, {30}),
        case(4, "structuring", 4, {40}, finished=False),
    ]
    alerts = [
        alert("velocity_burst", 1, {10}),
        alert("velocity_burst", 3, {30}),  # on a structuring case: wrong pattern
        alert("structuring", 3, {30}),
        alert("structuring", 4, {40}),  # an unfinished case: still a true positive
        alert("structuring", 9, {90}),  # nothing there
    ]
    report = evaluate(alerts, cases)
    by_rule = {r.rule: r for r in report.rules}
    v, s = by_rule["velocity_burst"], by_rule["structuring"]
    assert (v.alerts, v.true_positives, v.cases, v.found) == (2, 1, 2, 1)
    assert (s.alerts, s.true_positives, s.cases, s.found, s.unfinished) == (3, 2, 1, 1, 1)
    assert v.precision == 0.5 and v.recall == 0.5 and v.f1 == 0.5
    o = report.overall
    assert (o.alerts, o.true_positives, o.cases, o.found) == (5, 3, 3, 2)
    assert o.into_case_s == (300.0, 300.0)
    assert o.to_detection_s == (30.0, 30.0)
    assert o.stream_s == (20.0, 20.0)
    text = "\n".join(format_report(report))
    assert "velocity_burst" in text and "0.500" in text
    assert "cases still in progress (not scored for recall): 1" in text
    # the delay is in source time (stream clock at detection - event time: 20 s), never
    # the wall clock at detection against (possibly simulated) event times (30 s)
    assert "detection delay in source time" in text and "p50 20s, p95 20s" in text
    assert "wall clock" not in text and "30s" not in text


def test_no_alerts_and_no_cases() -> None:
    report = evaluate([], [])
    assert report.overall.precision is None and report.overall.recall is None
    assert "-" in format_report(report)[2]


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
