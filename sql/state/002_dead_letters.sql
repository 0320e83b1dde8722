-- Events that could not be decoded or applied, with the raw bytes and the reason.
CREATE SEQUENCE _changefold.dead_letter_ids;
CREATE TABLE _changefold.dead_letters (
    id          BIGINT PRIMARY KEY DEFAULT nextval('_changefold.dead_letter_ids'),
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
