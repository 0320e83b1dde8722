"""Query API latency under folding, and what a polling dashboard costs the fold rate.

An engine-like child process owns a DuckDB state file, serves the query API
from a thread (engine.serve.start_api, as `changefold run` does) and folds
score events in micro-batches from another thread: each batch is a polars
frame registered with DuckDB, upserted into a scores mirror, the touched
players' leaderboard rows recomputed, and a row of batch figures written, all
in one transaction. The measuring client runs in this process, like a
dashboard would. Kafka and Debezium are not involved: this isolates what the
API does to the engine process.

Phases (a fresh state file each):
  1. folding paced at --rate events/s; the client sends the leaderboard query
     --qps times a second: p50/p99/max latency of the query.
  2. folding unpaced, nobody polling: the fold rate (events/s).
  3. folding unpaced, a dashboard polling every --poll seconds (leaderboard,
     /metrics, /health): the fold rate, and its drop against phase 2.

    .venv/bin/python benchmarks/bench_api.py [--duration 15] [--rate 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

LEADERBOARD = """
SELECT player_id, total_points, best_points, scores,
       rank() OVER (ORDER BY total_points DESC) AS rank
FROM arcade.leaderboard ORDER BY total_points DESC LIMIT 20
"""


def engine(path: str, rate: float, duration: float, players: int, pipe: Connection) -> None:
    """The child: state file, API thread, fold loop; reports its figures through `pipe`."""
    import duckdb
    import numpy as np
    import polars as pl

    from engine.core.config import Settings
    from engine.serve import start_api
    from engine.state.reader import StateReader
    from engine.state.store import Store

    settings = Settings.from_env({}, state_path=Path(path), home=Path(path).parent)
    store = Store(path)
    store.migrate(settings.state_sql_dir)
    con: duckdb.DuckDBPyConnection = store.connection
    con.execute(
        """
        CREATE SCHEMA arcade;
        CREATE TABLE arcade.scores (score_id BIGINT PRIMARY KEY, player_id INTEGER,
                                    points INTEGER);
        CREATE TABLE arcade.leaderboard (player_id INTEGER PRIMARY KEY, total_points BIGINT,
                                         best_points INTEGER, scores BIGINT);
        """
    )
    api = start_api(settings, StateReader.for_store(store), port=0)
    pipe.send(api.url)
    pipe.recv()  # go
    rng = np.random.default_rng(7)
    batch_rows = max(int(rate / 10), 1) if rate > 0 else 2000
    events = batches = 0
    next_id = 0
    started = time.perf_counter()
    fold_s = 0.0
    while (now := time.perf_counter()) - started < duration:
        if rate > 0:
            due = started + events / rate
            if due > now:
                time.sleep(due - now)
        ids = np.arange(next_id, next_id + batch_rows) % (players * 50)
        frame = pl.DataFrame(
            {
                "score_id": ids,
                "player_id": rng.integers(0, players, batch_rows, dtype=np.int32),
                "points": rng.integers(0, 1000, batch_rows, dtype=np.int32),
            }
        )
        next_id += batch_rows
        t0 = time.perf_counter()
        with store.transaction() as tx:
            tx.register("batch_scores", frame.to_arrow())
            tx.execute("INSERT OR REPLACE INTO arcade.scores SELECT * FROM batch_scores")
            tx.execute(
                "INSERT OR REPLACE INTO arcade.leaderboard "
                "SELECT player_id, sum(points), max(points), count(*) FROM arcade.scores "
                "WHERE player_id IN (SELECT DISTINCT player_id FROM batch_scores) "
                "GROUP BY player_id"
            )
            tx.execute(
                "INSERT INTO _changefold.batches (batch_id, group_id, member, finished_at, "
                "records, bytes, tombstones, skipped, dead_letters, upserts, deletes, "
                "decode_ms, fold_ms) VALUES (?, 'bench', 'member-1', now(), ?, 0, 0, 0, 0, "
                "?, 0, 0, ?)",
                [batches + 1, batch_rows, batch_rows, (time.perf_counter() - t0) * 1000],
            )
            tx.unregister("batch_scores")
        fold_s += time.perf_counter() - t0
        events += batch_rows
        batches += 1
    elapsed = time.perf_counter() - started
    pipe.send({"events": events, "batches": batches, "elapsed": elapsed, "fold_s": fold_s})
    pipe.recv()  # the client has stopped
    api.stop()
    store.close()


def phase(
    args: argparse.Namespace, *, rate: float, qps: float, poll: float | None
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="cf-bench-api-") as tmp:
        child = ctx.Process(
            target=engine,
            args=(str(Path(tmp) / "state.duckdb"), rate, args.duration, args.players, theirs),
        )
        child.start()
        if not ours.poll(60):
            child.kill()
            raise SystemExit("the engine process did not start its API within 60 s")
        url = ours.recv()
        latencies: list[float] = []
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                period = 1 / qps if qps else (poll or 1.0)
                next_at = time.perf_counter()
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = http.post("/query", json={"sql": LEADERBOARD})
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        errors.append(r.text)
                    if poll:
                        http.get("/metrics")
                        http.get("/health")
                    next_at += period
                    stop.wait(max(next_at - time.perf_counter(), 0))

        ours.send("go")
        poller = threading.Thread(target=client, daemon=True) if (qps or poll) else None
        if poller:
            poller.start()
        result = ours.recv()  # the child's figures, after --duration
        stop.set()
        if poller:
            poller.join(30)
        ours.send("stop")
        child.join(30)
    result["rate"] = result["events"] / result["elapsed"]
    result["latencies"] = latencies
    result["errors"] = errors
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=2000.0, help="paced fold rate, events/s")
    parser.add_argument("--qps", type=float, default=10.0, help="leaderboard queries/s (phase 1)")
    parser.add_argument("--poll", type=float, default=1.0, help="dashboard poll period (phase 3)")
    parser.add_argument("--players", type=int, default=10000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of phases 2 and 3 (median)"
    )
    args = parser.parse_args()

    one = phase(args, rate=args.rate, qps=args.qps, poll=None)
    lat = one["latencies"]
    print(
        f"leaderboard query while folding {one['rate']:.0f} events/s: {len(lat)} queries, "
        f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 0.99):.1f} ms, "
        f"max {max(lat):.1f} ms, errors {len(one['errors'])}"
    )
    alone_rates, polled_rates, polls = [], [], []
    errors = list(one["errors"])
    for _ in range(args.repeat):
        alone = phase(args, rate=0, qps=0, poll=None)
        polled = phase(args, rate=0, qps=0, poll=args.poll)
        alone_rates.append(alone["rate"])
        polled_rates.append(polled["rate"])
        polls += polled["latencies"]
        errors += polled["errors"]
    alone_rate = statistics.median(alone_rates)
    polled_rate = statistics.median(polled_rates)
    print(
        f"fold rate, nobody polling:             {alone_rate:.0f} events/s "
        f"(runs: {', '.join(f'{r:.0f}' for r in alone_rates)})"
    )
    print(
        f"fold rate, dashboard polling every {args.poll:g} s: {polled_rate:.0f} events/s "
        f"(runs: {', '.join(f'{r:.0f}' for r in polled_rates)}); "
        f"change {polled_rate / alone_rate - 1:+.1%}; leaderboard p50 while unpaced "
        f"{statistics.median(polls or [float('nan')]):.1f} ms"
    )
    if errors:
        print("errors:", errors[:3], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
