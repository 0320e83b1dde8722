"""Whole source transactions (TxnRules) over the in-memory source.

Histories are synthetic bank events with Debezium's transaction metadata
(engine.lab.synthetic.SourceTransactions): bank.transactions and a second table,
bank.ledger (the generator's row shape), three partitions each (a key keeps its
partition), and `bank.transaction` with the BEGIN/END records (one partition, ENDs
in commit order, unless a test says otherwise). The captured lab_double
envelopes are used where a real truncate or the captured transaction topic is
needed.

Visibility is checked inside every batch's DuckDB transaction by a writer
observer (after the fold, before the commit): a transaction's rows are all there
or none. End states are compared with a fold of the whole history in one batch.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import random
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pytest
from engine_helpers import STATE_SQL, load_fixture, mirror_rows, rows

from engine.decode import txmeta
from engine.decode.records import RawRecord
from engine.ingest.loop import FoldLoop
from engine.ingest.memory import Crash, MemoryGroup, MemoryLog, MemorySource
from engine.ingest.source import Key, Polled
from engine.ingest.step import CheckpointedStep, Folded, Outcome
from engine.lab.synthetic import BankTransactions, Message, SourceTransaction, SourceTransactions
from engine.state import transactions
from engine.state.sqlident import quote
from engine.state.store import Store
from engine.state.transactions import TxnRules
from engine.state.writer import StateWriter

GROUP = "txn-group"
PREFIX = "bank"
LEGS = "bank.bank.transactions"
LEDGER = "bank.bank.ledger"
TXN_TOPIC = "bank.transaction"
PARTITIONS = 3
RULES = TxnRules(frozenset({PREFIX}))
LAB_RULES = TxnRules(frozenset({"labdbl"}))
#: Deadline of every wait on the loop's threads (a failing test fails, it does not hang).
WAIT_S = 20.0

Snapshot = dict[str, Any]


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


# -- histories ------------------------------------------------------------------------------


@dataclass(eq=False)
class Txn:
    """A source transaction of a History: what it wrote."""

    meta: SourceTransaction
    #: (topic, key) of the rows it created, updated or deleted.
    writes: list[tuple[str, int]] = field(default_factory=list)
    #: (topic, key) of the rows it created.
    creates: list[tuple[str, int]] = field(default_factory=list)
    #: Its events: (topic, partition, offset).
    events: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def xid(self) -> str:
        return str(self.meta.xid)


class History:
    """A source history in a memory log: change events of LEGS and LEDGER inside (or
    outside) source transactions, and their BEGIN/END records in TXN_TOPIC."""

    def __init__(self, *, seed: int = 5, txn_partitions: int = 1) -> None:
        self.meta = SourceTransactions(PREFIX, first_xid=1000)
        self.generators = {
            LEGS: BankTransactions(LEGS, keys=1_000_000, seed=seed),
            LEDGER: BankTransactions(LEDGER, keys=1_000_000, seed=seed + 1),
        }
        self.log = MemoryLog()
        self.txn_partitions = txn_partitions
        #: Transactions whose END was written, in commit order.
        self.ended: list[Txn] = []
        #: Rows there now, per topic (the oracle): key -> the last event's `after`.
        self.live: dict[str, dict[int, dict[str, Any]]] = {LEGS: {}, LEDGER: {}}
        #: Rows of transfers and other watched transactions: no background change
        #: touches them.
        self.protected: set[tuple[str, int]] = set()
        self._partition: dict[tuple[str, int], int] = {}
        self._keys = itertools.count(1)

    def key_in(self, topic: str, partition: int) -> int:
        """A new key whose events go to `partition` of `topic`."""
        key = next(self._keys)
        self._partition[(topic, key)] = partition
        return key

    def partition_of(self, topic: str, key: int) -> int:
        return self._partition.setdefault((topic, key), zlib.crc32(b"%d" % key) % PARTITIONS)

    def begin(self) -> Txn:
        return Txn(self.meta.begin())

    def write(self, txn: Txn | None, topic: str, key: int | None = None, *, op: Any = None) -> int:
        """One change of `topic` (a new key unless given), inside `txn` or outside any."""
        if key is None:
            key = next(self._keys)
        partition = self.partition_of(topic, key)
        messages = self.generators[topic].change(
            key, op=op, transaction=None if txn is None else txn.meta
        )
        for m in messages:
            offset = self.log.append(topic, partition, m.key, m.value)
            if m.value is None:
                continue
            payload = json.loads(m.value)["payload"]
            if payload["after"] is None:
                self.live[topic].pop(key, None)
            else:
                self.live[topic][key] = payload["after"]
            if txn is not None:
                txn.writes.append((topic, key))
                txn.events.append((topic, partition, offset))
                if m.op == "c":
                    txn.creates.append((topic, key))
        return key

    def snapshot_row(self, topic: str, key: int | None = None) -> int:
        """A snapshot read (op r, transaction null): a create rewritten as the connector's
        initial snapshot writes it."""
        if key is None:
            key = next(self._keys)
        partition = self.partition_of(topic, key)
        (m,) = self.generators[topic].change(key, op="c")
        assert m.value is not None
        value = m.value.replace(b'"op":"c"', b'"op":"r"').replace(
            b'"snapshot":"false"', b'"snapshot":"true"'
        )
        self.log.append(topic, partition, m.key, value)
        self.live[topic][key] = json.loads(value)["payload"]["after"]
        return key

    def commit(self, txn: Txn, *, lose_end: bool = False) -> Message:
        """Commit `txn`: its BEGIN and END records (the END left out with `lose_end`);
        returns the END."""
        end = txn.meta.end()
        self._marker(txn.meta.begin())
        if not lose_end:
            self._marker(end)
            self.ended.append(txn)
        return end

    def _marker(self, m: Message) -> None:
        self.log.append(TXN_TOPIC, zlib.crc32(m.key) % self.txn_partitions, m.key, m.value)

    def transfer(self, parts: tuple[int, int, int] = (0, 1, 2)) -> Txn:
        """A committed transfer: two legs in bank.transactions (partitions parts[0] and
        parts[1]) and a ledger row (partition parts[2])."""
        txn = self.begin()
        self.write(txn, LEGS, self.key_in(LEGS, parts[0]))
        self.write(txn, LEDGER, self.key_in(LEDGER, parts[2]))
        self.write(txn, LEGS, self.key_in(LEGS, parts[1]))
        self.commit(txn)
        self.protect(txn)
        return txn

    def protect(self, txn: Txn) -> None:
        """Keep background changes off the rows `txn` created."""
        self.protected.update(txn.creates)

    def background(self, count: int, rnd: random.Random) -> None:
        """`count` committed transactions of 1-3 random changes (creates, updates,
        deletes) of either table."""
        for _ in range(count):
            txn = self.begin()
            for _ in range(rnd.randint(1, 3)):
                topic = rnd.choice((LEGS, LEDGER))
                live = sorted(k for k in self.live[topic] if (topic, k) not in self.protected)
                if live and rnd.random() < 0.6:
                    self.write(txn, topic, rnd.choice(live))
                else:
                    self.write(txn, topic)
            self.commit(txn)

    def end(self) -> MemoryLog:
        self.log.end()
        return self.log


def all_records(log: MemoryLog) -> list[RawRecord]:
    return [r for k in log.partitions() for r in log.read(k, 0, log.end_offset(k))]


def end_offsets(log: MemoryLog) -> dict[Key, int]:
    return {k: log.end_offset(k) for k in log.partitions()}


def lab_double_one_partition() -> list[RawRecord]:
    """The captured lab_double records with its transaction topic moved into one
    partition, BEGIN/END records in commit order (what a one-partition
    `labdbl.transaction` holds)."""
    captured = load_fixture("lab_double")
    data = [r for r in captured if not txmeta.is_transaction_topic(r.topic)]
    markers = [r for r in captured if txmeta.is_transaction_topic(r.topic)]
    ends = {}
    for r in markers:
        end = txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
        if end is not None:
            ends[end.xid] = end.lsn

    def order(r: RawRecord) -> tuple[int, bool]:
        payload = json.loads(r.value or b"")["payload"]
        return ends[txmeta.xid_of_id(payload["id"])], payload["status"] == "END"

    ordered = sorted(markers, key=order)
    return [*data, *(RawRecord(r.topic, 0, i, r.key, r.value) for i, r in enumerate(ordered))]


# -- folding --------------------------------------------------------------------------------


#: Where the writer keeps what waits for its transaction: in memory (the default;
#: the resume positions stay at the first event held), in the state file from the
#: start (no memory), or in memory until a small bound, then in the state file.
HELD_MEMORY = {"memory": 256 * 2**20, "state-file": 0, "spilling": 6_000}


def new_writer(
    store: Store | None = None, rules: TxnRules | None = RULES, held: str = "memory"
) -> StateWriter:
    """A writer over a new in-memory state, or over `store` (a restart)."""
    if store is None:
        store = Store(":memory:")
        store.migrate(STATE_SQL)
    return StateWriter(
        store,
        GROUP,
        keep_batches=100_000,
        transactions=rules,
        held_memory_bytes=HELD_MEMORY[held],
    )


def run_loop(source: MemorySource, writer: StateWriter, **kwargs: Any) -> bool:
    """FoldLoop.run on a thread, with a deadline; re-raises its error."""
    loop = FoldLoop(source, CheckpointedStep(writer, source.name), stop=threading.Event(), **kwargs)
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["result"] = loop.run()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=body, name=f"{source.name}-poll", daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive(), "the fold loop did not finish"
    if "error" in out:
        raise out["error"]
    return bool(out["result"])


def fold(
    log: MemoryLog,
    writer: StateWriter,
    *,
    max_records: int,
    seed: int = 0,
    group: MemoryGroup | None = None,
    **kwargs: Any,
) -> MemorySource:
    on_outcome = kwargs.pop("on_outcome", None)
    source = MemorySource(
        group or MemoryGroup(log), "m1", max_records=max_records, seed=seed, **kwargs
    )
    assert run_loop(source, writer, on_outcome=on_outcome) is True
    return source


def fold_runs(writer: StateWriter, log: MemoryLog, runs: Sequence[tuple[Key, int | None]]) -> None:
    """Fold scripted batches, one per run (partition, count; None: the rest of it), each
    partition read on from where its last run stopped (what a consumer does that reads
    one partition far ahead of the others)."""
    step = CheckpointedStep(writer, "scripted")
    at: dict[Key, int] = {}
    for key, count in runs:
        start = at.get(key, 0)
        records = log.read(key, start, log.end_offset(key) if count is None else count)
        assert records, (key, count)
        at[key] = start + len(records)
        assert isinstance(step.fold(Polled(records, {key: log.end_offset(key)})), Folded)
    assert at == end_offsets(log), "the runs do not read the whole log"


def whole(order: Sequence[Key]) -> list[tuple[Key, int | None]]:
    return [(key, None) for key in order]


def frontier_row(writer: StateWriter) -> tuple[Any, ...] | None:
    found = rows(
        writer,
        "SELECT xid, lsn, commit_ts_ms, transactions FROM _changefold.frontier WHERE group_id = ?",
        [GROUP],
    )
    return found[0] if found else None


def held(writer: StateWriter) -> tuple[int, int]:
    """(events, ENDs) held for their transaction."""
    events, ends = writer.held()
    return len(events), len(ends)


def state(writer: StateWriter) -> Snapshot:
    """Every mirror (columns and rows), the dead letters, the schema fingerprints, the
    frontier and what is held: what the fold made of the history."""
    out: Snapshot = {}
    out.update(mirror_rows(writer))
    out["dead_letters"] = rows(
        writer,
        'SELECT topic, "partition", "offset", stage, error FROM _changefold.dead_letters '
        "ORDER BY ALL",
    )
    out["schema_versions"] = rows(
        writer,
        "SELECT table_schema, table_name, fingerprint FROM _changefold.schema_versions "
        "ORDER BY ALL",
    )
    out["frontier"] = frontier_row(writer)
    out["held"], out["held_ends"] = writer.held()
    return out


def fold_in_one_batch(records: Sequence[RawRecord], rules: TxnRules | None = RULES) -> Snapshot:
    log = MemoryLog()
    log.extend(records)
    log.end()
    writer = new_writer(rules=rules)
    source = fold(log, writer, max_records=len(records) + 1)
    assert source.batches_out == 1
    return state(writer)


def mirrors(snap: Snapshot) -> Snapshot:
    return {k: v for k, v in snap.items() if "." in k}


def without_versions(snap: Snapshot) -> Snapshot:
    """The state but the schema versions: lab_double's TRUNCATE, folded in a batch with
    no other event of its table, records one more version (its keyless schema with a
    borrowed key), with or without TxnRules; not what these tests are about."""
    return {k: v for k, v in snap.items() if k != "schema_versions"}


def assert_folded_once(writer: StateWriter, log: MemoryLog) -> None:
    """Per partition, the folded batches cover it from 0 to its end without a gap; a
    batch may start before the end of the last one only by reading again from a resume
    position (after a restart, from the first event that waited in memory), which is
    never after where it was read to."""
    chains: dict[Key, list[tuple[int, int]]] = {}
    for topic, partition, first, nxt in rows(
        writer,
        'SELECT topic, "partition", first_offset, next_offset FROM _changefold.batch_partitions '
        "ORDER BY batch_id",
    ):
        chains.setdefault((topic, partition), []).append((first, nxt))
    assert set(chains) == set(log.partitions())
    for key, chain in chains.items():
        expected = 0
        for first, nxt in chain:
            assert first <= expected, (key, chain)
            expected = max(expected, nxt)
        assert expected == log.end_offset(key), key
    assert writer.stored_offsets() == end_offsets(log)


def mirror_keys(writer: StateWriter, topic: str) -> set[int]:
    with writer.store.reading() as conn:
        return present(conn, topic, None)


def present(conn: duckdb.DuckDBPyConnection, topic: str, keys: Sequence[int] | None) -> set[int]:
    """The keys (of `keys`, or all) that topic's mirror holds now."""
    prefix, _schema, table = topic.split(".")
    ((exists,),) = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [prefix, table],
    ).fetchall()
    if not exists:
        return set()
    sql = f"SELECT txn_id FROM {quote(prefix)}.{quote(table)}"
    if keys is None:
        return {int(k) for (k,) in conn.execute(sql).fetchall()}
    found = conn.execute(sql + " WHERE list_contains(?, txn_id)", [list(keys)]).fetchall()
    return {int(k) for (k,) in found}


