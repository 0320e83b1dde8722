"""Whole source transactions, in commit order, and the frontier they advance.

The legs of one Postgres transaction reach different topics and partitions, so
any batch cut shows part of one. Per batch, under the writer's lock:

1. `plan` splits the batch's records: transaction ENDs (from `<prefix>.transaction`),
   data events that belong to a transaction, and everything else (snapshot rows,
   events from before transaction metadata was on, tombstones: folded at once).
2. Every END seen and not yet applied is ordered by its position in the source log
   (LSN). Walking that order, a transaction is *ready* when every event its END
   counts (for the topics the engine follows) has arrived, in this batch or held
   from earlier ones; the first one that is not ready stops the walk, so a
   transaction is never applied before one that committed earlier.
3. The ready transactions' events (held ones first) are folded; the others' events
   and ENDs are held in `_changefold.txn_events` / `txn_ends`, in the same DuckDB
   transaction as the offsets (so offsets advance, memory stays bounded, and a
   crash loses or repeats nothing); the frontier records the last one applied.

A transaction whose END never comes (lost, or its transaction topic is not
followed) stays held and invisible, and so does every later one that touches a
partition behind its events (their order per row must hold), and then, in commit
order, every one after; `stuck` names them and the writer warns. Events and ENDs
of a transaction applied before (records sent again, a connector re-emitting after
a restart) are dropped as duplicates (`_changefold.txn_applied` remembers the
transactions of the last batches kept).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
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
from engine.state.sqlident import INTERNAL_SCHEMA

log = logging.getLogger(__name__)

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


def ready(
    ends: Iterable[TxnEnd],
    have: Mapping[str, Mapping[str, int]],
    follows: Callable[[str], bool],
    waiting: Mapping[tuple[str, int], Sequence[tuple[int, str]]] | None = None,
) -> list[TxnEnd]:
    """The ENDs that can be applied now, in commit order: the longest run, from the
    earliest, of transactions whose every counted event is there (`have`: events per
    xid and topic) and, in each partition they touch, come after nothing that waits
    for a transaction not applied before them (`waiting`: (offset, xid) of the waiting
    events per partition, in offset order). The second rule keeps each row's changes
    in their order even when ENDs come out of order (a transaction topic of several
    partitions). Linear in the ENDs and waiting events."""
    queues = {k: list(v) for k, v in (waiting or {}).items()}
    heads = dict.fromkeys(queues, 0)
    touches: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for k, q in queues.items():
        for _o, x in q:
            touches[x].add(k)
    applied: set[str] = set()

    def head(k: tuple[str, int]) -> str | None:
        q, i = queues[k], heads[k]
        while i < len(q) and q[i][1] in applied:
            i += 1
        heads[k] = i
        return q[i][1] if i < len(q) else None

    out: list[TxnEnd] = []
    for end in sorted(ends, key=lambda e: (e.lsn, e.ts_ms, e.topic, e.partition, e.offset)):
        got = have.get(end.xid, {})
        if any(got.get(topic, 0) < n for topic, n in end.counts if follows(topic)):
            break
        if any(head(k) != end.xid for k in touches.get(end.xid, ())):
            break
        out.append(end)
        applied.add(end.xid)
    return out


def plan(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    records: Sequence[RecordLike],
    rules: TxnRules,
    *,
    until_ms: int | None = None,
    until_lsn: int | None = None,
) -> TxnPlan:
    """Split a batch by transaction (see the module docstring). Reads the held rows;
    writes nothing (`apply` does, inside the batch's transaction)."""
    now: list[RecordLike] = []
    waiting: dict[str, list[tuple[int | None, RecordLike]]] = defaultdict(list)
    ends: list[TxnEnd] = []
    dead: list[DeadLetter] = []
    late = 0
    for rec in records:
        topic, value = rec.topic, rec.value
        if txmeta.is_transaction_topic(topic):
            try:
                end = txmeta.parse_marker(topic, rec.partition, rec.offset, value)
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
            continue
        txn = None
        if value is not None and topic_kind(topic) == "table" and rules.waits(topic):
            txn = txmeta.event_txn(value)
        if txn is None:
            now.append(rec)
        else:
            waiting[txn[0]].append((txn[1], rec))
    done_before = _applied_among(conn, group_id, {*waiting, *(e.xid for e in ends)})
    duplicates = sum(len(waiting.pop(x, ())) for x in done_before)
    fresh: dict[str, TxnEnd] = {}
    for end in ends:
        if end.xid in done_before or end.xid in fresh:
            duplicates += 1
        else:
            fresh[end.xid] = end
    held_ends = _held_ends(conn, group_id)
    known = {e.xid for e in held_ends}
    duplicates += sum(1 for x in fresh if x in known)
    ends = [e for x, e in fresh.items() if x not in known]
    all_ends = [*held_ends, *ends]
    # An event delivered twice has the same place in its transaction: the first copy
    # (held, or earliest in this batch) counts, the others are dropped.
    places: set[tuple[str, int]] = set()
    have: dict[str, dict[str, int]] = defaultdict(dict)
    order: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    if all_ends:
        for xid, place, topic, partition, offset in _held_positions(conn, group_id):
            if place is not None:
                places.add((xid, place))
            have[xid][topic] = have[xid].get(topic, 0) + 1
            order[(topic, partition)].append((offset, xid))
    else:
        places = _held_places(conn, group_id, waiting)
    fresh_events: dict[str, list[tuple[int | None, RecordLike]]] = {}
    for xid, recs in waiting.items():
        keep = []
        for place, r in sorted(recs, key=lambda pr: (pr[1].topic, pr[1].partition, pr[1].offset)):
            if place is not None and (xid, place) in places:
                duplicates += 1
                continue
            if place is not None:
                places.add((xid, place))
            keep.append((place, r))
            counts = have[xid]
            counts[r.topic] = counts.get(r.topic, 0) + 1
            order[(r.topic, r.partition)].append((r.offset, xid))
        fresh_events[xid] = keep
    if not all_ends:
        hold = [(x, p, r) for x, prs in fresh_events.items() for p, r in prs]
        return TxnPlan(now, [], hold, [], dead, late, duplicates)
    for queue in order.values():
        queue.sort()
    go = ready(all_ends, have, rules.follows, order)
    go_ids = {e.xid for e in go}
    held = _held_records(conn, group_id, go_ids) if go_ids else []
    fold = sorted(
        (*held, *now, *(r for x in go_ids for _p, r in fresh_events.get(x, ()))),
        key=lambda r: (r.topic, r.partition, r.offset),
    )
    hold_events = [(x, p, r) for x, prs in fresh_events.items() if x not in go_ids for p, r in prs]
    hold_ends = [e for e in ends if e.xid not in go_ids]
    return TxnPlan(fold, go, hold_events, hold_ends, dead, late, duplicates)


def apply(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    batch_id: int,
    done: TxnPlan,
    *,
    keep_batches: int = 10000,
) -> Frontier | None:
    """Inside the batch's transaction: hold what waits, release what was applied,
    remember it (for `keep_batches` batches, to know its events if they come again),
    advance the frontier. Returns the new frontier (None: no transaction applied)."""
    held = done.hold_events
    if held:
        _insert_new(
            conn,
            _EVENTS,
            {
                "group_id": [group_id] * len(held),
                "xid": [x for x, _p, _r in held],
                "total_order": pa.array([p for _x, p, _r in held], pa.int64()),
                "topic": [r.topic for *_, r in held],
                "partition": pa.array([r.partition for *_, r in held], pa.int32()),
                "offset": pa.array([r.offset for *_, r in held], pa.int64()),
                "key": pa.array([r.key for *_, r in held], pa.binary()),
                "value": pa.array([r.value for *_, r in held], pa.binary()),
                "batch_id": pa.array([batch_id] * len(held), pa.int64()),
            },
        )
    ends = done.hold_ends
    if ends:
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
                "batch_id": pa.array([batch_id] * len(ends), pa.int64()),
            },
        )
    if not done.ready:
        return None
    xids = [e.xid for e in done.ready]
    for table in (_EVENTS, _ENDS):
        conn.execute(
            f"DELETE FROM {table} WHERE group_id = ? AND xid IN (SELECT unnest(?))",
            [group_id, xids],
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


def _held_ends(conn: duckdb.DuckDBPyConnection, group_id: str) -> list[TxnEnd]:
    rows = conn.execute(
        f'SELECT xid, lsn, commit_ts_ms, counts, topic, "partition", "offset" FROM {_ENDS} '
        "WHERE group_id = ?",
        [group_id],
    ).fetchall()
    return [
        TxnEnd(str(x), int(lsn), int(ts), tuple(sorted(json.loads(c).items())), t, int(p), int(o))
        for x, lsn, ts, c, t, p, o in rows
    ]


def _held_positions(
    conn: duckdb.DuckDBPyConnection, group_id: str
) -> list[tuple[str, int | None, str, int, int]]:
    """(xid, place in its transaction, topic, partition, offset) of every held event."""
    rows = conn.execute(
        f'SELECT xid, total_order, topic, "partition", "offset" FROM {_EVENTS} WHERE group_id = ?',
        [group_id],
    ).fetchall()
    return [
        (str(x), None if n is None else int(n), str(t), int(p), int(o)) for x, n, t, p, o in rows
    ]


def _held_places(
    conn: duckdb.DuckDBPyConnection, group_id: str, xids: Iterable[str]
) -> set[tuple[str, int]]:
    """(xid, place) of the held events of these transactions."""
    wanted = sorted(xids)
    if not wanted:
        return set()
    rows = conn.execute(
        f"SELECT xid, total_order FROM {_EVENTS} WHERE group_id = ? AND total_order IS NOT "
        "NULL AND xid IN (SELECT unnest(?))",
        [group_id, wanted],
    ).fetchall()
    return {(str(x), int(n)) for x, n in rows}


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
