-- The arcade mirror tables as the engine creates them in DuckDB from the Debezium
-- change events of sql/source/arcade.sql (schema = topic prefix `arcade`); see
-- mirrors/bank.sql for the type mapping and why these shapes are here.
CREATE TABLE IF NOT EXISTS arcade.players (
    player_id      BIGINT NOT NULL,
    name           VARCHAR,
    country        VARCHAR,
    banned         BOOLEAN,
    platform       VARCHAR,
    badges         VARCHAR[],
    joined_on      DATE,
    games_played   INTEGER,
    last_played_at TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ,
    PRIMARY KEY (player_id)
);

CREATE TABLE IF NOT EXISTS arcade.matches (
    match_id   BIGINT NOT NULL,
    game       VARCHAR,
    server_id  UUID,
    status     VARCHAR,
    settings   JSON,
    started_at TIMESTAMPTZ,
    ended_at   TIMESTAMPTZ,
    PRIMARY KEY (match_id)
);

CREATE TABLE IF NOT EXISTS arcade.scores (
    score_id    BIGINT NOT NULL,
    player_id   BIGINT,
    match_id    BIGINT,
    points      INTEGER,
    achieved_at TIMESTAMPTZ,
    corrected   BOOLEAN,
    PRIMARY KEY (score_id)
);
