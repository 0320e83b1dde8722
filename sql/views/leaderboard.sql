-- leaderboard: per player total and best score over all scores, rank, rank change.
-- inputs: arcade.scores, arcade.players
-- state: live.player_totals, live.leaderboard
--
-- Incremental: a batch moves each touched player's totals by its deltas (after-rows
-- added, before-rows subtracted), so the work depends on the batch, not on the
-- score history. Only a player whose best score was retracted (a correction down,
-- a deleted score) is re-read from the mirror, and only that player's scores.
-- Ranks are recomputed over the board (one row per player), and only changed rows
-- are written.
-- Staged rows: _before_arcade_scores/_after_arcade_scores and the same for players
-- (the batch's rows of the changed keys before and after it); $batch_id.

-- Deltas per player. A score that moved to another player retracts from one and
-- adds to the other; a redelivered event (before = after) nets to nothing.
CREATE OR REPLACE TEMP TABLE _lb_delta AS
SELECT
    player_id,
    sum(sign * points) AS d_total,
    sum(sign) AS d_scores,
    max(points) FILTER (WHERE sign = 1) AS added_max,
    max(points) FILTER (WHERE sign = -1) AS retracted_max
FROM (
    SELECT player_id, points, 1 AS sign FROM _after_arcade_scores
    UNION ALL
    SELECT player_id, points, -1 AS sign FROM _before_arcade_scores
)
WHERE player_id IS NOT NULL
GROUP BY player_id;

-- New totals. best_points NULL = the best was retracted: re-read below.
CREATE OR REPLACE TEMP TABLE _lb_totals AS
SELECT
    d.player_id,
    coalesce(t.total_points, 0) + coalesce(d.d_total, 0) AS total_points,
    coalesce(t.scores, 0) + d.d_scores AS scores,
    CASE
        WHEN d.retracted_max IS NOT NULL
            AND d.retracted_max >= coalesce(t.best_points, -1)
            AND coalesce(d.added_max, -1) < d.retracted_max
            THEN NULL
        ELSE greatest(t.best_points, d.added_max)
    END AS best_points
FROM _lb_delta AS d
LEFT JOIN live.player_totals AS t USING (player_id);

UPDATE _lb_totals
SET best_points = m.best
FROM (
    SELECT player_id, max(points) AS best
    FROM arcade.scores
    WHERE player_id IN (SELECT player_id FROM _lb_totals WHERE best_points IS NULL AND scores > 0)
    GROUP BY player_id
) AS m
WHERE _lb_totals.player_id = m.player_id;

DELETE FROM live.player_totals
WHERE player_id IN (SELECT player_id FROM _lb_totals WHERE scores <= 0);

INSERT INTO live.player_totals (player_id, total_points, best_points, scores)
SELECT player_id, total_points, best_points, scores FROM _lb_totals WHERE scores > 0
ON CONFLICT (player_id) DO UPDATE SET
    total_points = excluded.total_points,
    best_points = excluded.best_points,
    scores = excluded.scores;

-- Board membership of the touched players: the player exists in the mirror, is not
-- banned and has scores. (A score that arrives before its player row waits off the
-- board until the player row arrives.)
CREATE OR REPLACE TEMP TABLE _lb_touched AS
SELECT player_id FROM _lb_totals
UNION SELECT player_id FROM _before_arcade_players
UNION SELECT player_id FROM _after_arcade_players;

CREATE OR REPLACE TEMP TABLE _lb_rows AS
SELECT p.player_id, p.name, p.country, t.total_points, t.best_points, t.scores
FROM arcade.players AS p
JOIN live.player_totals AS t USING (player_id)
WHERE p.player_id IN (SELECT player_id FROM _lb_touched)
    AND NOT coalesce(p.banned, false)
    AND t.scores > 0;

DELETE FROM live.leaderboard
WHERE player_id IN (SELECT player_id FROM _lb_touched)
    AND player_id NOT IN (SELECT player_id FROM _lb_rows);

INSERT INTO live.leaderboard (player_id, name, country, total_points, best_points, scores, updated_batch)
SELECT player_id, name, country, total_points, best_points, scores, $batch_id FROM _lb_rows
ON CONFLICT (player_id) DO UPDATE SET
    name = excluded.name,
    country = excluded.country,
    total_points = excluded.total_points,
    best_points = excluded.best_points,
    scores = excluded.scores,
    updated_batch = excluded.updated_batch;

-- Ranks. prev_rank keeps the rank before this batch; rows whose rank did not move
-- get rank_change 0, rows new on the board NULL.
CREATE OR REPLACE TEMP TABLE _lb_rank AS
SELECT player_id, rank() OVER (ORDER BY total_points DESC) AS new_rank
FROM live.leaderboard;

UPDATE live.leaderboard
SET prev_rank = live.leaderboard.rank,
    rank = r.new_rank,
    rank_change = live.leaderboard.rank - r.new_rank
FROM _lb_rank AS r
WHERE live.leaderboard.player_id = r.player_id
    AND (live.leaderboard.rank IS DISTINCT FROM r.new_rank
        OR live.leaderboard.prev_rank IS DISTINCT FROM live.leaderboard.rank
        OR live.leaderboard.rank_change IS DISTINCT FROM 0);
