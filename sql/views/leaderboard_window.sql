-- leaderboard_window: the leaderboard over the scores of the last N minutes of event
-- time (N = $leaderboard_window_min): achieved_at in (window_end - N min, window_end],
-- where window_end is the newest achieved_at seen so far (it never moves back). A
-- late score counts when its own achieved_at is still inside the window.
-- inputs: arcade.scores, arcade.players
-- state: live.leaderboard_window
-- params: leaderboard_window_min
--
-- Incremental: a batch recomputes, from the mirror and within the window only, the
-- players it touched and the players whose scores slid out of the window as the
-- clock advanced; the cost follows the window's size, not the history's.

CREATE OR REPLACE TEMP TABLE _lw_clock AS
SELECT
    old.clock AS old_end,
    greatest(old.clock, (SELECT max(achieved_at) FROM _after_arcade_scores)) AS new_end
FROM (SELECT (SELECT clock FROM live.progress WHERE name = 'leaderboard_window') AS clock) AS old;

INSERT INTO live.progress (name, clock, batch_id, updated)
SELECT 'leaderboard_window', new_end, $batch_id, now() FROM _lw_clock WHERE new_end IS NOT NULL
ON CONFLICT (name) DO UPDATE SET clock = excluded.clock, batch_id = excluded.batch_id, updated = excluded.updated;

CREATE OR REPLACE TEMP TABLE _lw_bounds AS
SELECT
    new_end - to_minutes($leaderboard_window_min::BIGINT) AS new_start,
    new_end,
    coalesce(old_end - to_minutes($leaderboard_window_min::BIGINT), new_end) AS old_start
FROM _lw_clock;

-- Touched: players of the batch's score rows (before and after), players whose rows
-- changed, and players with scores that left the window (old_start, new_start].
CREATE OR REPLACE TEMP TABLE _lw_touched AS
SELECT player_id FROM _after_arcade_scores
UNION SELECT player_id FROM _before_arcade_scores
UNION SELECT player_id FROM _before_arcade_players
UNION SELECT player_id FROM _after_arcade_players
UNION SELECT s.player_id
    FROM arcade.scores AS s
    WHERE s.achieved_at > (SELECT old_start FROM _lw_bounds)
        AND s.achieved_at <= (SELECT new_start FROM _lw_bounds);

CREATE OR REPLACE TEMP TABLE _lw_rows AS
SELECT p.player_id, p.name, p.country, w.total_points, w.best_points, w.scores
FROM (
    SELECT s.player_id, sum(s.points) AS total_points, max(s.points) AS best_points, count(*) AS scores
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
    (player_id, name, country, total_points, best_points, scores, updated_batch)
SELECT player_id, name, country, total_points, best_points, scores, $batch_id FROM _lw_rows
ON CONFLICT (player_id) DO UPDATE SET
    name = excluded.name,
    country = excluded.country,
    total_points = excluded.total_points,
    best_points = excluded.best_points,
    scores = excluded.scores,
    updated_batch = excluded.updated_batch;

CREATE OR REPLACE TEMP TABLE _lw_rank AS
SELECT player_id, rank() OVER (ORDER BY total_points DESC) AS new_rank
FROM live.leaderboard_window;

UPDATE live.leaderboard_window
SET prev_rank = live.leaderboard_window.rank,
    rank = r.new_rank,
    rank_change = live.leaderboard_window.rank - r.new_rank
FROM _lw_rank AS r
WHERE live.leaderboard_window.player_id = r.player_id
    AND (live.leaderboard_window.rank IS DISTINCT FROM r.new_rank
        OR live.leaderboard_window.prev_rank IS DISTINCT FROM live.leaderboard_window.rank
        OR live.leaderboard_window.rank_change IS DISTINCT FROM 0);
