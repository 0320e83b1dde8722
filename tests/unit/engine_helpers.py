"""Helpers for engine unit tests: fold decoded records into an in-memory state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core.config import PACKAGE_PROJECT_DIR
from engine.decode.decoder import Decoder
from engine.decode.records import DecodedBatch, RawRecord
from engine.state.store import Store
from engine.state.writer import StateWriter, WriteResult

STATE_SQL = PACKAGE_PROJECT_DIR / "sql" / "state"


def memory_writer(group: str = "test-group") -> StateWriter:
    store = Store(":memory:")
    store.migrate(STATE_SQL)
    return StateWriter(store, group, keep_batches=50)


def fold(
    writer: StateWriter, records: Sequence[RawRecord], decoder: Decoder | None = None
) -> tuple[DecodedBatch, WriteResult]:
    decoder = decoder or Decoder()
    batch = decoder.decode(records, writer.known_schemas())
    result = writer.write(batch, member="test", progress=batch.progress)
    return batch, result


def rows(writer: StateWriter, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with writer.store.reading() as conn:
        return conn.execute(sql, list(params)).fetchall()


FIXTURES = PACKAGE_PROJECT_DIR / "tests" / "fixtures"


def load_fixture(name: str) -> list[RawRecord]:
    """Captured messages (tests/fixtures/<name>.jsonl, written by capture.py)."""
    import json

    out = []
    for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append(
            RawRecord(
                topic=r["topic"],
                partition=r["partition"],
                offset=r["offset"],
                key=r["key"].encode() if r["key"] is not None else None,
                value=r["value"].encode() if r["value"] is not None else None,
            )
        )
    return out


def mirror_rows(writer: StateWriter) -> dict[str, Any]:
    """Every mirror of the state: "schema.table" -> (columns with types, all rows sorted)."""
    from engine.state.sqlident import quote

    out: dict[str, Any] = {}
    tables = rows(
        writer,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema <> '_changefold' ORDER BY ALL",
    )
    for schema, table in tables:
        columns = rows(
            writer,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY column_name",
            [schema, table],
        )
        select = ", ".join(quote(c) for c, _ in columns)
        out[f"{schema}.{table}"] = (
            columns,
            rows(writer, f"SELECT {select} FROM {quote(schema)}.{quote(table)} ORDER BY ALL"),
        )
    return out
