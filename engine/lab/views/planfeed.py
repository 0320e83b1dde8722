"""Feed a workload plan straight into DuckDB mirror tables, batch by batch (no Kafka).

Tests and benchmarks of the views need realistic batches without a running
stack: the generator's pure planner (engine.lab.workload) yields Postgres
transactions of one-row statements with bound parameters. `PlanFeed` applies
them to mirror-shaped DuckDB tables the way the engine's fold does (per batch:
the changed keys' rows are read, the batch's changes are collapsed per key, then
written with one DELETE and one INSERT per table) and returns the `MirrorDelta`s
the fold would hand to the view maintainer.

The statements are interpreted in Python (the generator's SQL has three simple
shapes: INSERT of listed columns, UPDATE ... SET col = value | col = col + value
WHERE key = ?, DELETE ... WHERE key = ?); running each one through DuckDB would
take a millisecond apiece. Statements on tables that are not captured (the fraud
ground truth) are skipped, as the connector skips them.
"""

from __future__ import annotations

import json
import random
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import duckdb
import polars as pl

from engine.core.errors import ViewError
from engine.decode.model import MirrorName
from engine.lab.workload.plan import PgTxn, Statement
from engine.state.deltas import MirrorDelta
from engine.views.sqlfiles import quote, quote_table

#: Primary key column of each captured table of the demo domains.
KEYS: Mapping[str, str] = {
    "bank.customers": "customer_id",
    "bank.accounts": "account_id",
    "bank.merchants": "merchant_id",
    "bank.devices": "device_id",
    "bank.transactions": "txn_id",
    "arcade.players": "player_id",
    "arcade.matches": "match_id",
    "arcade.scores": "score_id",
}

Row = dict[str, Any]


def mirror_name(table: str) -> MirrorName:
    """`bank.transactions` -> MirrorName("bank", "transactions")."""
    schema, _, name = table.partition(".")
    return MirrorName(schema, name)


#: (row before the statement or None, the statement's parameters) -> row after or None.
Apply = Callable[[Row | None, tuple[object, ...]], Row | None]

_INSERT = re.compile(r"INSERT INTO (\w+\.\w+) \(([^)]*)\) VALUES \((.*)\)", re.S)
_UPDATE = re.compile(r"UPDATE (\w+\.\w+) SET (.*) WHERE (\w+) = %s", re.S)
_DELETE = re.compile(r"DELETE FROM (\w+\.\w+) WHERE (\w+) = %s")
_PARAM = re.compile(r"%s(::[\w\[\]]+)?")
_ADD = re.compile(r"(\w+) \+ (%s|\d+)")


@dataclass(frozen=True)
class FedBatch:
    changes: dict[str, MirrorDelta]
    #: Captured row changes in the batch.
    events: int
    #: Simulated time of the batch's last Postgres transaction (microseconds).
    last_us: int


