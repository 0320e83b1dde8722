"""The SQL the dashboards send to the query API, in one place.

Tables (see sql/views/state/, sql/views/mirrors/ and sql/state/ of the engine):
the derived views in schema `live` (leaderboard, leaderboard_window,
fraud_alerts, account_risk, progress), the mirrors `arcade.*` and `bank.*`,
and the engine's own tables in `_changefold`.

Most queries are constants; a row limit is the API's `max_rows`, not a LIMIT.
The few that need a value take integers only, rendered by `data.int_literal`.
"""

from __future__ import annotations

from collections.abc import Iterable

from data import int_list, int_literal

#: Schema of the derived views' tables.
LIVE = "live"

# -- leaderboard -----------------------------------------------------------------------

#: Board columns, best first; the same for the all-time and the windowed board.
_BOARD = """
SELECT rank, rank_change, prev_rank, player_id, name, country, total_points,
       best_points, scores
FROM {table}
ORDER BY rank, total_points DESC, player_id
"""
LEADERBOARD = _BOARD.format(table=f"{LIVE}.leaderboard")
LEADERBOARD_WINDOW = _BOARD.format(table=f"{LIVE}.leaderboard_window")

#: The event-time clocks of the views (newest event time folded), and the batch.
PROGRESS = f"SELECT name, clock, batch_id, updated FROM {LIVE}.progress ORDER BY name"

#: The top five of the all-time board (the overview's board).
TOP_FIVE = f"""
SELECT rank, name, country, total_points
FROM {LIVE}.leaderboard
ORDER BY rank, total_points DESC, player_id
LIMIT 5
"""

#: Players on the all-time board (for counts on the overview).
BOARD_SIZE = f"SELECT count(*) AS players, max(total_points) AS top FROM {LIVE}.leaderboard"


def player_timeline(player_id: int, window_min: int | None) -> str:
    """A player's scores in event time with the running total (within the window, if any).

    Newest first, so that a row cap keeps the recent end; the running total counts
    every score of the range, including the ones a cap leaves out."""
    where = f"player_id = {int_literal(player_id)}"
    if window_min is not None:
        where += (
            " AND achieved_at > (SELECT clock FROM "
            f"{LIVE}.progress WHERE name = 'leaderboard_window') "
            f"- to_minutes({int_literal(window_min)})"
        )
    return f"""
SELECT score_id, match_id, achieved_at, points, corrected,
       sum(points) OVER (ORDER BY achieved_at, score_id) AS running_total
FROM arcade.scores
WHERE {where}
ORDER BY achieved_at DESC, score_id DESC
"""


# -- fraud -----------------------------------------------------------------------------

#: Rules of the fraud_alerts view (sql/views/fraud_alerts.sql).
RULES = (
    "velocity_burst",
    "card_testing",
    "impossible_travel",
    "account_takeover",
    "structuring",
    "new_account_large_transfer",
)

#: The newest alerts, newest event time (the source clock) first.
ALERTS = f"""
SELECT alert_id, detected_at, event_time, rule, severity, account_id, customer_id,
       reason, len(evidence_txn_ids) AS evidence, evidence_txn_ids, window_start, window_end
FROM {LIVE}.fraud_alerts
ORDER BY event_time DESC, severity DESC, alert_id
"""

#: Alerts per rule per minute of detection (wall clock), over the last 30 minutes
#: before the newest detection.
ALERTS_PER_MINUTE = f"""
SELECT time_bucket(INTERVAL 1 MINUTE, detected_at) AS minute, rule, count(*) AS alerts
FROM {LIVE}.fraud_alerts
WHERE detected_at > (SELECT max(detected_at) FROM {LIVE}.fraud_alerts) - INTERVAL 30 MINUTE
GROUP BY ALL
ORDER BY minute, rule
"""

#: Alerts per rule, and the newest detection.
ALERT_TOTALS = f"""
SELECT rule, count(*) AS alerts, max(detected_at) AS newest, avg(severity) AS avg_severity
FROM {LIVE}.fraud_alerts GROUP BY rule ORDER BY rule
"""

#: Alerts per rule per bucket of event time; about 60 buckets over the alerts' span.
ALERTS_OVER_TIME = f"""
WITH span AS (
    SELECT to_seconds(greatest(
        60, ceil(epoch(max(event_time) - min(event_time)) / 60)
    )::BIGINT) AS width
    FROM {LIVE}.fraud_alerts
)
SELECT time_bucket((SELECT width FROM span), event_time) AS bucket, rule, count(*) AS alerts
FROM {LIVE}.fraud_alerts
GROUP BY ALL
ORDER BY bucket, rule
"""

#: Accounts at risk, riskiest first.
ACCOUNT_RISK = f"""
SELECT account_id, customer_id, risk_score, risk_level, alerts_7d, top_rule,
       declined_24h, last_alert_at, reason, as_of
FROM {LIVE}.account_risk
ORDER BY risk_score DESC, account_id
"""


