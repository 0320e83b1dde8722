"""Walks over Avro schemas (parsed JSON) shared by the decoder, the group read and the
lab's encoder."""

from __future__ import annotations

from typing import Any


def without_logical(schema: Any) -> Any:
    """`schema` with every `logicalType` removed: a Decimal is then read as its unscaled
    bytes and a Date/Time/Timestamp as its number, as Connect JSON carries them."""
    if isinstance(schema, dict):
        return {k: without_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical(s) for s in schema]
    return schema


def full_name(name: str, namespace: str) -> str:
    """A named type's full name: `name` when it has a dot or there is no namespace."""
    return name if "." in name or not namespace else f"{namespace}.{name}"
