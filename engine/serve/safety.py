"""Which SQL the query API runs: one read statement, parsed by DuckDB itself.

The main guards are DuckDB's own (see engine.state.reader): external access
off for the database, and a READ ONLY transaction around every query. This
module adds two checks before anything runs:

1. The text must be exactly one statement of type SELECT (which in DuckDB also
   covers WITH ... SELECT, SHOW, DESCRIBE, SUMMARIZE, FROM-first, VALUES and
   TABLE) or an EXPLAIN [ANALYZE] of one. INSERT, UPDATE, DELETE, CREATE, DROP,
   ALTER, COPY, ATTACH, DETACH, INSTALL, LOAD, PRAGMA, SET, CALL, EXPORT,
   IMPORT, ... and several statements at once are refused.
2. The statement's syntax tree (DuckDB's `json_serialize_sql`) may only call
   table functions of an allow list (generators, unnest, JSON walkers, catalog
   introspection) or the database's own table macros: file readers
   (`read_csv`, `read_text`, `glob`, `parquet_scan`, ...), `query()` (which
   would run unchecked SQL text), pointer scans (`arrow_scan`) and functions
   with side effects (`checkpoint`, `enable_logging`, ...) are refused even
   though the settings already stop most of them. A table name that looks like
   a file path or URL is refused too.
3. A constant expression may not build a value larger than a bound while DuckDB
   plans the statement (engine.serve.constsize): no interrupt reaches planning.
4. Settings that show where the engine runs are not readable: `duckdb_settings()`
   is refused, and so are `current_setting(name)` and `SHOW name` for every
   setting whose value in this database holds an absolute path or the OS user
   (temp_directory, secret_directory, allowed_paths, ... as configured), and
   `current_setting()` of anything but a literal name.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import duckdb

from engine.core.errors import QueryError
from engine.serve.constsize import largest_folded

_ST = duckdb.StatementType

#: Table functions a query may call. Everything else is refused.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "summary",
        "pg_timezone_names",
        "icu_calendar_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "duckdb_memory",
        "pragma_table_info",
        "pragma_version",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_show",
        "pragma_collations",
        "pragma_platform",
    }
)

_READ_FORMS = "SELECT (also WITH ... SELECT, SHOW, DESCRIBE, SUMMARIZE and EXPLAIN)"

#: Words for the refused statement types, as a user would have typed them.
_TYPE_WORDS = {
    _ST.INSERT: "INSERT",
    _ST.UPDATE: "UPDATE",
    _ST.DELETE: "DELETE",
    _ST.CREATE: "CREATE",
    _ST.CREATE_FUNC: "CREATE FUNCTION/MACRO",
    _ST.DROP: "DROP",
    _ST.ALTER: "ALTER",
    _ST.COPY: "COPY",
    _ST.COPY_DATABASE: "COPY FROM DATABASE",
    _ST.ATTACH: "ATTACH",
    _ST.DETACH: "DETACH",
    _ST.LOAD: "INSTALL/LOAD",
    _ST.EXTENSION: "extension",
    _ST.PRAGMA: "PRAGMA (or IMPORT DATABASE)",
    _ST.SET: "SET/RESET/USE (and PRAGMA name = value)",
    _ST.VARIABLE_SET: "SET VARIABLE",
    _ST.CALL: "CALL/CHECKPOINT",
    _ST.EXPORT: "EXPORT DATABASE",
    _ST.TRANSACTION: "transaction (BEGIN/COMMIT/ROLLBACK)",
    _ST.PREPARE: "PREPARE",
    _ST.EXECUTE: "EXECUTE",
    _ST.VACUUM: "VACUUM/ANALYZE",
    _ST.MERGE_INTO: "MERGE",
    _ST.MULTI: "multi-step (for example PIVOT without an IN list)",
}

_PATH_MARKS = ("/", "\\", "://")

#: An absolute path (POSIX, home-relative or Windows) at the start of a value or of
#: one of its list items.
_ABSOLUTE_PATH = re.compile(r"(?:^|[\s\[,;(='\"])(?:/|~|[A-Za-z]:[\\/])")

#: Table functions refused with their own reason (not just "not allowed").
_SETTINGS_FUNCTIONS = {"duckdb_settings"}


def refused(message: str) -> QueryError:
    return QueryError("refused", message)


#: Largest value a constant expression may build while the query is planned (bytes),
#: unless the caller says otherwise (the query API: a quarter of its memory bound).
MAX_FOLDED_BYTES = 256 * 2**20


def checked_statement(
    cur: duckdb.DuckDBPyConnection, sql: str, *, max_folded_bytes: int = MAX_FOLDED_BYTES
) -> str:
    """The one read statement in `sql`, ready to run; raises QueryError otherwise."""
    text = sql.strip()
    if not text:
        raise QueryError("invalid", f"the query is empty: send one {_READ_FORMS} statement")
    statement = _single_statement(cur, text)
    kind = _type_of(statement)
    if kind == _ST.SELECT:
        select = str(statement.query)
    elif kind == _ST.EXPLAIN:
        select = _explained(cur, str(statement.query))
    else:
        raise refused(_type_refusal(kind))
    _check_tree(cur, select, max_folded_bytes)
    return str(statement.query)


def _single_statement(cur: duckdb.DuckDBPyConnection, text: str) -> duckdb.Statement:
    try:
        statements = cur.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError("invalid", str(exc)) from None
    if not statements:
        raise QueryError("invalid", f"the query has no statement: send one {_READ_FORMS}")
    if len(statements) > 1:
        raise refused(
            f"the query holds {len(statements)} statements: send one statement per request"
        )
    return statements[0]


def _type_of(statement: duckdb.Statement) -> duckdb.StatementType:
    try:
        return statement.type
    except ValueError:
        # A statement type newer than the Python client knows (e.g. UPDATE EXTENSIONS).
        raise refused(
            f"this kind of statement is not allowed: the API is read-only and runs only "
            f"{_READ_FORMS}"
        ) from None


def _type_refusal(kind: duckdb.StatementType) -> str:
    word = _TYPE_WORDS.get(kind, str(kind).rsplit(".", 1)[-1])
    return f"{word} statements are not allowed: the API is read-only and runs only {_READ_FORMS}"


def _explained(cur: duckdb.DuckDBPyConnection, explain: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] is about; it must be a SELECT.

    DuckDB's statement object does not expose the inner statement, so take the
    first suffix, at a token boundary after EXPLAIN, that parses as one
    statement. (Were this ever to pick wrongly, the READ ONLY transaction still
    stops an `EXPLAIN ANALYZE` of a write.)
    """
    for position, _ in duckdb.tokenize(explain)[1:]:
        try:
            inner = cur.extract_statements(explain[position:])
        except (duckdb.Error, ValueError):
            continue
        if len(inner) != 1:
            break
        kind = _type_of(inner[0])
        if kind != _ST.SELECT:
            raise refused("EXPLAIN of " + _type_refusal(kind))
        return str(inner[0].query)
    raise QueryError("invalid", "cannot find the statement this EXPLAIN is about")


