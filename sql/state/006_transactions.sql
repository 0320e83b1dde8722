-- Source transactions not yet whole, and the frontier (see engine/state/transactions.py).
--
-- A data event whose transaction has not been applied yet waits here as its raw
-- message; the END of a transaction waits until every event it counts has come.
-- Both are written in the same DuckDB transaction as the offsets that consumed
-- them, and deleted in the one that applies the transaction.
CREATE TABLE _changefold.txn_events (
    group_id    VARCHAR NOT NULL,
    xid         VARCHAR NOT NULL,     -- the source transaction (Postgres xid)
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT NOT NULL,
    key         BLOB,
    value       BLOB,
    batch_id    BIGINT NOT NULL,      -- the batch that consumed it
    PRIMARY KEY (group_id, topic, "partition", "offset")
);
CREATE TABLE _changefold.txn_ends (
    group_id     VARCHAR NOT NULL,
    xid          VARCHAR NOT NULL,
    lsn          BIGINT NOT NULL,     -- position of the END in the source log
    commit_ts_ms BIGINT NOT NULL,
    counts       JSON NOT NULL,       -- {"topic": events}
    topic        VARCHAR NOT NULL,    -- where the END record was read
    "partition"  INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    batch_id     BIGINT NOT NULL,
    PRIMARY KEY (group_id, xid)
);
-- The last source transaction applied: every table of the state is consistent as
-- of it (one row per consumer group).
CREATE TABLE _changefold.frontier (
    group_id     VARCHAR PRIMARY KEY,
    xid          VARCHAR NOT NULL,
    lsn          BIGINT NOT NULL,
    commit_ts_ms BIGINT NOT NULL,
    transactions BIGINT NOT NULL,     -- source transactions applied so far
    batch_id     BIGINT NOT NULL,     -- the batch that applied the last one
    updated_at   TIMESTAMPTZ NOT NULL
);
