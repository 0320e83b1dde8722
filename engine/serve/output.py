"""Print a query answer (the API's JSON payload) as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

from rich.console import Console
from rich.table import Table

_NUMERIC_PREFIXES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
)  # fmt: skip


def cell(value: Any) -> str:
    """A JSON value as text: nested values as compact JSON, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_table(payload: dict[str, Any], console: Console) -> None:
    table = Table(show_lines=False, header_style="bold")
    for column in payload["columns"]:
        numeric = str(column["type"]).upper().startswith(_NUMERIC_PREFIXES)
        table.add_column(str(column["name"]), justify="right" if numeric else "left")
    for row in payload["rows"]:
        table.add_row(*("[dim]NULL[/dim]" if v is None else _escape(cell(v)) for v in row))
    console.print(table)
    rows = payload["row_count"]
    console.print(f"[dim]{rows} row{'s' if rows != 1 else ''}[/dim]")


def write_csv(payload: dict[str, Any], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c["name"] for c in payload["columns"]])
    for row in payload["rows"]:
        writer.writerow([cell(v) for v in row])


def write_json(payload: dict[str, Any], out: IO[str]) -> None:
    """One JSON array of row objects (repeated column names get a _2, _3 suffix)."""
    names = unique_names([str(c["name"]) for c in payload["columns"]])
    rows = [dict(zip(names, row, strict=True)) for row in payload["rows"]]
    json.dump(rows, out, ensure_ascii=False, indent=2)
    out.write("\n")


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
