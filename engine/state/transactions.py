"""Whole source transactions, in commit order, and the frontier they advance.

The legs of one Postgres transaction reach different topics and partitions, so
any batch cut shows part of one. Per batch, under the writer's lock:

1. `plan` splits the batch's records: transaction ENDs (from `<prefix>.transaction`),
   data events that belong to a transaction, and everything else (snapshot rows,
   events from before transaction metadata was on, tombstones: folded at once; the
   writer drops those at or before their table's last truncate, engine/state/truncates.py).
2. Every END seen and not yet applied is ordered by its position in the source log
   (LSN). Walking that order, a transaction is *ready* when every event its END
   counts (for the topics the engine follows) has arrived, in this batch or held
   from earlier ones; the first one that is not ready stops the walk, so a
   transaction is never applied before one that committed earlier.
3. The ready transactions' events (held ones first) are folded; the others' events
   and ENDs are held: in the writer's memory (engine/state/held.py; the partitions'
   resume positions stay at the first of them, so a crash loses nothing), or, past
   the memory bound or held long, in `_changefold.txn_events` / `txn_ends`, written
   in the same DuckDB transaction as the offsets; the frontier records the last one
   applied.

A transaction whose END never comes (lost, or its transaction topic is not
followed) stays held and invisible, and so does every later one that touches a
partition behind its events (their order per row must hold), and then, in commit
order, every one after; `stuck` names them and the writer warns. Events and ENDs
of a transaction applied before (records sent again, a connector re-emitting after
a restart) are dropped as duplicates (`_changefold.txn_applied` remembers the
transactions of the last batches kept).
"""

from __future__ import annotations

import gc
import heapq
import json
import logging
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from engine.decode import txmeta
from engine.decode.envelope import topic_kind
from engine.decode.model import DeadLetter
from engine.decode.records import RawRecord, RecordLike
from engine.decode.txmeta import TxnEnd
from engine.state.held import Held, Key, counts_with, end_order
from engine.state.sqlident import INTERNAL_SCHEMA

log = logging.getLogger(__name__)

#: Where a record sits: (topic, partition, offset).
_POSITION = operator.attrgetter("topic", "partition", "offset")
_OFFSET = operator.attrgetter("offset")
#: What a topic's records are to planning (see _kind).
_TRANSACTION, _EVENT, _NOW = "transaction", "event", "now"

_EVENTS = f"{INTERNAL_SCHEMA}.txn_events"
_ENDS = f"{INTERNAL_SCHEMA}.txn_ends"
_FRONTIER = f"{INTERNAL_SCHEMA}.frontier"
_APPLIED = f"{INTERNAL_SCHEMA}.txn_applied"


@dataclass(frozen=True)
class TxnRules:
    """Which events wait for their transaction.

    `prefixes`: the connectors (topic prefixes) whose transaction topic the engine
    follows; events of other prefixes are applied one by one as they come.
    `follows(topic)`: whether the engine follows a data topic (an END's count of a
    table that is not followed is not waited for).
    """

    prefixes: frozenset[str]
    follows: Callable[[str], bool] = field(default=lambda _topic: True)

    def waits(self, topic: str) -> bool:
        return txmeta.prefix_of(topic) in self.prefixes


@dataclass(frozen=True)
class Frontier:
    """The last source transaction applied: the state is consistent as of it."""

    xid: str
    lsn: int
    commit_ts_ms: int
    transactions: int
    batch_id: int


@dataclass
class TxnPlan:
    """What one batch does with its transactions."""

    #: Records to decode and fold now (held ones too), in offset order per partition.
    fold: list[RecordLike]
    #: Transactions applied by this batch, in commit order.
    ready: list[TxnEnd]
    #: This batch's events that wait: (xid, place in the transaction, record).
    hold_events: list[tuple[str, int | None, RecordLike]]
    hold_ends: list[TxnEnd]
    #: Transaction records that could not be read.
    dead_letters: list[DeadLetter]
    #: Transaction records of this batch past a time bound (a replay's --until).
    late_ends: int = 0
    #: Events and ENDs of transactions applied before (sent again): dropped.
    duplicates: int = 0

    @property
    def applied(self) -> int:
        return len(self.ready)


#: A batch's new events per transaction: events per topic, (offset, xid) per partition
#: (in offset order once sorted), the partitions each touches.
_Index = tuple[dict[str, dict[str, int]], dict[Key, list[tuple[int, str]]], dict[str, set[Key]]]


