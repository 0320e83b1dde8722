"""Hand-built batches for tests: edit mirror tables row by row, get the MirrorDeltas.

    edit = HandBatch(con)
    edit.insert("arcade.scores", score_id=1, player_id=7, points=100, achieved_at=t)
    edit.update("arcade.scores", 1, points=80, corrected=True)
    edit.delete("arcade.players", 9)
    changes = edit.apply()     # mirror updated; before/after rows of the touched keys

Like the engine's fold, several changes of one key in a batch collapse: `before`
is the row before the batch, `after` the row after it. Values are bound
parameters; table and column names go through the quoting helper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from engine.lab.views.planfeed import KEYS, mirror_name
from engine.state.deltas import MirrorDelta
from engine.views.sqlfiles import quote, quote_table


@dataclass
class HandBatch:
    con: duckdb.DuckDBPyConnection
    _ops: list[tuple[str, str, object, dict[str, Any]]] = field(default_factory=list)

    def insert(self, table: str, **row: Any) -> HandBatch:
        self._ops.append(("insert", table, row[KEYS[table]], row))
        return self

    def update(self, table: str, key: object, **values: Any) -> HandBatch:
        self._ops.append(("update", table, key, values))
        return self

    def delete(self, table: str, key: object) -> HandBatch:
        self._ops.append(("delete", table, key, {}))
        return self

    def apply(self) -> dict[str, MirrorDelta]:
        """Apply the edits (in the caller's transaction, if any) and return the changes."""
        keys: dict[str, list[object]] = {}
        for _, table, key, _ in self._ops:
            keys.setdefault(table, []).append(key)
        before = {t: rows_of(self.con, t, ks) for t, ks in keys.items()}
        for op, table, key, values in self._ops:
            target, key_col = quote_table(table), quote(KEYS[table])
            if op == "insert":
                cols = ", ".join(quote(c) for c in values)
                marks = ", ".join("?" for _ in values)
                self.con.execute(
                    f"INSERT INTO {target} ({cols}) VALUES ({marks})", list(values.values())
                )
            elif op == "update":
                sets = ", ".join(f"{quote(c)} = ?" for c in values)
                self.con.execute(
                    f"UPDATE {target} SET {sets} WHERE {key_col} = ?", [*values.values(), key]
                )
            else:
                self.con.execute(f"DELETE FROM {target} WHERE {key_col} = ?", [key])
        self._ops.clear()
        return {
            t: MirrorDelta(mirror_name(t), before[t], rows_of(self.con, t, ks))
            for t, ks in keys.items()
        }


def rows_of(con: duckdb.DuckDBPyConnection, table: str, keys: list[object]) -> pl.DataFrame:
    """The mirror rows of `keys`, ordered by key."""
    key = quote(KEYS[table])
    return con.sql(
        f"SELECT * FROM {quote_table(table)} WHERE {key} IN (SELECT unnest($keys)) ORDER BY {key}",
        params={"keys": list(dict.fromkeys(keys))},
    ).pl()
