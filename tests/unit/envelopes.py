"""Hand-built Debezium envelopes in the documented JsonConverter format.

Used where a captured fixture cannot show the case (schema changes mid-batch,
garbage bytes, huge decimals). Captured real envelopes are in tests/fixtures/.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from engine.decode.records import RawRecord


def field(
    ctype: str,
    name: str,
    *,
    optional: bool = True,
    logical: str | None = None,
    params: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ctype, "optional": optional, "field": name}
    if logical:
        out["name"] = logical
        out["version"] = 1
    if params:
        out["parameters"] = dict(params)
    out.update(extra)
    return out


def decimal_b64(unscaled: int) -> str:
    size = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


SOURCE_FIELDS = [
    field("string", "version", optional=False),
    field("string", "connector", optional=False),
    field("string", "name", optional=False),
    field("int64", "ts_ms", optional=False),
    field("string", "db", optional=False),
    field("string", "schema", optional=False),
    field("string", "table", optional=False),
    field("int64", "txId"),
    field("int64", "lsn"),
]


def value_schema(topic: str, row_fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row = {"type": "struct", "fields": list(row_fields), "optional": True, "name": f"{topic}.Value"}
    return {
        "type": "struct",
        "name": f"{topic}.Envelope",
        "optional": False,
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "fields": SOURCE_FIELDS,
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
            },
            field("string", "op", optional=False),
            field("int64", "ts_ms"),
        ],
    }


def key_schema(topic: str, key_fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "struct", "fields": list(key_fields), "optional": False, "name": f"{topic}.Key"}


class Table:
    """Builds the messages Debezium would write for one table's topic."""

    def __init__(
        self,
        topic: str,
        key_fields: Sequence[Mapping[str, Any]],
        row_fields: Sequence[Mapping[str, Any]],
        *,
        schemas: bool = True,
    ) -> None:
        self.topic = topic
        self.key_fields = list(key_fields)
        self.row_fields = list(row_fields)
        self.schemas = schemas
        self.offsets: dict[int, int] = {}
        self.lsn = 1000

    def _wrap(self, schema: dict[str, Any], payload: Any) -> bytes:
        body = {"schema": schema, "payload": payload} if self.schemas else payload
        return json.dumps(body, separators=(",", ":")).encode()

    def key(self, key: Mapping[str, Any]) -> bytes:
        return self._wrap(key_schema(self.topic, self.key_fields), dict(key))

    def event(
        self,
        op: str,
        key: Mapping[str, Any] | None,
        *,
        after: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        partition: int = 0,
        ts_ms: int = 1_700_000_000_000,
        lsn: int | None = None,
    ) -> RawRecord:
        self.lsn += 8
        _schema, _db, table = self.topic.split(".")[-3:]
        payload = {
            "before": dict(before) if before is not None else None,
            "after": dict(after) if after is not None else None,
            "source": {
                "version": "2.7",
                "connector": "postgresql",
                "name": _schema,
                "ts_ms": ts_ms,
                "db": "changefold",
                "schema": _db,
                "table": table,
                "txId": 1,
                "lsn": self.lsn if lsn is None else lsn,
            },
            "op": op,
            "ts_ms": ts_ms + 5,
        }
        value = self._wrap(value_schema(self.topic, self.row_fields), payload)
        return self.raw(key, value, partition)

    def tombstone(self, key: Mapping[str, Any], partition: int = 0) -> RawRecord:
        return self.raw(key, None, partition)

    def raw(
        self, key: Mapping[str, Any] | bytes | None, value: bytes | None, partition: int = 0
    ) -> RawRecord:
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        key_bytes = key if isinstance(key, bytes) or key is None else self.key(key)
        return RawRecord(self.topic, partition, offset, key_bytes, value)
