"""Confluent-framed Avro messages (format=avro): the registry, writer schemas, reads.

A message is `0x00 | 4-byte big-endian schema id | Avro binary`; the writer's schema
is the registry's, fetched from its Confluent-compatible API once per id
(`SchemaRegistry`). Connect's Avro converter keeps every Connect schema detail in
the Avro schema (`connect.name`, `connect.parameters`, `connect.type`, ...), so
the Connect schema can be rebuilt exactly as the JsonConverter embeds it.

The decoder reads a group of Avro messages (one Connect schema) directly: the values
all at once (engine.decode.avro_block; one by one with `Schema.value` when that cannot
be), and builds from them the payload columns the JSON path's bulk parse gives
(engine.decode.avro_columns). Everything after that (the schema cache, the logical
types and their DuckDB types, the TOAST placeholder, the checks) is the JSON path's
own, so both formats give the same columns, types and values.

`AvroSplitter.split` turns a message into the two parts that
`engine.decode.envelope.Splitter` cuts from a JSON message (the Connect schema as JSON
bytes, one bytes object per schema id, and the payload as JSON bytes): the former path,
kept as the reference of tests and benchmarks (`Decoder(avro_direct=False)`). To turn
the Avro values into the JSON payload's, the schema is read with its `logicalType`s
removed: a Decimal is then its unscaled big-endian bytes and a Date/Time/Timestamp its
number, as in Connect JSON; bytes become base64 text.

Transaction metadata: `txn_block` and `marker_fields` give what engine.decode.txmeta
reads from the JSON records.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import fastavro
import httpx
import polars as pl

from engine.core.errors import ChangefoldError
from engine.decode.avro_schema import full_name, without_logical
from engine.decode.envelope import MalformedEnvelope

log = logging.getLogger(__name__)

#: The first byte of a Confluent-framed message (a JSON message starts with "{").
MAGIC = 0
MAGIC_BYTE = b"\x00"
#: Path of the registry's Confluent-compatible API.
CCOMPAT = "/apis/ccompat/v7"

_INT_TYPES = {"int8", "int16"}
_PRIMITIVE = {
    "int": "int32",
    "long": "int64",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}


class RegistryUnavailable(ChangefoldError):
    """The schema registry did not answer: the batch cannot be decoded now (its
    position does not move; the engine stops and is run again)."""

    exit_code = 4

    def __init__(self, problem: str, *, fix: str = "") -> None:
        super().__init__(problem + (f". Fix: {fix}" if fix else ""))


def is_avro(data: bytes | None) -> bool:
    return data is not None and data[:1] == MAGIC_BYTE


def schema_id(data: bytes) -> int:
    if len(data) < 5 or data[0] != MAGIC:
        raise MalformedEnvelope("the message is not Confluent-framed Avro (byte 0, 4-byte id)")
    return int.from_bytes(data[1:5], "big")


# -- the registry --------------------------------------------------------------------


class UnknownSchema(MalformedEnvelope):
    """The registry has no schema of the message's id (a dead letter, not a crash)."""


