"""The engine loop: members poll, decode and fold batches until told to stop.

Each member runs in its own thread and holds at most one batch: it polls
again only after that batch is folded into DuckDB and committed to Kafka.
That is the backpressure: when folding falls behind, nobody fetches, and
memory stays bounded by the batch limits whatever the topic size. The
members share one state file; its writer lock serializes their transactions.

SIGINT/SIGTERM set the stop flag: every member finishes the batch in hand,
commits it, leaves the group, and `run` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from kafka import TopicPartition

from engine.config import Settings
from engine.pipeline.consumer import Member, describe
from engine.pipeline.decode import Decoder
from engine.pipeline.topics import Subscription
from engine.state.model import BatchMetrics
from engine.state.store import Store
from engine.state.writer import StaleBatch, StateWriter

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class RunStats:
    """Totals of a run (all members)."""

    batches: int = 0
    records: int = 0
    bytes: int = 0
    upserts: int = 0
    deletes: int = 0
    dead_letters: int = 0
    stale_batches: int = 0
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    decode_ms: float = 0.0
    fold_ms: float = 0.0
    commit_ms: float = 0.0
    #: Member -> the partitions it owns now, as "topic[partition]".
    owners: dict[str, list[str]] = field(default_factory=dict)
    #: Member -> batches it folded.
    member_batches: dict[str, int] = field(default_factory=dict)


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        subscription: Subscription,
        *,
        echo: Echo | None = None,
        idle_exit_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.subscription = subscription
        self.writer = StateWriter(
            store, settings.group_id, keep_batches=settings.metrics_keep_batches
        )
        self.echo = echo or (lambda line: log.info("%s", line))
        self.idle_exit_s = idle_exit_s
        self.stop = threading.Event()
        self.stats = RunStats()
        self._stats_lock = threading.Lock()
        self._joined: set[str] = set()
        self._last_activity = time.monotonic()
        self._errors: list[BaseException] = []
        self.members: list[Member] = []
        self._member_stop: dict[str, threading.Event] = {}

    # -- lifecycle ----------------------------------------------------------------------

    def start_members(self) -> None:
        """Join the group with `workers` members (raises if Kafka or a topic is missing)."""
        try:
            for i in range(self.settings.workers):
                self.members.append(
                    Member(
                        self.settings,
                        f"member-{i + 1}",
                        stored_offsets=self.writer.stored_offsets,
                        on_assigned=self._assigned,
                        topics=self.subscription.topics,
                        pattern=self.subscription.pattern,
                        commit_mode=self.settings.commit_mode,
                    )
                )
        except BaseException:
            self.close_members()
            raise

    def run(self) -> RunStats:
        """Run until stopped (signal, `stop.set()`, idle exit, or an error, which is raised)."""
        if not self.members:
            self.start_members()
        restore = self._install_signal_handlers()
        threads = [
            threading.Thread(target=self._member_loop, args=(m,), name=m.name, daemon=True)
            for m in self.members
        ]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
                if self._idle_long_enough():
                    log.info("no records for %.1f s: stopping", self.idle_exit_s)
                    self.stop.set()
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            restore()
            self.close_members()
        if self._errors:
            raise self._errors[0]
        return self.stats

    def close_members(self) -> None:
        for m in self.members:
            if not self._member_stop.get(m.name, threading.Event()).is_set():
                m.close()
        self.members = []

    def stop_member(self, name: str) -> None:
        """Stop one member: it finishes its batch and leaves the group; the others
        take over its partitions (from the offsets stored in DuckDB)."""
        self._member_stop.setdefault(name, threading.Event()).set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now
            log.warning(
                "%s: finishing the batches in hand, then exiting", signal.Signals(signum).name
            )
            self.stop.set()

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _idle_long_enough(self) -> bool:
        if self.idle_exit_s is None or len(self._joined) < len(self.members):
            return False
        return time.monotonic() - self._last_activity > self.idle_exit_s

    # -- members --------------------------------------------------------------------------

    def _assigned(self, member: str, partitions: list[TopicPartition]) -> None:
        self.writer.record_assignment(member, [(tp.topic, tp.partition) for tp in partitions])
        with self._stats_lock:
            self.stats.owners[member] = [describe([tp]) for tp in partitions]
            self._joined.add(member)
            self._last_activity = time.monotonic()
        self.echo(f"{member} owns {describe(partitions)}")

    def _member_loop(self, member: Member) -> None:
        decoder = Decoder()
        mine = self._member_stop.setdefault(member.name, threading.Event())
        try:
            while not self.stop.is_set() and not mine.is_set():
                records = member.poll()
                if records:
                    self._fold(member, decoder, records)
            if mine.is_set():
                member.close()
                self.writer.record_assignment(member.name, [])
                with self._stats_lock:
                    self.stats.owners[member.name] = []
                self.echo(f"{member.name} left the group")
        except BaseException as exc:
            log.error("%s stopped: %s", member.name, exc)
            self._errors.append(exc)
            self.stop.set()

    def _fold(self, member: Member, decoder: Decoder, records: list[Any]) -> None:
        t0 = time.perf_counter()
        batch = decoder.decode(records, self.writer.known_schemas())
        decode_ms = (time.perf_counter() - t0) * 1000
        progress = tuple(
            replace(p, end_offset=member.end_offset(p.topic, p.partition)) for p in batch.progress
        )
        index: dict[tuple[str, int, int], Any] = {}

        def raw(topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None]:
            if not index:
                index.update({(r.topic, r.partition, r.offset): r for r in records})
            rec = index[(topic, partition, offset)]
            return rec.key, rec.value

        base = BatchMetrics(
            member=member.name,
            records=batch.records,
            bytes=batch.bytes,
            tombstones=batch.tombstones,
            skipped=batch.skipped,
            dead_letters=0,
            upserts=0,
            deletes=0,
            decode_ms=decode_ms,
            fold_ms=0.0,
            newest_source_ts_ms=batch.newest_source_ts_ms,
        )
        try:
            result = self.writer.write(
                member=member.name,
                tables=batch.tables,
                dead_letters=batch.dead_letters,
                progress=progress,
                metrics_base=base,
                raw=raw,
            )
        except StaleBatch as stale:
            log.warning(
                "%s: %s already folded past this batch (by another member): skipping to "
                "the stored offsets",
                member.name,
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(stale.stored.items())),
            )
            member.rewind(progress, stale.stored)
            with self._stats_lock:
                self.stats.stale_batches += 1
            return
        commit_ms = member.commit(progress)
        self.writer.note_commit(result.batch_id, commit_ms)
        now = time.monotonic()
        lags = [p.lag for p in progress if p.lag is not None]
        with self._stats_lock:
            s = self.stats
            s.batches += 1
            s.records += batch.records
            s.bytes += batch.bytes
            s.upserts += result.upserts
            s.deletes += result.deletes
            s.dead_letters += result.dead_letters
            s.decode_ms += decode_ms
            s.fold_ms += result.fold_ms
            s.commit_ms += commit_ms
            s.member_batches[member.name] = s.member_batches.get(member.name, 0) + 1
            s.first_batch_at = s.first_batch_at or now - (time.perf_counter() - t0)
            s.last_batch_at = now
            self._last_activity = now
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s batch %d: %d records, %d upserts, %d deletes, %d dead letters; "
                "decode %.1f ms, fold %.1f ms, commit %.1f ms; lag %s; %s",
                member.name,
                result.batch_id,
                batch.records,
                result.upserts,
                result.deletes,
                result.dead_letters,
                decode_ms,
                result.fold_ms,
                commit_ms,
                sum(lags) if lags else "?",
                ", ".join(
                    f"{p.topic}[{p.partition}]@{p.first_offset}-{p.next_offset - 1}"
                    for p in progress
                ),
            )
