-- The leaderboard computed from scratch over the mirror tables: the definition the
-- incrementally maintained live.leaderboard must equal row for row, rank changes
-- included (prev_rank: the rank without the player's latest score, against the
-- others' current totals). Used by tests and the integration check.
WITH per_player AS (
    SELECT
        player_id,
        sum(points)::BIGINT AS total_points,
        max(points) AS best_points,
        count(*)::INTEGER AS scores,
        arg_max(points, (achieved_at, score_id)) AS latest_points
    FROM arcade.scores
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
