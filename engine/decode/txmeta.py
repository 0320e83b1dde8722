"""Debezium's transaction metadata: which source transaction an event belongs to.

With `provide.transaction.metadata`, a connector writes a BEGIN and an END record
per source transaction to `<prefix>.transaction`; the END carries the number of
events per table (`data_collections`). Every data event carries a `transaction`
block whose `id` names its transaction. For PostgreSQL the id is
`<xid>:<lsn>`, and the BEGIN/data id and the END id of one transaction share the
xid but not always the LSN (the END's is later), so a transaction is named by
its xid here. Other connectors' ids are used whole.

Pure functions over bytes: no state, no I/O.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.decode.envelope import TRANSACTION_SUFFIX, MalformedEnvelope, split

TXN_FIELD = b'"transaction":'
#: How Debezium's BEGIN records start their payload (read without parsing them).
BEGIN_PAYLOAD = b'"payload":{"status":"BEGIN",'
#: The block as Debezium writes it: {"id":"<id>","total_order":N,...
#: (the PostgreSQL id `<xid>:<lsn>` read as its two numbers, any other id whole).
TXN_BLOCK = re.compile(rb'\{"id":"(?:(\d+):(\d+)|([^"]*))","total_order":(\d+)')
#: An END's payload as Debezium's JsonConverter writes it, at the record's end.
_END = re.compile(
    rb'"payload":\{"status":"END","id":"(?:(\d+):(\d+)|([^"\\]*))","event_count":\d+,'
    rb'"data_collections":\[((?:\{"data_collection":"[^"\\]*","event_count":\d+\},?)*)\],'
    rb'"ts_ms":(\d+)\}\}\s*$'
)
_COLLECTION = re.compile(rb'\{"data_collection":"([^"\\]*)","event_count":(\d+)\}')


@dataclass(frozen=True, slots=True)
class TxnEnd:
    """The END of a source transaction: how many events it wrote to each topic."""

    xid: str
    #: Position of the END in the source's log (the LSN of its id; 0 when it has none).
    lsn: int
    #: Commit time in the source, epoch milliseconds.
    ts_ms: int
    #: (topic, events) per table the transaction changed.
    counts: tuple[tuple[str, int], ...]
    topic: str
    partition: int
    offset: int

    def needed(self, followed: frozenset[str] | None) -> dict[str, int]:
        """Events to wait for per topic: of the followed topics only (None: all)."""
        return {t: n for t, n in self.counts if followed is None or t in followed}


def transaction_topic(prefix: str) -> str:
    return prefix + TRANSACTION_SUFFIX


def is_transaction_topic(topic: str) -> bool:
    parts = topic.split(".")
    return len(parts) == 2 and topic.endswith(TRANSACTION_SUFFIX)


@functools.cache
def prefix_of(topic: str) -> str:
    """The connector's topic prefix of a data or transaction topic."""
    if is_transaction_topic(topic):
        return topic[: -len(TRANSACTION_SUFFIX)]
    return topic.rsplit(".", 2)[0]


def xid_of_id(txn_id: str) -> str:
    """`877:28044168` -> `877`; an id of another shape is kept whole."""
    head, sep, tail = txn_id.partition(":")
    return head if sep and head.isdigit() and tail.isdigit() else txn_id


def _lsn_of_id(txn_id: str) -> int:
    _head, sep, tail = txn_id.partition(":")
    return int(tail) if sep and tail.isdigit() else 0


def event_xid(value: bytes) -> str | None:
    """The xid of a data event's transaction; None for an event outside one (snapshot
    rows, history from before the metadata was on)."""
    found = event_txn(value)
    return None if found is None else found[0]


def event_txn(value: bytes) -> tuple[str, int | None, int] | None:
    """(xid, total_order, LSN) of a data event's transaction: total_order is the event's
    place in its transaction (1, 2, ...; None when the block has none), so an event
    delivered twice has the same pair; the LSN is the one its transaction id names (0:
    none). None for an event outside a transaction.

    The envelope's `transaction` field follows `before`, `after` and `source`, and
    only `op` and the timestamps come after it, so its last occurrence is the
    envelope's own (a column value holding the same text comes earlier). Anything
    unexpected falls back to parsing the JSON. An Avro event: see avro_event_txn.
    """
    if value[:1] == b"\x00":
        return avro_event_txn(value)
    at = value.rfind(TXN_FIELD)
    if at < 0:
        return None
    at += len(TXN_FIELD)
    if value.startswith(b"null", at):
        return None
    found = TXN_BLOCK.match(value, at, at + 160)
    if found is not None:
        xid, lsn, other, order = found.groups()
        if xid is not None:
            return xid.decode(), int(order), int(lsn)
        txn_id = other.decode()
        return xid_of_id(txn_id), int(order), _lsn_of_id(txn_id)
    return _parsed_txn(value)


def _parsed_txn(value: bytes) -> tuple[str, int | None, int] | None:
    try:
        _schema, payload = split(value)
        data = json.loads(payload)
    except (MalformedEnvelope, ValueError):
        return None
    txn = data.get("transaction") if isinstance(data, dict) else None
    return _block_txn(txn)