def evidence(account_id: int, txn_ids: Iterable[int]) -> str:
    """The account's transactions around an alert's evidence (2 h of event time either
    side), each flagged when it is part of the evidence."""
    ids = int_list(txn_ids)
    return f"""
WITH ev AS (
    SELECT min(created_at) AS lo, max(created_at) AS hi
    FROM bank.transactions WHERE txn_id IN ({ids})
)
SELECT t.txn_id, t.created_at, t.kind, t.amount, t.status, t.channel, t.country,
       t.merchant_id, t.counterparty_account_id, t.device_id::VARCHAR AS device_id,
       t.txn_id IN ({ids}) AS is_evidence
FROM bank.transactions AS t, ev
WHERE t.account_id = {int_literal(account_id)}
    AND t.created_at BETWEEN ev.lo - INTERVAL 2 HOUR AND ev.hi + INTERVAL 2 HOUR
ORDER BY t.created_at, t.txn_id
"""


# -- pipeline --------------------------------------------------------------------------

#: Figures of the newest batches, newest first.
RECENT_BATCHES = """
SELECT batch_id, member, finished_at, records, bytes, upserts, deletes, dead_letters,
       decode_ms, fold_ms, commit_ms, freshness_ms
FROM _changefold.batches
ORDER BY batch_id DESC
"""

#: Records folded per second and freshness per 10 s of wall clock (batch finish
#: times), over the 10 minutes before the newest batch.
FOLD_OVER_TIME = """
SELECT time_bucket(INTERVAL 10 SECOND, finished_at) AS bucket,
       sum(records) / 10.0 AS records_per_s,
       quantile_cont(freshness_ms, 0.5) / 1000.0 AS freshness_p50_s,
       max(freshness_ms) / 1000.0 AS freshness_max_s
FROM _changefold.batches
WHERE finished_at > (SELECT max(finished_at) FROM _changefold.batches) - INTERVAL 10 MINUTE
GROUP BY ALL
ORDER BY bucket
"""

#: The newest dead letters, without the raw bytes.
DEAD_LETTERS = """
SELECT id, failed_at, topic, "partition", "offset", stage, error
FROM _changefold.dead_letters
ORDER BY id DESC
"""

#: Every schema version of every mirror table.
SCHEMA_VERSIONS = """
SELECT table_schema || '.' || table_name AS "table", version, topic, first_partition,
       first_offset, recorded_at, json_array_length("columns") AS columns
FROM _changefold.schema_versions
ORDER BY table_schema, table_name, version
"""

# -- SQL page ----------------------------------------------------------------------------

#: (title, statement) pairs offered on the SQL page.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Top 10 players",
        f"SELECT rank, name, country, total_points, best_points, scores\n"
        f"FROM {LIVE}.leaderboard\nORDER BY rank\nLIMIT 10",
    ),
    (
        "Alerts per rule",
        f"SELECT rule, count(*) AS alerts, round(avg(severity), 2) AS avg_severity,\n"
        f"       max(detected_at) AS newest\nFROM {LIVE}.fraud_alerts\nGROUP BY rule\n"
        "ORDER BY alerts DESC",
    ),
    (
        "Riskiest accounts",
        f"SELECT account_id, risk_score, risk_level, reason\nFROM {LIVE}.account_risk\n"
        "ORDER BY risk_score DESC\nLIMIT 20",
    ),
    (
        "Balances by account kind",
        "SELECT kind, count(*) AS accounts, sum(balance) AS total_eur,\n"
        "       round(avg(balance), 2) AS avg_eur\nFROM bank.accounts\nGROUP BY kind\n"
        "ORDER BY total_eur DESC",
    ),
    (
        "Transactions per channel and status",
        "SELECT channel, status, count(*) AS n, sum(amount) AS amount_eur\n"
        "FROM bank.transactions\nGROUP BY ALL\nORDER BY channel, status",
    ),
    (
        "Scores per hour of event time",
        "SELECT date_trunc('hour', achieved_at) AS hour, count(*) AS scores,\n"
        "       sum(points) AS points\nFROM arcade.scores\nGROUP BY hour\n"
        "ORDER BY hour DESC\nLIMIT 48",
    ),
    (
        "Consumer lag per partition",
        'SELECT topic, "partition", next_offset, end_offset, lag\n'
        "FROM _changefold.batch_partitions\n"
        'QUALIFY row_number() OVER (PARTITION BY topic, "partition" ORDER BY batch_id DESC) = 1\n'
        'ORDER BY topic, "partition"',
    ),
    (
        "Tables in the state",
        "SELECT schema_name, table_name, estimated_size AS rows\nFROM duckdb_tables()\n"
        "ORDER BY schema_name, table_name",
    ),
)
