-- leaderboard: per player total and best score over all scores, rank, rank change.
-- inputs: arcade.scores, arcade.players
-- state: live.player_totals, live.leaderboard
--
-- A function of the mirror rows alone (sql/views/README.md, "Batch boundaries"): the
-- same scores give the same board whatever batches brought them. rank: 1 = most
-- total points (ties share). prev_rank: the rank the player would have without its
-- latest score (newest achieved_at, then score_id), against the other players'
-- current totals; rank_change = prev_rank - rank, the places that score gained;
-- both NULL for a player with one score (new on the board). updated_batch is
-- bookkeeping (the last batch that wrote the row; `changefold diff` skips it).
--
-- Incremental: a batch moves each touched player's totals by its deltas (after-rows
-- added, before-rows subtracted), so the work depends on the batch, not on the
-- score history. Only a player whose best or latest score was retracted (a
-- correction, a deleted score) is re-read from the mirror, and only that player's
-- scores. Ranks are recomputed over the board (one row per player), and only
-- changed rows are written.
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
    max(points) FILTER (WHERE sign = -1) AS retracted_max,
    -- the newest added score: (achieved_at, score_id) orders a player's scores
    max(achieved_at) FILTER (WHERE sign = 1) AS added_at,
    arg_max(score_id, (achieved_at, score_id)) FILTER (WHERE sign = 1) AS added_id,
    arg_max(points, (achieved_at, score_id)) FILTER (WHERE sign = 1) AS added_points,
    list(score_id) FILTER (WHERE sign = -1) AS retracted_ids
FROM (
    SELECT player_id, score_id, points, achieved_at, 1 AS sign FROM _after_arcade_scores
    UNION ALL
    SELECT player_id, score_id, points, achieved_at, -1 AS sign FROM _before_arcade_scores
)
WHERE player_id IS NOT NULL
GROUP BY player_id;

-- New totals. best_points NULL = the best was retracted, reread = the latest score
-- was retracted or changed (or the row predates the latest_* columns): re-read below.
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
    END AS best_points,
    coalesce(list_contains(d.retracted_ids, t.latest_score_id), false)
        OR (t.player_id IS NOT NULL AND t.latest_score_id IS NULL) AS reread,
    CASE
        WHEN d.added_id IS NOT NULL AND (t.latest_score_id IS NULL
            OR (d.added_at, d.added_id) > (t.latest_at, t.latest_score_id))
            THEN d.added_at
        ELSE t.latest_at
    END AS latest_at,
    CASE
        WHEN d.added_id IS NOT NULL AND (t.latest_score_id IS NULL
            OR (d.added_at, d.added_id) > (t.latest_at, t.latest_score_id))
            THEN d.added_id
        ELSE t.latest_score_id
    END AS latest_score_id,
    CASE
        WHEN d.added_id IS NOT NULL AND (t.latest_score_id IS NULL
            OR (d.added_at, d.added_id) > (t.latest_at, t.latest_score_id))
            THEN d.added_points
        ELSE t.latest_points
    END AS latest_points
FROM _lb_delta AS d
LEFT JOIN live.player_totals AS t USING (player_id);

UPDATE _lb_totals
SET best_points = coalesce(_lb_totals.best_points, m.best),
    latest_at = CASE WHEN _lb_totals.reread THEN m.latest_at ELSE _lb_totals.latest_at END,
    latest_score_id = CASE WHEN _lb_totals.reread THEN m.latest_id ELSE _lb_totals.latest_score_id END,
    latest_points = CASE WHEN _lb_totals.reread THEN m.latest_points ELSE _lb_totals.latest_points END
FROM (
    SELECT
        player_id,
        max(points) AS best,
        max(achieved_at) AS latest_at,
        arg_max(score_id, (achieved_at, score_id)) AS latest_id,
        arg_max(points, (achieved_at, score_id)) AS latest_points
    FROM arcade.scores
    WHERE player_id IN (
        SELECT player_id FROM _lb_totals WHERE (best_points IS NULL OR reread) AND scores > 0
    )
    GROUP BY player_id
) AS m
WHERE _lb_totals.player_id = m.player_id;

DELETE FROM live.player_totals
WHERE player_id IN (SELECT player_id FROM _lb_totals WHERE scores <= 0);

INSERT INTO live.player_totals
    (player_id, total_points, best_points, scores, latest_at, latest_score_id, latest_points)
SELECT player_id, total_points, best_points, scores, latest_at, latest_score_id, latest_points
FROM _lb_totals WHERE scores > 0
ON CONFLICT (player_id) DO UPDATE SET
    total_points = excluded.total_points,
    best_points = excluded.best_points,
    scores = excluded.scores,
    latest_at = excluded.latest_at,
    latest_score_id = excluded.latest_score_id,
    latest_points = excluded.latest_points;

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

-- Ranks over the board. prev_rank: 1 + the players whose total beats the player's
-- total without its latest score (the board's totals and those "without" values
-- sorted together; a "without" value sorts before equal totals, so only greater
-- totals count); the player's own total is one of them when its latest score
-- added points.
CREATE OR REPLACE TEMP TABLE _lb_rank AS
WITH board AS (
    SELECT l.player_id, l.total_points, t.scores,
        l.total_points - coalesce(t.latest_points, 0) AS without_latest
    FROM live.leaderboard AS l
    JOIN live.player_totals AS t USING (player_id)
),
sorted AS (
    SELECT player_id, is_total, scores, total_points, without_latest,
        count(*) FILTER (WHERE is_total) OVER (
            ORDER BY v DESC, is_total ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS totals_above
    FROM (
        SELECT player_id, true AS is_total, scores, total_points, without_latest,
            total_points AS v
        FROM board
        UNION ALL
        SELECT player_id, false, scores, total_points, without_latest, without_latest FROM board
    )
)
SELECT
    player_id,
    rank() OVER (ORDER BY total_points DESC) AS new_rank,
    prev_rank
FROM (
    SELECT player_id, any_value(total_points) AS total_points,
        CASE WHEN any_value(scores) > 1 THEN
            (1 + any_value(totals_above) FILTER (WHERE NOT is_total)
                - CASE WHEN any_value(total_points) > any_value(without_latest) THEN 1 ELSE 0 END)::INTEGER
        END AS prev_rank
    FROM sorted
    GROUP BY player_id
);

UPDATE live.leaderboard
SET prev_rank = r.prev_rank,
    rank = r.new_rank,
    rank_change = r.prev_rank - r.new_rank
FROM _lb_rank AS r
WHERE live.leaderboard.player_id = r.player_id
    AND (live.leaderboard.rank IS DISTINCT FROM r.new_rank
        OR live.leaderboard.prev_rank IS DISTINCT FROM r.prev_rank
        OR live.leaderboard.rank_change IS DISTINCT FROM r.prev_rank - r.new_rank);
