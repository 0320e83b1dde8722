"""A member of the engine's consumer group: the live batch source of `changefold run`.

Also the consumer settings and the error translation that every Kafka reader of
the engine shares (`open_consumer`, `check_topics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

from engine.core.config import Settings
from engine.core.errors import KafkaUnavailableError, TopicMissingError
from engine.core.positions import PartitionProgress
from engine.ingest.source import Key, Polled, Rebalance, describe

log = logging.getLogger(__name__)

#: How long one attempt to reach Kafka may take (a closed port fails at once and is
#: retried inside the attempt; a silent one times out).
BOOTSTRAP_TIMEOUT_MS = 10_000
#: Pauses between attempts to reach Kafka: doubling from the first to the longest.
FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 10.0


def kafka_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """Consumer settings shared by members and tools (benchmarks) reading the same topics."""
    return {
        "bootstrap_servers": settings.stack.bootstrap_servers,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "max_poll_records": settings.engine.batch_max_records,
        "fetch_max_bytes": max(settings.engine.batch_max_bytes, 1024 * 1024),
        "max_partition_fetch_bytes": max(settings.engine.batch_max_bytes // 4, 1024 * 1024),
        "fetch_max_wait_ms": min(settings.engine.batch_max_wait_ms, 500),
        "metadata_max_age_ms": 10_000,
        "session_timeout_ms": settings.engine.consumer_session_timeout_ms,
        "heartbeat_interval_ms": max(settings.engine.consumer_session_timeout_ms // 3, 500),
    }


def open_consumer(settings: Settings, client_id: str, **extra: Any) -> KafkaConsumer:
    """A KafkaConsumer, once Kafka answers; KafkaUnavailableError naming the brokers and
    the fix when it has not answered within CHANGEFOLD_KAFKA_WAIT_S.

    A broker that restarts, or a stack still coming up, is waited for: attempt after
    attempt with pauses doubling from FIRST_PAUSE_S to LONGEST_PAUSE_S, each attempt
    logged with the brokers, its number and what is left of the wait.
    """
    config = {**kafka_config(settings, client_id), **extra}
    servers = config["bootstrap_servers"]
    wait_s = settings.engine.kafka_wait_s
    t0 = time.monotonic()
    deadline = t0 + wait_s
    pause = FIRST_PAUSE_S
    attempt = 0
    while True:
        attempt += 1
        left_s = deadline - time.monotonic()
        # No attempt outlasts the wait by more than a second (0: one whole attempt).
        timeout_ms = config["bootstrap_timeout_ms"]
        if wait_s > 0:
            timeout_ms = int(min(timeout_ms, max(left_s, 1.0) * 1000))
        try:
            consumer = _bootstrap({**config, "bootstrap_timeout_ms": timeout_ms})
        except (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError) as exc:
            waited_s = time.monotonic() - t0
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise KafkaUnavailableError(
                    f"cannot reach Kafka at {servers} (gave up after {attempt} attempt"
                    f"{'s' if attempt > 1 else ''} in {waited_s:.0f} s: {exc}). Start the "
                    "stack with `changefold stack up`, point CHANGEFOLD_KAFKA_HOST/_PORT at "
                    "your broker, or wait longer with CHANGEFOLD_KAFKA_WAIT_S"
                ) from None
            sleep_s = min(pause, left_s)
            log.warning(
                "%s: Kafka at %s does not answer (attempt %d, %.0f s into a wait of up to "
                "%.0f s, CHANGEFOLD_KAFKA_WAIT_S): %s; trying again in %.1f s",
                client_id,
                servers,
                attempt,
                waited_s,
                wait_s,
                exc,
                sleep_s,
            )
            time.sleep(sleep_s)
            pause = min(pause * 2, LONGEST_PAUSE_S)
            continue
        if attempt > 1:
            log.info(
                "%s: Kafka at %s answers (attempt %d, after %.1f s)",
                client_id,
                servers,
                attempt,
                time.monotonic() - t0,
            )
        return consumer


def _bootstrap(config: Mapping[str, Any]) -> KafkaConsumer:
    # While bootstrapping, kafka-python logs every refused connection as an ERROR;
    # open_consumer logs one line per attempt instead.
    net_log = logging.getLogger("kafka.net")
    level = net_log.level
    net_log.setLevel(logging.CRITICAL)
    # A KafkaConsumer that fails to bootstrap has already started its IO thread and
    # does not stop it: built in two steps, so that a failed attempt can be closed
    # (else every attempt of a long wait would leave a thread behind).
    consumer = KafkaConsumer.__new__(KafkaConsumer)
    try:
        consumer.__init__(**config)
        return consumer
    except BaseException:
        client = getattr(consumer, "_client", None)
        if client is not None:
            with suppress(Exception):
                client.close()
        raise
    finally:
        net_log.setLevel(level)


def check_topics(consumer: KafkaConsumer, topics: Sequence[str]) -> None:
    """TopicMissingError unless every named topic exists."""
    existing = consumer.topics()
    missing = sorted(set(topics) - set(existing))
    if missing:
        where = consumer.config["bootstrap_servers"]
        raise TopicMissingError(
            f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"do{'' if len(missing) > 1 else 'es'} not exist on {where}. "
            "A table's topic appears with its first change event: check the name "
            "(<prefix>.<schema>.<table>), that its connector runs (`changefold stack status`), "
            "or leave --topic out to follow every table topic of connectors/*.json"
        )


class _NoLoop:
    """The Rebalance before the first poll: nothing in flight, nothing stored known."""

    def revoking(self, partitions: Sequence[Key]) -> None:
        pass

    def assigned(self, partitions: Sequence[Key]) -> Mapping[Key, int]:
        return {}


_NO_LOOP = _NoLoop()


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """kafka-python's listener, forwarding to the loop's Rebalance of the current poll."""

    def __init__(self, member: KafkaGroupMember) -> None:
        self.member = member

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        member = self.member
        # Finish the batches in flight first: no batch is folding while partitions move.
        member.rebalance().revoking([(tp.topic, tp.partition) for tp in revoked])
        if revoked:
            log.info("%s: partitions revoked: %s", member.name, _names(revoked))
        member.assigned = []
        member.positions = {}

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        member = self.member
        member.assigned = sorted(assigned)
        stored = member.rebalance().assigned([(tp.topic, tp.partition) for tp in member.assigned])
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                member.consumer.seek_to_beginning(tp)
                log.debug(
                    "%s: %s[%d] starts at the earliest offset", member.name, tp.topic, tp.partition
                )
            else:
                member.consumer.seek(tp, offset)
                log.debug(
                    "%s: %s[%d] resumes at stored offset %d",
                    member.name,
                    tp.topic,
                    tp.partition,
                    offset,
                )
            member.positions[tp] = offset


class KafkaGroupMember:
    """A consumer group member as a batch source (engine.ingest.source): polls bounded
    batches, seeks to the stored positions on every assignment, commits folded ones.

    The member never trusts Kafka's committed offsets: on every assignment it seeks
    each partition to the position the state stores (earliest when there is none).
    kafka-python runs the rebalance callbacks inside `poll()`, where the loop first
    finishes and checkpoints the batches in hand.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        commit_mode: str = "sync",
    ) -> None:
        self.name = name
        self.settings = settings
        self.commit_mode = commit_mode
        self.assigned: list[TopicPartition] = []
        #: Next offset to read per assigned partition, as far as this member knows
        #: (None: from the beginning, nothing read yet).
        self.positions: dict[TopicPartition, int | None] = {}
        self._rebalance: Rebalance | None = None
        self._closed = False
        self._join_wait_ms = settings.engine.consumer_session_timeout_ms + 5_000
        self.consumer = open_consumer(settings, name, group_id=settings.engine.group_id)
        listener = _SeekToStoredOffsets(self)
        if topics:
            check_topics(self.consumer, topics)
            self.consumer.subscribe(topics=list(topics), listener=listener)
        else:
            self.consumer.subscribe(pattern=pattern, listener=listener)

    def rebalance(self) -> Rebalance:
        """The loop's Rebalance. kafka-python calls the listener inside poll(), on its
        IO thread, and once more on close() (after the loop ended)."""
        return self._rebalance or _NO_LOOP

    def poll(self, rebalance: Rebalance) -> Polled:
        """One batch: at most batch_max_records records and (about) batch_max_bytes bytes.

        Records past the byte bound are given back: their partitions are rewound
        to the first record not taken.
        """
        self._rebalance = rebalance
        polled = self.consumer.poll(
            timeout_ms=self._poll_timeout_ms(),
            max_records=self.settings.engine.batch_max_records,
        )
        records: list[Any] = []
        for batch in polled.values():
            records.extend(batch)
        limit = self.settings.engine.batch_max_bytes
        total = 0
        for i, rec in enumerate(records):
            total += len(rec.value or b"") + len(rec.key or b"")
            if total > limit and i > 0:
                self._give_back(records[i:])
                records = records[:i]
                break
        for rec in records:
            self.positions[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
        ends = {key: self._end_offset(*key) for key in {(r.topic, r.partition) for r in records}}
        return Polled(records, ends)

    def _poll_timeout_ms(self) -> int:
        """batch_max_wait_ms, but long while the member (re)joins the group.

        kafka-python 3.0 completes a group join on its IO thread, yet applies the
        result (assignment, heartbeats) only in a poll() that is waiting for it.
        A join that finishes between two short polls is dropped and started over,
        and with several members that can repeat until a member is evicted. So
        while a join is due or in flight, poll long enough for the whole
        rebalance: every member's next poll, or a dead member's session timeout.
        """
        if self._joining():
            return max(self.settings.engine.batch_max_wait_ms, self._join_wait_ms)
        return self.settings.engine.batch_max_wait_ms

    def _joining(self) -> bool:
        # kafka-python internals, read only; any surprise means "not joining".
        coordinator = getattr(self.consumer, "_coordinator", None)
        try:
            return bool(
                coordinator is not None
                and (
                    coordinator.rejoining or coordinator.rejoin_needed or coordinator.need_rejoin()
                )
            )
        except Exception:
            return False

    def _give_back(self, records: Sequence[Any]) -> None:
        first: dict[TopicPartition, int] = {}
        for rec in records:
            first.setdefault(TopicPartition(rec.topic, rec.partition), rec.offset)
        for tp, offset in first.items():
            self.consumer.seek(tp, offset)

    def caught_up(self) -> bool:
        """True when every assigned partition has been read up to its high watermark."""
        for tp in self.assigned:
            end = self.consumer.highwater(tp)
            if end is None:
                return False
            position = self.positions.get(tp)
            if (position is None and end > 0) or (position is not None and position < end):
                return False
        return True

    def _end_offset(self, topic: str, partition: int) -> int | None:
        value = self.consumer.highwater(TopicPartition(topic, partition))
        return int(value) if value is not None else None

    def seek(self, positions: Mapping[Key, int]) -> None:
        """Read from these positions next (a batch refused as stale is skipped)."""
        for (topic, partition), offset in positions.items():
            tp = TopicPartition(topic, partition)
            if tp in self.assigned:
                self.consumer.seek(tp, offset)
                self.positions[tp] = offset

    def finish(self, partitions: Sequence[Key]) -> None:
        """A group member follows its partitions for good: nothing to finish."""

    def checkpoint(self, progress: Sequence[PartitionProgress]) -> float:
        """Commit the folded positions to Kafka; returns milliseconds spent.

        The stored offsets in DuckDB stay the truth; a failed commit only makes
        Kafka's lag figures stale, so it is logged, not raised.
        """
        offsets = {
            TopicPartition(p.topic, p.partition): OffsetAndMetadata(p.next_offset, "", -1)
            for p in progress
        }
        if not offsets:
            return 0.0
        t0 = time.perf_counter()
        if self.commit_mode == "async":
            self.consumer.commit_async(offsets, callback=self._commit_done)
        else:
            try:
                self.consumer.commit(offsets)
            except kafka_errors.KafkaError as exc:
                log.warning(
                    "%s: Kafka offset commit failed (state is safe in DuckDB): %s", self.name, exc
                )
        return (time.perf_counter() - t0) * 1000

    def _commit_done(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, Exception):
            log.warning(
                "%s: async Kafka offset commit of %s failed (state is safe in DuckDB): %s",
                self.name,
                _names(list(offsets)),
                result,
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # closing must not hide the reason the loop ended
            log.warning("%s: error while leaving the group: %s", self.name, exc)


def _names(partitions: Sequence[TopicPartition]) -> str:
    return describe([(tp.topic, tp.partition) for tp in partitions])
