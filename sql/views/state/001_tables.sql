-- Tables of the derived views (schema `live`), next to the mirror tables in the
-- engine's DuckDB state and written in the same transaction as each batch.
-- Created at engine start when missing (IF NOT EXISTS: safe to run every start).
CREATE SCHEMA IF NOT EXISTS live;

-- Bookkeeping: the last batch whose changes the views contain (a batch id at or
-- below it is a replay and is skipped), and the event-time clocks (watermarks).
CREATE TABLE IF NOT EXISTS live.progress (
    name      VARCHAR PRIMARY KEY,
    batch_id  BIGINT,
    -- newest event time seen (never moves back)
    clock     TIMESTAMPTZ,
    updated   TIMESTAMPTZ
);

-- Per player sums over every score in the mirror (banned and not yet mirrored players
-- included), kept by adding each batch's after-rows and subtracting its before-rows.
CREATE TABLE IF NOT EXISTS live.player_totals (
    player_id    BIGINT PRIMARY KEY,
    total_points BIGINT NOT NULL,
    best_points  INTEGER,
    scores       INTEGER NOT NULL
);
-- The player's latest score (newest achieved_at, then score_id): its points make
-- prev_rank (states made before these columns re-read a player when it is touched).
ALTER TABLE live.player_totals ADD COLUMN IF NOT EXISTS latest_at TIMESTAMPTZ;
ALTER TABLE live.player_totals ADD COLUMN IF NOT EXISTS latest_score_id BIGINT;
ALTER TABLE live.player_totals ADD COLUMN IF NOT EXISTS latest_points INTEGER;

-- leaderboard: players who exist, are not banned and have at least one score.
-- rank: 1 = most total points (ties share a rank). prev_rank: the rank the player
-- would have without its latest score, against the others' current totals;
-- rank_change = prev_rank - rank (> 0 moved up), NULL = one score only (new on the
-- board). updated_batch: bookkeeping (the batch that last wrote the row).
CREATE TABLE IF NOT EXISTS live.leaderboard (
    player_id     BIGINT PRIMARY KEY,
    name          VARCHAR,
    country       VARCHAR,
    total_points  BIGINT NOT NULL,
    best_points   INTEGER,
    scores        INTEGER NOT NULL,
    rank          INTEGER,
    prev_rank     INTEGER,
    rank_change   INTEGER,
    updated_batch BIGINT
);

-- leaderboard_window: the same over the scores achieved in the last N minutes of
-- event time: achieved_at in (window_end - N minutes, window_end], window_end = the
-- newest achieved_at of the mirror's scores (live.progress 'leaderboard_window').
CREATE TABLE IF NOT EXISTS live.leaderboard_window (
    player_id     BIGINT PRIMARY KEY,
    name          VARCHAR,
    country       VARCHAR,
    total_points  BIGINT NOT NULL,
    best_points   INTEGER,
    scores        INTEGER NOT NULL,
    rank          INTEGER,
    prev_rank     INTEGER,
    rank_change   INTEGER,
    updated_batch BIGINT
);
-- the points of the player's latest score in the window (for prev_rank)
ALTER TABLE live.leaderboard_window ADD COLUMN IF NOT EXISTS latest_points INTEGER;

-- fraud_hits: every hit of a rule on the mirror's current rows (one per triggering
-- transaction, or pair / inflow for impossible travel / new-account transfers).
CREATE TABLE IF NOT EXISTS live.fraud_hits (
    rule           VARCHAR NOT NULL,
    account_id     BIGINT NOT NULL,
    trigger_txn_id BIGINT NOT NULL,
    trigger_time   TIMESTAMPTZ NOT NULL,
    window_start   TIMESTAMPTZ,
    window_end     TIMESTAMPTZ,
    evidence       BIGINT[] NOT NULL,
    severity       DOUBLE NOT NULL,
    reason         VARCHAR NOT NULL,
    gap_s          BIGINT NOT NULL
);

-- fraud_alerts: one row per episode of a rule's hits on an account (a function of
-- the hits). The id is a digest of rule, account and the episode's first triggering
-- transaction; an episode that loses its hits loses its alert.
CREATE TABLE IF NOT EXISTS live.fraud_alerts (
    alert_id            VARCHAR PRIMARY KEY,
    rule                VARCHAR NOT NULL,
    account_id          BIGINT NOT NULL,
    customer_id         BIGINT,
    severity            DOUBLE NOT NULL,
    reason              VARCHAR NOT NULL,
    evidence_txn_ids    BIGINT[] NOT NULL,
    -- event time of the transaction that made the rule fire
    event_time          TIMESTAMPTZ NOT NULL,
    -- event-time span of the evidence
    window_start        TIMESTAMPTZ NOT NULL,
    window_end          TIMESTAMPTZ NOT NULL,
    -- bookkeeping (not compared by `changefold diff`): the wall clock and the stream's
    -- event-time clock of the batch that first raised this id, that batch, and the
    -- batch that last changed the row
    detected_at         TIMESTAMPTZ NOT NULL,
    detected_event_time TIMESTAMPTZ,
    first_batch         BIGINT NOT NULL,
    last_batch          BIGINT NOT NULL
);

-- account_risk: current risk of accounts with recent alerts or recent declines.
CREATE TABLE IF NOT EXISTS live.account_risk (
    account_id   BIGINT PRIMARY KEY,
    customer_id  BIGINT,
    -- 0 (nothing unusual) .. 1
    risk_score   DOUBLE NOT NULL,
    risk_level   VARCHAR NOT NULL,
    alerts_7d    INTEGER NOT NULL,
    top_rule     VARCHAR,
    last_alert_at TIMESTAMPTZ,
    declined_24h INTEGER NOT NULL,
    reason       VARCHAR NOT NULL,
    -- the event time the score was computed for
    as_of        TIMESTAMPTZ,
    updated_batch BIGINT
);

-- The velocity baseline is read from the mirror now (fraud_alerts.sql); the table of
-- per-bucket counts it replaced depended on the batches (pruned by the clock).
DROP TABLE IF EXISTS live.payment_buckets;

-- Money conservation: settled transfer legs whose other leg is missing or does not
-- offset them after the last batch that touched them.
CREATE TABLE IF NOT EXISTS live.unbalanced_transfers (
    txn_id                  BIGINT PRIMARY KEY,
    account_id              BIGINT,
    counterparty_account_id BIGINT,
    amount                  DECIMAL(14, 2),
    created_at              TIMESTAMPTZ,
    problem                 VARCHAR NOT NULL,
    batch_id                BIGINT NOT NULL
);
