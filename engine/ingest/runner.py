"""The engine loop: members poll, decode and fold batches until told to stop.

Each member is a lane (engine.ingest.lane): a poller thread that owns the
Kafka consumer and a folder thread that decodes and folds, with ONE batch
handed over at a time. That is the backpressure: when folding falls behind
the poller blocks, nobody fetches, and memory stays bounded by the batch
limits whatever the topic size. The members share one state file; its writer
lock serializes their transactions.

SIGINT/SIGTERM set the stop flag: every member finishes the batches in hand,
commits them, leaves the group, and `run` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from kafka import TopicPartition

from engine.core.config import Settings
from engine.ingest.kafka_group import Member, describe
from engine.ingest.lane import Folded, Lane
from engine.ingest.topics import Subscription
from engine.state.store import Store
from engine.state.writer import StateWriter

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
        self._lanes: dict[str, Lane] = {}
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
        """Idle exit: every member read all its partitions and nothing came for a while."""
        if self.idle_exit_s is None or len(self._joined) < len(self.members):
            return False
        if not all(lane.caught_up or lane.leave.is_set() for lane in self._lanes.values()):
            return False
        with self._stats_lock:
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
        lane = Lane(
            member,
            self.writer,
            stop=self.stop,
            on_folded=self._folded,
            on_error=self._failed,
        )
        self._lanes[member.name] = lane
        mine = self._member_stop.setdefault(member.name, threading.Event())
        lane.leave = mine
        try:
            lane.run()
            if mine.is_set():
                member.close()
                self.writer.record_assignment(member.name, [])
                with self._stats_lock:
                    self.stats.owners[member.name] = []
                self.echo(f"{member.name} left the group")
        except BaseException as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        log.error("engine stopping: %s", exc)
        self._errors.append(exc)
        self.stop.set()

    def _folded(self, member: Member, folded: Folded, commit_ms: float) -> None:
        now = time.monotonic()
        result = folded.result
        with self._stats_lock:
            s = self.stats
            s.batches += 1
            s.records += folded.records
            s.bytes += folded.bytes
            s.upserts += result.upserts
            s.deletes += result.deletes
            s.dead_letters += result.dead_letters
            s.decode_ms += folded.decode_ms
            s.fold_ms += result.fold_ms
            s.commit_ms += commit_ms
            s.member_batches[member.name] = s.member_batches.get(member.name, 0) + 1
            s.first_batch_at = s.first_batch_at or now
            s.last_batch_at = now
            self._last_activity = now