def parse_marker(topic: str, partition: int, offset: int, value: bytes | None) -> TxnEnd | None:
    """An END record of a transaction topic as a TxnEnd; None for BEGIN (nothing to do:
    BEGIN and END of one transaction may sit in different partitions, and the END
    alone says what the transaction holds). Raises ValueError for a record that is
    not transaction metadata. An Avro record: see avro_marker."""
    if value is not None and value[:1] == b"\x00":
        return avro_marker(topic, partition, offset, value)
    if value is None or is_json_begin(value):
        return None
    return json_end(topic, partition, offset, value)


def is_json_begin(value: bytes) -> bool:
    """Whether a JSON transaction record is a BEGIN (its payload near its end)."""
    return value.rfind(BEGIN_PAYLOAD, max(len(value) - 512, 0)) >= 0


def json_end(topic: str, partition: int, offset: int, value: bytes) -> TxnEnd | None:
    """parse_marker of a JSON transaction record that is not a BEGIN (is_json_begin)."""
    at = value.rfind(b'"payload":{"status":"END",')
    found = _END.match(value, at) if at >= 0 else None
    if found is not None:
        # The usual shape, read without parsing the JSON; anything else is parsed.
        xid_b, lsn_b, other, collections, ts_ms = found.groups()
        if xid_b is not None:
            xid, lsn = xid_b.decode(), int(lsn_b)
        else:
            xid, lsn = xid_of_id(other.decode()), _lsn_of_id(other.decode())
        return TxnEnd(
            xid,
            lsn,
            int(ts_ms),
            _counts_of(prefix_of(topic), collections),
            topic,
            partition,
            offset,
        )
    _schema, payload = split(value)
    data: Any = json.loads(payload)
    if not isinstance(data, dict) or "status" not in data or "id" not in data:
        raise ValueError("not a transaction BEGIN/END record (no status or id)")
    if data["status"] == "BEGIN":
        return None
    if data["status"] != "END":
        raise ValueError(f"unknown transaction status {data['status']!r}")
    counts = _collection_counts(prefix_of(topic), data.get("data_collections") or ())
    return TxnEnd(
        xid=xid_of_id(str(data["id"])),
        lsn=_lsn_of_id(str(data["id"])),
        ts_ms=int(data.get("ts_ms") or 0),
        counts=counts,
        topic=topic,
        partition=partition,
        offset=offset,
    )


@functools.lru_cache(maxsize=4096)
def _counts_of(prefix: str, collections: bytes) -> tuple[tuple[str, int], ...]:
    """The (topic, event count) pairs, sorted, of an END's `data_collections` as written
    (transactions of one shape repeat it: read once)."""
    counted = _COLLECTION.findall(collections)
    counts = tuple((f"{prefix}.{c.decode()}", int(n)) for c, n in counted)
    return tuple(sorted(counts)) if len(counts) > 1 else counts


def _collection_counts(prefix: str, collections: Any) -> tuple[tuple[str, int], ...]:
    """An END's `data_collections` as sorted (topic, event count) pairs; ValueError for
    anything but a list of {"data_collection": name, "event_count": n} objects."""
    if not isinstance(collections, list):
        raise ValueError(f"data_collections is not a list: {type(collections).__name__}")
    counts = []
    for entry in collections:
        if not isinstance(entry, dict) or "data_collection" not in entry:
            raise ValueError(f"a data_collections entry without data_collection: {entry!r}")
        try:
            counts.append((f"{prefix}.{entry['data_collection']}", int(entry["event_count"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a data_collections entry without an event count: {entry!r}") from exc
    return tuple(sorted(counts))


# -- Avro (format=avro): the same records, Confluent-framed ----------------------------


def avro_event_txn(value: bytes) -> tuple[str, int | None, int] | None:
    """event_txn of an Avro data event: its `transaction` block read with the
    registry's schema (engine.decode.avro)."""
    from engine.decode.avro import txn_block

    txn = txn_block(value)
    return _block_txn(txn)


def avro_event_txns(values: Sequence[bytes]) -> list[tuple[str, int | None, int] | None]:
    """avro_event_txn of many Avro data events, read a schema id at a time."""
    from engine.decode.avro import txn_blocks

    return [_block_txn(txn) for txn in txn_blocks(values)]


def avro_marker(topic: str, partition: int, offset: int, value: bytes) -> TxnEnd | None:
    """parse_marker of an Avro BEGIN/END record."""
    from engine.decode.avro import MalformedEnvelope, marker_fields

    try:
        data = marker_fields(value)
    except MalformedEnvelope as exc:
        raise ValueError(str(exc)) from None
    if "status" not in data or "id" not in data:
        raise ValueError("not a transaction BEGIN/END record (no status or id)")
    if data["status"] == "BEGIN":
        return None
    if data["status"] != "END":
        raise ValueError(f"unknown transaction status {data['status']!r}")
    return TxnEnd(
        xid=xid_of_id(str(data["id"])),
        lsn=_lsn_of_id(str(data["id"])),
        ts_ms=int(data.get("ts_ms") or 0),
        counts=_collection_counts(prefix_of(topic), data.get("data_collections") or ()),
        topic=topic,
        partition=partition,
        offset=offset,
    )


def _block_txn(txn: Any) -> tuple[str, int | None, int] | None:
    """(xid, place, LSN) of an event's `transaction` block (JSON or Avro), or None."""
    if isinstance(txn, dict) and isinstance(txn.get("id"), str):
        order = txn.get("total_order")
        return (
            xid_of_id(txn["id"]),
            order if isinstance(order, int) else None,
            _lsn_of_id(txn["id"]),
        )
    return None
