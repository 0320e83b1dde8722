"""The views' SQL files: loading, header parsing, splitting into statements.

A view file (`sql/views/<view>.sql`) is a sequence of DuckDB statements with named
parameters (`$batch_id`, `$fraud_tiny_eur`, ...). Comment lines at the top declare:

    -- inputs: bank.transactions, bank.accounts   mirror tables it reads; the view
                                                  runs in a batch that changed one
    -- after: fraud_alerts                        views that must run before it

The state tables a view writes are named in `VIEW_STATE`: they are emptied when the
view is rebuilt from scratch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine.core.errors import ViewError
from engine.state.sqlident import quote

__all__ = ["SqlFile", "load_dir", "load_file", "order_views", "quote", "quote_table"]

_HEADER = re.compile(r"^--\s*(inputs|after):(.*)$")


def quote_table(qualified: str) -> str:
    """`schema.table` -> "schema"."table"."""
    schema, _, table = qualified.partition(".")
    return f"{quote(schema)}.{quote(table)}" if table else quote(schema)


@dataclass(frozen=True)
class Statement:
    sql: str
    #: Named parameters the statement uses (without the `$`).
    params: frozenset[str]


@dataclass(frozen=True)
class SqlFile:
    name: str
    path: Path
    inputs: tuple[str, ...]
    after: tuple[str, ...]
    statements: tuple[Statement, ...]

    def bind(self, statement: Statement, values: Mapping[str, object]) -> dict[str, object]:
        missing = sorted(statement.params - values.keys())
        if missing:
            raise ViewError(
                f"{self.path}: unknown parameter(s) {', '.join('$' + m for m in missing)}; "
                f"known: {', '.join('$' + k for k in sorted(values))}"
            )
        return {k: values[k] for k in statement.params}


def load_file(path: Path) -> SqlFile:
    """Parse one SQL file; a syntax error raises ViewError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ViewError(f"cannot read the view file {path}: {exc}") from exc
    inputs: list[str] = []
    after: list[str] = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            break  # headers live in the leading comment block
        m = _HEADER.match(line.strip())
        if m:
            items = [i.strip() for i in m[2].split(",") if i.strip()]
            (inputs if m[1].lower() == "inputs" else after).extend(items)
    try:
        parsed = _parser().extract_statements(text)
    except duckdb.Error as exc:
        raise ViewError(f"{path} does not parse: {_first_line(exc)}") from exc
    statements = tuple(Statement(s.query.strip(), frozenset(s.named_parameters)) for s in parsed)
    if not statements:
        raise ViewError(f"{path} holds no SQL statement")
    return SqlFile(path.stem, path, tuple(inputs), tuple(after), statements)


_PARSER: list[duckdb.DuckDBPyConnection] = []


def _parser() -> duckdb.DuckDBPyConnection:
    """An empty in-memory connection, only used to split files into statements."""
    if not _PARSER:
        _PARSER.append(duckdb.connect(":memory:"))
    return _PARSER[0]


def load_dir(directory: Path) -> list[SqlFile]:
    """Every `*.sql` file of a directory (not its subdirectories), by name."""
    return [load_file(p) for p in sorted(directory.glob("*.sql"))]


def order_views(files: Iterable[SqlFile]) -> list[SqlFile]:
    """Views in an order that honours their `after:` headers (else by name)."""
    pending = {f.name: f for f in sorted(files, key=lambda f: f.name)}
    done: list[SqlFile] = []
    placed: set[str] = set()
    while pending:
        ready = [
            f for f in pending.values() if all(a in placed or a not in pending for a in f.after)
        ]
        if not ready:
            names = ", ".join(sorted(pending))
            raise ViewError(f"the `-- after:` headers of these views form a cycle: {names}")
        for f in ready:
            unknown = [a for a in f.after if a not in placed and a not in pending]
            if unknown:
                raise ViewError(f"{f.path}: `-- after:` names unknown view(s) {', '.join(unknown)}")
            done.append(f)
            placed.add(f.name)
            del pending[f.name]
    return done


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's message, without the trailing context lines it sometimes adds."""
    return " ".join(str(exc).split())
