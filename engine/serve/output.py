"""Print a query answer (the API's JSON payload) as a table, CSV or JSON.

No format ever cuts a value. The table is drawn with rich: on a terminal as wide
as the terminal, a value longer than its column wraps inside its cell (folded,
never an ellipsis); written to a pipe or a file, as wide as its longest values
need, one line per row (what `changefold sql ... | cat` or `> out.txt` shows).
"""

from __future__ import annotations

import csv
import json
from typing import IO, Any

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


def print_table(payload: dict[str, Any], out: IO[str], *, width: int | None = None) -> None:
    """The rows as a table on `out`, then the row count.

    `width`: fit the table to this many columns, wrapping long values in their cells
    (default: the terminal's width when `out` is a terminal; else no limit, the table
    as wide as its values need)."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for column in payload["columns"]:
        numeric = str(column["type"]).upper().startswith(_NUMERIC_PREFIXES)
        table.add_column(
            str(column["name"]), justify="right" if numeric else "left", overflow="fold"
        )
    for row in payload["rows"]:
        table.add_row(*("[dim]NULL[/dim]" if v is None else _escape(cell(v)) for v in row))
    console = Console(file=out, soft_wrap=False, width=width)
    if width is None and not console.is_terminal:
        # A pipe or a file has no width to fit, so none to cut to: the natural width.
        natural = Measurement.get(console, console.options.update_width(10**6), table).maximum
        console = Console(file=out, soft_wrap=False, width=max(natural, 20))
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
