"""The fixed cost of a small batch at the live tail: decode + fold + views + commit.

A bank (fraud included) and an arcade history from the workload planners is turned
into the Debezium envelopes the demo connectors write (JsonConverter with embedded
schemas, `decimal.handling.mode=precise`, REPLICA IDENTITY FULL before-rows,
tombstones, transaction metadata on `<prefix>.transaction`), folded into a fresh
state file in large batches (the warm-up history, not timed), and then the live
tail is folded in timed batches (`--tail 100:40,1000:8`: 40 batches of 100 records,
then 8 of 1,000; 100 is about a second of the demo's traffic at low rate), exactly as
`changefold run` folds them: the fold step (`CheckpointedStep`: whole source
transactions planned, decode, fold into the mirrors, the derived views, offsets,
metrics, one DuckDB commit) with the views attached by `wiring.attach_views`.

    .venv/bin/python benchmarks/bench_batch.py [--history 50000] [--tail 100:40,1000:8]
        [--population 2000] [--rounds 2] [--transactions on|off] [--profile]
        [--checkout DIR ...]

Prints per batch size, over all rounds, wall and CPU ms per batch (p50 / p90 / max; CPU
is the process's, DuckDB's threads included, steadier than wall time on a shared
machine) split into decode, mirrors (`apply_changes`, the before/after capture
included), views (the observer), commit (the DuckDB COMMIT) and other (transaction
plan, offsets, metrics), the SQL statements per phase (the store's connection is
wrapped to count them), each view's ms when it ran, and whether the mirrors and `live`
tables came out identical in every run. `--profile` adds the costliest statements and
Python steps (CPU ms per batch). Each round runs once per `--checkout DIR` (default:
this checkout; give two `git worktree`s of the commits before and after a change), in
turn, each in a child process (`PYTHONPATH=DIR`), so all see the same machine state. No
servers are involved.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import heapq
import importlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from engine.app.wiring import attach_views
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
from engine.state import writer as writer_module
from engine.state.store import Store
from engine.state.transactions import TxnRules
from engine.state.writer import StateWriter
from engine.views.maintainer import ViewMaintainer

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


# -- measuring ------------------------------------------------------------------------

PHASES = ("decode", "mirrors", "views", "commit", "other")


class Meter:
    """Wall and CPU ms and SQL statements per phase of the batch being folded."""

    def __init__(self) -> None:
        self.phase = "other"
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.statements: dict[str, int] = {}
        #: With --profile: CPU ms per statement text (its first 140 characters).
        self.profile: dict[str, float] | None = None
        self.reset()

    def reset(self) -> None:
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.statements = dict.fromkeys(PHASES, 0)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        outer, self.phase = self.phase, phase
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.wall[phase] += (time.perf_counter() - w0) * 1000
            self.cpu[phase] += (time.process_time() - c0) * 1000
            self.phase = outer

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timed(phase):
                return fn(*args, **kwargs)

        return timed


class CountingConnection:
    """A DuckDB connection that counts the statements run through it (per phase of the
    meter) and times the COMMIT; everything else is the connection's own."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, meter: Meter) -> None:
        self._conn = conn
        self._meter = meter

    def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._meter.statements[self._meter.phase] += 1
        if query.strip().upper() == "COMMIT":
            with self._meter.timed("commit"):
                return self._conn.execute(query, *args, **kwargs)
        if self._meter.profile is None:
            return self._conn.execute(query, *args, **kwargs)
        w0 = time.perf_counter()
        try:
            return self._conn.execute(query, *args, **kwargs)
        finally:
            key = f"{self._meter.phase}: {' '.join(query.split())[:140]}"
            self._meter.profile[key] = (
                self._meter.profile.get(key, 0.0) + (time.perf_counter() - w0) * 1000
            )

    def sql(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._meter.statements[self._meter.phase] += 1
        return self._conn.sql(query, *args, **kwargs)

    def executemany(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._meter.statements[self._meter.phase] += 1
        return self._conn.executemany(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class TimedObserver:
    """The views observer, timed as the `views` phase (it keeps declaring its mirrors)."""

    def __init__(self, observer: Any, meter: Meter) -> None:
        self.observer = observer
        self.meter = meter
        self.mirrors = getattr(observer, "mirrors", None)

    def __call__(self, *args: Any) -> None:
        with self.meter.timed("views"):
            self.observer(*args)


def profile_function(meter: Meter, module_name: str, name: str) -> None:
    """Time a module's function in the profile (CPU ms), as `step: module.name`."""
    module = importlib.import_module(module_name)
    fn = getattr(module, name, None)
    if fn is None:
        return
    key = f"step: {module_name}.{name}"

    def timed(*args: Any, **kwargs: Any) -> Any:
        c0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            if meter.profile is not None:
                spent = (time.process_time() - c0) * 1000
                meter.profile[key] = meter.profile.get(key, 0.0) + spent

    setattr(module, name, timed)


#: Columns of the views' tables that hold the wall clock (left out of the digest).
WALL_CLOCK = frozenset({"updated", "detected_at"})


def digest(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Per table of the views and mirrors: row count and an order-independent hash of
    its rows (wall-clock columns left out), to check that two checkouts agree."""
    out: dict[str, str] = {}
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('live', 'bank', 'arcade') AND table_type = 'BASE TABLE' "
        "ORDER BY 1, 2"
    ).fetchall()
    for schema, table in tables:
        columns = [
            str(c)
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
            if c not in WALL_CLOCK
        ]
        row = ", ".join(f'"{c}"' for c in columns)
        n, h = conn.execute(
            f'SELECT count(*), coalesce(sum(hash(({row}))), 0) FROM "{schema}"."{table}"'
        ).fetchall()[0]
        out[f"{schema}.{table}"] = f"{n}:{h}"
    return out


# -- one run --------------------------------------------------------------------------


def parse_tail(text: str) -> list[tuple[int, int]]:
    """`100:40,1000:10` -> [(100, 40), (1000, 10)]: batch size and number of batches."""
    out = []
    for part in text.split(","):
        size, _, count = part.partition(":")
        out.append((int(size), int(count)))
    return out


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    root = Path(settings.views_sql_dir).resolve().parents[1]
    envelopes = Envelopes(mirror_types(settings))
    tail = parse_tail(args.tail)
    tail_records = sum(size * count for size, count in tail)
    records: list[RawRecord] = []
    warm: list[RawRecord] = []
    for txn in history(args.history + 4 * tail_records, args.population, args.seed):
        records.extend(envelopes.records(txn))
        if not warm and sum(1 for r in records if r.topic.count(".") == 2) >= args.history:
            warm, records = records, []
        if warm and len(records) >= tail_records:
            break
    meter = Meter()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        store = Store(Path(tmp) / "state.duckdb")
        store.migrate(root / "sql" / "state")
        rules = TxnRules(frozenset({"bank", "arcade"})) if args.transactions == "on" else None
        writer = StateWriter(store, "bench", transactions=rules)
        observer = attach_views(settings, store, writer)
        step = CheckpointedStep(writer, "bench")
        for batch in cut(warm, 20_000):
            step.fold(Polled(batch))
        folded = store.connection.execute("SELECT count(*) FROM bank.transactions").fetchall()
        accounts = store.connection.execute("SELECT count(*) FROM bank.accounts").fetchall()
        # Measured from here: phases timed, statements counted.
        store._conn = CountingConnection(store._conn, meter)  # type: ignore[assignment]
        writer.observers = tuple(TimedObserver(o, meter) for o in writer.observers)
        writer_module.apply_changes = meter.wrap("mirrors", writer_module.apply_changes)
        step._decode = meter.wrap("decode", step._decode)  # type: ignore[method-assign]
        out: dict[str, Any] = {
            "warm_records": len(warm),
            "transactions_in_state": int(folded[0][0]),
            "accounts_in_state": int(accounts[0][0]),
            "sizes": {},
        }
        if args.profile:
            meter.profile = {}
            # Python-side steps, timed whole (their statements are counted inside them too).
            for module, name in (
                ("engine.state.fold", "_rows_of"),
                ("engine.views.maintainer", "stage_inputs"),
                ("engine.views.inputs", "_stage_frame"),
                ("engine.views.maintainer", "drop_inputs"),
                ("engine.views.maintainer", "moved"),
                ("engine.views.observer", "by_mirror"),
            ):
                profile_function(meter, module, name)
        at = 0
        for size, count in tail:
            rows: list[dict[str, Any]] = []
            for batch in cut(records[at : at + size * count], size):
                meter.reset()
                observer.last = None
                c0, w0 = time.process_time(), time.perf_counter()
                outcome = step.fold(Polled(batch))
                cpu = (time.process_time() - c0) * 1000
                wall = (time.perf_counter() - w0) * 1000
                stats = observer.last
                rows.append(
                    {
                        "records": len(batch),
                        "folded": isinstance(outcome, Folded),
                        "wall": {
                            **meter.wall,
                            "other": wall - sum(v for k, v in meter.wall.items() if k != "other"),
                            "total": wall,
                        },
                        "cpu": {
                            **meter.cpu,
                            "other": cpu - sum(v for k, v in meter.cpu.items() if k != "other"),
                            "total": cpu,
                        },
                        "statements": {**meter.statements, "total": sum(meter.statements.values())},
                        "views": {v.view: v.ms for v in stats.views if v.ran} if stats else {},
                    }
                )
            at += size * count
            out["sizes"][str(size)] = rows
        if meter.profile is not None:
            batches = sum(count for _, count in tail)
            top = sorted(meter.profile.items(), key=lambda kv: -kv[1])[:40]
            out["profile"] = [(k, v / batches) for k, v in top]
        out["digest"] = digest(store.connection)
        store.close()
    return out


# -- rounds ---------------------------------------------------------------------------


def child(checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--once",
        *("--history", str(args.history), "--tail", args.tail),
        *("--population", str(args.population)),
        *("--seed", str(args.seed), "--transactions", args.transactions),
        *(["--profile"] if args.profile else []),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "CHANGEFOLD_PROJECT_DIR": str(checkout),
    }
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if run.returncode:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"{checkout}: the run failed (exit {run.returncode})")
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith(RESULT))
    result: dict[str, Any] = json.loads(line[len(RESULT) :])
    return result


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(checkouts: Sequence[Path], results: dict[Path, list[dict[str, Any]]]) -> None:
    sizes = list(results[checkouts[0]][0]["sizes"])
    for size in sizes:
        print(f"\nbatches of {size} records (all rounds pooled): ms per batch p50 / p90 / max")
        base: float | None = None
        for checkout in checkouts:
            rows = [row for r in results[checkout] for row in r["sizes"][size] if row["folded"]]
            print(f"  {checkout}  ({len(rows)} batches)")
            for kind in ("wall", "cpu"):
                cells = []
                for phase in (*PHASES, "total"):
                    v = [row[kind][phase] for row in rows]
                    cells.append(
                        f"{phase} {pct(v, 50):.1f}/{pct(v, 90):.1f}/{max(v, default=0):.1f}"
                    )
                print(f"    {kind:4}: " + "  ".join(cells))
            cells = []
            for phase in (*PHASES, "total"):
                v = [float(row["statements"][phase]) for row in rows]
                cells.append(f"{phase} {pct(v, 50):.0f}")
            print("    SQL statements p50: " + "  ".join(cells))
            names = sorted({n for row in rows for n in row["views"]})
            cells = []
            for name in names:
                v = [row["views"][name] for row in rows if name in row["views"]]
                cells.append(f"{name} {pct(v, 50):.1f} ms (ran {len(v)}/{len(rows)})")
            print("    views, p50 when run: " + ", ".join(cells))
            total = statistics.median(row["cpu"]["total"] for row in rows)
            wall = statistics.median(row["wall"]["total"] for row in rows)
            base = base or total
            print(
                f"    => median {wall:.1f} wall ms, {total:.1f} CPU ms per batch "
                f"(CPU x{total / base:.2f} of the first checkout)"
            )
    for checkout in checkouts:
        for r in results[checkout]:
            if "profile" in r:
                print(f"\ncostliest statements, {checkout}: CPU ms per batch")
                for text, ms in r["profile"]:
                    print(f"  {ms:7.2f}  {text}")
    digests = {c: [r["digest"] for r in results[c]] for c in checkouts}
    first = digests[checkouts[0]][0]
    same = all(d == first for ds in digests.values() for d in ds)
    print(f"\nmirrors and views at the end identical in every run: {'yes' if same else 'NO'}")
    if not same:
        for c, ds in digests.items():
            for d in ds:
                diff = sorted(k for k in set(first) | set(d) if first.get(k) != d.get(k))
                if diff:
                    print(f"  {c}: differs in {', '.join(diff)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--history", type=int, default=50_000, help="data events folded first (not timed)"
    )
    parser.add_argument(
        "--tail",
        default="100:40,1000:8",
        help="timed batches after the history, SIZE:COUNT[,SIZE:COUNT] (records per batch)",
    )
    parser.add_argument("--population", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
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
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time every statement and print the costliest (CPU ms per batch, all sizes)",
    )
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(RESULT + json.dumps(run_once(args)), flush=True)
        return 0
    checkouts = [c.resolve() for c in args.checkout] or [ROOT]
    print(
        f"tail batches {args.tail} (records:batches) after a {args.history:,}-event bank+arcade "
        f"history (population {args.population}, whole transactions {args.transactions}), "
        f"{args.rounds} interleaved round(s) over {len(checkouts)} checkout(s)",
        flush=True,
    )
    results: dict[Path, list[dict[str, Any]]] = {c: [] for c in checkouts}
    for round_no in range(1, args.rounds + 1):
        for checkout in checkouts:
            t0 = time.perf_counter()
            r = child(checkout, args)
            results[checkout].append(r)
            medians = ", ".join(
                f"{size}: {statistics.median(x['wall']['total'] for x in rows):.1f} wall ms "
                f"(views {statistics.median(x['wall']['views'] for x in rows):.1f})"
                for size, rows in r["sizes"].items()
            )
            print(
                f"  round {round_no} {checkout}: {medians}; state {r['transactions_in_state']:,} "
                f"transactions, {r['accounts_in_state']:,} accounts "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    report(checkouts, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
