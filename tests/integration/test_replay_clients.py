"""A replay reads the same with either Kafka client: CHANGEFOLD_KAFKA_CLIENT=confluent
(librdkafka) gives the state kafka-python gives, every table, also in small batches
(partitions paused and resumed by the source-time alignment), interrupted and resumed,
and bounded by a time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from engine_support import wait_topics_quiet, workload

from engine.app.build import replay_job
from engine.core.config import Settings
from engine.ingest.topics import subscription
from engine.replay.bounds import StartSpec, UntilSpec
from engine.replay.diff import diff_states
from engine.replay.runner import Replay


def _assert_same(a: Path, b: Path) -> None:
    different = [t for t in diff_states(a, b).tables if t.differs]
    assert not different, "; ".join(
        f"{t.table}: only A {t.only_a}, only B {t.only_b}, changed {t.changed} {t.samples}"
        for t in different
    )


def _job(settings: Settings, target: Path, until: UntilSpec | None = None) -> Replay:
    sub = subscription((), settings.connectors_dir)
    return replay_job(settings, target, sub, StartSpec("earliest"), until or UntilSpec())


def test_confluent_client_replays_what_kafka_python_replays(
    stack: Settings, tmp_path: Path
) -> None:
    with workload(stack, "bank", rate=400, duration_s=3, seed=91):
        pass
    # Every bank change is in Kafka before T, every arcade change after it.
    wait_topics_quiet(stack, "bank", quiet_s=3.0)
    time.sleep(1.0)
    t = datetime.now(UTC)
    time.sleep(1.0)
    with workload(stack, "arcade", rate=300, duration_s=3, seed=92):
        pass
    for prefix in ("arcade", "bank"):
        wait_topics_quiet(stack, prefix, quiet_s=3.0)
    kafka_python = stack.with_(batch_max_records=250, kafka_client="kafka-python")
    confluent = stack.with_(batch_max_records=250, kafka_client="confluent")

    reference = tmp_path / "kafka_python.duckdb"
    whole = _job(kafka_python, reference).run(threading.Event())
    assert whole.complete and whole.events > 1000
    read = tmp_path / "confluent.duckdb"
    result = _job(confluent, read).run(threading.Event())
    assert result.complete and result.events == whole.events
    _assert_same(reference, read)

    # Interrupted a third in, then resumed: the same state again.
    part = tmp_path / "confluent_part.duckdb"
    stop = threading.Event()

    def interrupt(done: int, total: int) -> None:
        if done > total // 3:
            stop.set()

    first = _job(confluent, part).run(stop, interrupt)
    assert not first.complete and 0 < first.events < first.meta.total
    second = _job(confluent, part).run(threading.Event())
    assert second.resumed and second.complete
    assert first.events + second.events == first.meta.total
    _assert_same(reference, part)

    # Bounded by a time between the two workloads: the clients agree, and the bound
    # left the arcade out.
    until = UntilSpec(time=t)
    at_t: dict[str, Path] = {}
    for name, settings in (("kafka_python", kafka_python), ("confluent", confluent)):
        at_t[name] = tmp_path / f"{name}_at_t.duckdb"
        assert _job(settings, at_t[name], until).run(threading.Event()).complete
    _assert_same(at_t["kafka_python"], at_t["confluent"])
    assert diff_states(at_t["confluent"], read).differs
