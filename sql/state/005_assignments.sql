-- Which member of the engine's consumer group owns which partition right now.
CREATE TABLE _changefold.assignments (
    group_id    VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    member      VARCHAR NOT NULL,
    assigned_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, topic, "partition")
);
