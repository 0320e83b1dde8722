"""Runner over in-memory group members: duplicates, SIGTERM, two members, crashes.

The logs, the reference folds and the checks are test_ingest_loop's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import duckdb
import pytest
from engine_helpers import rows
from test_ingest_loop import (
    WAIT_S,
    _quiet_logs,  # noqa: F401  (the autouse fixture, for this module too)
    assert_folded_once,
    bank_records,
    batch_chains,
    batches_folded,
    build_log,
    clean_fold,
    end_offsets,
    fold_in_one_batch,
    fold_loop,
    fold_thread_observer,
    log_size,
    new_writer,
    prefix_fold,
    running,
    snapshot,
    wait_until,
)

from engine.decode.records import RawRecord
from engine.ingest.handover import MergeLimits
from engine.ingest.memory import Crash, MemoryGroup, MemoryLog, MemorySource
from engine.ingest.runner import Runner
from engine.ingest.source import Polled, Rebalance, describe


class Members:
    """open_source for a Runner: MemorySource members of one group, kept for the checks."""

    def __init__(
        self, group: MemoryGroup, make: Callable[..., MemorySource] = MemorySource, **kwargs: Any
    ) -> None:
        self.group = group
        self.make = make
        self.kwargs = kwargs
        self.opened: dict[str, MemorySource] = {}

    def __call__(self, name: str) -> MemorySource:
        source = self.make(self.group, name, **self.kwargs)
        self.opened[name] = source
        return source


class Idling(MemorySource):
    """Waits a little when nothing is new, as a Kafka poll waits up to its max wait (a
    memory source answers at once: a caught-up poller would spin). With a `gate`, its
    `gate_poll`-th poll waits for it (`at_gate` is set then)."""

    def __init__(
        self,
        *args: Any,
        gate: threading.Event | None = None,
        gate_poll: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.gate_poll = gate_poll
        self.at_gate = threading.Event()

    def poll(self, rebalance: Rebalance) -> Polled | None:
        if self.gate is not None and self._polls + 1 == self.gate_poll:
            self.at_gate.set()
            assert self.gate.wait(WAIT_S), f"{self.name}: the test never opened the gate"
        polled = super().poll(rebalance)
        if polled is not None and not polled.records:
            threading.Event().wait(0.005)
        return polled


class SlowRejoin(Idling):
    """Once `go` is set, the next poll is a slow rebalance: the partitions are revoked,
    the join takes `join_s` (as kafka-python's poll waits for one), `late` records
    arrive meanwhile, and then the member owns its partitions again."""

    def __init__(self, *args: Any, late: Sequence[RawRecord], join_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.late = list(late)
        self.join_s = join_s
        self.go = threading.Event()
        self.rejoined = False

    def poll(self, rebalance: Rebalance) -> Polled | None:
        if self.go.is_set() and not self.rejoined:
            self.rejoined = True
            rebalance.revoking(list(self.assigned))
            time.sleep(self.join_s)
            self.log.extend(self.late)
            stored = rebalance.assigned(list(self.assigned))
            self.positions = {k: stored.get(k, 0) for k in self.assigned}
            return Polled([])
        return super().poll(rebalance)


def test_the_idle_exit_waits_for_a_rebalance_in_flight() -> None:
    # The member is caught up, then rejoins for longer than the idle exit: a member
    # whose partitions were revoked has not read them to their end, so the runner
    # waits, and folds what came during the join.
    records = [replace(r, partition=0) for r in bank_records(40)]
    log = MemoryLog()
    log.extend(records[:20])
    writer = new_writer()

    def member(group: MemoryGroup, name: str, **kwargs: Any) -> SlowRejoin:
        return SlowRejoin(group, name, late=records[20:], join_s=1.5, **kwargs)

    members = Members(MemoryGroup(log), member, max_records=8)
    runner = Runner(writer, members, idle_exit_s=0.5)
    with running(runner.run, "runner") as out:
        assert wait_until(lambda: "member-1" in runner._loops)
        assert wait_until(lambda: runner._loops["member-1"].caught_up)
        source = members.opened["member-1"]
        assert isinstance(source, SlowRejoin)
        source.go.set()
    assert source.rejoined
    assert out["result"].records == 40, out["result"]
    assert_folded_once(writer, log)


# -- 4. duplicate delivery -------------------------------------------------------------------


def test_redelivered_batches_are_refused_as_stale() -> None:
    # One partition: with several, the batches polled behind a refused one skip records
    # (test_ingest_loop::test_a_batch_polled_behind_a_refused_one_does_not_skip_records).
    log = MemoryLog()
    records = [replace(r, partition=0) for r in bank_records(60)]
    log.extend(records)
    log.end()
    writer = new_writer()
    members = Members(MemoryGroup(log), max_records=12, seed=4, redeliver_every=2)
    stats = Runner(writer, members).run()

    source = members.opened["member-1"]
    assert stats.stale_batches > 0
    assert stats.stale_batches == source.batches_out - stats.batches
    assert source.checkpoints == stats.batches == batches_folded(writer)
    # Every record was folded once: duplicates changed nothing.
    assert stats.records == log_size(log) == 60
    assert_folded_once(writer, log)
    assert snapshot(writer) == fold_in_one_batch(records)
    assert members.group.committed == end_offsets(log)


def test_redeliveries_with_merging_hand_over_fold_every_record_once() -> None:
    # As `run` does: polls merge while a (slow) fold runs; every second poll is a
    # redelivery, which must never be merged behind the batch it repeats.
    log = MemoryLog()
    records = [replace(r, partition=0) for r in bank_records(60)]
    log.extend(records)
    log.end()
    writer = new_writer()
    writer.add_observer(fold_thread_observer("member-1", lambda conn, batch_id: time.sleep(0.01)))
    members = Members(MemoryGroup(log), max_records=5, seed=4, redeliver_every=2)
    runner = Runner(writer, members, merge=MergeLimits(max_records=30, max_bytes=2**30))
    stats = runner.run()

    assert stats.stale_batches > 0
    assert stats.records == log_size(log) == 60
    assert_folded_once(writer, log)
    assert snapshot(writer) == fold_in_one_batch(records)
    assert members.group.committed == end_offsets(log)


# -- 6. SIGTERM drains ---------------------------------------------------------------------


class StopAware(MemorySource):
    """Counts the polls that handed out records although the runner was stopping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runner: Runner | None = None
        self.polls_after_stop = 0

    def poll(self, rebalance: Rebalance) -> Polled | None:
        stopping = self.runner is not None and self.runner.stop.is_set()
        polled = super().poll(rebalance)
        if stopping and polled is not None and polled.records:
            self.polls_after_stop += 1
        return polled


@pytest.fixture
def main_thread() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the Runner installs its signal handlers on the main thread only")
    yield


class Terminated:
    """A Runner (on the main thread) sent SIGTERM while its first batch folds; the
    batch goes on once the signal was handled."""

    def __init__(self) -> None:
        self.log = build_log(synthetic=400)
        self.writer = writer = new_writer()
        self.members = Members(MemoryGroup(self.log), StopAware, max_records=8, seed=2)
        self.runner = runner = Runner(writer, self.members)
        folding, signalled = threading.Event(), threading.Event()
        problems: list[str] = []

        def first_batch_waits(conn: duckdb.DuckDBPyConnection, batch_id: int) -> None:
            if not folding.is_set():
                folding.set()
                if not runner.stop.wait(WAIT_S):
                    problems.append("SIGTERM was not handled while the batch folded")

        writer.add_observer(fold_thread_observer("member-1", first_batch_waits))
        default = signal.getsignal(signal.SIGTERM)

        def send_sigterm() -> None:
            if not folding.wait(WAIT_S):
                problems.append("no batch folded")
            elif signal.getsignal(signal.SIGTERM) is default:
                problems.append("the Runner installed no SIGTERM handler")
            else:
                os.kill(os.getpid(), signal.SIGTERM)
                signalled.set()
                return
            runner.stop.set()

        runner.start_members()
        source = self.members.opened["member-1"]
        assert isinstance(source, StopAware)
        self.source = source
        source.runner = runner
        sender = threading.Thread(target=send_sigterm, name="sigterm", daemon=True)
        sender.start()
        self.stats = runner.run()  # returns: no exception, no KeyboardInterrupt
        sender.join(WAIT_S)
        assert problems == [] and signalled.is_set()
        assert signal.getsignal(signal.SIGTERM) is default  # restored


def test_sigterm_folds_the_batches_in_hand_and_returns(main_thread: None) -> None:
    t = Terminated()
    stats, source, writer, log = t.stats, t.source, t.writer, t.log
    # What was handed out was folded and checkpointed; Kafka agrees with the state.
    assert stats.batches >= 1
    assert source.batches_out == source.checkpoints == stats.batches == batches_folded(writer)
    stored = writer.stored_offsets()
    assert t.members.group.committed == stored
    assert stats.records == sum(stored.values())
    assert snapshot(writer) == prefix_fold(log, stored)
    # It stopped early: folding everything takes 50-odd batches.
    assert stats.records < log_size(log) // 2
    # A stopped engine keeps its partitions until the process leaves (no "left").
    assert {m: len(ps) for m, ps in stats.owners.items()} == {"member-1": len(log.partitions())}


def test_sigterm_polls_nothing_after_the_signal(main_thread: None) -> None:
    t = Terminated()
    # Only the batches in hand when the signal came: one folding, one in the
    # hand-over, one in the poller's hand.
    assert t.source.polls_after_stop == 0
    assert t.stats.batches <= 3


def _setter(event: threading.Event) -> Callable[[duckdb.DuckDBPyConnection, int], None]:
    return lambda conn, batch_id: event.set()


# -- 7. two members share one state ------------------------------------------------------------


def test_two_members_share_the_state_and_one_takes_over() -> None:
    log = build_log(ended=False)
    writer = new_writer()
    gate = threading.Event()

    def member(group: MemoryGroup, name: str, **kwargs: Any) -> Idling:
        # member-2 stops at its second poll (its first batch handed out) until let go.
        if name == "member-2":
            return Idling(group, name, gate=gate, gate_poll=2, **kwargs)
        return Idling(group, name, **kwargs)

    members = Members(MemoryGroup(log), member, max_records=6, seed=8)
    lines: list[str] = []
    left = threading.Event()

    def echo(line: str) -> None:
        lines.append(line)
        if line == "member-2 left the group":
            left.set()

    runner = Runner(writer, members, workers=2, echo=echo)
    folded = {"member-1": threading.Event(), "member-2": threading.Event()}
    for name, event in folded.items():
        writer.add_observer(fold_thread_observer(name, _setter(event)))
    everything = {describe([k]) for k in log.partitions()}

    with running(runner.run, "runner") as out:
        assert folded["member-1"].wait(WAIT_S) and folded["member-2"].wait(WAIT_S)
        member2 = members.opened["member-2"]
        assert isinstance(member2, Idling) and member2.at_gate.wait(WAIT_S)
        # Both members own partitions, each its own.
        owners = {m: set(ps) for m, ps in runner.stats.owners.items()}
        assert set(owners) == {"member-1", "member-2"}
        assert owners["member-1"] and owners["member-2"]
        assert not owners["member-1"] & owners["member-2"]
        assert owners["member-1"] | owners["member-2"] == everything
        runner.stop_member("member-2")
        gate.set()
        assert left.wait(WAIT_S)
        # member-1 takes over member-2's partitions (from the offsets stored in DuckDB).
        assert wait_until(lambda: set(runner.stats.owners.get("member-1", ())) == everything)
        log.end()
    stats = out["result"]

    assert stats.member_batches["member-1"] >= 1 and stats.member_batches["member-2"] >= 1
    assert f"member-1 owns {describe(log.partitions())}" in lines
    # Its input ended, so member-1 left too.
    assert lines[-1] == "member-1 left the group"
    assert stats.owners == {"member-1": [], "member-2": []}
    # member-2 stopped with records left in its partitions; member-1 folded them.
    m2 = members.opened["member-2"]
    assert m2.batches_out == m2.checkpoints == stats.member_batches["member-2"] == 2
    chains = batch_chains(writer)
    last_m2 = max(b for chain in chains.values() for _, _, b, m in chain if m == "member-2")
    taken_over = {
        describe([key])
        for key, chain in chains.items()
        if any(m == "member-1" and b > last_m2 for _, _, b, m in chain)
    }
    assert taken_over & owners["member-2"]
    assert rows(writer, "SELECT count(*) FROM _changefold.assignments") == [(0,)]
    # One state, as if one member had folded everything.
    assert snapshot(writer) == clean_fold()
    assert_folded_once(writer, log)
    assert stats.records == log_size(log)
    assert members.group.committed == end_offsets(log)


# -- 8. a crash while polling -----------------------------------------------------------------


def test_crash_while_polling_stops_the_runner_with_nothing_half_written() -> None:
    log = build_log()
    writer = new_writer()
    members = Members(MemoryGroup(log), max_records=9, seed=6, crash_on_poll=3)
    runner = Runner(writer, members)
    with pytest.raises(Crash, match="poll 3"):
        runner.run()

    source = members.opened["member-1"]
    assert runner.stop.is_set()
    assert runner.sources == []  # closed
    assert source.batches_out == source.checkpoints == runner.stats.batches == 2
    assert batches_folded(writer) == 2
    stored = writer.stored_offsets()
    assert sum(stored.values()) == runner.stats.records == 18
    assert members.group.committed == stored
    assert snapshot(writer) == prefix_fold(log, stored)

    # A restart resumes where the state stands.
    restarted = MemorySource(members.group, "member-1", max_records=60, seed=6)
    assert fold_loop(restarted, new_writer(writer.store)).run() is True
    assert_folded_once(writer, log)
    assert snapshot(writer) == clean_fold()


def test_members_fold_into_one_writer_under_its_lock() -> None:
    """Two members folding at once never interleave inside a DuckDB transaction."""
    log = build_log()
    writer = new_writer()
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def observe(conn: duckdb.DuckDBPyConnection, batch_id: int, deltas: Any) -> None:
        inside.append(threading.current_thread().name)
        if len(inside) > 1:
            overlaps.append(tuple(inside))
        threading.Event().wait(0.002)
        inside.pop()

    observe.mirrors = ()  # type: ignore[attr-defined]
    writer.add_observer(observe)
    members = Members(MemoryGroup(log), max_records=16, seed=3)
    stats = Runner(writer, members, workers=2).run()
    assert overlaps == []
    assert set(stats.member_batches) == {"member-1", "member-2"}
    assert snapshot(writer) == clean_fold()
    assert_folded_once(writer, log)