def _index(events: Mapping[str, Sequence[tuple[int | None, RecordLike]]]) -> _Index:
    new_counts: dict[str, dict[str, int]] = {}
    new_queues: dict[Key, list[tuple[int, str]]] = {}
    new_touches: dict[str, set[Key]] = {}
    for xid, recs in events.items():
        counts: dict[str, int] = {}
        touches: set[Key] = set()
        for _place, r in recs:
            topic = r.topic
            counts[topic] = counts.get(topic, 0) + 1
            key = (topic, r.partition)
            touches.add(key)
            queue = new_queues.get(key)
            if queue is None:
                new_queues[key] = [(r.offset, xid)]
            else:
                queue.append((r.offset, xid))
        new_counts[xid] = counts
        new_touches[xid] = touches
    return new_counts, new_queues, new_touches


def ready(
    held: Held,
    ends: Sequence[TxnEnd],
    events: Mapping[str, Sequence[tuple[int | None, RecordLike]]],
    follows: Callable[[str], bool],
    index: _Index | None = None,
) -> list[TxnEnd]:
    """The ENDs that can be applied now, in commit order (those `held` has and the
    batch's new `ends`, whose new `events` are not held yet): the longest run, from the
    earliest, of transactions whose every counted event is there and, in each
    partition they touch, come after nothing that waits for a transaction not applied
    before them. The second rule keeps each row's changes in their order even when
    ENDs come out of order (a transaction topic of several partitions). Costs what the
    batch brings and applies, not what is held. `index`: what _index(events) gives,
    when the caller has it."""
    new_counts, new_queues, new_touches = _index(events) if index is None else index
    for queue in new_queues.values():
        queue.sort()
    applied: set[str] = set()
    cursors: dict[Key, int] = {}
    new_cursors: dict[Key, int] = {}
    held_queues, held_have, held_touches = held.queues, held.have, held.touches
    pending = held.pending
    followed: dict[str, bool] = {}

    def head(k: Key) -> str | None:
        """The first transaction not applied yet that waits in partition `k` (held
        events before the batch's)."""
        q = held_queues.get(k)
        if q:
            i, n = cursors.get(k, 0), len(q)
            while i < n and (q[i][1] in applied or not pending(q[i][1])):
                i += 1
            cursors[k] = i
            if i < n:
                return q[i][1]
        q = new_queues.get(k)
        if not q:
            return None
        i, n = new_cursors.get(k, 0), len(q)
        while i < n and q[i][1] in applied:
            i += 1
        new_cursors[k] = i
        return q[i][1] if i < n else None

    fresh = sorted(ends, key=end_order)
    walk: Iterable[TxnEnd] = fresh
    if held.order:
        by_key = {end_order(e): e for e in fresh}
        walk = (by_key.get(k) or held.ends[k[-1]] for k in heapq.merge(held.order, by_key))
    out: list[TxnEnd] = []
    for end in walk:
        xid = end.xid
        got = new_counts.get(xid)
        if xid in held_have:
            got = counts_with(held, new_counts, xid)
        elif got is None:
            got = {}
        whole = True
        for topic, n in end.counts:
            if got.get(topic, 0) < n:
                follow = followed.get(topic)
                if follow is None:
                    follow = followed[topic] = follows(topic)
                if follow:
                    whole = False
                    break
        if not whole:
            break
        touched = held_touches.get(xid)
        mine = new_touches.get(xid)
        if touched is None:
            touched = mine or set()
        elif mine:
            touched = touched | mine
        blocked = False
        for k in touched:
            if k in held_queues:
                blocked = head(k) != xid
            else:
                # Only the batch's events wait there, this transaction's among them.
                q = new_queues[k]
                i = new_cursors.get(k, 0)
                while q[i][1] in applied:
                    i += 1
                new_cursors[k] = i
                blocked = q[i][1] != xid
            if blocked:
                break
        if blocked:
            break
        out.append(end)
        applied.add(xid)
    return out


