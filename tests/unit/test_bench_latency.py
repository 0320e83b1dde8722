"""`changefold bench latency`: the pure summary functions, on hand-made inputs."""

from __future__ import annotations

import math

from engine.lab.latency import (
    Batch,
    End,
    Probe,
    Window,
    percentiles,
    report,
    summarize,
    visibility,
    weighted_percentiles,
)


def test_percentiles_interpolate_linearly() -> None:
    p = percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], (0, 50, 95, 100))
    assert p == {0: 1, 50: 6, 95: 10.5, 100: 11}
    assert percentiles([7.0], (50, 99)) == {50: 7.0, 99: 7.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_weighted_percentiles_count_each_value_weight_times() -> None:
    # 90 events at 100 ms, 9 at 500 ms, 1 at 2000 ms.
    p = weighted_percentiles([(500, 9), (100, 90), (2000, 1), (999, 0)])
    assert p == {50.0: 100, 95.0: 500, 99.0: 500}
    assert weighted_percentiles([(500, 9), (100, 90), (2000, 2)], (99.5,)) == {99.5: 2000}
    assert all(math.isnan(v) for v in weighted_percentiles([]).values())


def test_a_transaction_is_visible_between_the_probe_that_missed_it_and_the_one_that_saw_it() -> (
    None
):
    probes = [
        Probe(sent=10.00, received=10.01, lsn=None),
        Probe(sent=10.05, received=10.06, lsn=100),
        Probe(sent=10.10, received=10.11, lsn=90),  # another member's answer: never back
        Probe(sent=10.15, received=10.16, lsn=300),
    ]
    ends = [End(lsn=100, commit_ms=9_900, events=4), End(lsn=200, commit_ms=10_020, events=1)]
    first, second = visibility(ends, probes)
    assert (first.low, first.high) == (10.00, 10.06)
    assert math.isclose(first.freshness_ms, 130.0)
    # Not before its own commit: the bracket starts at the commit time.
    assert (second.low, second.high) == (10.10, 10.16)
    # A transaction no probe saw is left out.
    assert visibility([End(400, 10_100, 1)], probes) == []


def test_summary_counts_only_the_window() -> None:
    window = Window(100.0, 110.0)
    probes = [Probe(t / 10, t / 10 + 0.01, lsn=t) for t in range(900, 1200)]
    ends = [
        End(lsn=950, commit_ms=94_800, events=4),  # warm-up: left out
        # Missed by the probe sent at 100.9, seen by the one answered at 101.01: 255 ms.
        End(lsn=1010, commit_ms=100_700, events=4, kafka_ms=100_760),
        End(lsn=1050, commit_ms=104_000, events=2, kafka_ms=104_500),  # 104.9 .. 105.01: 955 ms
        End(lsn=1150, commit_ms=114_000, events=9),  # after the window
    ]
    batches = [
        Batch(99.0, 5000, 10, 900, 30, 4000),
        Batch(101.0, 100, 1, 200, 3, 250),
        Batch(105.0, 300, 2, 400, 5, 900),
    ]
    s = summarize(window, ends, probes, batches, cpu_seconds=0.6)
    assert (s.transactions, s.events, s.unseen_events) == (2, 6, 0)
    # Per event: 4 events at 255 ms, 2 at 955 ms.
    assert [round(s.freshness_ms[q]) for q in (50.0, 95.0, 99.0)] == [255, 955, 955]
    assert math.isclose(s.resolution_ms, 110.0, abs_tol=1e-6)
    assert s.batches == 2 and s.batch_records[50.0] == 200 and s.fold_ms[99.0] > 395
    # Events made visible in the window: the two above (the warm-up one was seen before).
    assert s.visible_events == 6 and math.isclose(s.cpu_us_per_event, 100_000.0)
    assert math.isclose(s.source_rate, 0.6) and math.isclose(s.visible_rate, 0.6)
    text = report(s, rate=2000, warmup=15, probe_ms=50, load="1.0-1.2/0.9-1.0/0.5-0.5")
    assert "freshness p50/p95/p99" in text and "255 ms / 955 ms / 955 ms" in text
    assert "100,000 us per visible event" in text
    # The Debezium/Connect leg, per event: 4 events at 60 ms, 2 at 500 ms.
    assert [s.to_kafka_ms[q] for q in (50.0, 95.0, 99.0)] == [60, 500, 500]
    assert "60 ms / 500 ms / 500 ms" in text


def test_an_empty_window_reports_without_failing() -> None:
    s = summarize(Window(0.0, 1.0), [], [], [], cpu_seconds=0.0)
    text = report(s, rate=300, warmup=0, probe_ms=50, load="0")
    assert "n/a / n/a / n/a" in text
