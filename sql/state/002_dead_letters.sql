-- Events that could not be decoded or applied, with the raw bytes and the reason.
-- Ids are max(id) + n, taken under the writer lock (a DuckDB sequence can hand out a
-- value again after a crash).
CREATE TABLE _changefold.dead_letters (
    id          BIGINT PRIMARY KEY,
    group_id    VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT NOT NULL,
    "key"       BLOB,
    "value"     BLOB,
    error       VARCHAR NOT NULL,
    -- 'decode' (the bytes could not be read) or 'fold' (DuckDB refused the row)
    stage       VARCHAR NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL
);
