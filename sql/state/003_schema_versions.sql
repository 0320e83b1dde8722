-- Each distinct value schema of a captured table, numbered per mirror table.
CREATE TABLE _changefold.schema_versions (
    table_schema    VARCHAR NOT NULL,
    table_name      VARCHAR NOT NULL,
    version         INTEGER NOT NULL,
    fingerprint     VARCHAR NOT NULL,
    topic           VARCHAR NOT NULL,
    -- [ColumnSpec as JSON, ...] of the key and of the value columns
    key_columns     JSON NOT NULL,
    "columns"       JSON NOT NULL,
    -- the Connect schema of the row, as Debezium sent it
    connect_schema  JSON,
    first_partition INTEGER NOT NULL,
    first_offset    BIGINT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_schema, table_name, version),
    UNIQUE (table_schema, table_name, fingerprint)
);
