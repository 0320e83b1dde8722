-- leaderboard_window computed from scratch: the scores with achieved_at in
-- (window_end - N minutes, window_end], window_end being the view's event-time clock
-- (live.progress 'leaderboard_window'). See scratch/leaderboard.sql.
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
    AND s.achieved_at <= (SELECT clock FROM live.progress WHERE name = 'leaderboard_window')
    AND s.achieved_at > (SELECT clock FROM live.progress WHERE name = 'leaderboard_window')
        - to_minutes($leaderboard_window_min::BIGINT)
GROUP BY p.player_id, p.name, p.country
ORDER BY p.player_id;