def _check_tree(cur: duckdb.DuckDBPyConnection, select: str, max_folded_bytes: int) -> None:
    rows = cur.execute("SELECT json_serialize_sql(?)", [select]).fetchall()
    tree = json.loads(rows[0][0]) if rows else {"error": True, "error_message": "no answer"}
    if tree.get("error"):
        raise refused(
            "this form of SELECT cannot be checked by the API "
            f"({tree.get('error_message', 'unknown reason')}); rewrite it as a plain SELECT"
        )
    folded = largest_folded(tree)
    if folded > max_folded_bytes:
        raise QueryError(
            "memory",
            f"a constant expression of this query builds about {folded / 2**20:,.0f} MiB while "
            f"DuckDB plans it, more than the {max_folded_bytes / 2**20:,.0f} MiB allowed (a "
            "quarter of CHANGEFOLD_API_QUERY_MEMORY_BYTES); planning cannot be interrupted, "
            "so such a query is refused before it runs",
        )
    macros: set[str] | None = None
    hidden: set[str] | None = None
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "FUNCTION" and str(node.get("function_name", "")).lower() == ("current_setting"):
            hidden = _hidden_settings(cur) if hidden is None else hidden
            _check_current_setting(node, hidden)
        elif kind == "SHOW_REF" and node.get("show_type") in ("SHOW", "SHOW_SPECIAL"):
            hidden = _hidden_settings(cur) if hidden is None else hidden
            if str(node.get("table_name", "")).strip('"').lower() in hidden:
                raise refused(_hidden_message(str(node.get("table_name")).strip('"')))
        elif kind == "TABLE_FUNCTION":
            name = _function_name(node)
            if name in _SETTINGS_FUNCTIONS:
                raise refused(
                    f"{name}() is not readable through the API: some settings hold the "
                    "engine's file paths and OS user; read one setting with "
                    "current_setting('name')"
                )
            if name in ALLOWED_TABLE_FUNCTIONS:
                continue
            if macros is None:
                macros = _table_macros(cur)
            if name not in macros:
                raise refused(
                    f"the table function {name}() is not allowed: queries may read only the "
                    "state's tables and views (no files, network, extensions or side effects)"
                )
        elif kind == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if any(mark in table for mark in _PATH_MARKS):
                raise refused(
                    f"reading {table!r} is not allowed: queries may read only the state's "
                    "tables and views, not files or URLs"
                )


def _check_current_setting(node: dict[str, Any], hidden: set[str]) -> None:
    arguments = node.get("arguments") or node.get("children") or []
    first = arguments[0] if arguments else {}
    expression = first.get("expression", first) if isinstance(first, dict) else {}
    literal = expression.get("literal") if isinstance(expression, dict) else None
    if expression.get("class") != "CONSTANT" or not isinstance(literal, dict):
        raise refused(
            "current_setting() takes a setting's name as a literal through the API "
            "(for example current_setting('TimeZone'))"
        )
    name = str(literal.get("text", literal.get("value", "")))
    if name.lower() in hidden:
        raise refused(_hidden_message(name))


def _hidden_message(name: str) -> str:
    return (
        f"the setting {name!r} is not readable through the API: its value holds a path "
        "or the OS user of the engine"
    )


def _hidden_settings(cur: duckdb.DuckDBPyConnection) -> set[str]:
    """Names (lower case) of the settings whose value here reveals a path or the OS user."""
    user = _os_user()
    home = os.path.expanduser("~")
    names = set()
    for name, value in cur.execute("SELECT name, value FROM duckdb_settings()").fetchall():
        text = "" if value is None else str(value)
        if (
            _ABSOLUTE_PATH.search(text)
            or (home not in ("", "/", "~") and home in text)
            or (user and re.search(rf"(?<!\w){re.escape(user)}(?!\w)", text))
        ):
            names.add(str(name).lower())
    return names


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name for this uid
        return ""


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the syntax tree, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _function_name(node: dict[str, Any]) -> str:
    function = node.get("function") or {}
    name = function.get("function_name") if isinstance(function, dict) else None
    if not name:
        raise refused("a table function call of an unknown form is not allowed")
    return str(name).lower()


def _table_macros(cur: duckdb.DuckDBPyConnection) -> set[str]:
    """Table macros the state itself defines (engine-made, so as safe as its views)."""
    rows = cur.execute(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
        "WHERE function_type = 'table_macro' AND NOT internal"
    ).fetchall()
    return {str(r[0]) for r in rows}
