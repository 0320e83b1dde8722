# ruff: noqa: UP031  (percent formatting: the cheapest way to build a million envelopes)
"""Synthetic Debezium change events for benchmarks, shaped like the real thing.

`BankTransactions` writes what the bank connector writes for bank.transactions
(Debezium 3.x Postgres connector, JsonConverter with embedded schemas,
REPLICA IDENTITY FULL): the same Connect schema, source block, enums, precise
decimals, zoned timestamps and UUIDs; creates, updates and deletes (each
delete followed by its tombstone) over a fixed key space. Values are built by
string formatting, not json.dumps, so producing a million of them is cheap.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


class BankTransactions:
    """An endless, reproducible stream of bank.transactions change events."""

    def __init__(self, topic: str, *, keys: int = 200_000, seed: int = 1) -> None:
        self.topic = topic
        self.keys = keys
        self.rnd = random.Random(seed)
        prefix, schema, table = topic.rsplit(".", 2)
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
        rnd = self.rnd
        rows = self._rows
        while True:
            txn_id = rnd.randint(1, self.keys)
            before = rows.get(txn_id)
            if before is None:
                op, after = "c", self._row(txn_id)
                rows[txn_id] = after
            elif rnd.random() < 0.85:
                op, after = "u", self._row(txn_id, status=rnd.choice(STATUSES))
                rows[txn_id] = after
            else:
                op, after = "d", None
                del rows[txn_id]
            self._lsn += rnd.randint(56, 400)
            self._clock_ms += rnd.randint(0, 3)
            ms = self._clock_ms
            source = self._source % (
                ms,
                self._lsn - 56,
                self._lsn,
                ms * 1000,
                ms * 1_000_000,
                self._lsn // 100,
                self._lsn,
            )
            payload = (
                '{"before":%s,"after":%s,%s,"transaction":null,"op":"%s","ts_ms":%d,'
                '"ts_us":%d,"ts_ns":%d}'
                % (
                    before or "null",
                    after or "null",
                    source,
                    op,
                    ms + 7,
                    (ms + 7) * 1000,
                    (ms + 7) * 1_000_000,
                )
            )
            key = (self._key_head + str(txn_id) + "}}").encode()
            yield Message(key, (self._value_head + payload + "}").encode(), op)
            if op == "d":
                yield Message(key, None, "tombstone")


def _iso(ms: int) -> str:
    """Debezium's ZonedTimestamp text, with microseconds."""
    seconds, milli = divmod(ms, 1000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{milli:03d}{ms % 7}00Z"
