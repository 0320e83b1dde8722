"""The reader's side of the frontier: which source position an answer is consistent as of.

The engine records, per consumer group, the last source (Postgres) transaction it
applied whole in `_changefold.frontier` (engine/state/transactions.py). A reader
reads that row with the cursor of its query, inside the same read-only DuckDB
transaction, so the frontier and the rows come from one snapshot: the rows are
exactly the state as of that transaction's commit.

With transaction ordering off the engine applies every event as it comes: there
is no transaction boundary to name, and an answer says so instead
(`consistent_as_of: null`, "per-event visibility (transaction ordering off)").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import duckdb

from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = "frontier"
_COLUMNS = "group_id, xid, lsn, commit_ts_ms, transactions, batch_id, updated_at"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: Why an answer has no frontier.
ORDERING_OFF = "per-event visibility (transaction ordering off)"
NOTHING_APPLIED = (
    "per-event visibility (transaction ordering on, no source transaction applied yet)"
)
UNKNOWN = (
    "per-event visibility (no frontier in this state: transaction ordering off, "
    "or no source transaction applied yet)"
)
NO_TABLE = "per-event visibility (this state has no frontier table)"


@dataclass(frozen=True)
class Scope:
    """Whose frontier a reader reads.

    `group_id`: the engine's consumer group; None when it is not known (a replay's
    or a copied state file): then the most recently updated frontier. `ordering`:
    the engine's transaction ordering ("on"/"off"), None when not known.
    """

    group_id: str | None = None
    ordering: str | None = None


@dataclass(frozen=True)
class AsOf:
    """One frontier row: the last source transaction applied for a group."""

    group_id: str
    xid: str
    lsn: int
    commit_ts_ms: int
    transactions: int
    batch_id: int
    applied_at: dt.datetime | None = None

    @property
    def lsn_text(self) -> str:
        return lsn_text(self.lsn)

    @property
    def commit_time(self) -> dt.datetime:
        return ms_to_utc(self.commit_ts_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "xid": self.xid,
            "lsn": self.lsn,
            "lsn_text": self.lsn_text,
            "commit_time": self.commit_time.isoformat(timespec="milliseconds"),
            "commit_ts_ms": self.commit_ts_ms,
            "transactions": self.transactions,
            "batch_id": self.batch_id,
            "applied_at": None if self.applied_at is None else self.applied_at.isoformat(),
        }


@dataclass(frozen=True)
class Consistency:
    """What an answer is consistent as of: a frontier, or why there is none."""

    as_of: AsOf | None
    #: Set when `as_of` is None: one of ORDERING_OFF, NOTHING_APPLIED, UNKNOWN, NO_TABLE.
    reason: str | None = None

    @property
    def line(self) -> str:
        return describe(self)

    def to_json(self) -> dict[str, Any]:
        """The fields an answer carries: `consistent_as_of` (null without a frontier)
        and `consistency`, the human line."""
        return {
            "consistent_as_of": None if self.as_of is None else self.as_of.to_json(),
            "consistency": self.line,
        }


def read(cur: duckdb.DuckDBPyConnection, scope: Scope) -> Consistency:
    """The frontier of `scope`, read through `cur` (in the caller's transaction).

    Never raises for a state without the table and never runs a failing statement
    (which would abort the caller's read transaction)."""
    if scope.ordering == "off":
        return Consistency(None, ORDERING_OFF)
    present = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
        [INTERNAL_SCHEMA, _TABLE],
    ).fetchall()
    if not present or not present[0][0]:
        return Consistency(None, NO_TABLE)
    table = f"{INTERNAL_SCHEMA}.{_TABLE}"
    if scope.group_id is None:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM {table} ORDER BY updated_at DESC, group_id LIMIT 1"
        ).fetchall()
    else:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM {table} WHERE group_id = ?", [scope.group_id]
        ).fetchall()
    if not rows:
        return Consistency(None, NOTHING_APPLIED if scope.ordering == "on" else UNKNOWN)
    g, xid, lsn, ts, n, batch, updated = rows[0]
    applied = updated if isinstance(updated, dt.datetime) else None
    if applied is not None and applied.tzinfo is not None:
        applied = applied.astimezone(dt.UTC)
    return Consistency(AsOf(str(g), str(xid), int(lsn), int(ts), int(n), int(batch), applied))


# -- pure formatting ------------------------------------------------------------------


def lsn_text(lsn: int) -> str:
    """A Postgres LSN as Postgres writes it: high and low 32 bits in hex, `0/1A2B3C8`."""
    lsn &= 0xFFFF_FFFF_FFFF_FFFF
    return f"{lsn >> 32:X}/{lsn & 0xFFFF_FFFF:X}"


def ms_to_utc(ms: int) -> dt.datetime:
    """Epoch milliseconds as an aware UTC datetime (exact, no float)."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def describe(consistency: Consistency) -> str:
    """The human line: `consistent as of 2026-12-02 15:04:05.123 UTC (LSN 0/1A2B3C8,
    transaction 877)`, or why there is no frontier."""
    a = consistency.as_of
    if a is None:
        return consistency.reason or UNKNOWN
    t = a.commit_time
    when = f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d} UTC"
    return f"consistent as of {when} (LSN {a.lsn_text}, transaction {a.xid})"
