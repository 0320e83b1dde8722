-- leaderboard_window computed from scratch: the scores with achieved_at in
-- (window_end - N minutes, window_end], window_end being the newest achieved_at of
-- the scores in the mirror. See scratch/leaderboard.sql (prev_rank here: the rank
-- without the player's latest score in the window, against the window's totals).
WITH bounds AS (
    SELECT max(achieved_at) AS window_end,
        max(achieved_at) - to_minutes($leaderboard_window_min::BIGINT) AS window_start
    FROM arcade.scores
),
per_player AS (
    SELECT
        player_id,
        sum(points)::BIGINT AS total_points,
        max(points) AS best_points,
        count(*)::INTEGER AS scores,
        arg_max(points, (achieved_at, score_id)) AS latest_points
    FROM arcade.scores
    WHERE achieved_at <= (SELECT window_end FROM bounds)
        AND achieved_at > (SELECT window_start FROM bounds)
    GROUP BY player_id
),
board AS (
    SELECT p.player_id, p.name, p.country, s.total_points, s.best_points, s.scores, s.latest_points
    FROM per_player AS s
    JOIN arcade.players AS p USING (player_id)
    WHERE NOT coalesce(p.banned, false)
),
ranked AS (
    SELECT
        b.*,
        rank() OVER (ORDER BY b.total_points DESC)::INTEGER AS rank,
        CASE WHEN b.scores > 1 THEN (1 + (
            SELECT count(*) FROM board AS q
            WHERE q.player_id <> b.player_id AND q.total_points > b.total_points - b.latest_points
        ))::INTEGER END AS prev_rank
    FROM board AS b
)
SELECT player_id, name, country, total_points, best_points, scores, rank, prev_rank,
    prev_rank - rank AS rank_change
FROM ranked
ORDER BY player_id;
