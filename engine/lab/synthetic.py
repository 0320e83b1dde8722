# ruff: noqa: UP031  (percent formatting: the cheapest way to build a million envelopes)
"""Synthetic Debezium change events for benchmarks, shaped like the real thing.

`BankTransactions` writes what the bank connector writes for bank.transactions
(Debezium 3.x Postgres connector, JsonConverter with embedded schemas,
REPLICA IDENTITY FULL): the same Connect schema, source block, enums, precise
decimals, zoned timestamps and UUIDs; creates, updates and deletes (each
delete followed by its tombstone) over a fixed key space. Values are built by
string formatting, not json.dumps, so producing a million of them is cheap.

By default every event is outside a source transaction (`"transaction":null`, as
with `provide.transaction.metadata` off). Opt in with `SourceTransactions`: a
change written with `BankTransactions.change(transaction=...)` carries the
transaction block, and the transaction's `begin()` / `end()` are the BEGIN/END
records the connector writes to `<prefix>.transaction`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

KINDS = ("purchase", "withdrawal", "deposit", "transfer_out", "transfer_in")
CHANNELS = ("card_present", "online", "mobile", "atm", "branch", "wire")
STATUSES = ("pending", "settled", "reversed", "declined")
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "AT", "PL", "US")


def _field(
    ctype: str,
    name: str,
    optional: bool = True,
    logical: str | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ctype, "optional": optional}
    if logical:
        out["name"] = logical
        out["version"] = 1
    if params:
        out["parameters"] = params
    out["field"] = name
    return out


def _enum(name: str, values: tuple[str, ...]) -> dict[str, Any]:
    return _field("string", name, False, "io.debezium.data.Enum", {"allowed": ",".join(values)})


def _row_fields() -> list[dict[str, Any]]:
    ts = "io.debezium.time.ZonedTimestamp"
    return [
        _field("int64", "txn_id", False),
        _field("int64", "account_id", False),
        _enum("kind", KINDS),
        _field(
            "bytes",
            "amount",
            False,
            "org.apache.kafka.connect.data.Decimal",
            {"scale": "2", "connect.decimal.precision": "14"},
        ),
        _field("string", "currency", False),
        _field("int64", "merchant_id"),
        _field("int64", "counterparty_account_id"),
        _enum("channel", CHANNELS),
        _field("string", "country", False),
        _field("string", "device_id", True, "io.debezium.data.Uuid"),
        _enum("status", STATUSES),
        _field("string", "created_at", False, ts),
        _field("string", "updated_at", False, ts),
    ]


def _source_fields() -> list[dict[str, Any]]:
    return [
        _field("string", "version", False),
        _field("string", "connector", False),
        _field("string", "name", False),
        _field("int64", "ts_ms", False),
        _field(
            "string",
            "snapshot",
            True,
            "io.debezium.data.Enum",
            {
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,"
                "false,incremental"
            },
        ),
        _field("string", "db", False),
        _field("string", "sequence"),
        _field("int64", "ts_us"),
        _field("int64", "ts_ns"),
        _field("string", "schema", False),
        _field("string", "table", False),
        _field("int64", "txId"),
        _field("int64", "lsn"),
        _field("int64", "xmin"),
        _field("string", "origin"),
        _field("int64", "origin_lsn"),
    ]


def envelope_schema(topic: str) -> dict[str, Any]:
    row = {"type": "struct", "fields": _row_fields(), "optional": True, "name": f"{topic}.Value"}
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "fields": _source_fields(),
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "version": 1,
                "field": "source",
            },
            {
                "type": "struct",
                "fields": [
                    _field("string", "id", False),
                    _field("int64", "total_order", False),
                    _field("int64", "data_collection_order", False),
                ],
                "optional": True,
                "name": "event.block",
                "version": 1,
                "field": "transaction",
            },
            _field("string", "op", False),
            _field("int64", "ts_ms"),
            _field("int64", "ts_us"),
            _field("int64", "ts_ns"),
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    #: None for a tombstone.
    value: bytes | None
    op: str


_TXN_KEY_SCHEMA = {
    "type": "struct",
    "fields": [_field("string", "id", False)],
    "optional": False,
    "name": "io.debezium.connector.common.TransactionMetadataKey",
    "version": 1,
}
_TXN_VALUE_SCHEMA = {
    "type": "struct",
    "fields": [
        _field("string", "status", False),
        _field("string", "id", False),
        _field("int64", "event_count"),
        {
            "type": "array",
            "items": {
                "type": "struct",
                "fields": [
                    _field("string", "data_collection", False),
                    _field("int64", "event_count", False),
                ],
                "optional": True,
                "name": "event.collection",
                "version": 1,
            },
            "optional": True,
            "field": "data_collections",
        },
        _field("int64", "ts_ms", False),
    ],
    "optional": False,
    "name": "io.debezium.connector.common.TransactionMetadataValue",
    "version": 1,
}


class SourceTransactions:
    """Debezium's transaction metadata (`provide.transaction.metadata`) for one
    connector's synthetic events: source transactions with increasing xids, and one
    LSN and one clock shared by every generator that writes into them.

    As the Postgres connector does, an event's transaction id is `<xid>:<its own
    LSN>` (the BEGIN's is the first event's), and the END's is `<xid>:<commit LSN>`,
    later than every event of the transaction and than every END before it. BEGIN
    and END carry the commit time (the latest time when the END was written).
    """

    def __init__(
        self,
        prefix: str,
        *,
        first_xid: int = 1000,
        lsn: int = 30_000_000,
        ts_ms: int = 1_790_000_000_000,
    ) -> None:
        self.prefix = prefix
        self.topic = prefix + ".transaction"
        self._next_xid = first_xid
        #: The last LSN handed out (events and ENDs), and the latest event time.
        self.lsn = lsn
        self.ts_ms = ts_ms

    def begin(self) -> SourceTransaction:
        """Open the next transaction (its events are written with `change`)."""
        xid = self._next_xid
        self._next_xid += 1
        return SourceTransaction(self, xid)


@dataclass(eq=False)
class SourceTransaction:
    """One source transaction: what its events carry and its BEGIN/END records."""

    log: SourceTransactions
    xid: int
    #: LSN of the first event (0: none yet), and of the END once it was written.
    begin_lsn: int = 0
    end_lsn: int = 0
    #: Its latest event time, then its commit time once ended, epoch milliseconds.
    ts_ms: int = 0
    total: int = 0
    #: Events per data collection ("schema.table"), in first-written order.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The BEGIN's id (and the first event's)."""
        return "%d:%d" % (self.xid, self.begin_lsn or self.log.lsn)

    def block(self, data_collection: str, lsn: int, ts_ms: int) -> str:
        """The `transaction` field of the next event (written at `lsn`), as JSON text."""
        if self.end_lsn:
            raise ValueError(f"transaction {self.xid} has ended")
        if not self.begin_lsn:
            self.begin_lsn = lsn
        self.total += 1
        order = self.counts.get(data_collection, 0) + 1
        self.counts[data_collection] = order
        self.ts_ms = max(self.ts_ms, ts_ms)
        return '{"id":"%d:%d","total_order":%d,"data_collection_order":%d}' % (
            self.xid,
            lsn,
            self.total,
            order,
        )

    def begin(self) -> Message:
        """The BEGIN record (for `<prefix>.transaction`)."""
        return self._marker(self.id, "BEGIN", None, None)

    def end(self) -> Message:
        """Commit: the END record (for `<prefix>.transaction`); it takes the next LSN."""
        if not self.end_lsn:
            self.log.lsn += 64
            self.end_lsn = self.log.lsn
            self.ts_ms = max(self.ts_ms, self.log.ts_ms)
        collections = [{"data_collection": c, "event_count": n} for c, n in self.counts.items()]
        return self._marker("%d:%d" % (self.xid, self.end_lsn), "END", self.total, collections)

    def _marker(
        self, txn_id: str, status: str, count: int | None, collections: list[Any] | None
    ) -> Message:
        key = {"schema": _TXN_KEY_SCHEMA, "payload": {"id": txn_id}}
        payload = {
            "status": status,
            "id": txn_id,
            "event_count": count,
            "data_collections": collections,
            "ts_ms": self.ts_ms,
        }
        value = {"schema": _TXN_VALUE_SCHEMA, "payload": payload}
        return Message(_compact(key).encode(), _compact(value).encode(), status)


class BankTransactions:
    """An endless, reproducible stream of bank.transactions change events."""

    def __init__(self, topic: str, *, keys: int = 200_000, seed: int = 1) -> None:
        self.topic = topic
        self.keys = keys
        self.rnd = random.Random(seed)
        prefix, schema, table = topic.rsplit(".", 2)
        self.data_collection = f"{schema}.{table}"
        self._value_head = '{"schema":' + _compact(envelope_schema(topic)) + ',"payload":'
        key_schema = {
            "type": "struct",
            "fields": [_field("int64", "txn_id", False)],
            "optional": False,
            "name": f"{topic}.Key",
        }
        self._key_head = '{"schema":' + _compact(key_schema) + ',"payload":{"txn_id":'
        self._source = (
            '"source":{"version":"3.6.1.Final","connector":"postgresql","name":"%s",'
            '"ts_ms":%%d,"snapshot":"false","db":"changefold","sequence":"[\\"%%d\\",\\"%%d\\"]",'
            '"ts_us":%%d,"ts_ns":%%d,"schema":"%s","table":"%s","txId":%%d,"lsn":%%d,"xmin":null,'
            '"origin":null,"origin_lsn":null}' % (prefix, schema, table)
        )
        self._rows: dict[int, str] = {}
        self._lsn = 30_000_000
        self._clock_ms = 1_790_000_000_000
        self._pool = self._make_pool(4096)

    def _row(self, txn_id: int, status: str | None = None) -> str:
        """A row: one of a pool of realistic rows, stamped with the key (and status)."""
        template = self._pool[self.rnd.randrange(len(self._pool))]
        return template.replace("{TXN}", str(txn_id), 1).replace(
            "{STATUS}", status or self.rnd.choice(STATUSES), 1
        )

    def _make_pool(self, size: int) -> list[str]:
        rnd = self.rnd
        pool = []
        for _ in range(size):
            cents = rnd.randint(-500_000, 500_000) or 1
            amount = base64.b64encode(
                cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)
            ).decode()
            device = f'"{uuid.UUID(int=rnd.getrandbits(128))}"' if rnd.random() < 0.6 else "null"
            merchant = rnd.randint(1, 500) if rnd.random() < 0.7 else None
            created = self._clock_ms - rnd.randint(0, 86_400_000)
            pool.append(
                '{"txn_id":{TXN},"account_id":%d,"kind":"%s","amount":"%s","currency":"EUR",'
                '"merchant_id":%s,"counterparty_account_id":%s,"channel":"%s","country":"%s",'
                '"device_id":%s,"status":"{STATUS}","created_at":"%s","updated_at":"%s"}'
                % (
                    rnd.randint(1, 20_000),
                    rnd.choice(KINDS),
                    amount,
                    "null" if merchant is None else merchant,
                    "null" if merchant is not None else rnd.randint(1, 20_000),
                    rnd.choice(CHANNELS),
                    rnd.choice(COUNTRIES),
                    device,
                    _iso(created),
                    _iso(created + rnd.randint(0, 3_600_000)),
                )
            )
        return pool

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield from self.change()

    def change(
        self,
        txn_id: int | None = None,
        *,
        op: Literal["c", "u", "d"] | None = None,
        transaction: SourceTransaction | None = None,
    ) -> list[Message]:
        """The next change event (and the tombstone after a delete): of the key
        `txn_id` (None: a random one), with the operation `op` (None: a create for a
        new key, else mostly updates), inside `transaction` (None: outside any)."""
        rnd = self.rnd
        rows = self._rows
        if txn_id is None:
            txn_id = rnd.randint(1, self.keys)
        before = rows.get(txn_id)
        if op is not None and (op == "c") != (before is None):
            raise ValueError(f"cannot {op!r} key {txn_id}: it {'is' if before else 'is not'} there")
        if before is None:
            op, after = "c", self._row(txn_id)
            rows[txn_id] = after
        elif op == "u" or (op is None and rnd.random() < 0.85):
            op, after = "u", self._row(txn_id, status=rnd.choice(STATUSES))
            rows[txn_id] = after
        else:
            op, after = "d", None
            del rows[txn_id]
        if transaction is not None:
            self._lsn = max(self._lsn, transaction.log.lsn)
            self._clock_ms = max(self._clock_ms, transaction.log.ts_ms)
        self._lsn += rnd.randint(56, 400)
        self._clock_ms += rnd.randint(0, 3)
        ms = self._clock_ms
        block = "null"
        xid = self._lsn // 100
        if transaction is not None:
            transaction.log.lsn = self._lsn
            transaction.log.ts_ms = ms
            block = transaction.block(self.data_collection, self._lsn, ms)
            xid = transaction.xid
        source = self._source % (
            ms,
            self._lsn - 56,
            self._lsn,
            ms * 1000,
            ms * 1_000_000,
            xid,
            self._lsn,
        )
        payload = (
            '{"before":%s,"after":%s,%s,"transaction":%s,"op":"%s","ts_ms":%d,'
            '"ts_us":%d,"ts_ns":%d}'
            % (
                before or "null",
                after or "null",
                source,
                block,
                op,
                ms + 7,
                (ms + 7) * 1000,
                (ms + 7) * 1_000_000,
            )
        )
        key = (self._key_head + str(txn_id) + "}}").encode()
        out = [Message(key, (self._value_head + payload + "}").encode(), op)]
        if op == "d":
            out.append(Message(key, None, "tombstone"))
        return out


def _iso(ms: int) -> str:
    """Debezium's ZonedTimestamp text, with microseconds."""
    seconds, milli = divmod(ms, 1000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{milli:03d}{ms % 7}00Z"
