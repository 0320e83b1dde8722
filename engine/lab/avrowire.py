"""Synthetic change events in format=avro: the JSON envelopes re-encoded as Connect's
Avro converter writes them, for `changefold bench fold --format avro`.

Connect's Avro converter turns the Connect schema of an event (the one the
JsonConverter embeds) into an Avro schema by fixed rules: a struct is a record
named by its Connect name (namespace and short name), an optional field is the
union `["null", T]` with default null (`[T, "null"]` with the default when the
Connect schema has one), a named type seen before is referenced by name, and every
Connect detail is kept as a `connect.*` property (`connect.name`, `connect.version`,
`connect.parameters`, `connect.doc`, `connect.default`, `connect.type` for int8 and
int16), a Decimal also as Avro's decimal logical type. `avro_schema` applies them;
tests/unit/test_bench_avrowire.py checks its output against the schemas the stack's
registry served for the captured lab table (tests/fixtures/avro/lab_schemas.json),
text for text.

`AvroEncoder` takes a JSON message of the synthetic generator (engine.lab.synthetic)
and writes the same key and value as Confluent-framed Avro (byte 0, the 4-byte
schema id, the Avro binary), with the ids `register` got from the registry's
Confluent-compatible API for the subjects `<topic>-key` / `<topic>-value` (the
converter's subject names).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import fastavro
import httpx

from engine.decode.avro_schema import without_logical

#: Path of the registry's Confluent-compatible API.
CCOMPAT = "/apis/ccompat/v7"

_PRIMITIVE = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
_DECIMAL = "org.apache.kafka.connect.data.Decimal"
#: Connect's name of a struct without one.
_DEFAULT_NAME = "io.confluent.connect.avro.ConnectDefault"


def avro_schema(connect: dict[str, Any]) -> Any:
    """The Avro schema Connect's Avro converter writes for a Connect schema (the
    JsonConverter's JSON form of it), as JSON-ready data in the converter's key order."""
    return _avro(connect, "", set(), top=True)


def _split_name(full: str) -> tuple[str, str]:
    ns, _, short = full.rpartition(".")
    return ns, short


def _avro(spec: dict[str, Any], namespace: str, named: set[str], top: bool = False) -> Any:
    """The Avro type of `spec` (without its optional union: see `_field_type`)."""
    kind = spec["type"]
    name = spec.get("name")
    if kind == "struct":
        full = name or _DEFAULT_NAME
        ns, short = _split_name(full)
        if full in named:
            return short if ns == namespace else full
        named.add(full)
        out: dict[str, Any] = {"type": "record", "name": short}
        if ns != namespace or top:
            out["namespace"] = ns
        out["fields"] = [_record_field(f, ns, named) for f in spec["fields"]]
    elif kind == "array":
        out = {"type": "array", "items": _field_type(spec["items"], namespace, named)}
    elif kind == "map":
        out = {"type": "map", "values": _field_type(spec["values"], namespace, named)}
    elif kind in _PRIMITIVE:
        out = {"type": _PRIMITIVE[kind]}
        if kind in ("int8", "int16"):
            out["connect.type"] = kind
        if name == _DECIMAL:
            params = spec.get("parameters") or {}
            out["scale"] = int(params.get("scale", 0))
            out["precision"] = int(params.get("connect.decimal.precision", 64))
    else:
        raise ValueError(f"a Connect type the Avro converter form does not cover: {kind!r}")
    if "doc" in spec:
        out["connect.doc"] = spec["doc"]
    if "version" in spec:
        out["connect.version"] = spec["version"]
    if "parameters" in spec:
        out["connect.parameters"] = spec["parameters"]
    if "default" in spec:
        out["connect.default"] = spec["default"]
    if name is not None:
        out["connect.name"] = name
    if name == _DECIMAL:
        out["logicalType"] = "decimal"
    if len(out) == 1 and kind != "struct":
        return out["type"]
    return out


def _field_type(spec: dict[str, Any], namespace: str, named: set[str]) -> Any:
    inner = _avro(spec, namespace, named)
    if not spec.get("optional"):
        return inner
    if "default" in spec and spec["default"] is not None:
        return [inner, "null"]
    return ["null", inner]


def _record_field(spec: dict[str, Any], namespace: str, named: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec["field"], "type": _field_type(spec, namespace, named)}
    if spec.get("optional"):
        out["default"] = spec.get("default")
    elif "default" in spec:
        out["default"] = spec["default"]
    return out


def _datum(spec: dict[str, Any], value: Any) -> Any:
    """A Connect JSON value as the Avro writer takes it (bytes are base64 in JSON)."""
    if value is None:
        return None
    kind = spec["type"]
    if kind == "struct":
        return {f["field"]: _datum(f, value.get(f["field"])) for f in spec["fields"]}
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "array":
        return [_datum(spec["items"], v) for v in value]
    if kind == "map":
        return {k: _datum(spec["values"], v) for k, v in value.items()}
    return value


def frame(schema_id: int, body: bytes) -> bytes:
    """The Confluent wire format: byte 0, the 4-byte big-endian schema id, the Avro binary."""
    return b"\x00" + schema_id.to_bytes(4, "big") + body


class SideEncoder:
    """One side (key or value) of a topic's messages: its Connect schema, the Avro
    schema the converter writes for it, and (once registered) its schema id."""

    def __init__(self, connect: dict[str, Any]) -> None:
        self.connect = connect
        self.avro = avro_schema(connect)
        self.text = json.dumps(self.avro, separators=(",", ":"))
        # Decimals are written as their unscaled bytes, as the JSON payload holds them.
        self._parsed = fastavro.parse_schema(without_logical(self.avro))
        self.schema_id: int | None = None

    def encode(self, payload: Any) -> bytes:
        if self.schema_id is None:
            raise RuntimeError("the schema is not registered (no schema id yet)")
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._parsed, _datum(self.connect, payload))
        return frame(self.schema_id, out.getvalue())


class AvroEncoder:
    """Re-encodes one topic's JSON messages (`{"schema": ..., "payload": ...}`) as
    Confluent-framed Avro; the schemas are taken from the first message of each side."""

    def __init__(self) -> None:
        self.key: SideEncoder | None = None
        self.value: SideEncoder | None = None

    def prepare(self, key: bytes, value: bytes) -> None:
        """Read the Connect schemas from a JSON message (a change event, not a tombstone)."""
        self.key = SideEncoder(json.loads(key)["schema"])
        self.value = SideEncoder(json.loads(value)["schema"])

    def register(self, registry_url: str, topic: str, timeout_s: float = 10.0) -> tuple[int, int]:
        """Register the key and value schemas as `<topic>-key` / `<topic>-value`. -> ids."""
        if self.key is None or self.value is None:
            raise RuntimeError("prepare() first")
        self.key.schema_id = register(registry_url, f"{topic}-key", self.key.text, timeout_s)
        self.value.schema_id = register(registry_url, f"{topic}-value", self.value.text, timeout_s)
        return self.key.schema_id, self.value.schema_id

    def encode(self, key: bytes, value: bytes | None) -> tuple[bytes, bytes | None]:
        """A JSON message's key and value (None: a tombstone, which stays None) in Avro."""
        if self.key is None or self.value is None:
            raise RuntimeError("prepare() first")
        k = self.key.encode(json.loads(key)["payload"])
        if value is None:
            return k, None
        return k, self.value.encode(json.loads(value)["payload"])


def register(registry_url: str, subject: str, schema_text: str, timeout_s: float = 10.0) -> int:
    """Register an Avro schema under `subject` (a new version, or the existing one's id
    when the same schema is there already) through the Confluent-compatible API."""
    resp = httpx.post(
        f"{registry_url}{CCOMPAT}/subjects/{subject}/versions",
        json={"schema": schema_text},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=timeout_s,
    )
    if resp.status_code != 200:
        raise RuntimeError(
            f"the schema registry at {registry_url} refused subject {subject!r}: "
            f"HTTP {resp.status_code} {resp.text[:300]}"
        )
    return int(resp.json()["id"])


def delete_subjects(registry_url: str, topic: str, timeout_s: float = 10.0) -> None:
    """Remove `<topic>-key` and `<topic>-value` (soft, then for good); absent ones are fine."""
    with httpx.Client(base_url=registry_url + CCOMPAT, timeout=timeout_s) as http:
        for subject in (f"{topic}-key", f"{topic}-value"):
            http.delete(f"/subjects/{subject}")
            http.delete(f"/subjects/{subject}", params={"permanent": "true"})