def plan(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    records: Sequence[RecordLike],
    rules: TxnRules,
    held: Held,
    *,
    applied_lsn: int | None = None,
    until_ms: int | None = None,
    until_lsn: int | None = None,
) -> TxnPlan:
    """Split a batch by transaction (see the module docstring) against what is `held`;
    changes nothing (`apply` writes, inside the batch's transaction, and the writer
    commits the plan to `held` after it). `applied_lsn`: the greatest LSN of a
    transaction applied so far (the frontier's; None: none applied), so that only
    transactions at or before it are looked up among those applied.

    The garbage collector waits while a batch is planned: what planning builds per
    event and transaction (tens of thousands of small objects a batch, nearly all
    gone when it returns) would otherwise outlive a few young collections and be
    moved to the old generation, whose full collections (over every object of the
    process) then come much more often."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _plan(
            conn,
            group_id,
            records,
            rules,
            held,
            applied_lsn=applied_lsn,
            until_ms=until_ms,
            until_lsn=until_lsn,
        )
    finally:
        if paused:
            gc.enable()


def _plan(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    records: Sequence[RecordLike],
    rules: TxnRules,
    held: Held,
    *,
    applied_lsn: int | None,
    until_ms: int | None,
    until_lsn: int | None,
) -> TxnPlan:
    now: list[RecordLike] = []
    waiting: dict[str, list[tuple[int | None, RecordLike]]] = {}
    ends: list[TxnEnd] = []
    dead: list[DeadLetter] = []
    late = 0
    #: Transactions that may have been applied before (at or before applied_lsn).
    maybe_applied: set[str] = set()
    kinds: dict[str, str] = {}
    # The per-record loop: a topic's kind is looked up once, and a JSON event's
    # transaction block is read in place (txmeta.event_txn for any other shape).
    tag, after_tag = txmeta.TXN_FIELD, len(txmeta.TXN_FIELD)
    block, begin, avro = txmeta.TXN_BLOCK, txmeta.BEGIN_PAYLOAD, b"\x00"
    counts: dict[str, dict[str, int]] = {}
    queues: dict[Key, list[tuple[int, str]]] = {}
    touches: dict[str, set[Key]] = {}
    run_topic: str | None = None
    run_partition = -1
    run_key: Key = ("", -1)
    run_queue: list[tuple[int, str]] = []
    # Avro events' transaction blocks are read beforehand, a schema id at a time (one
    # by one, each is a whole Avro read).
    avro_txns = _avro_event_txns(records, rules, kinds)
    for i, rec in enumerate(records):
        topic, value = rec.topic, rec.value
        kind = kinds.get(topic)
        if kind is None:
            kind = kinds[topic] = _kind(topic, rules)
        if kind is _EVENT:
            if value is None:
                now.append(rec)
                continue
            found = None
            place: int | None
            if not value.startswith(avro):
                at = value.rfind(tag)
                if at < 0:
                    now.append(rec)
                    continue
                at += after_tag
                found = block.match(value, at, at + 160)
                if found is None and value.startswith(b"null", at):
                    now.append(rec)
                    continue
            if found is not None and found[1] is not None:
                xid, place = found[1].decode(), int(found[4])
                if applied_lsn is not None and int(found[2]) <= applied_lsn:
                    maybe_applied.add(xid)
            else:
                txn = avro_txns[i] if i in avro_txns else txmeta.event_txn(value)
                if txn is None:
                    now.append(rec)
                    continue
                xid, place = txn[0], txn[1]
                if applied_lsn is not None and txn[2] <= applied_lsn:
                    maybe_applied.add(xid)
            # The index ready() walks (_index), built as the events come; a partition's
            # events come together, so its queue is looked up once per run of them.
            partition = rec.partition
            if partition != run_partition or topic is not run_topic:
                run_topic, run_partition = topic, partition
                run_key = (topic, partition)
                run_queue = queues.setdefault(run_key, [])
            run_queue.append((rec.offset, xid))
            recs = waiting.get(xid)
            if recs is None:
                waiting[xid] = [(place, rec)]
                counts[xid] = {topic: 1}
                touches[xid] = {run_key}
            else:
                recs.append((place, rec))
                per_topic = counts[xid]
                per_topic[topic] = per_topic.get(topic, 0) + 1
                touches[xid].add(run_key)
            continue
        if kind is _NOW:
            now.append(rec)
            continue
        # A transaction record: BEGINs say nothing (the END counts the events).
        if value is None:
            continue
        try:
            if value.startswith(avro):
                end = txmeta.parse_marker(topic, rec.partition, rec.offset, value)
            elif value.rfind(begin, max(len(value) - 512, 0)) >= 0:
                continue
            else:
                end = txmeta.json_end(topic, rec.partition, rec.offset, value)
        except (ValueError, KeyError, TypeError) as exc:
            dead.append(_dead(rec, f"not a readable transaction record: {exc}"))
            continue
        if end is None:
            continue
        if (until_ms is not None and end.ts_ms > until_ms) or (
            until_lsn is not None and end.lsn > until_lsn
        ):
            late += 1
            continue
        ends.append(end)
        if applied_lsn is not None and end.lsn <= applied_lsn:
            maybe_applied.add(end.xid)
    # Only a transaction at or before the frontier can have been applied, and one held
    # now has not: ask the state about the others.
    done_before = _applied_among(conn, group_id, {x for x in maybe_applied if not held.pending(x)})
    duplicates = sum(len(waiting.pop(x, ())) for x in done_before)
    events_dropped = duplicates
    fresh: dict[str, TxnEnd] = {}
    for end in ends:
        if end.xid in done_before or end.xid in fresh or end.xid in held.ends:
            duplicates += 1
        else:
            fresh[end.xid] = end
    # An event delivered twice has the same place in its transaction: the first copy
    # (held, or earliest in this batch) counts, the others are dropped. A transaction
    # with nothing held and no place twice keeps its events as they came (put in
    # position order where that matters: held, or folded).
    fresh_events: dict[str, list[tuple[int | None, RecordLike]]] = {}
    held_events, held_ends = held.events, held.ends
    for xid, recs in waiting.items():
        if (
            xid not in held_events
            and xid not in held_ends
            and (len(recs) == 1 or len({p for p, _r in recs}) == len(recs))
        ):
            fresh_events[xid] = recs
            continue
        keep: list[tuple[int | None, RecordLike]] = []
        places: set[int] = set()
        for place, r in sorted(recs, key=_by_position):
            if place is not None:
                if place in places or (xid, place) in held.places:
                    duplicates += 1
                    events_dropped += 1
                    continue
                places.add(place)
            keep.append((place, r))
        if keep:
            fresh_events[xid] = keep
    go = (
        ready(
            held,
            list(fresh.values()),
            fresh_events,
            rules.follows,
            # Built with the events this planning dropped: built again without them.
            None if events_dropped else (counts, queues, touches),
        )
        if (fresh or held.ends)
        else []
    )
    go_ids = {e.xid for e in go}
    from_state = go_ids & held.stored
    fold = _in_position_order(
        [
            *held.records(x for x in go_ids if x in held_events),
            *(_held_records(conn, group_id, from_state) if from_state else ()),
            *now,
            *(r for x in go_ids for _p, r in fresh_events.get(x, ())),
        ]
    )
    hold_events = [
        (x, p, r)
        for x, prs in fresh_events.items()
        if x not in go_ids
        for p, r in (sorted(prs, key=_by_position) if len(prs) > 1 else prs)
    ]
    hold_ends = [e for x, e in fresh.items() if x not in go_ids]
    return TxnPlan(fold, go, hold_events, hold_ends, dead, late, duplicates)


def _by_position(pr: tuple[int | None, RecordLike]) -> tuple[str, int, int]:
    return _POSITION(pr[1])


def _in_position_order(records: list[RecordLike]) -> list[RecordLike]:
    """`records` sorted by (topic, partition, offset), stably (as sorted with that key),
    at the cost of a sort per partition: records of a partition mostly come in order."""
    parts: dict[tuple[str, int], list[RecordLike]] = {}
    for r in records:
        key = (r.topic, r.partition)
        part = parts.get(key)
        if part is None:
            parts[key] = [r]
        else:
            part.append(r)
    if len(parts) == 1:
        (only,) = parts.values()
        only.sort(key=_OFFSET)
        return only
    out: list[RecordLike] = []
    for key in sorted(parts):
        part = parts[key]
        part.sort(key=_OFFSET)
        out += part
    return out


def _avro_event_txns(
    records: Sequence[RecordLike], rules: TxnRules, kinds: dict[str, str]
) -> dict[int, tuple[str, int | None, int] | None]:
    """{record index: txmeta.event_txn} of the Avro events that wait for their transaction
    (`kinds`: the topics' kinds, filled as they are looked up)."""
    index: list[int] = []
    values: list[bytes] = []
    for i, rec in enumerate(records):
        value = rec.value
        if value is None or value[:1] != b"\x00":
            continue
        kind = kinds.get(rec.topic)
        if kind is None:
            kind = kinds[rec.topic] = _kind(rec.topic, rules)
        if kind is _EVENT:
            index.append(i)
            values.append(value)
    if not values:
        return {}
    return dict(zip(index, txmeta.avro_event_txns(values), strict=True))


def _kind(topic: str, rules: TxnRules) -> str:
    """_TRANSACTION (a transaction topic), _EVENT (a table whose events wait for their
    transaction) or _NOW (applied as they come)."""
    if txmeta.is_transaction_topic(topic):
        return _TRANSACTION
    if topic_kind(topic) == "table" and rules.waits(topic):
        return _EVENT
    return _NOW


def event_txn(rec: RecordLike, rules: TxnRules) -> tuple[str, int | None, int] | None:
    """(xid, place, LSN) of a data event that waits for its transaction; None: it does not."""
    if rec.value is None or _kind(rec.topic, rules) is not _EVENT:
        return None
    return txmeta.event_txn(rec.value)


def apply(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    batch_id: int,
    done: TxnPlan,
    *,
    spill_events: Sequence[tuple[str, int | None, RecordLike, int]] = (),
    spill_ends: Sequence[tuple[TxnEnd, int]] = (),
    release_stored: Iterable[str] = (),
    keep_batches: int = 10000,
) -> Frontier | None:
    """Inside the batch's transaction: write the events and ENDs moved to the state
    file (each with the batch since which its transaction waits), delete those of
    `release_stored` (applied transactions with records there), remember what was
    applied (for `keep_batches` batches, to know its events if they come again), and
    advance the frontier. Returns the new frontier (None: no transaction applied)."""
    held = spill_events
    if held:
        _insert_new(
            conn,
            _EVENTS,
            {
                "group_id": [group_id] * len(held),
                "xid": [x for x, *_ in held],
                "total_order": pa.array([p for _x, p, *_ in held], pa.int64()),
                "topic": [r.topic for _x, _p, r, _b in held],
                "partition": pa.array([r.partition for _x, _p, r, _b in held], pa.int32()),
                "offset": pa.array([r.offset for _x, _p, r, _b in held], pa.int64()),
                "key": pa.array([r.key for _x, _p, r, _b in held], pa.binary()),
                "value": pa.array([r.value for _x, _p, r, _b in held], pa.binary()),
                "batch_id": pa.array([b for *_, b in held], pa.int64()),
            },
        )
    if spill_ends:
        ends = [e for e, _b in spill_ends]
        _insert_new(
            conn,
            _ENDS,
            {
                "group_id": [group_id] * len(ends),
                "xid": [e.xid for e in ends],
                "lsn": pa.array([e.lsn for e in ends], pa.int64()),
                "commit_ts_ms": pa.array([e.ts_ms for e in ends], pa.int64()),
                "counts": [json.dumps(dict(e.counts)) for e in ends],
                "topic": [e.topic for e in ends],
                "partition": pa.array([e.partition for e in ends], pa.int32()),
                "offset": pa.array([e.offset for e in ends], pa.int64()),
                "batch_id": pa.array([b for _e, b in spill_ends], pa.int64()),
            },
        )
    if not done.ready:
        return None
    xids = [e.xid for e in done.ready]
    release = sorted(release_stored)
    if release:
        for table in (_EVENTS, _ENDS):
            conn.execute(
                f"DELETE FROM {table} WHERE group_id = ? AND xid IN (SELECT unnest(?))",
                [group_id, release],
            )
    conn.execute(
        f"INSERT OR REPLACE INTO {_APPLIED} SELECT ?, unnest(?), unnest(?), ?",
        [group_id, xids, [e.lsn for e in done.ready], batch_id],
    )
    if batch_id % 100 == 0:
        conn.execute(
            f"DELETE FROM {_APPLIED} WHERE group_id = ? AND batch_id < ?",
            [group_id, batch_id - keep_batches],
        )
    last = done.ready[-1]
    conn.execute(
        f"INSERT INTO {_FRONTIER} VALUES (?, ?, ?, ?, ?, ?, now()) ON CONFLICT (group_id) "
        # The frontier never moves back (ENDs from a transaction topic of several
        # partitions can come out of order; see ready()).
        f"DO UPDATE SET xid = CASE WHEN excluded.lsn >= {_FRONTIER}.lsn THEN excluded.xid "
        f"ELSE {_FRONTIER}.xid END, lsn = greatest({_FRONTIER}.lsn, excluded.lsn), "
        f"commit_ts_ms = CASE WHEN excluded.lsn >= {_FRONTIER}.lsn THEN excluded.commit_ts_ms "
        f"ELSE {_FRONTIER}.commit_ts_ms END, "
        f"transactions = {_FRONTIER}.transactions + excluded.transactions, "
        "batch_id = excluded.batch_id, updated_at = excluded.updated_at",
        [group_id, last.xid, last.lsn, last.ts_ms, len(done.ready), batch_id],
    )
    return load_frontier(conn, group_id)


def load_held(conn: duckdb.DuckDBPyConnection, group_id: str) -> Held:
    """The index of what waits, as the state's tables hold it (at a writer's start:
    what waited only in memory is read again from the topics)."""
    held = Held()
    rows = conn.execute(
        f'SELECT xid, total_order, topic, "partition", "offset", batch_id FROM {_EVENTS} '
        'WHERE group_id = ? ORDER BY batch_id, topic, "partition", "offset"',
        [group_id],
    ).fetchall()
    for x, n, t, p, o, b in rows:
        held.add_event(str(x), None if n is None else int(n), str(t), int(p), int(o), None, int(b))
    for end, batch in _held_ends(conn, group_id):
        held.add_end(end, batch, stored=True)
    return held


def _insert_new(conn: duckdb.DuckDBPyConnection, table: str, columns: dict[str, Any]) -> None:
    """Insert rows (column name -> values) in one statement, matched by column name;
    rows whose key is there already are left as they are."""
    conn.register("_txn_rows", pa.table(columns))
    try:
        conn.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM _txn_rows")
    finally:
        conn.unregister("_txn_rows")


def load_frontier(conn: duckdb.DuckDBPyConnection, group_id: str) -> Frontier | None:
    found = conn.execute(
        f"SELECT xid, lsn, commit_ts_ms, transactions, batch_id FROM {_FRONTIER} "
        "WHERE group_id = ?",
        [group_id],
    ).fetchall()
    if not found:
        return None
    row = found[0]
    return Frontier(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def stuck(
    conn: duckdb.DuckDBPyConnection, group_id: str, before_batch: int
) -> list[tuple[str, int, str]]:
    """Held transactions waiting since a batch before `before_batch`: (xid, events held,
    where the first one is, as topic[partition]@offset)."""
    rows = conn.execute(
        f"SELECT xid, count(*), arg_min(topic || '[' || \"partition\" || ']@' || \"offset\", "
        f"batch_id) FROM {_EVENTS} WHERE group_id = ? GROUP BY xid "
        "HAVING min(batch_id) < ? ORDER BY min(batch_id) LIMIT 20",
        [group_id, before_batch],
    ).fetchall()
    return [(str(x), int(n), str(w)) for x, n, w in rows]


def _applied_among(conn: duckdb.DuckDBPyConnection, group_id: str, xids: Iterable[str]) -> set[str]:
    """Which of `xids` were applied already (in the last batches kept)."""
    wanted = sorted(xids)
    if not wanted:
        return set()
    rows = conn.execute(
        f"SELECT xid FROM {_APPLIED} WHERE group_id = ? AND xid IN (SELECT unnest(?))",
        [group_id, wanted],
    ).fetchall()
    return {str(x) for (x,) in rows}


def _held_ends(conn: duckdb.DuckDBPyConnection, group_id: str) -> list[tuple[TxnEnd, int]]:
    rows = conn.execute(
        f'SELECT xid, lsn, commit_ts_ms, counts, topic, "partition", "offset", batch_id '
        f"FROM {_ENDS} WHERE group_id = ? ORDER BY batch_id",
        [group_id],
    ).fetchall()
    return [
        (
            TxnEnd(
                str(x), int(lsn), int(ts), tuple(sorted(json.loads(c).items())), t, int(p), int(o)
            ),
            int(b),
        )
        for x, lsn, ts, c, t, p, o, b in rows
    ]


def _held_records(
    conn: duckdb.DuckDBPyConnection, group_id: str, xids: Iterable[str]
) -> list[RecordLike]:
    rows = conn.execute(
        f'SELECT topic, "partition", "offset", key, value FROM {_EVENTS} '
        'WHERE group_id = ? AND xid IN (SELECT unnest(?)) ORDER BY topic, "partition", "offset"',
        [group_id, sorted(xids)],
    ).fetchall()
    return [RawRecord(str(t), int(p), int(o), k, v) for t, p, o, k, v in rows]


def _dead(rec: RecordLike, reason: str) -> DeadLetter:
    return DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, reason)
