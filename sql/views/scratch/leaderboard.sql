-- The leaderboard computed from scratch over the mirror tables: the definition the
-- incrementally maintained live.leaderboard must equal row for row (rank changes
-- aside: they depend on the batch history). Used by tests and the integration check.
SELECT
    p.player_id,
    p.name,
    p.country,
    sum(s.points)::BIGINT AS total_points,
    max(s.points) AS best_points,
    count(*)::INTEGER AS scores,
    rank() OVER (ORDER BY sum(s.points) DESC)::INTEGER AS rank
FROM arcade.scores AS s
JOIN arcade.players AS p USING (player_id)
WHERE NOT coalesce(p.banned, false)
GROUP BY p.player_id, p.name, p.country
ORDER BY p.player_id;
