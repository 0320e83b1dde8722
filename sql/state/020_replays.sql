-- A replay's identity, in the state file it builds (`changefold replay --into`).
-- One row: which topics, from where and until when, and the end offsets fixed at
-- the first run, so that running the same command again continues the same
-- replay and a different one is refused instead of mixing two histories.
CREATE TABLE _changefold.replays (
    topics        JSON NOT NULL,       -- ["bank.bank.accounts", ...], sorted
    from_spec     VARCHAR NOT NULL,    -- 'earliest', an ISO time, or 'offsets:<file>'
    until_spec    VARCHAR NOT NULL,    -- 'latest' or an ISO time
    until_ts      TIMESTAMPTZ,         -- the until time, when there is one
    start_offsets JSON NOT NULL,       -- {"topic": {"partition": offset}}
    end_offsets   JSON NOT NULL,       -- high watermarks when the replay began
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ          -- NULL while the replay is incomplete
);