class PlanFeed:
    """Applies planned transactions to mirror tables and reports each batch's changes."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._columns: dict[str, list[str]] = {}

    def apply(self, txns: Iterable[PgTxn]) -> FedBatch:
        """Apply the captured statements of `txns` (one batch) inside the caller's
        transaction; returns the before/after rows of every changed key."""
        txns = list(txns)
        statements = [s for t in txns for s in t.statements if s.captured]
        keys: dict[str, list[object]] = {}
        for s in statements:
            keys.setdefault(s.table, []).append(s.key)
        before = {table: self._rows(table, ks) for table, ks in keys.items()}
        current = {
            table: {_key(row[KEYS[table]]): row for row in frame.to_dicts()}
            for table, frame in before.items()
        }
        for s in statements:
            rows, key = current[s.table], _key(s.key)
            new = _compiled(s.sql)(rows.get(key), s.params)
            if new is None:
                rows.pop(key, None)
            else:
                rows[key] = new
        changes: dict[str, MirrorDelta] = {}
        for table, ks in keys.items():
            self._write(table, list(dict.fromkeys(ks)), list(current[table].values()))
            changes[table] = MirrorDelta(mirror_name(table), before[table], self._rows(table, ks))
        last_us = max((t.at_us for t in txns), default=0)
        return FedBatch(changes, len(statements), last_us)

    def _columns_of(self, table: str) -> list[str]:
        if table not in self._columns:
            rel = self.con.sql(f"SELECT * FROM {quote_table(table)} LIMIT 0")
            self._columns[table] = list(rel.columns)
        return self._columns[table]

    def _rows(self, table: str, keys: list[object]) -> pl.DataFrame:
        key = KEYS[table]
        rel = self.con.sql(
            f"SELECT * FROM {quote_table(table)} WHERE {quote(key)} IN (SELECT unnest($keys)) "
            f"ORDER BY {quote(key)}",
            params={"keys": list(dict.fromkeys(keys))},
        )
        return rel.pl()

    def _write(self, table: str, keys: list[object], rows: list[Row]) -> None:
        key, target = KEYS[table], quote_table(table)
        self.con.execute(
            f"DELETE FROM {target} WHERE {quote(key)} IN (SELECT unnest($keys))", {"keys": keys}
        )
        if not rows:
            return
        columns = self._columns_of(table)
        frame = pl.DataFrame({c: pl.Series(c, _column([r.get(c) for r in rows])) for c in columns})
        types = dict(
            self.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                list(table.split(".", 1)),
            ).fetchall()
        )
        select = ", ".join(f"CAST({quote(c)} AS {types[c]})" for c in columns)
        self.con.register("__planfeed_rows", frame.to_arrow())
        try:
            self.con.execute(f"INSERT INTO {target} SELECT {select} FROM __planfeed_rows")
        finally:
            self.con.unregister("__planfeed_rows")


def _key(value: object) -> object:
    return str(value) if isinstance(value, uuid.UUID) else value


def _column(values: list[object]) -> list[object]:
    """One column's values for polars: an integer literal (`balance` 0 of a new account)
    next to the decimals of updated rows becomes a decimal too."""
    plain = [_plain(v) for v in values]
    if any(isinstance(v, Decimal) for v in plain):
        return [Decimal(v) if isinstance(v, int) else v for v in plain]
    return plain


def _plain(value: object) -> object:
    """Python values polars can hold; DuckDB casts them back to the column type."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


@cache
def _compiled(sql: str) -> Apply:
    text = " ".join(sql.split())
    if m := _INSERT.fullmatch(text):
        return _insert([c.strip() for c in m[2].split(",")], _items(m[3]))
    if m := _UPDATE.fullmatch(text):
        assigns = [a.split(" = ", 1) for a in _items(m[2])]
        return _update([(c.strip(), e.strip()) for c, e in assigns])
    if _DELETE.fullmatch(text):
        return lambda row, params: None
    raise ViewError(f"the plan feed cannot interpret this generator statement: {text}")


def _items(text: str) -> list[str]:
    return [i.strip() for i in text.split(",")]


def _literal(text: str) -> object:
    lowered = text.lower()
    if lowered == "null":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    raise ViewError(f"the plan feed cannot interpret the SQL value {text!r}")


def _insert(columns: list[str], values: list[str]) -> Apply:
    def apply(row: Row | None, params: tuple[object, ...]) -> Row:
        it = iter(params)
        new: Row = {}
        for col, value in zip(columns, values, strict=True):
            new[col] = next(it) if _PARAM.fullmatch(value) else _literal(value)
        return new

    return apply


def _update(assigns: list[tuple[str, str]]) -> Apply:
    def apply(row: Row | None, params: tuple[object, ...]) -> Row | None:
        it: Iterator[object] = iter(params)
        if row is None:  # the key does not exist: an UPDATE changes nothing
            return None
        new = dict(row)
        for col, expr in assigns:
            if _PARAM.fullmatch(expr):
                new[col] = next(it)
            elif m := _ADD.fullmatch(expr):
                delta = next(it) if m[2] == "%s" else int(m[2])
                new[col] = row[m[1]] + delta
            else:
                new[col] = _literal(expr)
        return new

    return apply


