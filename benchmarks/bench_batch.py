"""The fixed cost of a small batch at the live tail: decode + fold + views + commit.

A bank (fraud included) and an arcade history from the workload planners is turned
into the Debezium envelopes the demo connectors write (JsonConverter with embedded
schemas, `decimal.handling.mode=precise`, REPLICA IDENTITY FULL before-rows,
tombstones, transaction metadata on `<prefix>.transaction`), folded into a fresh
state file in large batches (the warm-up history, not timed), and then the live
tail is folded in batches of about --batch records (100: a second of the demo's
traffic at low rate), exactly as `changefold run` folds them: the fold step
(`CheckpointedStep`: whole source transactions planned, decode, fold into the
mirrors, the derived views, offsets, metrics, one DuckDB commit) with the views
observer attached by the same wiring as `run`.

    .venv/bin/python benchmarks/bench_batch.py [--history 20000] [--tail 3000]
        [--batch 100] [--population 500] [--rounds 3] [--transactions on|off]
        [--checkout DIR ...]

Prints, per round and over all rounds, the CPU milliseconds per batch (decode + fold +
views + commit; the CPU of the process, DuckDB's threads included, steadier than wall
time on a shared machine), the wall milliseconds, the writer's `fold_ms` (mirrors,
views, transactions, offsets, metrics: the DuckDB transaction but its commit) and the
views pass alone (the observer's `MaintainStats.ms`). Each round runs the fold once per
`--checkout DIR` (default: this checkout; give two, e.g. `git worktree`s of the commits
before and after a change), in turn, each in a child process (`PYTHONPATH=DIR`), so
all see the same machine state; the summary gives each checkout's median and the ratio
to the first. No servers are involved.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import heapq
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from engine.core.config import Settings
from engine.decode.records import RawRecord
from engine.ingest.source import Polled
from engine.ingest.step import CheckpointedStep, Folded
from engine.lab.synthetic import SourceTransactions
from engine.lab.views.planfeed import KEYS, _compiled
from engine.lab.views.simulate import take_events
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.plan import PgTxn, PlanConfig
from engine.state.store import Store
from engine.state.transactions import TxnRules
from engine.state.writer import StateWriter
from engine.views.maintainer import ViewMaintainer
from engine.views.observer import ViewsObserver

RESULT = "RESULT "
ROOT = Path(__file__).resolve().parents[1]


# -- envelopes ------------------------------------------------------------------------


def _connect_field(name: str, duck_type: str, optional: bool) -> dict[str, Any]:
    """The JsonConverter schema of a column the demo connectors capture."""
    out: dict[str, Any]
    if duck_type.startswith("DECIMAL"):
        precision, scale = duck_type[len("DECIMAL(") : -1].split(",")
        out = {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": scale.strip(), "connect.decimal.precision": precision},
        }
    elif duck_type.endswith("[]"):
        out = {"type": "array", "items": {"type": "string", "optional": True}}
    else:
        simple = {
            "BIGINT": ("int64", None),
            "INTEGER": ("int32", None),
            "VARCHAR": ("string", None),
            "BOOLEAN": ("boolean", None),
            "DATE": ("int32", "io.debezium.time.Date"),
            "TIMESTAMP WITH TIME ZONE": ("string", "io.debezium.time.ZonedTimestamp"),
            "UUID": ("string", "io.debezium.data.Uuid"),
            "JSON": ("string", "io.debezium.data.Json"),
        }
        ctype, logical = simple[duck_type]
        out = {"type": ctype}
        if logical:
            out["name"] = logical
            out["version"] = 1
    return {**out, "optional": optional, "field": name}


def _json_value(value: object, duck_type: str) -> object:
    if value is None:
        return None
    if duck_type.startswith("DECIMAL"):
        scale = int(duck_type[len("DECIMAL(") : -1].split(",")[1])
        unscaled = int(Decimal(str(value)).scaleb(scale))
        size = (unscaled.bit_length() + 8) // 8
        return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return (value - dt.date(1970, 1, 1)).days
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return value


class Envelopes:
    """Turns planned transactions into the Kafka records of the demo connectors."""

    def __init__(self, types: dict[str, list[tuple[str, str]]]) -> None:
        self.types = types
        self.rows: dict[str, dict[object, dict[str, Any]]] = {t: {} for t in types}
        self.offsets: dict[str, int] = {}
        self.logs = {p: SourceTransactions(p, ts_ms=0) for p in ("bank", "arcade")}
        #: Both connectors read one Postgres: one xid and one LSN space.
        self.xid = 1000
        self.lsn = 30_000_000
        self._heads: dict[str, tuple[str, str]] = {}

    def _topic(self, table: str) -> str:
        schema, _, name = table.partition(".")
        return f"{schema}.{schema}.{name}"

    def _record(self, topic: str, key: bytes, value: bytes | None) -> RawRecord:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return RawRecord(topic, 0, offset, key, value)

    def _head(self, table: str) -> tuple[str, str]:
        if table not in self._heads:
            topic = self._topic(table)
            key = KEYS[table]
            row = {
                "type": "struct",
                "optional": True,
                "name": f"{topic}.Value",
                "fields": [_connect_field(c, t, c != key) for c, t in self.types[table]],
            }
            source = {
                "type": "struct",
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "fields": [
                    {"type": "string", "optional": False, "field": "version"},
                    {"type": "string", "optional": False, "field": "connector"},
                    {"type": "string", "optional": False, "field": "name"},
                    {"type": "int64", "optional": False, "field": "ts_ms"},
                    {"type": "string", "optional": False, "field": "db"},
                    {"type": "string", "optional": False, "field": "schema"},
                    {"type": "string", "optional": False, "field": "table"},
                    {"type": "int64", "optional": True, "field": "txId"},
                    {"type": "int64", "optional": True, "field": "lsn"},
                ],
                "field": "source",
            }
            block = {
                "type": "struct",
                "optional": True,
                "name": "event.block",
                "fields": [
                    {"type": "string", "optional": False, "field": "id"},
                    {"type": "int64", "optional": False, "field": "total_order"},
                    {"type": "int64", "optional": False, "field": "data_collection_order"},
                ],
                "field": "transaction",
            }
            envelope = {
                "type": "struct",
                "optional": False,
                "name": f"{topic}.Envelope",
                "fields": [
                    {**row, "field": "before"},
                    {**row, "field": "after"},
                    source,
                    block,
                    {"type": "string", "optional": False, "field": "op"},
                    {"type": "int64", "optional": True, "field": "ts_ms"},
                ],
            }
            key_type = dict(self.types[table])[key]
            key_schema = {
                "type": "struct",
                "optional": False,
                "name": f"{topic}.Key",
                "fields": [_connect_field(key, key_type, False)],
            }
            self._heads[table] = (json.dumps(key_schema), json.dumps(envelope))
        return self._heads[table]

    def _row(self, table: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {c: _json_value(row.get(c), t) for c, t in self.types[table]}

    def records(self, txn: PgTxn) -> list[RawRecord]:
        """The data events of one source transaction, then its END (and its BEGIN first)."""
        captured = [s for s in txn.statements if s.captured]
        if not captured:
            return []
        prefix = captured[0].table.split(".", 1)[0]
        log = self.logs[prefix]
        log._next_xid, log.lsn, log.ts_ms = self.xid, self.lsn, txn.at_us // 1000
        source_txn = log.begin()
        out: list[RawRecord] = []
        begin_at = len(out)
        for s in captured:
            rows = self.rows[s.table]
            key = str(s.key) if isinstance(s.key, uuid.UUID) else s.key
            before = rows.get(key)
            after = _compiled(s.sql)(before, s.params)
            if before is None and after is None:
                continue  # an UPDATE of a row that is not there: no event
            if after is None:
                rows.pop(key, None)
                op = "d"
            else:
                rows[key] = after
                op = "c" if before is None else "u"
            log.lsn += 120
            ts_ms = txn.at_us // 1000
            key_schema, value_schema = self._head(s.table)
            schema, _, table = s.table.partition(".")
            key_col = KEYS[s.table]
            key_value = _json_value(s.key, dict(self.types[s.table])[key_col])
            key_payload = json.dumps({key_col: key_value})
            key_bytes = f'{{"schema":{key_schema},"payload":{key_payload}}}'.encode()
            payload = {
                "before": self._row(s.table, before),
                "after": self._row(s.table, after),
                "source": {
                    "version": "3.0.0.Final",
                    "connector": "postgresql",
                    "name": prefix,
                    "ts_ms": ts_ms,
                    "db": "changefold",
                    "schema": schema,
                    "table": table,
                    "txId": source_txn.xid,
                    "lsn": log.lsn,
                },
                "transaction": json.loads(source_txn.block(s.table, log.lsn, ts_ms)),
                "op": op,
                "ts_ms": ts_ms + 5,
            }
            value = f'{{"schema":{value_schema},"payload":{json.dumps(payload)}}}'.encode()
            topic = self._topic(s.table)
            out.append(self._record(topic, key_bytes, value))
            if op == "d":
                out.append(self._record(topic, key_bytes, None))
        if not source_txn.total:
            return []
        marker = source_txn.begin()
        out.insert(begin_at, self._record(log.topic, marker.key, marker.value))
        end = source_txn.end()
        out.append(self._record(log.topic, end.key, end.value))
        self.xid, self.lsn = log._next_xid, log.lsn
        return out


def mirror_types(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    con = duckdb.connect(":memory:")
    ViewMaintainer(settings.views_sql_dir, settings.views.params()).create_mirror_tables(con)
    out: dict[str, list[tuple[str, str]]] = {}
    for table in KEYS:
        schema, _, name = table.partition(".")
        out[table] = [
            (str(c), str(t))
            for c, t in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema, name],
            ).fetchall()
        ]
    con.close()
    return out


def history(events: int, population: int, seed: int) -> Iterator[PgTxn]:
    """Bank (with fraud) and arcade transactions merged by commit time, as both
    generators of the demo write them at once: the first `events` captured row changes
    after the setups."""
    bank = BankPlanner(PlanConfig(seed=seed, population=population, fraud_rate=0.05))
    arcade = ArcadePlanner(PlanConfig(seed=seed + 1, population=population))
    yield from itertools.chain(bank.setup(), arcade.setup())
    merged = heapq.merge(bank.stream(), arcade.stream(), key=lambda t: t.at_us)
    yield from take_events(merged, events)


def cut(records: Sequence[RawRecord], size: int) -> list[list[RawRecord]]:
    return [list(records[i : i + size]) for i in range(0, len(records), size)]


# -- one run --------------------------------------------------------------------------


def run_once(args: argparse.Namespace) -> dict[str, float]:
    settings = Settings()
    envelopes = Envelopes(mirror_types(settings))
    records: list[RawRecord] = []
    for txn in history(args.history + args.tail, args.population, args.seed):
        records.extend(envelopes.records(txn))
    data = sum(1 for r in records if r.topic.count(".") == 2)
    warm_until = int(len(records) * args.history / (args.history + args.tail))
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        store = Store(Path(tmp) / "state.duckdb")
        store.migrate(ROOT / "sql" / "state")
        rules = TxnRules(frozenset({"bank", "arcade"})) if args.transactions == "on" else None
        writer = StateWriter(store, "bench", transactions=rules)
        maintainer = ViewMaintainer(settings.views_sql_dir, settings.views.params())
        with store.lock:
            maintainer.install(store.connection)
        observer = ViewsObserver(maintainer)
        writer.add_observer(observer)
        step = CheckpointedStep(writer, "bench")
        for batch in cut(records[:warm_until], 5000):
            step.fold(Polled(batch))
        cpu: list[float] = []
        wall: list[float] = []
        views: list[float] = []
        folds: list[float] = []
        sizes: list[int] = []
        for batch in cut(records[warm_until:], args.batch):
            observer.last = None
            c0, w0 = time.process_time(), time.perf_counter()
            outcome = step.fold(Polled(batch))
            cpu.append((time.process_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            views.append(observer.last.ms if observer.last is not None else 0.0)
            folds.append(outcome.result.fold_ms if isinstance(outcome, Folded) else 0.0)
            sizes.append(len(batch))
        alerts = store.connection.execute("SELECT count(*) FROM live.fraud_alerts").fetchall()
        store.close()
    return {
        "records": float(len(records)),
        "data_events": float(data),
        "batches": float(len(cpu)),
        "batch_records": statistics.mean(sizes),
        "cpu_ms": statistics.median(cpu),
        "cpu_ms_mean": statistics.mean(cpu),
        "wall_ms": statistics.median(wall),
        "views_ms": statistics.median(views),
        "fold_ms": statistics.median(folds),
        "alerts": float(alerts[0][0]),
    }


# -- rounds ---------------------------------------------------------------------------


def child(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--once",
        *("--history", str(args.history), "--tail", str(args.tail)),
        *("--batch", str(args.batch), "--population", str(args.population)),
        *("--seed", str(args.seed), "--transactions", args.transactions),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "CHANGEFOLD_PROJECT_DIR": str(checkout),
    }
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(RESULT))
    return json.loads(line[len(RESULT) :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=20_000, help="events folded first")
    parser.add_argument("--tail", type=int, default=3_000, help="events folded in small batches")
    parser.add_argument("--batch", type=int, default=100, help="records per tail batch")
    parser.add_argument("--population", type=int, default=500)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--transactions",
        choices=("on", "off"),
        default="on",
        help="whole source transactions (CHANGEFOLD_TRANSACTIONS; default on, as in the demo)",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=[],
        help="a checkout of the repository to run in every round (repeatable; default: this one)",
    )
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(RESULT + json.dumps(run_once(args)), flush=True)
        return 0
    checkouts = [c.resolve() for c in args.checkout] or [ROOT]
    print(
        f"batches of ~{args.batch} records at the live tail of a {args.history:,}-event bank+"
        f"arcade history (population {args.population}, whole transactions "
        f"{args.transactions}), {args.rounds} interleaved round(s); "
        "per batch, median: decode + fold + views + commit (process CPU ms, wall ms), "
        "the writer's fold_ms and the views pass (ms)",
        flush=True,
    )
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    for round_no in range(1, args.rounds + 1):
        for checkout in checkouts:
            r = child(checkout, args)
            results[checkout].append(r)
            print(
                f"  round {round_no} {checkout}: {r['cpu_ms']:6.1f} CPU ms  "
                f"{r['wall_ms']:6.1f} wall ms  fold {r['fold_ms']:6.1f} ms  views "
                f"{r['views_ms']:6.1f} ms  ({r['batches']:.0f} batches of "
                f"{r['batch_records']:.0f} records, {r['alerts']:.0f} alerts)",
                flush=True,
            )
    print("summary (median over rounds of the per-batch medians):")
    first = None
    for checkout in checkouts:
        cpu = statistics.median(r["cpu_ms"] for r in results[checkout])
        wall = statistics.median(r["wall_ms"] for r in results[checkout])
        views = statistics.median(r["views_ms"] for r in results[checkout])
        first = first or (cpu, views)
        print(
            f"  {checkout}: {cpu:6.1f} CPU ms per batch, {wall:6.1f} wall ms, views pass "
            f"{views:6.1f} ms  (CPU x{cpu / first[0]:.2f}, views x{views / first[1]:.2f} "
            "of the first)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
