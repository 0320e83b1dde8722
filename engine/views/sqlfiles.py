"""The views' SQL files: loading, header parsing, splitting into statements.

A view file (`sql/views/<view>.sql`, or a check in `sql/views/checks/`) is a
sequence of DuckDB statements with named parameters (`$batch_id`,
`$fraud_tiny_eur`, ...). Comment lines in the file's leading comment block declare
what the engine needs to know about it; the engine knows no view by name.

    -- inputs: bank.transactions, bank.accounts   mirror tables it reads; the view
                                                  runs in a batch that changed one
    -- after: fraud_alerts                        views that must run before it
    -- state: live.player_totals, live.leaderboard
                                                  tables it writes: emptied when
                                                  the view is rebuilt from scratch
    -- findings: live.fraud_alerts                tables of findings it raises: kept
                                                  when an input is truncated, emptied
                                                  only by `recompute_all`
    -- params: fraud_tiny_eur, fraud_baseline_days
                                                  named parameters it uses, besides
                                                  the engine's own ($batch_id,
                                                  $detected_at)
    -- counts: new_alerts = live.fraud_alerts.first_batch
                                                  after every batch, the rows of the
                                                  table whose column is the batch id
                                                  are counted into that figure of
                                                  `MaintainStats`
    -- returns: conservation_violations           the last statement returns one
                                                  count, reported as that figure
                                                  when the file ran on the batch
    -- label: transfer(s) unbalanced in the bank mirror
                                                  what the returned count counts, in
                                                  the log (free text, one line)
    -- stuck: live.unbalanced_transfers.batch_id  rows of that table whose column is
                                                  many batches old are warned about

Every header but `label` holds a comma-separated list; a list header may repeat.
`returns`, `label` and `stuck` take one value. Names are as written in SQL
(`schema.table`, `schema.table.column`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine.core.errors import ViewError
from engine.state.sqlident import quote

__all__ = [
    "Column",
    "Count",
    "SqlFile",
    "load_dir",
    "load_file",
    "order_views",
    "quote",
    "quote_table",
]

_LISTS = ("inputs", "after", "state", "findings", "params", "counts")
_SINGLE = ("returns", "label", "stuck")
_HEADER = re.compile(rf"^--\s*({'|'.join((*_LISTS, *_SINGLE))}):(.*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
class Column:
    """`schema.table.column` of a header."""

    table: str
    column: str


@dataclass(frozen=True)
class Count:
    """`-- counts: <figure> = <schema.table.column>`."""

    figure: str
    rows: Column


@dataclass(frozen=True)
class SqlFile:
    name: str
    path: Path
    inputs: tuple[str, ...]
    after: tuple[str, ...]
    statements: tuple[Statement, ...]
    #: Tables the file writes, emptied when it is rebuilt from scratch.
    state: tuple[str, ...] = ()
    #: Tables of findings it raises, emptied only by a full recompute.
    findings: tuple[str, ...] = ()
    #: Named parameters its header declares.
    params: tuple[str, ...] = ()
    counts: tuple[Count, ...] = ()
    #: The figure its last statement's count is reported as.
    returns: str | None = None
    #: What that count counts, in the log.
    label: str | None = None
    #: Rows warned about when they stay for many batches.
    stuck: Column | None = None

    @property
    def used_params(self) -> frozenset[str]:
        """Named parameters its statements use."""
        return frozenset(p for st in self.statements for p in st.params)

    def bind(self, statement: Statement, values: Mapping[str, object]) -> dict[str, object]:
        missing = sorted(statement.params - values.keys())
        if missing:
            raise ViewError(
                f"{self.path}: unknown parameter(s) {', '.join('$' + m for m in missing)}; "
                f"known: {', '.join('$' + k for k in sorted(values))}"
            )
        return {k: values[k] for k in statement.params}


def load_file(path: Path) -> SqlFile:
    """Parse one SQL file; a syntax error or a malformed header raises ViewError
    naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ViewError(f"cannot read the view file {path}: {exc}") from exc
    lists: dict[str, list[str]] = {k: [] for k in _LISTS}
    single: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            break  # headers live in the leading comment block
        m = _HEADER.match(line.strip())
        if not m:
            continue
        key, value = m[1], m[2].strip()
        if key in single:
            raise ViewError(f"{path}: the `-- {key}:` header is given twice")
        if key in _SINGLE:
            if not value:
                raise ViewError(f"{path}: the `-- {key}:` header is empty")
            single[key] = value
        else:
            lists[key].extend(i.strip() for i in value.split(",") if i.strip())
    try:
        parsed = _parser().extract_statements(text)
    except duckdb.Error as exc:
        raise ViewError(f"{path} does not parse: {_first_line(exc)}") from exc
    statements = tuple(Statement(s.query.strip(), frozenset(s.named_parameters)) for s in parsed)
    if not statements:
        raise ViewError(f"{path} holds no SQL statement")
    for name in [*lists["params"], *([single["returns"]] if "returns" in single else [])]:
        if not _NAME.match(name):
            raise ViewError(f"{path}: {name!r} in a header is not a name")
    stuck = single.get("stuck")
    return SqlFile(
        path.stem,
        path,
        tuple(lists["inputs"]),
        tuple(lists["after"]),
        statements,
        state=tuple(lists["state"]),
        findings=tuple(lists["findings"]),
        params=tuple(lists["params"]),
        counts=tuple(_count(path, c) for c in lists["counts"]),
        returns=single.get("returns"),
        label=single.get("label"),
        stuck=_column(path, "stuck", stuck) if stuck is not None else None,
    )


def _count(path: Path, text: str) -> Count:
    figure, eq, rows = (p.strip() for p in text.partition("="))
    if not eq or not _NAME.match(figure):
        raise ViewError(f"{path}: `-- counts: {text}` is not `<figure> = <schema.table.column>`")
    return Count(figure, _column(path, "counts", rows))


def _column(path: Path, header: str, text: str) -> Column:
    table, _, column = text.rpartition(".")
    if table.count(".") != 1 or not all(_NAME.match(p) for p in text.split(".")):
        raise ViewError(f"{path}: `-- {header}:` wants schema.table.column, not {text!r}")
    return Column(table, column)


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
