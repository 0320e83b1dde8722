-- arcade domain: source schema in Postgres, captured by connectors/arcade.json.
-- Placeholder until the workload generator fills in the full model.
CREATE SCHEMA IF NOT EXISTS arcade;

CREATE TABLE arcade.players (
    player_id   bigserial PRIMARY KEY,
    name        text NOT NULL,
    country     text NOT NULL DEFAULT 'US',
    banned      boolean NOT NULL DEFAULT false
);
-- Full before-images, so updates and deletes carry every column.
ALTER TABLE arcade.players REPLICA IDENTITY FULL;

CREATE TABLE arcade.matches (
    match_id    bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE arcade.scores (
    score_id    bigserial PRIMARY KEY,
    player_id   bigint REFERENCES arcade.players,
    match_id    bigint REFERENCES arcade.matches,
    points      integer NOT NULL,
    achieved_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE arcade.cdc_heartbeat (
    id      int PRIMARY KEY,
    beat_at timestamptz NOT NULL
);
