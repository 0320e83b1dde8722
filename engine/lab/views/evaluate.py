"""Score fraud alerts against the generator's ground truth (pure functions).

Matching, as `changefold eval fraud` prints it:

* An alert **matches** a fraud case when it is on the case's account and either
  its evidence shares a transaction with the case, or its event time lies within
  the case's span [started_at, ended_at].
* Each rule targets the scenario of the same name. An alert is a **true
  positive** when it matches a case of its rule's scenario; otherwise it is a
  false positive (also when it matches a case of another scenario: it named the
  wrong pattern).
* A case is **found** when an alert of its scenario's rule matches it. Recall
  counts the **finished** cases only (every planned step written); a case still
  in progress when the run stopped may not show its pattern yet. Alerts matching
  an unfinished case still count as true positives.
* Detection delay of a found case, from its earliest matching alert (by
  detection), in source time (the event times the source wrote, whatever clock
  that is: the generator's is simulated): `into the case` = alert event time -
  case start (how much of the fraud had happened when the rule fired);
  `detection delay` = the stream's event-time clock when the alert was raised
  (`detected_event_time`) - alert event time (how much later source time the
  engine had folded when it raised the alert). `to_detection_s` (the wall clock at
  detection - alert event time) is kept but not printed: against a simulated
  source clock it measures the gap between two clocks (e.g. "1050.4d"), not the
  pipeline; the pipeline's wall-clock latency is the freshness metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.lab.workload.fraud import SCENARIOS


@dataclass(frozen=True)
class Alert:
    alert_id: str
    rule: str
    account_id: int
    evidence: frozenset[int]
    event_time: datetime
    detected_at: datetime
    detected_event_time: datetime | None = None


@dataclass(frozen=True)
class Case:
    case_id: int
    scenario: str
    account_id: int
    txn_ids: frozenset[int]
    started_at: datetime
    ended_at: datetime
    finished: bool = True


@dataclass(frozen=True)
class RuleScore:
    rule: str
    alerts: int
    true_positives: int
    cases: int
    found: int
    #: Cases not finished when the run stopped (not in `cases`).
    unfinished: int
    #: Seconds from case start to the alert's event time, for found cases.
    into_case_s: tuple[float, ...]
    #: Seconds from event time to detection (wall clock) and to the stream clock.
    to_detection_s: tuple[float, ...]
    stream_s: tuple[float, ...]

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.found / self.cases if self.cases else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None if p is None or r is None else 0.0
        return 2 * p * r / (p + r)


@dataclass(frozen=True)
class FraudReport:
    rules: tuple[RuleScore, ...]
    overall: RuleScore
    #: Alerts whose rule is not one of the known scenarios.
    other_alerts: int = 0


def matches(alert: Alert, case: Case) -> bool:
    if alert.account_id != case.account_id:
        return False
    if alert.evidence & case.txn_ids:
        return True
    return case.started_at <= alert.event_time <= case.ended_at


def evaluate(
    alerts: Iterable[Alert], cases: Iterable[Case], rules: Sequence[str] = SCENARIOS
) -> FraudReport:
    alerts = list(alerts)
    cases = list(cases)
    by_account: dict[int, list[Case]] = {}
    for c in cases:
        by_account.setdefault(c.account_id, []).append(c)
    scores = []
    for rule in rules:
        mine = [a for a in alerts if a.rule == rule]
        targets = [c for c in cases if c.scenario == rule]
        tp = sum(
            1
            for a in mine
            if any(c.scenario == rule and matches(a, c) for c in by_account.get(a.account_id, []))
        )
        finished = [c for c in targets if c.finished]
        found = 0
        into: list[float] = []
        detect: list[float] = []
        stream: list[float] = []
        for c in finished:
            hits = sorted(
                (a for a in mine if matches(a, c)), key=lambda a: (a.detected_at, a.event_time)
            )
            if not hits:
                continue
            found += 1
            first = hits[0]
            into.append((first.event_time - c.started_at).total_seconds())
            detect.append((first.detected_at - first.event_time).total_seconds())
            if first.detected_event_time is not None:
                stream.append((first.detected_event_time - first.event_time).total_seconds())
        scores.append(
            RuleScore(
                rule,
                len(mine),
                tp,
                len(finished),
                found,
                len(targets) - len(finished),
                tuple(into),
                tuple(detect),
                tuple(stream),
            )
        )
    overall = RuleScore(
        "overall",
        sum(s.alerts for s in scores),
        sum(s.true_positives for s in scores),
        sum(s.cases for s in scores),
        sum(s.found for s in scores),
        sum(s.unfinished for s in scores),
        tuple(x for s in scores for x in s.into_case_s),
        tuple(x for s in scores for x in s.to_detection_s),
        tuple(x for s in scores for x in s.stream_s),
    )
    other = sum(1 for a in alerts if a.rule not in rules)
    return FraudReport(tuple(scores), overall, other)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def format_report(report: FraudReport) -> list[str]:
    """The report as fixed-width text lines."""
    head = (
        f"{'rule':<28}{'alerts':>7}{'TP':>5}{'FP':>5}{'cases':>7}{'found':>7}"
        f"{'precision':>11}{'recall':>8}{'F1':>7}{'into case p50/p95':>20}"
    )
    lines = [head, "-" * len(head)]
    for s in (*report.rules, report.overall):
        if s is report.overall:
            lines.append("-" * len(head))
        delay = f"{_dur(percentile(s.into_case_s, 50))}/{_dur(percentile(s.into_case_s, 95))}"
        lines.append(
            f"{s.rule:<28}{s.alerts:>7}{s.true_positives:>5}{s.alerts - s.true_positives:>5}"
            f"{s.cases:>7}{s.found:>7}{_pct(s.precision):>11}{_pct(s.recall):>8}"
            f"{_pct(s.f1):>7}{delay:>20}"
        )
    o = report.overall
    lines.append("")
    lines.append(
        "detection delay in source time (alert event time -> the stream's event time "
        f"when the alert was raised): {_p50_p95(o.stream_s)}"
    )
    if o.unfinished:
        lines.append(f"cases still in progress (not scored for recall): {o.unfinished}")
    if report.other_alerts:
        lines.append(f"alerts of rules without a scenario (not scored): {report.other_alerts}")
    return lines


def _p50_p95(values: Sequence[float]) -> str:
    return f"p50 {_dur(percentile(values, 50))}, p95 {_dur(percentile(values, 95))}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 120:
        return f"{sign}{s:.0f}s"
    if s < 7200:
        return f"{sign}{s / 60:.1f}m"
    if s < 172800:
        return f"{sign}{s / 3600:.1f}h"
    return f"{sign}{s / 86400:.1f}d"
