-- The last TRUNCATE applied to each mirror table (see engine/state/truncates.py): its
-- position in the source log. A TRUNCATE locks its table, so every change of the
-- table committed before it has an older LSN; one read after the truncate was
-- applied (a snapshot row from another partition, a change sent again) is dropped
-- when its LSN is at or before this one. Written in the batch's transaction.
CREATE TABLE _changefold.truncates (
    table_schema VARCHAR NOT NULL,
    table_name   VARCHAR NOT NULL,
    lsn          BIGINT NOT NULL,     -- source.lsn of the truncate
    batch_id     BIGINT NOT NULL,     -- the batch that applied it
    PRIMARY KEY (table_schema, table_name)
);
