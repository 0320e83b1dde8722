"""Byte-level handling of Kafka Connect JSON messages, before any JSON parsing.

The JsonConverter writes `{"schema":{...},"payload":{...}}` with the schema
first and no whitespace. The schema is the same for every event of a table
version and several times larger than the payload, so the decoder cuts each
message into its schema bytes (a cheap grouping key, parsed once per distinct
schema) and its payload bytes (parsed in bulk). Messages without a schema
(`schemas.enable=false`) are payloads already.
"""

from __future__ import annotations

from functools import lru_cache

from engine.decode.model import MirrorName

SCHEMA_OPEN = b'{"schema":'
PAYLOAD_SEP = b',"payload":'
_HEAD = len(SCHEMA_OPEN)
_SEP = len(PAYLOAD_SEP)


class MalformedEnvelope(ValueError):
    """The bytes are not a Connect JSON message; the reason is in the message."""


def split(data: bytes) -> tuple[bytes | None, bytes]:
    """(schema bytes or None, payload bytes) of one message.

    Only the structure is checked here; malformed JSON inside is found by the
    bulk parser. `"payload":` cannot occur inside the schema: its keys are fixed
    Connect schema keys and a quote inside a JSON string is escaped.
    """
    if not data.startswith(SCHEMA_OPEN):
        return None, data
    at = data.find(PAYLOAD_SEP, _HEAD)
    if at < 0:
        raise MalformedEnvelope("the message has a schema but no payload")
    if not data.endswith(b"}"):
        raise MalformedEnvelope("the message is cut off (no closing brace)")
    return data[_HEAD:at], data[at + _SEP : -1]


class Splitter:
    """`split` with a shortcut for runs of messages that share a schema.

    Checking that a message starts with the previous message's schema prefix is
    a memcmp; finding the separator is a scan. Returns the very same schema
    bytes object for a run, so grouping by it hashes once.
    """

    def __init__(self) -> None:
        self._prefix: bytes = b""
        self._length = 0
        self._schema: bytes = b""

    def split(self, data: bytes) -> tuple[bytes | None, bytes]:
        prefix = self._prefix
        if prefix and data.startswith(prefix) and data[-1:] == b"}":
            return self._schema, data[self._length : -1]
        schema, payload = split(data)
        if schema is not None:
            self._schema = schema
            self._prefix = data[: _HEAD + len(schema) + _SEP]
            self._length = len(self._prefix)
        return schema, payload


#: Topics that carry no table: Debezium's heartbeats and transaction metadata.
HEARTBEAT_PREFIX = "__debezium-heartbeat"
TRANSACTION_SUFFIX = ".transaction"


@lru_cache(maxsize=4096)
def topic_kind(topic: str) -> str:
    """'table', 'skip' (heartbeat / transaction metadata / internal) or 'unknown'."""
    if topic.startswith("__") or topic.startswith(HEARTBEAT_PREFIX):
        return "skip"
    parts = topic.split(".")
    if len(parts) == 2 and topic.endswith(TRANSACTION_SUFFIX):
        return "skip"
    if len(parts) >= 3 and all(parts):
        return "table"
    return "unknown"


@lru_cache(maxsize=4096)
def mirror_of(topic: str) -> MirrorName:
    """`<prefix>.<schema>.<table>` -> mirror `<prefix>.<table>` (the prefix may hold dots)."""
    prefix, _schema, table = topic.rsplit(".", 2)
    return MirrorName(prefix, table)