class SchemaRegistry:
    """Avro schemas by id, each fetched once from a registry's Confluent-compatible API
    (or given: `SchemaRegistry.of({id: schema})`, for tests and captured fixtures)."""

    def __init__(self, base_url: str | None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._raw: dict[int, str] = {}
        self._schemas: dict[int, Schema | UnknownSchema] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, schemas: Mapping[int, str | Mapping[str, Any]]) -> SchemaRegistry:
        reg = cls(None)
        reg._raw = {int(k): v if isinstance(v, str) else json.dumps(v) for k, v in schemas.items()}
        return reg

    def schema(self, sid: int) -> Schema:
        found = self._schemas.get(sid)
        if found is None:
            with self._lock:
                found = self._schemas.get(sid)
                if found is None:
                    try:
                        found = Schema(sid, json.loads(self._fetch(sid)))
                    except UnknownSchema as exc:
                        found = exc
                    except (ValueError, fastavro.schema.SchemaParseException) as exc:
                        found = UnknownSchema(f"schema id {sid} is not a valid Avro schema: {exc}")
                    self._schemas[sid] = found
        if isinstance(found, UnknownSchema):
            raise found
        return found

    def _fetch(self, sid: int) -> str:
        if sid in self._raw:
            return self._raw[sid]
        if self.base_url is None:
            raise UnknownSchema(
                f"schema id {sid} is not known (the registry holds only the schemas given)"
            )
        url = f"{self.base_url}{CCOMPAT}/schemas/ids/{sid}"
        try:
            resp = httpx.get(url, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self.base_url} did not answer ({exc!r}) for schema "
                f"id {sid}",
                fix="start it (`changefold stack up` with CHANGEFOLD_FORMAT=avro) or point "
                "CHANGEFOLD_REGISTRY_HOST / CHANGEFOLD_REGISTRY_PORT at it",
            ) from exc
        if resp.status_code == 404:
            raise UnknownSchema(f"the schema registry has no schema with id {sid}")
        if resp.status_code != 200:
            raise RegistryUnavailable(
                f"the schema registry at {self.base_url} answered HTTP {resp.status_code} for "
                f"schema id {sid}: {resp.text[:300]}"
            )
        text = resp.json()["schema"]
        log.info("schema id %d read from the registry", sid)
        return str(text)


_default: SchemaRegistry | None = None
_default_lock = threading.Lock()


_configured = False


def use_registry(registry: SchemaRegistry | str | None) -> None:
    """Set the process's registry (a URL or a SchemaRegistry; None: none, so messages
    are read as JSON whatever their first byte, as with format=json)."""
    global _default, _configured
    with _default_lock:
        _default = SchemaRegistry(registry) if isinstance(registry, str) else registry
        _configured = True


@contextmanager
def registry_in_use(registry: SchemaRegistry | str | None) -> Iterator[None]:
    """Within the block the process's registry is `registry` (see `use_registry`);
    after it, whatever it was before (set, or still to be read from the settings)."""
    global _default, _configured
    with _default_lock:
        saved = (_default, _configured)
    use_registry(registry)
    try:
        yield
    finally:
        with _default_lock:
            _default, _configured = saved


def default_registry() -> SchemaRegistry | None:
    """The registry set by `use_registry`, else the settings' (CHANGEFOLD_REGISTRY_*)
    with format=avro; None with format=json."""
    global _default, _configured
    if not _configured:
        with _default_lock:
            if not _configured:
                from engine.core.config import Settings

                stack = Settings.from_env().stack
                _default = SchemaRegistry(stack.registry_url) if stack.avro else None
                _configured = True
    return _default


# -- one schema ----------------------------------------------------------------------


