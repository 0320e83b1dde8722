"""Many Avro values of one writer schema read at once, each proven read from its own bytes.

fastavro reads one value per call, in Python objects (about 24 us for a bank change
event); polars reads an Avro object container file in Rust, into columns (about 3 us).
So the bodies of a group's messages (one writer schema) are written into one in-memory
container, in one block, each body followed by a sentinel: 12 fixed bytes, a random
nonce of the process and the value's index. The container's schema is a record of the
writer's schema and the sentinel.

A body read with more or fewer bytes than it has puts its sentinel's read out of place,
so that what is read there is not the sentinel written (a read that runs past the end
fails). When every sentinel read is the one written, every value was read from exactly
its own bytes, as fastavro reads the message alone. Otherwise (a malformed message, a
schema the reader does not take), `read` gives None and the caller reads the messages
one by one with fastavro, which names the bad ones: the fast read never decides what a
malformed message becomes.

The container's schema has the writer's named types written out where they are
referenced (polars' reader does not follow references), no field defaults (not used to
read, and polars refuses some) and no logical types (a Decimal is its unscaled bytes, a
Date/Time/Timestamp its number, as fastavro reads them here).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from io import BytesIO
from typing import Any

import polars as pl

from engine.decode.avro_schema import full_name, without_logical

#: Field of the container's record that holds the message's value.
VALUE = "value"
_SENTINEL = "sentinel"
_NONCE = os.urandom(8)
_SYNC = os.urandom(16)


def block_schema(writer: Any) -> str:
    """The container's schema (JSON text) for values of the Avro schema `writer`."""
    value = _inlined(without_logical(writer), {}, "")
    return json.dumps(
        {
            "type": "record",
            "name": "changefold_block",
            "namespace": "changefold.block",
            "fields": [
                {"name": VALUE, "type": value},
                {
                    "name": _SENTINEL,
                    "type": {"type": "fixed", "name": "changefold_sentinel", "size": 12},
                },
            ],
        },
        separators=(",", ":"),
    )


def read(schema_text: str, bodies: list[bytes]) -> pl.Series | None:
    """The values of `bodies` (Avro binary of the schema `block_schema` was made from,
    without the 5-byte framing) as one struct Series named VALUE; None when any could
    not be read on its own bytes (see the module's doc)."""
    n = len(bodies)
    if n == 0:
        return None
    sentinels = [_NONCE + i.to_bytes(4, "big") for i in range(n)]
    parts: list[bytes] = [_header(schema_text), _long(n)]
    data: list[bytes] = []
    for body, sentinel in zip(bodies, sentinels, strict=True):
        data.append(body)
        data.append(sentinel)
    joined = b"".join(data)
    parts += [_long(len(joined)), joined, _SYNC]
    try:
        frame = pl.read_avro(BytesIO(b"".join(parts)))
    except BaseException as exc:  # polars' reader panics on some malformed input
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        return None
    if frame.height != n or frame.columns != [VALUE, _SENTINEL]:
        return None
    read_back = frame.get_column(_SENTINEL).cast(pl.Binary())
    if not bool((read_back == pl.Series(sentinels, dtype=pl.Binary())).all()):
        return None
    return frame.get_column(VALUE)


@lru_cache(maxsize=64)
def _header(schema_text: str) -> bytes:
    meta = {b"avro.schema": schema_text.encode(), b"avro.codec": b"null"}
    out = [b"Obj\x01", _long(len(meta))]
    for key, value in meta.items():
        out += [_long(len(key)), key, _long(len(value)), value]
    out += [_long(0), _SYNC]
    return b"".join(out)


def _long(value: int) -> bytes:
    """Avro's long: zig-zag, then 7 bits a byte, low bits first."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _inlined(schema: Any, named: dict[str, Any], namespace: str) -> Any:
    """`schema` with each reference to a named type replaced by the type's definition."""
    if isinstance(schema, list):
        return [_inlined(s, named, namespace) for s in schema]
    if isinstance(schema, str):
        return named.get(full_name(schema, namespace), named.get(schema, schema))
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind == "record":
        ns = schema.get("namespace", namespace)
        full = full_name(schema["name"], ns)
        out = dict(schema)
        # A field's default is for readers of other versions, not for this read; polars'
        # reader refuses some (a union's first branch's, e.g. Debezium's source.snapshot).
        out["fields"] = [
            {
                **{k: v for k, v in f.items() if k != "default"},
                "type": _inlined(f["type"], named, ns),
            }
            for f in schema.get("fields") or ()
        ]
        named[full] = out
        return out
    if kind in ("enum", "fixed"):
        named[full_name(schema["name"], schema.get("namespace", namespace))] = schema
        return schema
    if kind == "array":
        return {**schema, "items": _inlined(schema["items"], named, namespace)}
    if kind == "map":
        return {**schema, "values": _inlined(schema["values"], named, namespace)}
    if isinstance(kind, (dict, list, str)) and kind not in _PRIMITIVES:
        return {**schema, "type": _inlined(kind, named, namespace)}
    return schema


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