def visible(conn: duckdb.DuckDBPyConnection, creates: Sequence[tuple[str, int]]) -> int:
    """How many of the created rows the mirrors show."""
    n = 0
    for topic in {t for t, _ in creates}:
        n += len(present(conn, topic, [k for t, k in creates if t == topic]))
    return n


def held_in(writer: StateWriter, conn: duckdb.DuckDBPyConnection, xid: str) -> int:
    """Events of `xid` held before the batch being folded (inside a batch's transaction)."""
    return held_by_xid(writer, conn).get(xid, 0)


def held_by_xid(writer: StateWriter, conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Events held per transaction before the batch being folded (kept in memory or in
    the state file), read inside that batch's transaction."""
    out: dict[str, int] = {}
    for xid, *_where in writer.held_index.positions():
        out[xid] = out.get(xid, 0) + 1
    return out


def stored_sum(
    conn: duckdb.DuckDBPyConnection, topics: Sequence[str], column: str = "next_offset"
) -> int:
    """The sum of the stored resume positions (or `column`) of these topics' partitions."""
    ((n,),) = conn.execute(
        f"SELECT coalesce(sum({column}), 0) FROM _changefold.offsets WHERE list_contains(?, topic)",
        [list(topics)],
    ).fetchall()
    return int(n)


Check = Callable[[duckdb.DuckDBPyConnection, int], None]


def observer(check: Check) -> Any:
    """A writer observer running `check(conn, batch_id)` after each batch's fold."""

    def observe(conn: duckdb.DuckDBPyConnection, batch_id: int, deltas: Any) -> None:
        check(conn, batch_id)

    observe.mirrors = ()  # type: ignore[attr-defined]  # no before/after rows needed
    return observe


class AllOrNone:
    """Asserts inside every batch that each watched transaction's created rows are all
    visible or none, and that once visible they stay; records per batch
    (batch, visible, held events of earlier batches) for each."""

    def __init__(self, txns: Sequence[Txn], writer: StateWriter) -> None:
        self.writer = writer
        self.txns = list(txns)
        assert all(t.creates for t in self.txns)
        self.seen: dict[str, list[tuple[int, int, int]]] = {t.xid: [] for t in self.txns}

    def __call__(self, conn: duckdb.DuckDBPyConnection, batch_id: int) -> None:
        wanted: dict[str, list[int]] = {}
        for txn in self.txns:
            for topic, key in txn.creates:
                wanted.setdefault(topic, []).append(key)
        there = {(t, k) for t, keys in wanted.items() for k in present(conn, t, keys)}
        held = held_by_xid(self.writer, conn)
        for txn in self.txns:
            n = sum(1 for c in txn.creates if c in there)
            assert n in (0, len(txn.creates)), (
                f"batch {batch_id}: {n} of the {len(txn.creates)} rows of transaction "
                f"{txn.xid} are visible"
            )
            log = self.seen[txn.xid]
            assert not (log and log[-1][1] and not n), f"transaction {txn.xid} disappeared"
            log.append((batch_id, n, int(held.get(txn.xid, 0))))

    def split(self, txn: Txn) -> bool:
        """Some events of `txn` were held by an earlier batch than the one applying it."""
        return any(h > 0 and n == 0 for _b, n, h in self.seen[txn.xid])


def assert_final(writer: StateWriter, history: History, log: MemoryLog) -> None:
    """All of the history applied once: the oracle's rows, nothing held, the frontier at
    the last END."""
    for topic in (LEGS, LEDGER):
        assert mirror_keys(writer, topic) == set(history.live[topic]), topic
    assert held(writer) == (0, 0)
    last = history.ended[-1].meta
    assert frontier_row(writer) == (str(last.xid), last.end_lsn, last.ts_ms, len(history.ended))
    assert_folded_once(writer, log)


# -- the synthetic option -------------------------------------------------------------------


def _digest(messages: Iterator[Message], count: int) -> str:
    h = hashlib.sha256()
    for m in itertools.islice(messages, count):
        h.update(m.key + b"\0" + (m.value if m.value is not None else b"<none>") + m.op.encode())
        h.update(b"\n")
    return h.hexdigest()


def test_synthetic_events_are_unchanged_by_default() -> None:
    # Digests of the generator's output before transaction metadata was added to it.
    assert (
        _digest(iter(BankTransactions(LEGS, keys=40, seed=7)), 500)
        == "c10bc8016daf480b4ffd67dd0e76c94dd2dbc54fb67d7c4ba0b445e0ffe7df21"
    )
    assert (
        _digest(iter(BankTransactions(LEGS, keys=200_000, seed=1)), 3000)
        == "bddcd8b508e91f9bebf225670563bc281830a7693742fe75ebb137cdd15ac367"
    )


def test_synthetic_transaction_metadata_has_debeziums_shape() -> None:
    meta = SourceTransactions(PREFIX, first_xid=900)
    legs, ledger = BankTransactions(LEGS, keys=50, seed=2), BankTransactions(LEDGER, keys=50)
    first, second = meta.begin(), meta.begin()
    events = [
        *legs.change(1, transaction=first),
        *ledger.change(1, transaction=first),
        *legs.change(2, transaction=first),
        *legs.change(3, transaction=second),
        *legs.change(1, op="d", transaction=second),
    ]
    ends = [first.end(), second.end()]
    begins = [first.begin(), second.begin()]
    assert meta.topic == "bank.transaction"

    payloads = [json.loads(m.value)["payload"] for m in events if m.value is not None]
    assert len(events) == 6 and events[-1].value is None  # the delete's tombstone
    blocks = [(p["transaction"], p["source"]["txId"], p["source"]["lsn"]) for p in payloads]
    assert [(b["total_order"], b["data_collection_order"], x) for b, x, _ in blocks] == [
        (1, 1, 900),
        (2, 1, 900),
        (3, 2, 900),
        (1, 1, 901),
        (2, 2, 901),
    ]
    # Postgres: the id is <xid>:<the event's LSN>; LSNs only grow.
    assert all(b["id"] == f"{x}:{lsn}" for b, x, lsn in blocks)
    lsns = [lsn for _b, _x, lsn in blocks]
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
    # The envelope's field order: before, after, source, transaction, op, ts_ms.
    assert list(payloads[0])[:6] == ["before", "after", "source", "transaction", "op", "ts_ms"]

    # BEGIN/END: the captured records' schemas; the END's LSN after every event's.
    captured = {
        json.loads(r.value or b"")["payload"]["status"]: r
        for r in load_fixture("lab_double")
        if txmeta.is_transaction_topic(r.topic)
    }
    for m in (*begins, *ends):
        assert m.value is not None
        ref = captured[json.loads(m.value)["payload"]["status"]]
        assert json.loads(m.value)["schema"] == json.loads(ref.value or b"")["schema"]
        assert json.loads(m.key)["schema"] == json.loads(ref.key or b"")["schema"]
        assert json.loads(m.key)["payload"]["id"] == json.loads(m.value)["payload"]["id"]
    begin = json.loads(begins[0].value or b"")["payload"]
    assert begin == {
        "status": "BEGIN",
        "id": blocks[0][0]["id"],
        "event_count": None,
        "data_collections": None,
        "ts_ms": first.ts_ms,
    }
    end = json.loads(ends[0].value or b"")["payload"]
    assert end["status"] == "END" and end["event_count"] == 3
    assert end["data_collections"] == [
        {"data_collection": "bank.transactions", "event_count": 2},
        {"data_collection": "bank.ledger", "event_count": 1},
    ]
    # The commit time: the latest event time when the END was written.
    assert end["ts_ms"] == first.ts_ms == max(p["source"]["ts_ms"] for p in payloads)
    parsed = [txmeta.parse_marker(meta.topic, 0, i, m.value) for i, m in enumerate(ends)]
    assert [(e.xid, e.counts) for e in parsed if e is not None] == [
        ("900", (("bank.bank.ledger", 1), ("bank.bank.transactions", 2))),
        ("901", (("bank.bank.transactions", 2),)),
    ]
    end_lsns = [e.lsn for e in parsed if e is not None]
    assert lsns[2] < end_lsns[0] < end_lsns[1] and lsns[-1] < end_lsns[1]
    assert end["id"] != begin["id"] and end["id"].split(":")[0] == begin["id"].split(":")[0]
    # An ended transaction takes no more events; a forced op must fit the row.
    with pytest.raises(ValueError, match="ended"):
        legs.change(9, transaction=first)
    with pytest.raises(ValueError, match="cannot 'u'"):
        legs.change(77, op="u")


# -- 1. a transaction split across topics, partitions and batches ---------------------------


def _transfers(seed: int) -> tuple[History, list[Txn]]:
    rnd = random.Random(seed)
    history = History(seed=seed)
    history.background(4, rnd)
    transfers = []
    for parts in ((0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1)):
        transfers.append(history.transfer(parts))
        history.background(3, rnd)
    return history, transfers


@pytest.mark.parametrize(("max_records", "seed"), [(1, 0), (2, 1), (5, 3)])
def test_a_transfer_across_topics_partitions_and_batches_is_never_half_visible(
    max_records: int, seed: int
) -> None:
    history, transfers = _transfers(seed)
    log = history.end()
    for txn in transfers:
        assert len({(t, p) for t, p, _o in txn.events}) == 3  # three topic partitions
    writer = new_writer()
    watch = AllOrNone(transfers, writer)
    writer.add_observer(observer(watch))
    source = fold(log, writer, max_records=max_records, seed=seed)
    assert source.batches_out > 10
    # The transfers were cut: events held by one batch, applied by a later one.
    assert any(watch.split(t) for t in transfers)
    assert all(watch.seen[t.xid][-1][1] == 3 for t in transfers)
    assert_final(writer, history, log)
    assert state(writer) == fold_in_one_batch(all_records(log))


# -- 2. a crash while a transaction is held -------------------------------------------------


@pytest.mark.parametrize("held_in", ["memory", "state-file", "spilling"])
@pytest.mark.parametrize("fault", [{"crash_on_checkpoint": 14}, {"crash_on_poll": 23}])
def test_a_crash_while_events_are_held_loses_nothing_and_applies_nothing_twice(
    fault: dict[str, int], held_in: str
) -> None:
    history, transfers = _transfers(seed=4)
    log = history.end()
    group = MemoryGroup(log)
    writer = new_writer(held=held_in)
    watch = AllOrNone(transfers, writer)
    writer.add_observer(observer(watch))
    crashing = MemorySource(group, "m1", max_records=2, seed=4, **fault)
    with pytest.raises(Crash):
        run_loop(crashing, writer)
    events, _ends = held(writer)
    assert events > 0, "no event was held at the crash: the test crashes at the wrong time"
    before = frontier_row(writer)
    assert before is None or before[3] < len(history.ended)

    # Restart: a new process (writer) over the same state file, the member rejoins;
    # it crashes again while reading again what waited in memory, then a third one
    # finishes.
    crashing.close()
    second = new_writer(writer.store, held=held_in)
    watch.writer = second
    second.add_observer(observer(watch))
    again = MemorySource(group, "m1", max_records=3, seed=5, crash_on_poll=3)
    with pytest.raises(Crash):
        run_loop(again, second)
    again.close()
    restarted = new_writer(writer.store, held=held_in)
    watch.writer = restarted
    restarted.add_observer(observer(watch))
    fold(log, restarted, max_records=3, seed=6, group=group)
    # Each transaction counted once by the frontier, every record folded once.
    assert_final(restarted, history, log)
    assert state(restarted) == fold_in_one_batch(all_records(log))


@pytest.mark.parametrize("with_ends", [False, True])
@pytest.mark.parametrize(("max_records", "seed"), [(3, 1), (1000, 0)])
def test_events_of_applied_transactions_sent_again_are_dropped_and_block_nothing(
    with_ends: bool, max_records: int, seed: int
) -> None:
    # Records sent again (a producer re-sending a topic, a connector re-emitting after
    # a restart), with or without their ENDs: applying them again would put old
    # changes over newer ones, and waiting for an END that never comes would hold
    # every later transaction of their partitions.
    history, _transfers_before = _transfers(seed=7)
    sent_again = [
        r for r in all_records(history.log) if with_ends or not txmeta.is_transaction_topic(r.topic)
    ]
    # Fold what is there first, so the transactions are applied before the copies come.
    writer = new_writer()
    first = MemoryLog()
    first.extend(sent_again if with_ends else all_records(history.log))
    first.end()
    fold(first, writer, max_records=max_records, seed=seed)
    for r in sent_again:
        history.log.append(r.topic, r.partition, r.key, r.value)
    rnd = random.Random(seed)
    after = [history.transfer(parts) for parts in ((0, 1, 2), (1, 2, 0))]
    history.background(4, rnd)
    log = history.end()
    fold(log, writer, max_records=max_records, seed=seed, group=MemoryGroup(log))
    with writer.store.reading() as conn:
        for txn in after:
            assert visible(conn, txn.creates) == len(txn.creates), txn.xid
    for topic in (LEGS, LEDGER):
        assert mirror_keys(writer, topic) == set(history.live[topic]), topic
    assert held(writer) == (0, 0)
    last = history.ended[-1].meta
    assert frontier_row(writer) == (str(last.xid), last.end_lsn, last.ts_ms, len(history.ended))
    assert writer.stored_offsets() == end_offsets(log)
    # A new group reads the copies before their transactions are applied (even in
    # the batch that applies them): the same state.
    for max_new in (max_records, 2, 10_000):
        fresh = new_writer()
        fold(log, fresh, max_records=max_new, seed=seed + 1, group=MemoryGroup(log))
        for topic in (LEGS, LEDGER):
            assert mirror_keys(fresh, topic) == set(history.live[topic]), (topic, max_new)
        assert held(fresh) == (0, 0), max_new
        assert frontier_row(fresh) == frontier_row(writer)


def test_a_copy_of_one_event_does_not_stand_in_for_another_of_the_same_topic() -> None:
    # A transfer's two legs are in partitions 0 and 1 of one topic; partition 1 is read
    # with a copy of its leg behind it before partition 0 is read. Counting events per
    # topic, the copy would make the transfer look whole without the leg of partition 0.
    history = History(seed=12)
    transfer = history.transfer((0, 1, 2))
    log = history.log
    for r in all_records(log):
        if (r.topic, r.partition) == (LEGS, 1):
            log.append(r.topic, r.partition, r.key, r.value)
    log = history.end()
    runs = whole([(LEGS, 1), (LEDGER, 2), (TXN_TOPIC, 0)])
    writer = new_writer()
    step = CheckpointedStep(writer, "scripted")
    for key, _count in runs:
        records = log.read(key, 0, log.end_offset(key))
        assert isinstance(step.fold(Polled(records, {key: log.end_offset(key)})), Folded)
    with writer.store.reading() as conn:
        assert visible(conn, transfer.creates) == 0  # the leg in partition 0 is not there
    key = (LEGS, 0)
    step.fold(Polled(log.read(key, 0, log.end_offset(key)), {key: log.end_offset(key)}))
    with writer.store.reading() as conn:
        assert visible(conn, transfer.creates) == len(transfer.creates)
    assert held(writer) == (0, 0)


@pytest.mark.parametrize("max_records", [2, 1000])
def test_a_bound_by_source_lsn_applies_exactly_the_transactions_ended_at_or_before_it(
    max_records: int,
) -> None:
    history, transfers = _transfers(seed=13)
    log = history.end()
    bound = transfers[1].meta.end_lsn
    writer = new_writer()
    step = CheckpointedStep(writer, "replay", until_lsn=bound)
    records = all_records(log)
    for i in range(0, len(records), max_records):
        chunk = records[i : i + max_records]
        ends = {(r.topic, r.partition): log.end_offset((r.topic, r.partition)) for r in chunk}
        assert isinstance(step.fold(Polled(chunk, ends)), Folded)
    applied = [t for t in history.ended if t.meta.end_lsn <= bound]
    with writer.store.reading() as conn:
        for txn in transfers:
            want = len(txn.creates) if txn.meta.end_lsn <= bound else 0
            assert visible(conn, txn.creates) == want, txn.xid
    last = applied[-1].meta
    assert frontier_row(writer) == (str(last.xid), last.end_lsn, last.ts_ms, len(applied))


# -- 3. two interleaved transactions ----------------------------------------------------------


def _interleaved() -> tuple[History, Txn, Txn, int]:
    """A and B alternate in partitions 0 and 1 of LEGS, and both write the ledger row X
    (A creates it, B updates it); A commits first."""
    history = History(seed=9)
    first = history.begin()
    history.write(first, LEGS, history.key_in(LEGS, 0))
    x = history.write(first, LEDGER, history.key_in(LEDGER, 2))
    a_value = history.live[LEDGER][x]
    history.commit(history.begin())  # an empty transaction between (END with no events)
    a, b = first, history.begin()
    history.write(b, LEGS, history.key_in(LEGS, 0))
    history.write(a, LEGS, history.key_in(LEGS, 1))
    history.write(b, LEGS, history.key_in(LEGS, 1))
    history.write(a, LEGS, history.key_in(LEGS, 0))
    history.write(b, LEDGER, x, op="u")
    history.write(b, LEGS, history.key_in(LEGS, 1))
    assert history.live[LEDGER][x] != a_value
    history.commit(a)
    history.commit(b)
    return history, a, b, x


def _ledger_row(conn: duckdb.DuckDBPyConnection, key: int) -> tuple[Any, ...] | None:
    if not present(conn, LEDGER, [key]):
        return None
    ((account, status),) = conn.execute(
        "SELECT account_id, status FROM bank.ledger WHERE txn_id = ?", [key]
    ).fetchall()
    return account, status


def test_interleaved_transactions_apply_in_commit_order() -> None:
    history, a, b, x = _interleaved()
    log = history.end()
    b_value = (history.live[LEDGER][x]["account_id"], history.live[LEDGER][x]["status"])
    a_only = [c for c in a.creates if c[0] == LEGS]
    b_only = [c for c in b.creates if c[0] == LEGS]
    reference = fold_in_one_batch(all_records(log))
    apart = 0
    for max_records, seed in ((1, 0), (1, 1), (2, 1), (3, 2), (4, 3), (100, 0)):
        seen: list[str] = []

        def check(conn: duckdb.DuckDBPyConnection, batch_id: int, seen: list[str] = seen) -> None:
            na, nb = visible(conn, a_only), visible(conn, b_only)
            assert na in (0, len(a_only)) and nb in (0, len(b_only)), (batch_id, na, nb)
            assert not (nb and not na), f"batch {batch_id}: B is visible before A"
            row = _ledger_row(conn, x)
            if nb:
                assert row == b_value, (batch_id, row)
                seen.append("ab")
            elif na:
                assert row is not None and row != b_value, (batch_id, row)
                seen.append("a")
            else:
                assert row is None, (batch_id, row)
                seen.append("")

        writer = new_writer()
        writer.add_observer(observer(check))
        fold(log, writer, max_records=max_records, seed=seed)
        assert seen[-1] == "ab", (max_records, seed)
        apart += "a" in seen
        with writer.store.reading() as conn:
            assert _ledger_row(conn, x) == b_value  # the later transaction's value
        assert_final(writer, history, log)
        assert state(writer) == reference
    # Some cuts applied A by an earlier batch than B (others both in one batch).
    assert 1 <= apart < 6

    # Orders of reading the partitions one after the other (both complete in the same
    # batch then), and a cut where B is complete before A: A's last event (the 3rd
    # of LEGS[0]) comes after B's.
    legs0, legs1, ledger2, txns = (LEGS, 0), (LEGS, 1), (LEDGER, 2), (TXN_TOPIC, 0)
    assert set(log.partitions()) == {legs0, legs1, ledger2, txns}
    parts = log.partitions()
    cuts = [whole(parts[i:] + parts[:i]) for i in range(len(parts))]
    cuts += [whole(parts[::-1])]
    b_first = [(legs1, None), (ledger2, None), (txns, None), (legs0, 1), (legs0, 1), (legs0, None)]
    cuts.append(b_first)
    for cut in cuts:
        seen = []

        def scripted(
            conn: duckdb.DuckDBPyConnection, batch_id: int, seen: list[str] = seen, cut: Any = cut
        ) -> None:
            na, nb = visible(conn, a_only), visible(conn, b_only)
            assert na in (0, len(a_only)) and nb in (0, len(b_only)), (cut, na, nb)
            assert not (nb and not na), f"{cut}: B is visible before A"
            seen.append("ab" if nb else "a" if na else "")

        writer = new_writer()
        writer.add_observer(observer(scripted))
        fold_runs(writer, log, cut)
        assert seen[-1] == "ab", cut
        assert state(writer) == reference
    assert seen == ["", "", "", "", "", "ab"]  # b_first: B waited for A


def test_a_transaction_after_interleaved_ones_is_applied_in_the_same_batch() -> None:
    history, _a, _b, _x = _interleaved()
    c = history.begin()
    history.write(c, LEGS, history.key_in(LEGS, 0))
    history.write(c, LEGS, history.key_in(LEGS, 1))
    history.commit(c)
    log = history.end()
    writer = new_writer()
    fold(log, writer, max_records=1000)
    assert held(writer) == (0, 0), rows(writer, "SELECT xid FROM _changefold.txn_events")
    assert_final(writer, history, log)


# -- 4. a transaction larger than a batch -----------------------------------------------------


@pytest.mark.parametrize("kept", ["memory", "state-file"])
def test_a_transaction_larger_than_a_batch_is_applied_at_once(kept: str) -> None:
    rnd = random.Random(3)
    history = History(seed=3)
    history.background(3, rnd)
    big = history.begin()
    for i in range(50):
        topic = LEGS if i % 5 else LEDGER
        history.write(big, topic, history.key_in(topic, i % PARTITIONS))
    history.commit(big)
    history.protect(big)
    history.background(3, rnd)
    log = history.end()
    assert len(big.events) == 50

    seen: list[tuple[int, int, int, int]] = []

    def check(conn: duckdb.DuckDBPyConnection, batch_id: int) -> None:
        n = visible(conn, big.creates)
        assert n in (0, 50), f"batch {batch_id}: {n} of 50 rows visible"
        # Offsets and held events as the earlier batches committed them.
        seen.append(
            (
                n,
                held_in(writer, conn, big.xid),
                stored_sum(conn, [LEGS, LEDGER]),
                stored_sum(conn, [LEGS, LEDGER], "folded_offset"),
            )
        )

    writer = new_writer(held=kept)
    writer.add_observer(observer(check))
    source = fold(log, writer, max_records=7, seed=2)
    assert source.batches_out >= 60 // 7
    waiting = [(h, s, f) for n, h, s, f in seen if n == 0 and h > 0]
    # Held by several batches while reading went on: the events held and the folded
    # positions grew; the resume positions too when what waits is in the state file,
    # while kept in memory they stay at the first event held (a crash reads it again).
    assert len(waiting) >= 3
    assert [h for h, *_ in waiting] == sorted(h for h, *_ in waiting) and waiting[0][0] < 40
    assert waiting[-1][2] > waiting[0][2]
    if kept == "state-file":
        assert waiting[-1][1] > waiting[0][1]
    else:
        assert waiting[-1][1] == waiting[0][1] < waiting[-1][2]
    # Then visible at once, and from then on.
    first = next(i for i, (n, *_rest) in enumerate(seen) if n == 50)
    assert all(n == 0 for n, *_r in seen[:first]) and all(n == 50 for n, *_r in seen[first:])
    assert_final(writer, history, log)
    assert state(writer) == fold_in_one_batch(all_records(log))


# -- 5. a missing END -------------------------------------------------------------------------


def test_a_transaction_whose_end_is_lost_stays_held() -> None:
    history = History(seed=6)
    early = history.begin()
    history.write(early, LEGS, history.key_in(LEGS, 1))
    history.commit(early)
    lost = history.begin()  # LEGS partition 0 and LEDGER partition 0; its END never comes
    history.write(lost, LEGS, history.key_in(LEGS, 0))
    history.write(lost, LEDGER, history.key_in(LEDGER, 0))
    lost_end = history.commit(lost, lose_end=True)
    other = history.begin()  # partitions 1 and 2 only, committed after `lost`
    history.write(other, LEGS, history.key_in(LEGS, 1))
    history.write(other, LEDGER, history.key_in(LEDGER, 2))
    history.commit(other)
    same = history.begin()  # partition 0 of LEGS, behind the lost events
    history.write(same, LEGS, history.key_in(LEGS, 0))
    history.commit(same)
    after = history.begin()  # other partitions, but committed after `same`
    history.write(after, LEDGER, history.key_in(LEDGER, 1))
    history.commit(after)
    log = history.end()

    for max_records, seed in ((1, 0), (3, 1), (1000, 0)):
        writer = new_writer()
        fold(log, writer, max_records=max_records, seed=seed)
        with writer.store.reading() as conn:
            assert visible(conn, early.creates) == 1
            assert visible(conn, other.creates) == 2  # later, other partitions: applied
            assert visible(conn, lost.creates) == 0  # held and invisible
            # A later transaction in the lost one's partition waits (ready(): nothing
            # passes a waiting event of its partition), and, in commit order, so does
            # every transaction after it, whatever its partitions.
            assert visible(conn, same.creates) == 0
            assert visible(conn, after.creates) == 0
        in_memory = writer.held_index.stuck(before_batch=10**9)
        assert {x for x, _n, _w in in_memory} == {lost.xid, same.xid, after.xid}
        # Held in memory, the resume positions stay at the first event held ...
        resume = writer.stored_offsets()
        assert all(resume[k] <= end for k, end in end_offsets(log).items())
        assert resume != end_offsets(log)
        # ... until a clean stop moves what waits to the state file.
        assert writer.persist_held() == 4
        with writer.store.reading() as conn:
            stuck = transactions.stuck(conn, GROUP, before_batch=10**9)
        held_xids = rows(writer, "SELECT DISTINCT xid FROM _changefold.txn_events ORDER BY 1")
        assert held_xids == [(lost.xid,), (same.xid,), (after.xid,)]
        assert {x for x, _n, _w in stuck} == {lost.xid, same.xid, after.xid}
        assert dict((x, n) for x, n, _w in stuck)[lost.xid] == 2
        assert frontier_row(writer) == (other.xid, other.meta.end_lsn, other.meta.ts_ms, 2)
        assert writer.stored_offsets() == end_offsets(log)  # consumed all the same

    # The END comes late (after the others in the log; its LSN is its commit's): what
    # waited is applied, in commit order, and the frontier is the last one's.
    late = MemoryLog()
    late.extend(all_records(log))
    late.append(TXN_TOPIC, 0, lost_end.key, lost_end.value)
    late.end()
    fold(late, writer, max_records=2, seed=1)
    with writer.store.reading() as conn:
        for txn in (early, lost, other, same, after):
            assert visible(conn, txn.creates) == len(txn.creates), txn.xid
    assert held(writer) == (0, 0)
    assert frontier_row(writer) == (after.xid, after.meta.end_lsn, after.meta.ts_ms, 5)


# -- 6. a snapshot, then streaming ------------------------------------------------------------


def test_snapshot_rows_are_visible_at_once_and_streaming_waits_for_its_transaction() -> None:
    rnd = random.Random(8)
    history = History(seed=8)
    snapshot_keys = {
        topic: [history.snapshot_row(topic) for _ in range(12)] for topic in (LEGS, LEDGER)
    }
    transfers = [history.transfer(parts) for parts in ((0, 1, 2), (1, 2, 0), (2, 0, 1))]
    history.background(5, rnd)
    log = history.end()
    snap_records = [
        r
        for r in all_records(log)
        if r.value is not None and b'"op":"r"' in r.value and b'"transaction":null' in r.value
    ]
    assert len(snap_records) == 24
    writer = new_writer()
    watch = AllOrNone(transfers, writer)
    writer.add_observer(observer(watch))
    late: list[str] = []
    held_streaming: list[int] = []

    def on_outcome(source: Any, outcome: Outcome, commit_ms: float) -> None:
        if not isinstance(outcome, Folded):
            return
        # Every snapshot row consumed so far is in the mirror (never held).
        stored = writer.stored_offsets()
        with writer.store.reading() as conn:
            for r in snap_records:
                if r.offset < stored.get((r.topic, r.partition), 0):
                    key = json.loads(r.key or b"")["payload"]["txn_id"]
                    if not present(conn, r.topic, [key]):
                        late.append(f"{r.topic}[{r.partition}]@{r.offset}")
        held_streaming.append(outcome.result.held)

    fold(log, writer, max_records=2, seed=3, on_outcome=on_outcome)
    assert not late, f"snapshot rows consumed and not visible: {late}"
    assert sum(held_streaming) > 0  # streaming events did wait
    assert any(watch.split(t) for t in transfers)
    for topic, keys in snapshot_keys.items():
        assert set(keys) <= mirror_keys(writer, topic)
    assert_final(writer, history, log)
    assert state(writer) == fold_in_one_batch(all_records(log))


# -- 7. the state is a function of the history ------------------------------------------------


def _rich(seed: int, txn_partitions: int) -> History:
    """Background transactions (creates, updates, deletes of both tables), transfers,
    a 20-event transaction and an empty one."""
    rnd = random.Random(seed)
    history = History(seed=seed, txn_partitions=txn_partitions)
    history.background(10, rnd)
    for parts in ((0, 1, 2), (2, 2, 1)):
        history.transfer(parts)
        history.background(3, rnd)
    big = history.begin()
    for i in range(20):
        topic = (LEGS, LEDGER)[i % 2]
        live = sorted(history.live[topic])
        history.write(big, topic, live[i] if i % 3 == 0 and len(live) > i else None)
    history.commit(big)
    history.commit(history.begin())
    history.background(10, rnd)
    return history


@functools.cache
def _rich_records(seed: int, txn_partitions: int) -> tuple[tuple[RawRecord, ...], Any]:
    history = _rich(seed, txn_partitions)
    last = history.ended[-1].meta
    frontier = (str(last.xid), last.end_lsn, last.ts_ms, len(history.ended))
    return tuple(all_records(history.end())), frontier


@functools.cache
def _reference(seed: int, txn_partitions: int, rules: bool) -> Snapshot:
    records, _frontier = _rich_records(seed, txn_partitions)
    return fold_in_one_batch(records, RULES if rules else None)


@pytest.mark.parametrize(
    ("txn_partitions", "max_records", "seed", "held_in"),
    [
        (1, 2, 0, "memory"),
        (1, 7, 2, "memory"),
        (1, 40, 3, "memory"),
        (2, 2, 4, "memory"),
        (2, 5, 6, "memory"),
        (2, 13, 7, "memory"),
        (1, 3, 8, "state-file"),
        (2, 5, 9, "state-file"),
        (1, 3, 10, "spilling"),
        (2, 5, 11, "spilling"),
    ],
)
def test_the_state_is_a_function_of_the_history(
    txn_partitions: int, max_records: int, seed: int, held_in: str
) -> None:
    records, frontier = _rich_records(11, txn_partitions)
    log = MemoryLog()
    log.extend(records)
    log.end()
    writer = new_writer(held=held_in)
    source = fold(log, writer, max_records=max_records, seed=seed)
    assert source.batches_out >= len(records) // max_records
    got = state(writer)
    assert got == _reference(11, txn_partitions, True)
    assert got["frontier"] == frontier and got["held"] == [] and got["held_ends"] == []
    # Whole transactions change where batches are cut, not what the history comes to.
    assert mirrors(got) == mirrors(_reference(11, txn_partitions, False))
    assert_folded_once(writer, log)
    assert (writer.spilled_events > 0) == (held_in != "memory")


def test_the_reference_history_is_not_trivial() -> None:
    history = _rich(11, 2)
    records = all_records(history.end())
    ops = [json.loads(r.value)["payload"].get("op") for r in records if r.value is not None]
    assert {"c", "u", "d"} <= set(ops)
    assert sum(1 for r in records if r.value is None) >= 3  # tombstones
    ends = [
        txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
        for r in records
        if r.topic == TXN_TOPIC
    ]
    parsed = [e for e in ends if e is not None]
    assert len(parsed) == len(history.ended) >= 30
    assert {e.partition for e in parsed} == {0, 1}
    # ENDs of a two-partition topic read partition by partition are out of commit order.
    by_partition = sorted(parsed, key=lambda e: (e.partition, e.offset))
    assert [e.lsn for e in by_partition] != sorted(e.lsn for e in parsed)
    assert max(len(dict(e.counts)) for e in parsed) == 2
    assert max(sum(n for _t, n in e.counts) for e in parsed) == 20
    assert min(sum(n for _t, n in e.counts) for e in parsed) == 0


@pytest.mark.parametrize("max_records", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("seed", [0, 2])
def test_the_captured_transactions_fold_alike_for_every_cut(max_records: int, seed: int) -> None:
    records = load_fixture("lab_double")
    log = MemoryLog()
    log.extend(records)
    log.end()
    writer = new_writer(rules=LAB_RULES)
    fold(log, writer, max_records=max_records, seed=seed)
    got = state(writer)
    assert without_versions(got) == without_versions(_lab_reference())
    assert got["frontier"] == ("880", 28090584, 1795654303342, 11)
    assert_folded_once(writer, log)


@functools.cache
def _lab_reference() -> Snapshot:
    reference = fold_in_one_batch(load_fixture("lab_double"), LAB_RULES)
    assert mirrors(reference) == mirrors(fold_in_one_batch(load_fixture("lab_double"), None))
    return reference


# -- 8. a truncate in one partition, ordered by the transaction topic -----------------------


@functools.cache
def _truncate_reference() -> Snapshot:
    return fold_in_one_batch(lab_double_one_partition(), LAB_RULES)


@pytest.mark.parametrize("max_records", [1, 2, 3, 5, 7])
def test_a_truncate_is_ordered_against_the_other_partitions_by_commit_order(
    max_records: int,
) -> None:
    # labdbl.lab.everything[1]@9 is a TRUNCATE (transaction 876); ids 6 and 7 are created
    # in partition 0 by later transactions (877, 879). Without transaction order a batch
    # cut that folds partition 0 first lets the truncate empty the mirror
    # (test_ingest_loop.test_truncate_in_one_partition_is_ordered_against_the_others).
    records = lab_double_one_partition()
    log = MemoryLog()
    log.extend(records)
    log.end()
    assert log.partitions().count(("labdbl.transaction", 0)) == 1
    assert ("labdbl.transaction", 1) not in log.partitions()
    reference = _truncate_reference()
    assert reference["frontier"] == ("880", 28090584, 1795654303342, 11)
    for seed in range(2):
        writer = new_writer(rules=LAB_RULES)
        fold(log, writer, max_records=max_records, seed=seed)
        assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == [(6,), (7,)]
        assert without_versions(state(writer)) == without_versions(reference)
        assert_folded_once(writer, log)


def test_a_truncate_is_ordered_for_every_order_of_reading_the_partitions() -> None:
    records = lab_double_one_partition()
    log = MemoryLog()
    log.extend(records)
    log.end()
    reference = _truncate_reference()
    checked = 0
    for order in itertools.permutations(log.partitions()):
        writer = new_writer(rules=LAB_RULES)
        fold_runs(writer, log, whole(order))
        got = rows(writer, "SELECT id FROM labdbl.everything ORDER BY id")
        assert got == [(6,), (7,)], order
        assert without_versions(state(writer)) == without_versions(reference), order
        checked += 1
    assert checked == 24


def test_without_transaction_order_the_truncate_cut_goes_wrong() -> None:
    """The same log and cut without TxnRules: the truncate empties the mirror (so the
    test above can fail)."""
    records = lab_double_one_partition()
    p0 = [r for r in records if (r.topic, r.partition) == ("labdbl.lab.everything", 0)]
    rest = [r for r in records if (r.topic, r.partition) != ("labdbl.lab.everything", 0)]
    for rules, expected in ((None, []), (LAB_RULES, [(6,), (7,)])):
        writer = new_writer(rules=rules)
        step = CheckpointedStep(writer, "m1")
        for batch in (p0, rest):
            assert isinstance(step.fold(Polled(batch, {})), Folded)
        assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == expected


def test_a_snapshot_row_read_after_a_truncate_of_its_table_stays_truncated() -> None:
    records = lab_double_one_partition()
    p0 = [r for r in records if (r.topic, r.partition) == ("labdbl.lab.everything", 0)]
    rest = [r for r in records if (r.topic, r.partition) != ("labdbl.lab.everything", 0)]
    writer = new_writer(rules=LAB_RULES)
    step = CheckpointedStep(writer, "m1")
    # Batch 1: everything but partition 0 of labdbl.lab.everything (its snapshot row id 2,
    # LSN 27992304, and the creates of 6 and 7 after the truncate); batch 2: partition 0.
    for batch in (rest, p0):
        assert isinstance(step.fold(Polled(batch, {})), Folded)
    assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == [(6,), (7,)]


#: Where the lab_double TRUNCATE of labdbl.lab.everything is: partition 1, offset 9.
TRUNCATE_LSN = 28043752


def _truncate_split() -> tuple[list[RawRecord], list[RawRecord]]:
    """(partition 0 of labdbl.lab.everything: snapshot row id 2, then the creates of 6
    and 7 after the truncate; every other record, the truncate among them)."""
    records = lab_double_one_partition()
    key = ("labdbl.lab.everything", 0)
    return (
        [r for r in records if (r.topic, r.partition) == key],
        [r for r in records if (r.topic, r.partition) != key],
    )


@pytest.mark.parametrize("rules", [LAB_RULES, None], ids=["transactions", "as-they-come"])
def test_a_snapshot_row_and_the_truncate_after_it_in_one_batch_or_two_agree(
    rules: TxnRules | None,
) -> None:
    """The snapshot row (LSN 27992304) read with the truncate of its table, or in the
    batch after it, with or without transaction order: the truncated table never
    keeps it, and the state is the one batch's."""
    p0, rest = _truncate_split()
    reference = fold_in_one_batch([*p0, *rest], rules)
    cuts = {
        "snapshot row with the truncate": [[*rest, p0[0]], p0[1:]],
        "snapshot row in the next batch": [rest, p0],
        "snapshot row alone after": [rest, p0[:1], p0[1:]],
    }
    for name, batches in cuts.items():
        writer = new_writer(rules=rules)
        step = CheckpointedStep(writer, "m1")
        stale = 0
        for batch in batches:
            done = step.fold(Polled(batch, {}))
            assert isinstance(done, Folded), name
            stale += done.result.stale
        assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == [(6,), (7,)], name
        assert without_versions(state(writer)) == without_versions(reference), name
        # Within a batch the fold drops it (collapse), across batches the stored truncate.
        assert stale == (0 if name == "snapshot row with the truncate" else 1), name
        assert rows(writer, "SELECT table_schema, table_name, lsn FROM _changefold.truncates") == [
            ("labdbl", "everything", TRUNCATE_LSN)
        ], name


def test_a_truncate_sent_again_empties_nothing_created_after_it() -> None:
    """Every event applied as it comes (no transaction order): the TRUNCATE delivered a
    second time (a connector re-emitting it) is at its table's last truncate, so the rows
    created after it stay."""
    records = lab_double_one_partition()
    (truncate,) = [
        r for r in records if (r.topic, r.partition, r.offset) == ("labdbl.lab.everything", 1, 9)
    ]
    writer = new_writer(rules=None)
    step = CheckpointedStep(writer, "m1")
    assert isinstance(step.fold(Polled(records, {})), Folded)
    again = RawRecord(truncate.topic, 1, 10, truncate.key, truncate.value)
    done = step.fold(Polled([again], {}))
    assert isinstance(done, Folded) and done.result.stale == 1
    assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == [(6,), (7,)]


@pytest.mark.parametrize("clean_stop", [False, True], ids=["crash", "clean-stop"])
def test_the_last_truncate_outlives_a_restart(tmp_path: Any, clean_stop: bool) -> None:
    """The truncate is applied, the engine stops (crashes: what waited in memory is read
    again from the stored resume positions; or stops cleanly) and a new writer over the
    reopened state reads the snapshot row: it still knows the truncate."""
    p0, rest = _truncate_split()
    path = tmp_path / "state.duckdb"
    store = Store(path)
    store.migrate(STATE_SQL)
    writer = new_writer(store, rules=LAB_RULES)
    assert isinstance(CheckpointedStep(writer, "m1").fold(Polled(rest, {})), Folded)
    if clean_stop:
        writer.persist_held()
    resume = writer.stored_offsets()
    store.close()

    store = Store(path)
    store.migrate(STATE_SQL)
    writer = new_writer(store, rules=LAB_RULES)
    again = [r for r in rest if r.offset >= resume.get((r.topic, r.partition), 0)]
    done = CheckpointedStep(writer, "m1").fold(Polled([*again, *p0], {}))
    assert isinstance(done, Folded) and done.result.stale == 1
    assert rows(writer, "SELECT id FROM labdbl.everything ORDER BY id") == [(6,), (7,)]
    assert without_versions(state(writer)) == without_versions(_truncate_reference())
    store.close()


# -- 9. the frontier ------------------------------------------------------------------------


def test_the_frontier_is_the_last_applied_end_and_never_moves_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records, expected = _rich_records(11, 2)
    log = MemoryLog()
    log.extend(records)
    log.end()
    ends = {
        e.xid: e
        for e in (
            txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
            for r in records
            if r.topic == TXN_TOPIC
        )
        if e is not None
    }
    applied: list[tuple[int, list[str], Any]] = []
    real_apply = transactions.apply

    def apply(
        conn: duckdb.DuckDBPyConnection, group_id: str, batch_id: int, done: Any, **kwargs: Any
    ) -> Any:
        frontier = real_apply(conn, group_id, batch_id, done, **kwargs)
        applied.append((batch_id, [e.xid for e in done.ready], frontier))
        return frontier

    monkeypatch.setattr(transactions, "apply", apply)
    writer = new_writer()
    fold(log, writer, max_records=3, seed=5)

    count, previous = 0, None
    out_of_order = 0
    done: list[str] = []
    for _batch, xids, frontier in applied:
        if not xids:
            assert frontier is None
            continue
        count += len(xids)
        done.extend(xids)
        last = max((ends[x] for x in done), key=lambda e: e.lsn)
        assert frontier is not None
        assert (frontier.xid, frontier.lsn, frontier.commit_ts_ms) == (
            last.xid,
            last.lsn,
            last.ts_ms,
        )
        assert frontier.transactions == count
        if previous is not None:
            assert frontier.lsn >= previous.lsn and frontier.commit_ts_ms >= previous.commit_ts_ms
            out_of_order += any(ends[x].lsn < previous.lsn for x in xids)
        previous = frontier
    # ENDs of the two-partition topic were applied out of commit order at least once
    # (the frontier stayed), and each transaction once.
    assert out_of_order >= 1
    assert sorted(done) == sorted(ends) and count == len(ends)
    assert frontier_row(writer) == expected
    ((batch_id, updated),) = rows(
        writer, "SELECT batch_id, updated_at FROM _changefold.frontier WHERE group_id = ?", [GROUP]
    )
    assert updated is not None
    assert batch_id == max(b for b, x, _f in applied if x)
    with writer.store.reading() as conn:
        loaded = transactions.load_frontier(conn, GROUP)
    assert loaded is not None and (loaded.xid, loaded.lsn) == expected[:2]