class Schema:
    """One writer schema: parsed for fastavro (logical types removed) and as the
    Connect schema the JsonConverter would embed (JSON bytes)."""

    def __init__(self, sid: int, avro: Any) -> None:
        self.id = sid
        self.avro = avro
        self.parsed = fastavro.parse_schema(without_logical(avro))
        named: dict[str, Any] = {}
        connect = _connect_schema(avro, named, namespace="")
        self.connect_json: bytes = json.dumps(connect, separators=(",", ":")).encode()

    @cached_property
    def block_schema(self) -> str:
        """The schema that many values of this one are read with at once
        (engine.decode.avro_block)."""
        from engine.decode.avro_block import block_schema

        return block_schema(self.avro)

    def value(self, data: bytes) -> Any:
        """The message's Avro value as fastavro reads it (logical types off: a Decimal
        is its unscaled bytes, a Date/Time/Timestamp its number; bytes are bytes)."""
        try:
            return fastavro.schemaless_reader(io.BytesIO(data[5:]), self.parsed, None)
        except (EOFError, ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise MalformedEnvelope(
                f"the Avro value cannot be read with schema id {self.id}: {exc!r}"
            ) from None

    def read(self, data: bytes) -> Any:
        """The message's Avro value as Connect JSON would carry it (bytes as base64)."""
        return _jsonable(self.value(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _connect_schema(avro: Any, named: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The Connect schema (JsonConverter's JSON form, keys in its order) of an Avro type."""
    optional = False
    default: Any = _NONE
    if isinstance(avro, list):  # a union: [null, T] or [T, null] is an optional T
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1 or len(avro) != 2:
            raise MalformedEnvelope(f"an Avro union other than [null, T]: {avro!r}")
        optional = True
        avro = branches[0]
    if isinstance(avro, str):
        if avro in _PRIMITIVE:
            avro = {"type": avro}
        else:
            ref = named.get(avro) or named.get(full_name(avro, namespace))
            if ref is None:
                raise MalformedEnvelope(f"the Avro schema names an unknown type {avro!r}")
            return _ordered({**ref, "optional": optional})
    if not isinstance(avro, dict):
        raise MalformedEnvelope(f"not an Avro schema: {avro!r}")
    kind = avro.get("type")
    out: dict[str, Any] = {}
    if isinstance(kind, (dict, list)):
        inner = _connect_schema(kind, named, namespace)
        inner["optional"] = optional or inner.get("optional", False)
        return inner
    if kind == "record":
        ns = avro.get("namespace", namespace)
        fields = []
        for f in avro.get("fields") or ():
            spec = _connect_schema(f["type"], named, ns)
            if "connect.default" not in _props(f["type"]) and f.get("default", None) is not None:
                spec.setdefault("default", f["default"])
            spec["field"] = f["name"]
            fields.append(_ordered(spec))
        out = {"type": "struct", "fields": fields}
    elif kind == "array":
        out = {"type": "array", "items": _ordered(_connect_schema(avro["items"], named, namespace))}
    elif kind == "map":
        out = {
            "type": "map",
            "keys": {"type": "string", "optional": False},
            "values": _ordered(_connect_schema(avro["values"], named, namespace)),
        }
    elif kind == "int" and avro.get("connect.type") in _INT_TYPES:
        out = {"type": avro["connect.type"]}
    elif kind == "enum":
        out = {"type": "string"}
    elif kind == "fixed":
        out = {"type": "bytes"}
    elif kind in _PRIMITIVE:
        out = {"type": _PRIMITIVE[kind]}
    else:
        raise MalformedEnvelope(f"an Avro type the decoder does not know: {kind!r}")
    out["optional"] = optional
    if "connect.name" in avro:
        out["name"] = avro["connect.name"]
    if "connect.version" in avro:
        out["version"] = avro["connect.version"]
    if "connect.doc" in avro:
        out["doc"] = avro["connect.doc"]
    if "connect.parameters" in avro:
        out["parameters"] = avro["connect.parameters"]
    if "connect.default" in avro:
        default = avro["connect.default"]
    if default is not _NONE:
        out["default"] = default
    if kind == "record":
        named[full_name(avro["name"], avro.get("namespace", namespace))] = {
            k: v for k, v in out.items() if k not in ("optional", "default")
        }
    return _ordered(out)


_NONE = object()
#: The JsonConverter's key order of a schema object.
_ORDER = ("type", "fields", "items", "keys", "values", "optional", "name", "version", "doc",
          "parameters", "default", "field")  # fmt: skip


def _ordered(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in _ORDER if k in spec} | {
        k: v for k, v in spec.items() if k not in _ORDER
    }


def _props(avro: Any) -> dict[str, Any]:
    if isinstance(avro, list):
        for branch in avro:
            if isinstance(branch, dict):
                return branch
        return {}
    return avro if isinstance(avro, dict) else {}


# -- messages ------------------------------------------------------------------------


class AvroSplitter:
    """`Splitter.split` for Avro messages: (the Connect schema as JSON bytes, the
    payload as JSON bytes), so that the JSON path decodes them."""

    def __init__(
        self, registry: SchemaRegistry | Callable[[], SchemaRegistry] | None = None
    ) -> None:
        self._registry = registry

    @property
    def registry(self) -> SchemaRegistry | None:
        """Where schemas are read; None: no Avro (format=json)."""
        reg = self._registry
        if reg is None:
            return default_registry()
        if callable(reg) and not isinstance(reg, SchemaRegistry):
            return reg()
        return reg

    def split(self, data: bytes) -> tuple[bytes | None, bytes]:
        schema = _registry(self.registry).schema(schema_id(data))
        payload = json.dumps(schema.read(data), separators=(",", ":"), ensure_ascii=False)
        return schema.connect_json, payload.encode()

    def schema(self, data: bytes) -> Schema:
        """The writer schema of a message (UnknownSchema: a dead letter)."""
        return _registry(self.registry).schema(schema_id(data))

    def read(self, data: bytes) -> tuple[Schema, Any]:
        """(the message's writer schema, its value as fastavro reads it), for the
        decoder's direct path (engine.decode.avro_columns builds the columns from it)."""
        schema = self.schema(data)
        return schema, schema.value(data)


def read(data: bytes, registry: SchemaRegistry | None = None) -> Any:
    """One Avro message's value as Connect JSON would carry it (bytes as base64)."""
    return _registry(registry or default_registry()).schema(schema_id(data)).read(data)


def _registry(registry: SchemaRegistry | None) -> SchemaRegistry:
    if registry is None:
        raise UnknownSchema(
            "the message looks like Confluent-framed Avro but no schema registry is "
            "configured (CHANGEFOLD_FORMAT=avro sets one)"
        )
    return registry


def txn_block(data: bytes, registry: SchemaRegistry | None = None) -> Any:
    """The `transaction` block of an Avro data event (None when it has none), for
    engine.decode.txmeta.event_txn; None also for a message that cannot be read (as
    the JSON path's parse fallback does)."""
    try:
        schema = _registry(registry or default_registry()).schema(schema_id(data))
        value = schema.value(data)
    except MalformedEnvelope:
        return None
    # Only the block is put in Connect JSON's form (the row images are not looked at).
    return _jsonable(value.get("transaction")) if isinstance(value, dict) else None


def txn_blocks(values: Sequence[bytes], registry: SchemaRegistry | None = None) -> list[Any]:
    """`txn_block` of many Avro data events: each schema id's events read at once
    (engine.decode.avro_block), one by one where that cannot be."""
    from engine.decode.avro_block import read as read_block

    reg = registry or default_registry()
    out: list[Any] = [None] * len(values)
    by_id: dict[int, list[int]] = {}
    for j, data in enumerate(values):
        if len(data) >= 5 and data[0] == MAGIC:
            by_id.setdefault(int.from_bytes(data[1:5], "big"), []).append(j)
    for sid, index in by_id.items():
        try:
            schema = _registry(reg).schema(sid)
        except MalformedEnvelope:
            continue  # no schema: no block, as txn_block says
        envelopes = read_block(schema.block_schema, [values[j][5:] for j in index])
        if envelopes is None:
            for j in index:
                out[j] = txn_block(values[j], reg)
            continue
        dtype = envelopes.dtype
        if isinstance(dtype, pl.Struct) and "transaction" in {f.name for f in dtype.fields}:
            blocks = envelopes.struct.field("transaction").to_list()
            for j, block in zip(index, blocks, strict=True):
                out[j] = block
    return out


def marker_fields(data: bytes, registry: SchemaRegistry | None = None) -> dict[str, Any]:
    """The fields of an Avro transaction BEGIN/END record (status, id, event_count,
    data_collections, ts_ms), for engine.decode.txmeta. Raises ValueError for a record
    that cannot be read."""
    value = read(data, registry)
    if not isinstance(value, dict):
        raise ValueError("not a transaction BEGIN/END record (not a record)")
    return value
