"""The engine's members: N sources, each folded by its own loop, into one state.

Each member is a `FoldLoop` (engine.ingest.loop) over a batch source (a Kafka
group member for `changefold run`, an in-memory one in tests) and a
`CheckpointedStep` on the shared state writer; the writer's lock serializes
their DuckDB transactions. Backpressure is the loop's one-batch hand-over
(engine.ingest.handover): polls that arrive while a batch folds merge into the
waiting batch up to `merge`'s limits, then the poller blocks, nobody fetches,
and memory stays bounded by the batch limits whatever the topic size.

SIGINT/SIGTERM set the stop flag: every member finishes the batches in hand,
checkpoints them, leaves the group, and `run` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from engine.ingest.handover import MergeLimits
from engine.ingest.loop import FoldLoop
from engine.ingest.source import BatchSource, Key, describe
from engine.ingest.step import CheckpointedStep, Folded, Outcome, Refused
from engine.state.writer import StateWriter

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
#: Opens the source of one member, given its name ("member-1", ...).
OpenSource = Callable[[str], BatchSource]


@dataclass
class RunStats:
    """Totals of a run (all members)."""

    batches: int = 0
    records: int = 0
    bytes: int = 0
    upserts: int = 0
    deletes: int = 0
    dead_letters: int = 0
    #: Batches refused because another member had folded past them.
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
        writer: StateWriter,
        open_source: OpenSource,
        *,
        workers: int = 1,
        echo: Echo | None = None,
        idle_exit_s: float | None = None,
        merge: MergeLimits | None = None,
    ) -> None:
        self.writer = writer
        self.merge = merge
        self.open_source = open_source
        self.workers = workers
        self.echo = echo or (lambda line: log.info("%s", line))
        self.idle_exit_s = idle_exit_s
        self.stop = threading.Event()
        self.stats = RunStats()
        self._stats_lock = threading.Lock()
        self._joined: set[str] = set()
        self._loops: dict[str, FoldLoop] = {}
        self._left: set[str] = set()
        self._last_activity = time.monotonic()
        self._errors: list[BaseException] = []
        self.sources: list[BatchSource] = []
        self._member_stop: dict[str, threading.Event] = {}

    # -- lifecycle ----------------------------------------------------------------------

    def start_members(self) -> None:
        """Open `workers` sources (raises if one cannot be opened: Kafka or a topic missing)."""
        try:
            for i in range(self.workers):
                self.sources.append(self.open_source(f"member-{i + 1}"))
        except BaseException:
            self.close_members()
            raise

    def run(self) -> RunStats:
        """Run until stopped (signal, `stop.set()`, idle exit, every input ended, or an
        error, which is raised)."""
        if not self.sources:
            self.start_members()
        restore = self._install_signal_handlers()
        threads = [
            threading.Thread(target=self._member_loop, args=(s,), name=s.name, daemon=True)
            for s in self.sources
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
        moved = self.writer.persist_held()
        if moved:
            log.info(
                "stopping: %d event(s) waiting for their source transaction moved to the state "
                "file",
                moved,
            )
        return self.stats

    def close_members(self) -> None:
        for source in self.sources:
            source.close()
        self.sources = []

    def stop_member(self, name: str) -> None:
        """Stop one member: it finishes its batch and leaves the group; the others
        take over its partitions (from the offsets stored in DuckDB)."""
        self._stop_event(name).set()

    def _stop_event(self, name: str) -> threading.Event:
        with self._stats_lock:
            return self._member_stop.setdefault(name, threading.Event())

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
        if self.idle_exit_s is None or len(self._joined) < len(self.sources):
            return False
        if not all(
            loop.caught_up or name in self._left for name, loop in list(self._loops.items())
        ):
            return False
        with self._stats_lock:
            return time.monotonic() - self._last_activity > self.idle_exit_s

    # -- members --------------------------------------------------------------------------

    def _member_loop(self, source: BatchSource) -> None:
        # The member stops with the engine, or leaves alone (stop_member).
        loop = FoldLoop(
            source,
            CheckpointedStep(self.writer, source.name),
            stop=self.stop,
            leave=self._stop_event(source.name),
            on_outcome=self._outcome,
            on_assigned=self._assigned,
            merge=self.merge,
        )
        self._loops[source.name] = loop
        try:
            loop.run()
            if not self.stop.is_set():
                source.close()
                self.writer.record_assignment(source.name, [])
                with self._stats_lock:
                    self.stats.owners[source.name] = []
                    self._left.add(source.name)
                self.echo(f"{source.name} left the group")
        except BaseException as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        log.error("engine stopping: %s", exc)
        self._errors.append(exc)
        self.stop.set()

    def _assigned(self, source: BatchSource, partitions: Sequence[Key]) -> None:
        with self._stats_lock:
            self.stats.owners[source.name] = [describe([key]) for key in partitions]
            self._joined.add(source.name)
            self._last_activity = time.monotonic()
        self.echo(f"{source.name} owns {describe(partitions)}")

    def _outcome(self, source: BatchSource, outcome: Outcome, commit_ms: float) -> None:
        now = time.monotonic()
        with self._stats_lock:
            s = self.stats
            self._last_activity = now
            if isinstance(outcome, Refused):
                s.stale_batches += 1
                return
            if not isinstance(outcome, Folded):
                return
            result = outcome.result
            s.batches += 1
            s.records += outcome.records
            s.bytes += outcome.bytes
            s.upserts += result.upserts
            s.deletes += result.deletes
            s.dead_letters += result.dead_letters
            s.decode_ms += outcome.decode_ms
            s.fold_ms += result.fold_ms
            s.commit_ms += commit_ms
            s.member_batches[source.name] = s.member_batches.get(source.name, 0) + 1
            s.first_batch_at = s.first_batch_at or now
            s.last_batch_at = now
