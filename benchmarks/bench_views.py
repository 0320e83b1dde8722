"""Per-batch view maintenance time: does it depend on how much history the state holds?

Two state files hold the same bank (same accounts, same activity per account and
day) after a short and a long history: --small and --large transactions (default
100,000 and 5,000,000; with 5,000 accounts at ~4 transactions a day that is 5 and
250 days, both longer than the longest rule window, 48 h). The history is written
in event-time order, as the engine's mirror is, and the views are rebuilt from
scratch once over it. Then the same kind of 5,000-event batch at the live edge of
the history (new transactions over 10 minutes including a velocity burst, a
structuring pair and card testing; settlements of transactions of the last day;
the balance updates they cause) is applied to the mirrors and
`ViewMaintainer.maintain` is timed, inside a transaction that is rolled back so
every repetition starts from the same state.

    .venv/bin/python benchmarks/bench_views.py [--small 100000] [--large 5000000]
        [--accounts 5000] [--events 5000] [--repeat 7]

Prints the median (and min-max) maintenance time per batch for both states and
their ratio; the target is a ratio within 2x (exit status 1 otherwise). No servers
are involved. Timings are wall clock: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from engine.core.config import Settings
from engine.lab.views.handbatch import rows_of
from engine.lab.views.planfeed import mirror_name
from engine.state.deltas import MirrorDelta
from engine.views import ViewMaintainer

#: Transactions per account and day (a busy retail bank: cards, cash, transfers).
PER_ACCOUNT_DAY = 4.0
#: The live edge of every history: histories end here, batches start here.
EDGE = datetime(2025, 6, 1, tzinfo=UTC)


def build_history(con: duckdb.DuckDBPyConnection, txns: int, accounts: int) -> None:
    """Accounts, devices and `txns` transactions ending at EDGE, set-based in DuckDB."""
    base = int(txns / 1.1)  # one in ten is a transfer, which adds its credit leg
    days = txns / (accounts * PER_ACCOUNT_DAY)
    span_s = days * 86400.0
    con.execute(
        """
        INSERT INTO bank.accounts
        SELECT i, i, 'DE' || i, 'checking', 'EUR', 2000 + (i % 97) * 50, 'open',
               ['DE', 'FR', 'NL', 'IT', 'ES'][1 + i % 5],
               $edge - to_days(30 + (i % 900)::INTEGER), NULL, $edge
        FROM range(1, $accounts + 1) AS r(i)
        """,
        {"accounts": accounts, "edge": EDGE},
    )
    con.execute(
        """
        INSERT INTO bank.devices
        SELECT uuid(), i, 'android', ['DE', 'FR', 'NL', 'IT', 'ES'][1 + i % 5], true,
               $edge - to_days(400), $edge
        FROM range(1, $accounts + 1) AS r(i)
        """,
        {"accounts": accounts, "edge": EDGE},
    )
    # Transactions in event-time order (row i at EDGE - span + i * step), so the mirror is
    # clustered by created_at as a live engine's is.
    con.execute(
        """
        INSERT INTO bank.transactions
        SELECT
            i,
            1 + (hash(i) % $accounts)::BIGINT,
            CASE WHEN i % 10 < 7 THEN 'purchase' WHEN i % 10 = 7 THEN 'withdrawal'
                 WHEN i % 10 = 8 THEN 'deposit' ELSE 'transfer_out' END,
            CASE WHEN i % 10 = 8 THEN 40 + (hash(i * 7) % 300)::BIGINT
                 ELSE -(5 + (hash(i * 3) % 120)::BIGINT) END,
            'EUR',
            CASE WHEN i % 10 < 7 THEN 1 + (hash(i * 5) % 500)::BIGINT END,
            CASE WHEN i % 10 = 9 THEN 1 + (hash(i * 11) % $accounts)::BIGINT END,
            CASE WHEN i % 10 < 5 THEN 'card_present' WHEN i % 10 < 7 THEN 'online'
                 WHEN i % 10 = 7 THEN 'atm' WHEN i % 10 = 8 THEN 'wire' ELSE 'mobile' END,
            ['DE', 'FR', 'NL', 'IT', 'ES'][1 + (1 + (hash(i) % $accounts)::BIGINT) % 5],
            NULL,
            CASE WHEN i % 50 = 0 THEN 'declined' ELSE 'settled' END,
            $edge - to_microseconds(($span_s * 1e6 * (1 - i / $txns))::BIGINT),
            $edge - to_microseconds(($span_s * 1e6 * (1 - i / $txns))::BIGINT)
        FROM range(1, $txns + 1) AS r(i)
        """,
        {"accounts": accounts, "txns": base, "span_s": span_s, "edge": EDGE},
    )
    # The credit leg of every transfer (same time, the other account, the opposite amount).
    con.execute(
        """
        INSERT INTO bank.transactions
        SELECT txn_id + $offset, counterparty_account_id, 'transfer_in', -amount, currency,
               NULL, account_id, channel, country, device_id, status, created_at, updated_at
        FROM bank.transactions WHERE kind = 'transfer_out'
        """,
        {"offset": 10 * txns},
    )


def live_batch(
    con: duckdb.DuckDBPyConnection, first_id: int, events: int, accounts: int, seed: int
) -> dict[str, MirrorDelta]:
    """Apply one batch at the live edge; returns its before/after rows per mirror.

    ~60% new transactions over the 10 minutes after EDGE (with a velocity burst, a
    structuring pair and card testing on a few accounts), ~15% status changes of
    transactions of the last day, ~25% balance updates of the accounts involved."""
    n_new = int(events * 0.6)
    n_upd = int(events * 0.15)
    n_acc = events - n_new - n_upd
    keys = {"first": first_id, "n": n_new, "accounts": min(n_acc, accounts), "seed": seed}
    updated = [
        r[0]
        for r in con.execute(
            "SELECT txn_id FROM bank.transactions WHERE created_at > $edge - INTERVAL 1 DAY "
            "ORDER BY hash(txn_id + $seed) LIMIT $n",
            {"edge": EDGE, "seed": seed, "n": n_upd},
        ).fetchall()
    ]
    touched_accounts = [
        r[0]
        for r in con.execute(
            "SELECT 1 + (hash(i + $seed) % $all)::BIGINT FROM range($accounts) AS r(i)",
            {"seed": seed, "all": accounts, "accounts": keys["accounts"]},
        ).fetchall()
    ]
    new_ids = list(range(first_id, first_id + n_new))
    before = {
        "bank.transactions": rows_of(con, "bank.transactions", updated + new_ids),
        "bank.accounts": rows_of(con, "bank.accounts", touched_accounts),
    }
    con.execute(
        """
        INSERT INTO bank.transactions
        SELECT
            $first + i,
            CASE WHEN i < 12 THEN 7 WHEN i < 14 THEN 8 WHEN i < 20 THEN 9
                 ELSE 1 + (hash(i + $seed) % $all)::BIGINT END,
            CASE WHEN i < 12 THEN 'purchase' WHEN i < 14 THEN 'deposit' WHEN i < 20 THEN 'purchase'
                 WHEN i % 10 < 7 THEN 'purchase' ELSE 'withdrawal' END,
            CASE WHEN i < 12 THEN -30 WHEN i < 14 THEN 9500 WHEN i < 20 THEN -1.5
                 ELSE -(5 + (hash(i * 3 + $seed) % 120)::BIGINT) END,
            'EUR',
            CASE WHEN i % 10 < 7 OR i < 20 THEN 1 + (hash(i * 5) % 500)::BIGINT END,
            NULL,
            CASE WHEN i < 12 THEN 'card_present' WHEN i < 14 THEN 'branch'
                 WHEN i < 20 THEN 'online' ELSE 'card_present' END,
            'DE', NULL, 'pending',
            $edge + to_microseconds((600e6 * i / $n)::BIGINT),
            $edge + to_microseconds((600e6 * i / $n)::BIGINT)
        FROM range($n) AS r(i)
        """,
        {"first": first_id, "n": n_new, "seed": seed, "all": accounts, "edge": EDGE},
    )
    con.execute(
        "UPDATE bank.transactions SET status = 'settled', updated_at = $edge "
        "WHERE txn_id IN (SELECT unnest($ids))",
        {"ids": updated, "edge": EDGE},
    )
    con.execute(
        "UPDATE bank.accounts SET balance = balance - 1, updated_at = $edge "
        "WHERE account_id IN (SELECT unnest($ids))",
        {"ids": touched_accounts, "edge": EDGE},
    )
    after = {
        "bank.transactions": rows_of(con, "bank.transactions", updated + new_ids),
        "bank.accounts": rows_of(con, "bank.accounts", touched_accounts),
    }
    return {t: MirrorDelta(mirror_name(t), before[t], after[t]) for t in before}


def measure(path: Path, txns: int, args: argparse.Namespace) -> list[float]:
    settings = Settings()
    views = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    con = duckdb.connect(str(path))
    views.create_mirror_tables(con)
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    build_history(con, txns, args.accounts)
    con.execute("COMMIT")
    views.install(con)
    con.execute("BEGIN TRANSACTION")
    views.recompute_all(con, batch_id=1, detected_at=EDGE)
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    have = con.execute("SELECT count(*) FROM bank.transactions").fetchall()[0][0]
    alerts = con.execute("SELECT count(*) FROM live.fraud_alerts").fetchall()[0][0]
    print(
        f"  {have:>9,} transactions: history built and views rebuilt in "
        f"{time.perf_counter() - t0:.1f} s ({alerts} alerts in the history)",
        flush=True,
    )
    times = []
    for rep in range(args.repeat):
        con.execute("BEGIN TRANSACTION")
        changes = live_batch(con, 20 * txns, args.events, args.accounts, seed=rep)
        stats = views.maintain(con, changes, 2 + rep, datetime.now(UTC))
        con.execute("ROLLBACK")
        assert stats.applied
        times.append(stats.ms)
    con.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=5_000_000)
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        f"view maintenance for a {args.events:,}-event bank batch, {args.accounts:,} accounts, "
        f"{args.repeat} repetitions (median, min-max):"
    )
    medians = {}
    with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp:
        for txns in (args.small, args.large):
            times = measure(Path(tmp) / f"state-{txns}.duckdb", txns, args)
            medians[txns] = statistics.median(times)
            print(
                f"  {txns:>9,} transactions in state: {medians[txns]:7.1f} ms per batch "
                f"({min(times):.1f}-{max(times):.1f})",
                flush=True,
            )
    ratio = medians[args.large] / medians[args.small]
    verdict = "within" if ratio <= 2.0 else "NOT within"
    print(f"ratio large/small: {ratio:.2f} ({verdict} the 2x target)")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
