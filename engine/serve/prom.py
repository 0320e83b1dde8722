"""The /metrics figures in the Prometheus text format (through prometheus-client).

Everything is a gauge computed at scrape time from the state's tables, except
the API's own query counters and the frontier's transactions applied (a counter
read from the state). Times are in seconds, as Prometheus prefers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

#: The classic text exposition format, understood by every Prometheus version.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_PARTITION_LABELS = ["group", "topic", "partition", "member"]


def render(figures: Mapping[str, Any], api: Mapping[str, Any]) -> bytes:
    """Text exposition of `engine.serve.metrics.collect()` output and the API counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(figures, api))
    return generate_latest(registry)


class _Snapshot:
    """A one-off collector over figures already read."""

    def __init__(self, figures: Mapping[str, Any], api: Mapping[str, Any]) -> None:
        self.figures = figures
        self.api = api

    def collect(self) -> Iterator[Metric]:
        yield from _partitions(self.figures.get("partitions"))
        yield from _throughput(self.figures.get("throughput"))
        yield from _batches(self.figures.get("batches"))
        yield from _freshness(self.figures.get("freshness"))
        yield from _dead_letters(self.figures.get("dead_letters"))
        yield from _frontier(self.figures.get("consistent_as_of"))
        yield from _api(self.api)


def _partitions(rows: list[dict[str, Any]] | None) -> Iterator[Metric]:
    if rows is None:
        return
    lag = GaugeMetricFamily(
        "changefold_partition_lag",
        "Records between the partition's high watermark and the engine's next offset",
        labels=_PARTITION_LABELS,
    )
    position = GaugeMetricFamily(
        "changefold_partition_next_offset",
        "Next offset to fold, stored with the state",
        labels=_PARTITION_LABELS,
    )
    rate = GaugeMetricFamily(
        "changefold_partition_records_per_second",
        "Records folded per second from the partition over the metrics window",
        labels=_PARTITION_LABELS,
    )
    for r in rows:
        labels = [r["group_id"], r["topic"], str(r["partition"]), r["member"] or ""]
        if r["lag"] is not None:
            lag.add_metric(labels, r["lag"])
        position.add_metric(labels, r["next_offset"])
        rate.add_metric(labels, r["records_per_s"])
    yield from (lag, position, rate)


def _throughput(t: dict[str, Any] | None) -> Iterator[Metric]:
    if t is None:
        return
    yield GaugeMetricFamily(
        "changefold_records_per_second",
        "Records folded per second over the metrics window",
        value=t["records_per_s"],
    )
    yield GaugeMetricFamily(
        "changefold_bytes_per_second",
        "Message bytes folded per second over the metrics window",
        value=t["bytes_per_s"],
    )
    yield GaugeMetricFamily(
        "changefold_batches_per_second",
        "Batches folded per second over the metrics window",
        value=t["batches_per_s"],
    )


def _batches(b: dict[str, Any] | None) -> Iterator[Metric]:
    if b is None:
        return
    stage = GaugeMetricFamily(
        "changefold_batch_stage_seconds",
        "Time per batch stage over the metrics window (stat: avg, p50, p95, max)",
        labels=["stage", "stat"],
    )
    for name in ("decode", "fold", "commit"):
        for stat, value in b[f"{name}_ms"].items():
            if value is not None:
                stage.add_metric([name, stat], value / 1000)
    yield stage


def _freshness(f: dict[str, Any] | None) -> Iterator[Metric]:
    if f is None:
        return
    pairs = (
        ("changefold_freshness_seconds", "freshness_ms", 1000,
         "Source commit to folded, newest batch"),
        ("changefold_freshness_p95_seconds", "freshness_ms_p95", 1000,
         "Source commit to folded, p95 over the window"),
        ("changefold_last_batch_age_seconds", "last_batch_age_s", 1,
         "Time since the newest batch was folded"),
        ("changefold_newest_source_age_seconds", "newest_source_age_s", 1,
         "Age of the newest source change in the state"),
    )  # fmt: skip
    for name, key, scale, doc in pairs:
        if f.get(key) is not None:
            yield GaugeMetricFamily(name, doc, value=f[key] / scale)


def _dead_letters(d: dict[str, Any] | None) -> Iterator[Metric]:
    if d is None:
        return
    letters = GaugeMetricFamily(
        "changefold_dead_letters",
        "Events kept in the dead-letter table, by stage (decode or fold)",
        labels=["stage"],
    )
    for stage_name in ("decode", "fold"):
        letters.add_metric([stage_name], d["by_stage"].get(stage_name, 0))
    for stage_name, count in d["by_stage"].items():
        if stage_name not in ("decode", "fold"):
            letters.add_metric([stage_name], count)
    yield letters


def _frontier(f: dict[str, Any] | None) -> Iterator[Metric]:
    """The last source transaction applied (none without transaction ordering)."""
    if f is None:
        return
    labels = [str(f["group_id"])]
    commit = GaugeMetricFamily(
        "changefold_frontier_commit_timestamp_seconds",
        "Source commit time of the last transaction applied: the state is consistent as of it",
        labels=["group"],
    )
    commit.add_metric(labels, f["commit_ts_ms"] / 1000)
    lsn = GaugeMetricFamily(
        "changefold_frontier_lsn",
        "Source log position (Postgres LSN as an integer) of the last transaction applied",
        labels=["group"],
    )
    lsn.add_metric(labels, f["lsn"])
    applied = CounterMetricFamily(
        "changefold_frontier_transactions",
        "Source transactions applied whole",
        labels=["group"],
    )
    applied.add_metric(labels, f["transactions"])
    yield from (commit, lsn, applied)


def _api(api: Mapping[str, Any]) -> Iterator[Metric]:
    queries = CounterMetricFamily(
        "changefold_api_queries",
        "Queries answered by the API, by outcome",
        labels=["outcome"],
    )
    for outcome, count in sorted(api.get("queries", {}).items()):
        queries.add_metric([outcome], count)
    yield queries
    yield CounterMetricFamily(
        "changefold_api_query_seconds",
        "Time spent answering queries",
        value=api.get("query_seconds", 0.0),
    )
