-- Figures per folded batch (bounded: the engine keeps the newest N batches).
-- batch_id is max(batch_id) + 1, taken in the batch's transaction.
CREATE TABLE _changefold.batches (
    batch_id         BIGINT PRIMARY KEY,
    group_id         VARCHAR NOT NULL,
    member           VARCHAR NOT NULL,
    finished_at      TIMESTAMPTZ NOT NULL,
    records          INTEGER NOT NULL,
    bytes            BIGINT NOT NULL,
    tombstones       INTEGER NOT NULL,
    skipped          INTEGER NOT NULL,
    dead_letters     INTEGER NOT NULL,
    upserts          INTEGER NOT NULL,
    deletes          INTEGER NOT NULL,
    decode_ms        DOUBLE NOT NULL,
    fold_ms          DOUBLE NOT NULL,
    -- Kafka offset commit, filled in after the DuckDB commit
    commit_ms        DOUBLE,
    newest_source_ts TIMESTAMPTZ,
    -- finished_at minus the newest source commit time folded
    freshness_ms     DOUBLE
);
CREATE TABLE _changefold.batch_partitions (
    batch_id     BIGINT NOT NULL,
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    first_offset BIGINT NOT NULL,
    -- position after the batch
    next_offset  BIGINT NOT NULL,
    records      INTEGER NOT NULL,
    -- high watermark seen by the consumer, and end_offset - next_offset
    end_offset   BIGINT,
    lag          BIGINT
);
