-- Source transactions applied lately (see engine/state/transactions.py): an event or
-- an END of one of them that comes again (re-sent records, a connector re-emitting
-- after a restart) is a duplicate and is dropped, so it neither waits forever for an
-- END nor applies an old change over newer ones. Rows of batches older than the
-- engine's batch history (CHANGEFOLD_METRICS_KEEP_BATCHES) are pruned.
CREATE TABLE _changefold.txn_applied (
    group_id    VARCHAR NOT NULL,
    xid         VARCHAR NOT NULL,
    lsn         BIGINT NOT NULL,      -- position of its END in the source log
    batch_id    BIGINT NOT NULL,      -- the batch that applied it
    PRIMARY KEY (group_id, xid)
);
-- Each held event's place in its transaction (Debezium's total_order): an event
-- delivered twice has the same (xid, total_order), so it is counted and applied once.
ALTER TABLE _changefold.txn_events ADD COLUMN total_order BIGINT;
