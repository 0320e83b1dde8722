-- leaderboard_window: the leaderboard over the scores of the last N minutes of event
-- time (N = $leaderboard_window_min): achieved_at in (window_end - N min, window_end],
-- where window_end is the newest achieved_at among the scores in the mirror (kept in
-- live.progress 'leaderboard_window'; it moves back only when the newest score is
-- deleted or moved back). A late score counts when its own achieved_at is still
-- inside the window. prev_rank / rank_change as in leaderboard.sql, within the
-- window: a function of the mirror rows, whatever the batches.
-- inputs: arcade.scores, arcade.players
-- state: live.leaderboard_window
-- params: leaderboard_window_min
--
-- Incremental: a batch recomputes, from the mirror and within the window only, the
-- players it touched and the players whose scores slid out of (or back into) the
-- window as its end moved; the cost follows the window's size, not the history's.
-- Only when the batch retracts the newest score and none of its scores reaches the old end
-- is the new end looked up in the mirror (the last window first).

CREATE OR REPLACE TEMP TABLE _lw_clock AS
WITH old AS (
    SELECT (SELECT clock FROM live.progress WHERE name = 'leaderboard_window') AS old_end
),
flags AS (
    SELECT
        old_end,
        (SELECT max(achieved_at) FROM _after_arcade_scores) AS added_max,
        coalesce((SELECT max(achieved_at) FROM _before_arcade_scores) >= old_end, false) AS retracted
    FROM old
),
-- Scores the batch did not touch are at or before the old end: the mirror is looked up
-- only when none of the batch's after-rows reaches it. DuckDB computes a scalar subquery
-- even in a CASE branch not taken, hence the guards on `look` inside the lookups.
lookup AS (
    SELECT *, retracted AND coalesce(added_max < old_end, true) AS look FROM flags
)
SELECT
    old_end,
    retracted,
    CASE
        WHEN look THEN coalesce(
            (SELECT max(achieved_at) FROM arcade.scores
                WHERE achieved_at > old_end - to_minutes($leaderboard_window_min::BIGINT)
                    AND look),
            (SELECT max(achieved_at) FROM arcade.scores WHERE (SELECT look FROM lookup))
        )
        ELSE greatest(old_end, added_max)
    END AS new_end
FROM lookup;

INSERT INTO live.progress (name, clock, batch_id, updated)
SELECT 'leaderboard_window', new_end, $batch_id, now() FROM _lw_clock
WHERE new_end IS NOT NULL OR retracted
ON CONFLICT (name) DO UPDATE SET clock = excluded.clock, batch_id = excluded.batch_id, updated = excluded.updated;

CREATE OR REPLACE TEMP TABLE _lw_bounds AS
SELECT
    new_end - to_minutes($leaderboard_window_min::BIGINT) AS new_start,
    new_end,
    coalesce(old_end - to_minutes($leaderboard_window_min::BIGINT), new_end) AS old_start
FROM _lw_clock;

-- Touched: players of the batch's score rows (before and after), players whose rows
-- changed, players with scores between the old and the new start of the window (slid
-- out, or back in when the end moved back), and everyone when no score is left.
CREATE OR REPLACE TEMP TABLE _lw_touched AS
SELECT player_id FROM _after_arcade_scores
UNION SELECT player_id FROM _before_arcade_scores
UNION SELECT player_id FROM _before_arcade_players
UNION SELECT player_id FROM _after_arcade_players
UNION SELECT s.player_id
    FROM arcade.scores AS s
    WHERE s.achieved_at > (SELECT least(old_start, new_start) FROM _lw_bounds)
        AND s.achieved_at <= (SELECT greatest(old_start, new_start) FROM _lw_bounds)
UNION SELECT player_id FROM live.leaderboard_window WHERE (SELECT new_end FROM _lw_bounds) IS NULL;

CREATE OR REPLACE TEMP TABLE _lw_rows AS
SELECT p.player_id, p.name, p.country, w.total_points, w.best_points, w.scores, w.latest_points
FROM (
    SELECT s.player_id, sum(s.points) AS total_points, max(s.points) AS best_points,
        count(*) AS scores, arg_max(s.points, (s.achieved_at, s.score_id)) AS latest_points
    FROM arcade.scores AS s
    WHERE s.achieved_at > (SELECT new_start FROM _lw_bounds)
        AND s.achieved_at <= (SELECT new_end FROM _lw_bounds)
        AND s.player_id IN (SELECT player_id FROM _lw_touched)
    GROUP BY s.player_id
) AS w
JOIN arcade.players AS p USING (player_id)
WHERE NOT coalesce(p.banned, false);

DELETE FROM live.leaderboard_window
WHERE player_id IN (SELECT player_id FROM _lw_touched)
    AND player_id NOT IN (SELECT player_id FROM _lw_rows);

INSERT INTO live.leaderboard_window
    (player_id, name, country, total_points, best_points, scores, latest_points, updated_batch)
SELECT player_id, name, country, total_points, best_points, scores, latest_points, $batch_id
FROM _lw_rows
ON CONFLICT (player_id) DO UPDATE SET
    name = excluded.name,
    country = excluded.country,
    total_points = excluded.total_points,
    best_points = excluded.best_points,
    scores = excluded.scores,
    latest_points = excluded.latest_points,
    updated_batch = excluded.updated_batch;

-- Ranks and prev_rank over the window's board (see leaderboard.sql).
CREATE OR REPLACE TEMP TABLE _lw_rank AS
WITH board AS (
    SELECT player_id, total_points, scores, total_points - coalesce(latest_points, 0) AS without_latest
    FROM live.leaderboard_window
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

UPDATE live.leaderboard_window
SET prev_rank = r.prev_rank,
    rank = r.new_rank,
    rank_change = r.prev_rank - r.new_rank
FROM _lw_rank AS r
WHERE live.leaderboard_window.player_id = r.player_id
    AND (live.leaderboard_window.rank IS DISTINCT FROM r.new_rank
        OR live.leaderboard_window.prev_rank IS DISTINCT FROM r.prev_rank
        OR live.leaderboard_window.rank_change IS DISTINCT FROM r.prev_rank - r.new_rank);
