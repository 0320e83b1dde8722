"""Write one batch's effects in one DuckDB transaction.

Mirror rows, schema versions, dead letters, the partitions' next offsets and
the batch metrics commit together: after a crash either all of a batch is in
the state file or none of it, and the stored offsets say which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import duckdb

from engine.core.errors import StateError
from engine.core.positions import PartitionProgress
from engine.decode import txmeta
from engine.decode.model import OFFSET, PARTITION, DeadLetter, MirrorName, TableChanges, TableSchema
from engine.decode.records import DecodedBatch, RawLookup, RecordLike
from engine.state import assignments, deadletters, metrics, offsets, transactions, truncates
from engine.state.catalog import Catalog, latest_schemas
from engine.state.deltas import MirrorDelta
from engine.state.fold import apply_changes
from engine.state.held import Held
from engine.state.metrics import BatchMetrics
from engine.state.store import Store
from engine.state.transactions import Frontier, TxnPlan, TxnRules

log = logging.getLogger(__name__)

#: Called inside a batch's transaction, after its mirrors changed and before the
#: commit, with the batch id and the changed rows per mirror (derived views hook
#: in here). An exception rolls the whole batch back. An observer may have a
#: `mirrors` attribute (names "schema.table"): then only those mirrors' rows are
#: captured for it (others are not in the deltas it gets).
BatchObserver = Callable[[duckdb.DuckDBPyConnection, int, tuple[MirrorDelta, ...]], None]


class StaleBatch(Exception):
    """Some partitions of the batch were already folded past its start (by another member).

    `stored` maps (topic, partition) to the stored next offset to seek to.
    """

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        self.stored = stored
        super().__init__(f"stale batch for {sorted(stored)}")


@dataclass(frozen=True)
class WriteResult:
    batch_id: int
    upserts: int
    deletes: int
    dead_letters: int
    fold_ms: float
    #: Source transactions this batch applied, and the frontier after it (None: the
    #: batch applied no transaction, or transactions are not ordered).
    transactions: int = 0
    frontier: Frontier | None = None
    #: Events of this batch held for their transaction.
    held: int = 0
    decode_ms: float = 0.0
    #: Events dropped as stale: at or before their table's last truncate, applied in
    #: an earlier batch (engine/state/truncates.py).
    stale: int = 0


class _DryRun(Exception):
    pass


#: DuckDB errors a single row can cause (a value it cannot convert or store). Only
#: these send rows to the dead letters; any other error stops the engine.
ROW_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    duckdb.TypeMismatchException,
)


class StateWriter:
    """Folds batches into a store for one consumer group (shared by its members)."""

    def __init__(
        self,
        store: Store,
        group_id: str,
        *,
        keep_batches: int = 10000,
        observers: Sequence[BatchObserver] = (),
        transactions: TxnRules | None = None,
        held_memory_bytes: int = 256 * 2**20,
        held_memory_batches: int = 500,
    ) -> None:
        self.store = store
        #: Bounds of what waits for its transaction in memory (engine/state/held.py):
        #: beyond them (bytes of held events, batches held) it moves to the state file.
        self.held_memory_bytes = held_memory_bytes
        self.held_memory_batches = min(held_memory_batches, max(keep_batches // 2, 1))
        #: What waits for its transaction (None: not loaded from the state yet).
        self._held: Held | None = None
        #: The frontier's LSN (None: nothing applied yet), once read.
        self._frontier_lsn: int | None = None
        self._frontier_read = False
        #: Each mirror's last truncate LSN, as committed (None: not read yet).
        self._truncated: dict[MirrorName, int] | None = None
        #: Events moved from memory to the state file so far.
        self.spilled_events = 0
        #: Per partition, how far it was read and taken in, ever (`_folded`) and by this
        #: writer since it started (`_read`, from the stored resume position on): the
        #: resume position may not pass `_read` nor the first event held in memory
        #: (None: not loaded yet); and the (resume, folded) positions last stored.
        self._folded: dict[tuple[str, int], int] | None = None
        self._read: dict[tuple[str, int], int] | None = None
        self._saved: dict[tuple[str, int], tuple[int, int]] = {}
        #: Which events wait for their source transaction (None: every event is
        #: applied as it comes).
        self.transactions = transactions
        self._stuck_warned: set[str] = set()
        self.observers = tuple(observers)
        self.group_id = group_id
        self.keep_batches = keep_batches
        self.catalog = Catalog()
        self._known: dict[str, TableSchema] | None = None
        self._pending_commit_ms: dict[int, float] = {}

    def add_observer(self, observer: BatchObserver) -> None:
        """Run `observer` inside every later batch's transaction (derived views)."""
        with self.store.lock:
            self.observers = (*self.observers, observer)

    def _observed_mirrors(self) -> set[str] | None:
        """Mirrors ("schema.table") whose before/after rows observers need; None: all.

        An observer may declare `mirrors` (the tables it reads); capturing the rows
        costs two queries per table and batch, so only declared tables pay it.
        """
        if not self.observers:
            return set()
        wanted: set[str] = set()
        for observer in self.observers:
            declared = getattr(observer, "mirrors", None)
            if declared is None:
                return None
            wanted.update(declared)
        return wanted

    def known_schemas(self) -> dict[str, TableSchema]:
        """Latest recorded schema per topic (for events that carry none)."""
        with self.store.reading() as conn:
            if self._known is None:
                self._known = latest_schemas(conn)
            return dict(self._known)

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        with self.store.reading() as conn:
            return offsets.load(conn, self.group_id)

    def record_assignment(self, member: str, partitions: Sequence[tuple[str, int]]) -> None:
        with self.store.transaction() as conn:
            assignments.replace_member(conn, self.group_id, member, partitions)

    def note_commit(self, batch_id: int, commit_ms: float) -> None:
        """The Kafka commit time of a batch; written with the next batch."""
        with self.store.lock:
            self._pending_commit_ms[batch_id] = commit_ms

    def fold_records(
        self,
        records: Sequence[RecordLike],
        *,
        member: str,
        progress: Sequence[PartitionProgress],
        nbytes: int,
        decode: Callable[[Sequence[RecordLike]], DecodedBatch],
        until_ms: int | None = None,
        until_lsn: int | None = None,
    ) -> WriteResult:
        """Fold polled records: decide which source transactions they complete, decode
        what is ready (`decode`), and write it (`write`), all under the writer's lock, so
        that no other member's batch comes between the decision and the commit.

        `progress` and `nbytes` are what was consumed (all of `records`, also the
        events held for their transaction); `until_ms` leaves transactions committed
        after that time out (a replay's time bound), `until_lsn` those whose END is after
        that source log position."""
        with self.store.lock:
            plan = None
            todo = records
            if self.transactions is not None:
                with self.store.reading() as conn:
                    plan = transactions.plan(
                        conn,
                        self.group_id,
                        self._not_taken_in(conn, records, progress),
                        self.transactions,
                        self._held_index(conn),
                        applied_lsn=self._applied_lsn(conn),
                        until_ms=until_ms,
                        until_lsn=until_lsn,
                    )
                todo = plan.fold
            t0 = time.perf_counter()
            batch = decode(todo)
            decode_ms = (time.perf_counter() - t0) * 1000
            return self.write(
                batch,
                member=member,
                progress=progress,
                decode_ms=decode_ms,
                plan=plan,
                records=len(records),
                nbytes=nbytes,
            )

    def write(
        self,
        batch: DecodedBatch,
        *,
        member: str,
        progress: Sequence[PartitionProgress],
        decode_ms: float = 0.0,
        plan: TxnPlan | None = None,
        records: int | None = None,
        nbytes: int | None = None,
        settle_dead_letters: Sequence[int] = (),
    ) -> WriteResult:
        """Fold a decoded batch; `progress` is its positions (the batch's own, with the
        partitions' end offsets filled in by the source). With a transaction `plan`,
        its held and released events and the frontier are written in the same
        transaction. `settle_dead_letters`: ids of dead letters this batch takes out
        of the table (a redrive; the batch's own failures are written anew). Raises
        StaleBatch when its partitions moved on meanwhile."""
        base = BatchMetrics(
            member=member,
            records=batch.records if records is None else records,
            bytes=batch.bytes if nbytes is None else nbytes,
            tombstones=batch.tombstones,
            skipped=batch.skipped,
            dead_letters=0,
            upserts=0,
            deletes=0,
            decode_ms=decode_ms,
            fold_ms=0.0,
            newest_source_ts_ms=batch.newest_source_ts_ms,
        )
        dead_letters = batch.dead_letters
        with self.store.lock:
            tables, dropped = self._drop_stale(batch.tables)
            if plan is not None:
                dead_letters = (*dead_letters, *plan.dead_letters)
            try:
                return self._write(
                    member,
                    tables,
                    dead_letters,
                    progress,
                    base,
                    plan,
                    dropped,
                    settle_dead_letters,
                )
            except (StaleBatch, StateError):
                self.catalog.reset()
                raise
            except ROW_ERRORS as exc:
                self.catalog.reset()
                log.warning(
                    "batch of %s failed in DuckDB (%s); isolating the rows it refuses",
                    _describe(progress),
                    str(exc).splitlines()[0],
                )
            except duckdb.Error as exc:
                # Not about a row (disk, memory, a bug): dead-lettering the batch would lose
                # it. Stop instead; nothing was committed and a restart retries the batch.
                self.catalog.reset()
                raise self._cannot_write(progress, exc) from exc
            try:
                good, refused = self._isolate(tables, batch.raw)
                return self._write(
                    member,
                    good,
                    [*dead_letters, *refused],
                    progress,
                    base,
                    plan,
                    dropped,
                    settle_dead_letters,
                )
            except duckdb.Error as exc:
                self.catalog.reset()
                raise self._cannot_write(progress, exc) from exc

    def _cannot_write(self, progress: Sequence[PartitionProgress], exc: duckdb.Error) -> StateError:
        return StateError(
            f"cannot write the batch of {_describe(progress)} to the state file "
            f"{self.store.path}: {exc}"
        )

    def _write(
        self,
        member: str,
        tables: Sequence[TableChanges],
        dead_letters: Sequence[DeadLetter],
        progress: Sequence[PartitionProgress],
        base: BatchMetrics,
        plan: TxnPlan | None = None,
        dropped: int = 0,
        settle_dead_letters: Sequence[int] = (),
    ) -> WriteResult:
        t0 = time.perf_counter()
        upserts = deletes = 0
        new_versions = False
        with self.store.transaction() as conn:
            stale = offsets.stale(offsets.load(conn, self.group_id), progress)
            if stale:
                raise StaleBatch(stale)
            batch_id = metrics.next_batch_id(conn)
            deltas: list[MirrorDelta] = []
            wanted = self._observed_mirrors()
            for changes in tables:
                capture = wanted is None or str(changes.mirror) in wanted
                result = apply_changes(conn, self.catalog, changes, capture=capture)
                upserts += result.upserts
                deletes += result.deletes
                new_versions = new_versions or result.new_versions > 0
                if result.delta is not None:
                    deltas.append(result.delta)
            truncated = truncates.newest(tables)
            truncates.record(conn, truncated, batch_id)
            for observe in self.observers:
                observe(conn, batch_id, tuple(deltas))
            frontier = None
            positions = None
            if plan is not None:
                held = self._held_index(conn)
                applied = {e.xid for e in plan.ready}
                spill = held.to_spill(
                    applied=applied,
                    new_events=plan.hold_events,
                    batch_id=batch_id,
                    max_bytes=self.held_memory_bytes,
                    max_batches=self.held_memory_batches,
                )
                spill_events, spill_ends = held.spill_contents(
                    spill, plan.hold_events, plan.hold_ends, batch_id
                )
                frontier = transactions.apply(
                    conn,
                    self.group_id,
                    batch_id,
                    plan,
                    spill_events=spill_events,
                    spill_ends=spill_ends,
                    release_stored=applied & (held.stored | held.stored_ends),
                    keep_batches=self.keep_batches,
                )
                if plan.duplicates:
                    log.info(
                        "batch %d: dropped %d event(s)/END(s) of source transactions applied "
                        "before (sent again)",
                        batch_id,
                        plan.duplicates,
                    )
                self._warn_stuck(batch_id)
                positions, read = self._positions(conn, progress, plan, spill)
                offsets.save_positions(conn, self.group_id, positions)
            else:
                offsets.save(conn, self.group_id, progress)
            # Written before the settled ones go, so that ids are never handed out again.
            deadletters.insert(conn, self.group_id, dead_letters)
            deadletters.delete(conn, settle_dead_letters)
            for earlier, ms in self._pending_commit_ms.items():
                metrics.set_commit_ms(conn, earlier, ms)
            fold_ms = (time.perf_counter() - t0) * 1000
            figures = replace(
                base,
                member=member,
                dead_letters=len(dead_letters),
                upserts=upserts,
                deletes=deletes,
                fold_ms=fold_ms,
            )
            metrics.record(conn, batch_id, self.group_id, figures, progress, keep=self.keep_batches)
        self._pending_commit_ms.clear()
        if truncated:
            self._truncated = truncates.merged(self._last_truncates(), truncated)
        if plan is not None and positions is not None:
            assert self._held is not None
            self._held.commit(
                applied=[e.xid for e in plan.ready],
                spilled=spill,
                new_events=plan.hold_events,
                new_ends=plan.hold_ends,
                batch_id=batch_id,
            )
            self.spilled_events += len(spill_events)
            self._saved.update(positions)
            if frontier is not None:
                self._frontier_lsn = frontier.lsn
            assert self._folded is not None
            self._read = read
            for key, (_resume, folded) in positions.items():
                self._folded[key] = folded
        if new_versions:
            self._known = None
        for letter in dead_letters[:5]:
            log.warning(
                "dead letter %s[%d]@%d: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.error,
            )
        if len(dead_letters) > 5:
            log.warning("... and %d more dead letters in this batch", len(dead_letters) - 5)
        return WriteResult(
            batch_id,
            upserts,
            deletes,
            len(dead_letters),
            fold_ms,
            transactions=plan.applied if plan is not None else 0,
            frontier=frontier,
            held=len(plan.hold_events) if plan is not None else 0,
            decode_ms=base.decode_ms,
            stale=dropped,
        )

    # -- what a truncate makes stale ----------------------------------------------------

    def _last_truncates(self) -> dict[MirrorName, int]:
        """Each mirror's last truncate LSN, read once, then kept (updated on commit)."""
        if self._truncated is None:
            with self.store.reading() as conn:
                self._truncated = truncates.load(conn)
        return self._truncated

    def _drop_stale(self, tables: Sequence[TableChanges]) -> tuple[Sequence[TableChanges], int]:
        """The batch's tables without the events at or before their mirror's last
        truncate, and how many were dropped (logged per mirror, at debug)."""
        last = self._last_truncates()
        if not last:
            return tables, 0
        kept = truncates.drop_stale(tables, last)
        for mirror, n in kept.dropped.items():
            log.debug(
                "%s: dropped %d event(s) at or before its last truncate (LSN %d)",
                mirror,
                n,
                last[mirror],
            )
        return kept.tables, sum(kept.dropped.values())

    # -- what waits for its transaction -------------------------------------------------

    def _applied_lsn(self, conn: duckdb.DuckDBPyConnection) -> int | None:
        """The greatest LSN applied (the frontier's), read once, then kept."""
        if not self._frontier_read:
            front = transactions.load_frontier(conn, self.group_id)
            self._frontier_lsn = None if front is None else front.lsn
            self._frontier_read = True
        return self._frontier_lsn

    def _held_index(self, conn: duckdb.DuckDBPyConnection) -> Held:
        if self._held is None:
            self._held = transactions.load_held(conn, self.group_id)
        return self._held

    def _folded_positions(self, conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], int]:
        if self._folded is None or self._read is None:
            self._folded = offsets.load_folded(conn, self.group_id)
            self._read = offsets.load(conn, self.group_id)
        return self._folded

    def _not_taken_in(
        self,
        conn: duckdb.DuckDBPyConnection,
        records: Sequence[RecordLike],
        progress: Sequence[PartitionProgress] = (),
    ) -> Sequence[RecordLike]:
        """The records to plan: those read again below a partition's folded position
        (after a restart, from the first event that waited in memory) only when they
        belong to a transaction (planning drops those applied or held already); the
        others were folded then. `progress`: the records' first offsets per partition
        (all of them at or past the folded positions: every record is planned)."""
        folded = self._folded_positions(conn)
        if not folded:
            return records
        if progress and all(
            p.first_offset >= folded.get((p.topic, p.partition), 0) for p in progress
        ):
            return records
        rules = self.transactions
        assert rules is not None
        return [
            r
            for r in records
            if r.offset >= folded.get((r.topic, r.partition), 0)
            or txmeta.is_transaction_topic(r.topic)
            or transactions.event_txn(r, rules) is not None
        ]

    def _positions(
        self,
        conn: duckdb.DuckDBPyConnection,
        progress: Sequence[PartitionProgress],
        plan: TxnPlan | None = None,
        spill: set[str] | None = None,
    ) -> tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, int], int]]:
        """(resume, folded) of the partitions whose positions this batch moves, and how
        far this writer will have read each partition after it. A partition resumes at
        its first record kept in memory (once the batch's `plan` is done and `spill`
        moved out), or where this writer read it to if that is earlier (reading again
        after a restart, it may not skip what it has not read again)."""
        folded = self._folded_positions(conn)
        held = self._held_index(conn)
        assert self._read is not None
        read = dict(self._read)
        for p in progress:
            key = (p.topic, p.partition)
            read[key] = max(read.get(key, 0), p.next_offset)
        applied = {e.xid for e in plan.ready} if plan is not None else set()
        spill = spill or set()
        keys = {(p.topic, p.partition) for p in progress} | held.keys_of(applied | spill)
        marks = held.marks_after(
            keys,
            applied=applied,
            spilled=spill,
            new_events=plan.hold_events if plan is not None else (),
            new_ends=plan.hold_ends if plan is not None else (),
        )
        out = {}
        for key in keys:
            if key not in read:
                continue
            at = (min(read[key], marks.get(key, read[key])), max(read[key], folded.get(key, 0)))
            if self._saved.get(key) != at:
                out[key] = at
        return out, read

    @property
    def held_index(self) -> Held:
        """What waits for its transaction (as of the last batch committed)."""
        if self._held is not None:
            return self._held
        with self.store.lock, self.store.reading() as conn:
            return self._held_index(conn)

    def held(self) -> tuple[list[tuple[str, str, int, int]], list[str]]:
        """What waits for its transaction, in memory and in the state file: the events
        as (xid, topic, partition, offset) and the ENDs' xids, sorted."""
        held = self.held_index
        events = [(x, t, p, o) for x, _n, t, p, o in held.positions()]
        return sorted(events), sorted(held.ends)

    def persist_held(self) -> int:
        """Move what waits in memory to the state file (on a clean stop), so that the
        resume positions need not wait for it. Returns the events moved."""
        with self.store.lock:
            if self._held is None or self.transactions is None:
                return 0
            held = self._held
            spill = held.to_spill(
                applied=set(), new_events=(), batch_id=0, max_bytes=0, max_batches=0
            )
            if not spill:
                return 0
            events, ends = held.spill_contents(spill, (), (), 0)
            with self.store.transaction() as conn:
                transactions.apply(
                    conn,
                    self.group_id,
                    0,
                    TxnPlan([], [], [], [], []),
                    spill_events=events,
                    spill_ends=ends,
                )
                positions, read = self._positions(conn, (), None, spill)
                offsets.save_positions(conn, self.group_id, positions)
            held.commit(applied=(), spilled=spill, new_events=(), new_ends=(), batch_id=0)
            self._saved.update(positions)
            self._read = read
            self.spilled_events += len(events)
            return len(events)

    def _warn_stuck(self, batch_id: int) -> None:
        """Every 20 batches: name transactions whose events have waited 100 batches."""
        if batch_id % 20 or self._held is None:
            return
        for xid, events, where in self._held.stuck(batch_id - 100):
            if xid in self._stuck_warned:
                continue
            self._stuck_warned.add(xid)
            log.warning(
                "source transaction %s: %d event(s) held for more than 100 batches, first "
                "%s; its END has not arrived (is its transaction topic followed?), so they "
                "stay invisible",
                xid,
                events,
                where,
            )

    # -- isolating rows DuckDB refuses --------------------------------------------------

    def _isolate(
        self, tables: Sequence[TableChanges], raw: RawLookup
    ) -> tuple[list[TableChanges], list[DeadLetter]]:
        """Find the events DuckDB refuses by dry runs (each rolled back), bisecting a table."""
        good: list[TableChanges] = []
        refused: list[DeadLetter] = []
        for changes in tables:
            error = self._dry_run(changes)
            if error is None:
                good.append(changes)
                continue
            bad: dict[int, str] = {}
            self._bisect(changes, 0, changes.frame.height, error, bad)
            keep = [i for i in range(changes.frame.height) if i not in bad]
            if keep:
                good.append(replace(changes, frame=changes.frame[keep]))
            for i, reason in bad.items():
                row = changes.frame.row(i, named=True)
                topic, part, off = changes.topic, int(row[PARTITION]), int(row[OFFSET])
                key, value = raw(topic, part, off)
                refused.append(DeadLetter(topic, part, off, key, value, reason, stage="fold"))
        return good, refused

    def _bisect(
        self, changes: TableChanges, start: int, stop: int, error: str, bad: dict[int, str]
    ) -> None:
        if stop - start == 1:
            bad[start] = f"DuckDB refused the change: {error}"
            return
        middle = (start + stop) // 2
        for lo, hi in ((start, middle), (middle, stop)):
            part = replace(changes, frame=changes.frame[lo:hi])
            found = self._dry_run(part)
            if found is not None:
                self._bisect(changes, lo, hi, found, bad)

    def _dry_run(self, changes: TableChanges) -> str | None:
        try:
            with self.store.transaction() as conn:
                apply_changes(conn, self.catalog, changes)
                raise _DryRun
        except _DryRun:
            return None
        except ROW_ERRORS as exc:
            return str(exc).splitlines()[0]
        finally:
            self.catalog.reset()


def _describe(progress: Sequence[PartitionProgress]) -> str:
    return ", ".join(
        f"{p.topic}[{p.partition}]@{p.first_offset}-{p.next_offset - 1}" for p in progress
    )
