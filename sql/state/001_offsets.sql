-- Next offset to consume per (consumer group, topic, partition): the position
-- after the last record folded. Written in the same transaction as the state it
-- produced; the engine seeks to it on start and on every partition assignment.
CREATE TABLE _changefold.offsets (
    group_id    VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, topic, "partition")
);
