-- arcade domain: an online arcade game with a leaderboard, captured by
-- connectors/arcade.json (topic prefix `arcade`, topics arcade.arcade.<table>).
-- Written by `changefold generate arcade`.
--
-- Captured: players, matches, scores. Not captured: cdc_heartbeat (written by the
-- connector itself).
--
-- Replica identity is chosen per table (see the ALTER TABLE lines): FULL where an update
-- or delete must carry the old row so a downstream aggregate can retract it, DEFAULT
-- (primary key only) where the new row or the key is all a consumer needs.
--
-- Timestamps written by the generator come from its simulated clock, not from now();
-- the now() defaults only serve hand-written inserts such as
--   INSERT INTO arcade.players (name) VALUES ('someone');
CREATE SCHEMA IF NOT EXISTS arcade;

CREATE TYPE arcade.platform AS ENUM ('pc', 'console', 'mobile');

CREATE TYPE arcade.match_status AS ENUM ('running', 'finished');

CREATE TABLE arcade.players (
    player_id      bigserial PRIMARY KEY,
    -- Display name; players rename themselves now and then.
    name           text NOT NULL,
    -- ISO 3166 alpha-2 code.
    country        text NOT NULL DEFAULT 'US',
    -- A banned player's scores of the current season are deleted in the same
    -- transaction; leaderboards must hide banned players.
    banned         boolean NOT NULL DEFAULT false,
    platform       arcade.platform NOT NULL DEFAULT 'pc',
    badges         text[] NOT NULL DEFAULT '{}',
    joined_on      date NOT NULL DEFAULT current_date,
    games_played   integer NOT NULL DEFAULT 0,
    last_played_at timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- FULL: renames and bans must carry the old row (old name, old banned flag) so a
-- leaderboard can move or drop the player without a lookup; players who never played
-- are deleted, and the delete then still carries their name and country.
ALTER TABLE arcade.players REPLICA IDENTITY FULL;

CREATE TABLE arcade.matches (
    match_id   bigserial PRIMARY KEY,
    game       text NOT NULL DEFAULT 'asteroids',
    -- Game server that hosted the match.
    server_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    status     arcade.match_status NOT NULL DEFAULT 'running',
    -- Match options: {"mode", "difficulty", "region", "max_players"}.
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz
);
-- DEFAULT: a match is inserted, finished once (the new row says everything) or, when
-- abandoned before any score, deleted; for that delete the key is all a consumer needs.
ALTER TABLE arcade.matches REPLICA IDENTITY DEFAULT;

CREATE TABLE arcade.scores (
    score_id    bigserial PRIMARY KEY,
    player_id   bigint NOT NULL REFERENCES arcade.players,
    match_id    bigint NOT NULL REFERENCES arcade.matches,
    points      integer NOT NULL CHECK (points >= 0),
    achieved_at timestamptz NOT NULL DEFAULT now(),
    -- Set when a referee corrected the points after the match.
    corrected   boolean NOT NULL DEFAULT false
);
CREATE INDEX scores_player ON arcade.scores (player_id);
-- FULL: corrections change points and bans delete scores; both must carry the old
-- points and player so leaderboard sums and best scores can retract them.
ALTER TABLE arcade.scores REPLICA IDENTITY FULL;

-- Written by Debezium's heartbeat.action.query so that an idle slot keeps advancing.
-- Not captured (not in the connector's table.include.list).
CREATE TABLE arcade.cdc_heartbeat (
    id      int PRIMARY KEY,
    beat_at timestamptz NOT NULL
);
