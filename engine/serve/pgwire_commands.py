"""What Postgres clients send besides queries, answered without touching the state.

Drivers and tools send session statements that a Postgres server answers and
that the query API rightly refuses (DuckDB would run them, or read them
differently): psycopg wraps queries in BEGIN/COMMIT, JDBC sends
`SET extra_float_digits = 3` and `SET SESSION CHARACTERISTICS AS TRANSACTION
READ ONLY`, psql and DBeaver ask `SHOW ...` and `select version()`, connection
pools send `DISCARD ALL`. They are recognised here by their whole text and
answered by the endpoint itself:

- BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK / ABORT: the transaction
  status a client sees. Each query still reads its own read-only snapshot at a
  source transaction boundary (engine.serve.query): a transaction block groups
  nothing on the state, which no client can change anyway.
- SET / RESET: remembered for SHOW and reported back as Postgres does; nothing
  reaches DuckDB (answers stay UTF-8, ISO dates, UTC timestamps with their offset).
- SHOW of a Postgres setting; `SHOW ALL`. Any other SHOW (`SHOW TABLES`,
  `SHOW live.leaderboard`) is DuckDB's and goes to the state like any query.
- `select version()`: a Postgres-style version string, which tools parse.
- DISCARD ALL, DEALLOCATE: forget the session's prepared statements.

Everything else, writes included, goes through `engine.serve.query.run_query`
and is refused or answered exactly as by `POST /query`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine import __version__
from engine.core.errors import QueryError

#: The Postgres version clients are told (they choose their catalog queries by it).
SERVER_VERSION = "16.0"

#: Settings sent at start-up and on change (Postgres' GUC_REPORT ones), with their values.
REPORTED = {
    "server_version": f"{SERVER_VERSION} (changefold {__version__})",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "session_authorization": "changefold",
    "default_transaction_read_only": "on",
    "in_hot_standby": "off",
    "application_name": "",
}

#: Settings SHOW answers besides the reported ones.
_SHOWN = {
    "transaction_isolation": "repeatable read",
    "default_transaction_isolation": "repeatable read",
    "transaction_read_only": "on",
    "max_identifier_length": "63",
    "search_path": '"$user", public',
    "extra_float_digits": "1",
    "lc_collate": "C",
    "lc_ctype": "C",
    "server_version_num": SERVER_VERSION.replace(".", "0") + "00",
    "statement_timeout": "0",
}

_WORDS = r"(?:\s+[a-z ,]+)?"
_BEGIN = re.compile(rf"(?:begin(?:\s+(?:work|transaction))?|start\s+transaction){_WORDS}", re.I)
_COMMIT = re.compile(r"(?:commit|end)(?:\s+(?:work|transaction))?(?:\s+and\s+no\s+chain)?", re.I)
_ROLLBACK = re.compile(
    r"(?:rollback|abort)(?:\s+(?:work|transaction))?(?:\s+and\s+no\s+chain)?", re.I
)
_SET = re.compile(
    r"set\s+(?:session\s+|local\s+)?(?P<name>[a-z_][\w.]*)\s*(?:=|\s+to\s+)\s*(?P<value>[^;]+)",
    re.I | re.S,
)
_SET_TIME_ZONE = re.compile(r"set\s+(?:session\s+|local\s+)?time\s+zone\s+(?P<value>[^;]+)", re.I)
_SET_TRANSACTION = re.compile(
    rf"set\s+(?:session\s+characteristics\s+as\s+)?transaction{_WORDS}", re.I
)
_RESET = re.compile(r"reset\s+(?P<name>all|[a-z_][\w.]*)", re.I)
_SHOW = re.compile(r"show\s+(?P<name>all|[a-z_][\w.]*|time\s+zone)", re.I)
_VERSION = re.compile(r"select\s+(?:pg_catalog\.)?version\s*\(\s*\)(?:\s+as\s+\w+)?", re.I)
_DISCARD = re.compile(r"discard\s+all", re.I)
_DEALLOCATE = re.compile(r"deallocate\s+(?:prepare\s+)?(?P<name>all|\w+|\"[^\"]+\")", re.I)


@dataclass(frozen=True)
class Local:
    """A statement answered by the endpoint: a command tag, and rows for SHOW/version."""

    tag: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    #: What it does to the session: "begin", "commit", "rollback", "discard",
    #: "deallocate:<name>", or "" (nothing beyond `settings`).
    effect: str = ""
    #: Settings changed (name -> value), reported back to the client.
    changed: dict[str, str] = field(default_factory=dict)
    notice: str = ""


def version_line(duckdb_version: str) -> str:
    return (
        f"PostgreSQL {SERVER_VERSION} (changefold {__version__}, read-only endpoint over "
        f"DuckDB {duckdb_version})"
    )


def local_answer(sql: str, settings: dict[str, str], duckdb_version: str) -> Local | None:
    """The endpoint's own answer to `sql`, or None when the state must answer it.

    `settings` is the session's (SET values over the defaults); it is updated by SET
    and RESET.
    """
    text = _bare(sql)
    if _BEGIN.fullmatch(text):
        return Local("BEGIN", effect="begin")
    if _COMMIT.fullmatch(text):
        return Local("COMMIT", effect="commit")
    if _ROLLBACK.fullmatch(text):
        return Local("ROLLBACK", effect="rollback")
    if _SET_TRANSACTION.fullmatch(text):
        return Local("SET")
    if m := _SET_TIME_ZONE.fullmatch(text):
        return _set(settings, "TimeZone", m["value"])
    if m := _SET.fullmatch(text):
        return _set(settings, m["name"], m["value"])
    if m := _RESET.fullmatch(text):
        return _reset(settings, m["name"])
    if m := _SHOW.fullmatch(text):
        return _show(settings, m["name"])
    if _VERSION.fullmatch(text):
        return Local("SELECT 1", ("version",), ((version_line(duckdb_version),),))
    if _DISCARD.fullmatch(text):
        return Local("DISCARD ALL", effect="discard")
    if m := _DEALLOCATE.fullmatch(text):
        return Local("DEALLOCATE", effect="deallocate:" + m["name"].strip('"'))
    return None


def defaults(application_name: str = "") -> dict[str, str]:
    values = {**REPORTED, **_SHOWN}
    values["application_name"] = application_name
    return values


def _bare(sql: str) -> str:
    """The statement without surrounding blanks, trailing semicolons and `--` comments."""
    lines = [line for line in sql.strip().splitlines() if not line.lstrip().startswith("--")]
    return " ".join(lines).strip().rstrip(";").strip()


def _canonical(settings: dict[str, str], name: str) -> str:
    lowered = name.lower()
    for known in settings:
        if known.lower() == lowered:
            return known
    return "TimeZone" if lowered == "time zone" else lowered


def set_value(settings: dict[str, str], name: str, value: str) -> dict[str, str]:
    """Set one setting as a start-up parameter does; the reported ones it changed."""
    return _set(settings, name, value, quoted=False).changed


def _set(settings: dict[str, str], name: str, value: str, *, quoted: bool = True) -> Local:
    name = _canonical(settings, name)
    value = _unquote(value.strip()) if quoted else value
    if name == "client_encoding" and value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
        raise QueryError(
            "invalid", f"client_encoding {value!r} is not supported: this endpoint speaks UTF8"
        )
    if name == "client_encoding":
        value = "UTF8"
    settings[name] = value
    return Local("SET", changed={name: value} if name in REPORTED else {})


def _reset(settings: dict[str, str], name: str) -> Local:
    start = defaults(settings.get("application_name", ""))
    if name.lower() == "all":
        changed = {k: v for k, v in start.items() if k in REPORTED and settings.get(k) != v}
        settings.clear()
        settings.update(start)
        return Local("RESET", changed=changed)
    name = _canonical(settings, name)
    if name in start:
        settings[name] = start[name]
    else:
        settings.pop(name, None)
    return Local("RESET", changed={name: start[name]} if name in REPORTED else {})


def _show(settings: dict[str, str], name: str) -> Local | None:
    if name.lower() == "all":
        rows = tuple((k, v) for k, v in sorted(settings.items(), key=lambda i: i[0].lower()))
        return Local("SHOW", ("name", "setting"), rows)
    key = _canonical(settings, name)
    if key not in settings:
        return None  # DuckDB's SHOW <table>, SHOW TABLES, ...
    return Local("SHOW", (key.lower(),), ((settings[key],),))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace(value[0] * 2, value[0])
    return value