def duckdb_sql(statement: Statement) -> str:
    """The generator's Postgres statement in DuckDB's spelling (to check the feed)."""
    return statement.sql.replace("%s", "?").replace("::jsonb", "::JSON")


def batches(txns: Iterable[PgTxn], events_per_batch: int) -> Iterator[list[PgTxn]]:
    """Group transactions into batches of about `events_per_batch` captured row changes.

    A Postgres transaction is never split here (the real engine may split one
    across batches; the conservation check counts those cuts)."""
    batch: list[PgTxn] = []
    n = 0
    for t in txns:
        batch.append(t)
        n += t.events
        if n >= events_per_batch:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch


def partitioned_batches(
    txns: Iterable[PgTxn], events_per_batch: int, partitions: int, seed: int
) -> Iterator[list[PgTxn]]:
    """Batches as a consumer of partitioned topics sees them: each captured row change
    goes to partition hash(key) of its table's topic, and a batch takes a prefix of
    every (topic, partition) lane whose length varies at random around its share.

    Changes of one key stay in order; changes of different keys (the insert of one
    transaction and the insert of the next, the account row and its transactions) can
    arrive in either order and in different batches, as they do from Kafka. Each
    change is handed on as a one-statement `PgTxn` with its transaction's time."""
    lanes: dict[tuple[str, int], list[PgTxn]] = {}
    for t in txns:
        for s in t.statements:
            if s.captured:
                partition = zlib.crc32(str(_key(s.key)).encode()) % partitions
                lanes.setdefault((s.table, partition), []).append(PgTxn(t.label, t.at_us, (s,)))
    total = sum(len(changes) for changes in lanes.values())
    rng = random.Random(seed)
    cursors = dict.fromkeys(lanes, 0)
    while any(cursors[name] < len(lane) for name, lane in lanes.items()):
        batch: list[PgTxn] = []
        for name, lane in lanes.items():
            share = events_per_batch * len(lane) / total
            take = max(1, round(share * rng.uniform(0.2, 1.8)))
            batch.extend(lane[cursors[name] : cursors[name] + take])
            cursors[name] = min(len(lane), cursors[name] + take)
        yield batch


def transaction_batches(
    txns: Iterable[PgTxn], records_per_batch: int, partitions: int = 1, seed: int = 0
) -> Iterator[list[PgTxn]]:
    """Batches as the engine folds them with whole source transactions on: each poll
    reads up to `records_per_batch` captured row changes, and a batch applies the
    transactions that are whole by then, in commit order (engine.state.transactions).

    With `partitions` 1 the changes are read in commit order; with more, each change
    goes to partition hash(key) of its table's topic and a poll reads chunks of random
    lanes (each lane in order), so transactions complete in a different pattern. A
    poll that completes no transaction gives no batch."""
    txns = list(txns)
    lanes: dict[tuple[str, int], list[int]] = {}
    missing: list[int] = []
    for i, t in enumerate(txns):
        captured = [s for s in t.statements if s.captured]
        missing.append(len(captured))
        for s in captured:
            lane = ("all", 0) if partitions <= 1 else (s.table, _partition(s.key, partitions))
            lanes.setdefault(lane, []).append(i)
    rng = random.Random(seed)
    cursors = dict.fromkeys(lanes, 0)
    applied = 0
    while applied < len(txns):
        budget = records_per_batch
        while budget > 0:
            open_lanes = [name for name, lane in lanes.items() if cursors[name] < len(lane)]
            if not open_lanes:
                break
            name = open_lanes[0] if partitions <= 1 else rng.choice(open_lanes)
            take = budget if partitions <= 1 else min(budget, rng.randint(1, records_per_batch))
            for i in lanes[name][cursors[name] : cursors[name] + take]:
                missing[i] -= 1
            moved = min(take, len(lanes[name]) - cursors[name])
            cursors[name] += moved
            budget -= moved
        batch: list[PgTxn] = []
        while applied < len(txns) and missing[applied] == 0:
            batch.append(txns[applied])
            applied += 1
        if batch:
            yield batch


def _partition(key: object, partitions: int) -> int:
    return zlib.crc32(str(_key(key)).encode()) % partitions
