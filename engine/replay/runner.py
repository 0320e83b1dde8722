"""Rebuild a state file from the change topics, with the engine's own decode and fold.

A replay reads with its own consumer (manual assignment, no group, no Kafka
commits), so the live engine and its group are untouched. Its offsets are
stored in the target file with each batch, exactly as `run` stores its own:
an interrupted replay continues where it stopped when run again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from kafka import KafkaConsumer, TopicPartition

from engine.core.config import Settings
from engine.core.errors import ReplayError
from engine.ingest.confluent_reader import ConfluentReader
from engine.ingest.kafka_group import open_consumer
from engine.ingest.kafka_ranges import KafkaRanges, RangeReader
from engine.ingest.loop import FoldLoop
from engine.ingest.source import BatchSource
from engine.ingest.step import CheckpointedStep, Folded, Outcome
from engine.ingest.topics import Subscription
from engine.replay import meta as replay_meta
from engine.replay.bounds import StartSpec, UntilSpec, resolve
from engine.replay.meta import REPLAY_GROUP, ReplayMeta
from engine.state.store import Store
from engine.state.writer import StateWriter

log = logging.getLogger(__name__)

#: Called after each batch with (events consumed so far, total events to consume).
ProgressHook = Callable[[int, int], None]
#: Opens the writer of a replay's state (group REPLAY_GROUP), with or without views.
OpenWriter = Callable[[Store, str], StateWriter]


@dataclass
class ReplayResult:
    meta: ReplayMeta
    resumed: bool
    complete: bool
    events: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Replay:
    def __init__(
        self,
        settings: Settings,
        target: Path,
        subscription: Subscription,
        start: StartSpec,
        until: UntilSpec,
        *,
        open_writer: OpenWriter,
    ) -> None:
        self.settings = settings
        self.target = target
        self.subscription = subscription
        self.start = start
        self.until = until
        self.open_writer = open_writer

    # -- entry point --------------------------------------------------------------------

    def run(self, stop: threading.Event, on_progress: ProgressHook | None = None) -> ReplayResult:
        if self.target.resolve() == Path(self.settings.engine.state_path).resolve():
            raise ReplayError(
                f"{self.target} is the live engine's state file; replay into another path"
            )
        existing = _existing_meta(self.target)
        consumer = open_consumer(
            self.settings,
            "changefold-replay",
            group_id=None,
            max_partition_fetch_bytes=self.settings.engine.partition_fetch_bytes,
        )
        try:
            topics = self._topics(consumer, existing)
            tps = _partitions(consumer, topics)
            wanted = self._wanted_meta(consumer, topics, tps, existing)
            with Store(self.target) as store:
                store.migrate(self.settings.state_sql_dir)
                writer = self.open_writer(store, REPLAY_GROUP)
                if existing is None:
                    with store.transaction() as conn:
                        replay_meta.save(conn, wanted)
                result = ReplayResult(meta=wanted, resumed=existing is not None, complete=False)
                if existing is not None and existing.finished:
                    result.complete = True
                    return result
                self._consume(consumer, store, writer, wanted, result, stop, on_progress)
                # What still waits for its transaction goes into the state file, so
                # that a resumed replay need not read it again.
                writer.persist_held()
                return result
        finally:
            consumer.close(autocommit=False)

    # -- set-up -------------------------------------------------------------------------

    def _topics(self, consumer: KafkaConsumer, existing: ReplayMeta | None) -> list[str]:
        if self.subscription.topics:
            names = sorted(self.subscription.topics)
            missing = sorted(set(names) - set(consumer.topics()))
            if missing:
                raise ReplayError(f"topics not found on Kafka: {', '.join(missing)}")
            return names
        pattern = re.compile(self.subscription.pattern or "")
        names = sorted(t for t in consumer.topics() if pattern.match(t))
        if existing is not None:
            # A resumed replay reads the topics it began with (new tables may have appeared).
            gone = sorted(set(existing.topics) - set(names))
            if gone:
                raise ReplayError(f"topics of the replay no longer exist: {', '.join(gone)}")
            return list(existing.topics)
        if not names:
            raise ReplayError(
                f"no change topics on {self.settings.stack.bootstrap_servers} match "
                f"{self.subscription.describe()}: is the stack up and has a table changed yet?"
            )
        return names

    def _wanted_meta(
        self,
        consumer: KafkaConsumer,
        topics: list[str],
        tps: list[TopicPartition],
        existing: ReplayMeta | None,
    ) -> ReplayMeta:
        if existing is not None:
            asked = ReplayMeta(tuple(topics), str(self.start), str(self.until), None, {}, {})
            if not existing.same_replay(asked):
                raise ReplayError(
                    f"{self.target} already holds {existing.describe()}; this command asks for "
                    f"{asked.describe()}. Run the same command to continue that replay, or "
                    "choose another --into path (nothing was changed)"
                )
            return existing
        first, end = resolve(consumer, tps, self.start, self.until)
        return ReplayMeta(
            topics=tuple(topics),
            from_spec=str(self.start),
            until_spec=str(self.until),
            until_ts=self.until.time,
            start_offsets=first,
            end_offsets=end,
        )

    # -- the loop -----------------------------------------------------------------------

    def _consume(
        self,
        consumer: KafkaConsumer,
        store: Store,
        writer: StateWriter,
        meta: ReplayMeta,
        result: ReplayResult,
        stop: threading.Event,
        on_progress: ProgressHook | None,
    ) -> None:
        confluent = (
            ConfluentReader(self.settings, "changefold-replay")
            if self.settings.engine.kafka_client == "confluent"
            else None
        )
        try:
            reader: RangeReader = confluent if confluent is not None else consumer
            self._fold_ranges(reader, store, writer, meta, result, stop, on_progress)
        finally:
            if confluent is not None:
                confluent.close()

    def _fold_ranges(
        self,
        reader: RangeReader,
        store: Store,
        writer: StateWriter,
        meta: ReplayMeta,
        result: ReplayResult,
        stop: threading.Event,
        on_progress: ProgressHook | None,
    ) -> None:
        source = KafkaRanges(
            reader,
            meta.start_offsets,
            meta.end_offsets,
            max_wait_ms=self.settings.engine.batch_max_wait_ms,
            max_records=self.settings.engine.batch_max_records,
            max_bytes=self.settings.engine.batch_max_bytes,
        )
        until_ms = None if meta.until_ts is None else int(meta.until_ts.timestamp() * 1000)
        if self.until.lsn is not None and writer.transactions is None:
            raise ReplayError(
                f"--until {self.until} is a source log position: it needs whole source "
                "transactions (CHANGEFOLD_TRANSACTIONS=on and the connectors' "
                "<prefix>.transaction topics); use --until <time> otherwise"
            )
        step = CheckpointedStep(writer, "replay", until_ms=until_ms, until_lsn=self.until.lsn)
        stored = writer.stored_offsets()
        total = meta.total
        done = sum(
            stored.get(k, meta.start_offsets.get(k, 0)) - meta.start_offsets.get(k, 0)
            for k in meta.end_offsets
        )

        def folded(_source: BatchSource, outcome: Outcome, _commit_ms: float) -> None:
            nonlocal done
            if isinstance(outcome, Folded):
                done += outcome.records
                result.events += outcome.records
                result.batches += 1
            if on_progress:
                on_progress(min(done, total), total)

        t0 = time.perf_counter()
        if on_progress:
            on_progress(done, total)
        ended = FoldLoop(source, step, stop=stop, on_outcome=folded).run()
        result.seconds = time.perf_counter() - t0
        if ended:
            if on_progress:
                on_progress(total, total)
            with store.transaction() as conn:
                replay_meta.mark_finished(conn)
            result.complete = True


def _partitions(consumer: KafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    tps = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ReplayError(f"topic {topic} has no partitions (or does not exist)")
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    return tps


def _existing_meta(target: Path) -> ReplayMeta | None:
    """The replay a target file holds; ReplayError if it exists and is not a replay."""
    if not target.exists():
        return None
    try:
        conn = duckdb.connect(str(target), read_only=True)
    except duckdb.Error as exc:
        raise ReplayError(
            f"{target} exists and is not a changefold state file ({str(exc).splitlines()[0]}); "
            "choose another --into path (nothing was changed)"
        ) from None
    try:
        found = replay_meta.load(conn)
    finally:
        conn.close()
    if found is None:
        raise ReplayError(
            f"{target} exists and is not a replay (no replay record in it); choose another "
            "--into path (nothing was changed)"
        )
    return found
