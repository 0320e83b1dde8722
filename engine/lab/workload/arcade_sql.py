"""The arcade generator's SQL: constant statements with bound parameters, one row each."""

from __future__ import annotations

import json
import uuid
from typing import Any

from engine.lab.workload.plan import DELETE, INSERT, UPDATE, Statement, to_date, to_datetime

PLAYERS = "arcade.players"
MATCHES = "arcade.matches"
SCORES = "arcade.scores"

CAPTURED = (PLAYERS, MATCHES, SCORES)
REQUIRED = CAPTURED
SERIAL_KEYS = {PLAYERS: "player_id", MATCHES: "match_id", SCORES: "score_id"}
CLOCK_COLUMNS = ((MATCHES, "started_at"), (PLAYERS, "updated_at"), (SCORES, "achieved_at"))

_INSERT_PLAYER = (
    "INSERT INTO arcade.players (player_id, name, country, banned, platform, badges, joined_on, "
    "games_played, last_played_at, updated_at) "
    "VALUES (%s, %s, %s, false, %s, %s, %s, 0, NULL, %s)"
)
_RENAME_PLAYER = "UPDATE arcade.players SET name = %s, updated_at = %s WHERE player_id = %s"
_MOVE_PLAYER = (
    "UPDATE arcade.players SET country = %s, platform = %s, updated_at = %s WHERE player_id = %s"
)
_BAN_PLAYER = "UPDATE arcade.players SET banned = %s, updated_at = %s WHERE player_id = %s"
_PLAYED = (
    "UPDATE arcade.players SET games_played = games_played + 1, last_played_at = %s, "
    "badges = %s, updated_at = %s WHERE player_id = %s"
)
_DELETE_PLAYER = "DELETE FROM arcade.players WHERE player_id = %s"
_INSERT_MATCH = (
    "INSERT INTO arcade.matches (match_id, game, server_id, status, settings, started_at, "
    "ended_at) VALUES (%s, %s, %s, 'running', %s::jsonb, %s, NULL)"
)
_FINISH_MATCH = "UPDATE arcade.matches SET status = 'finished', ended_at = %s WHERE match_id = %s"
_DELETE_MATCH = "DELETE FROM arcade.matches WHERE match_id = %s"
_INSERT_SCORE = (
    "INSERT INTO arcade.scores (score_id, player_id, match_id, points, achieved_at, corrected) "
    "VALUES (%s, %s, %s, %s, %s, false)"
)
_CORRECT_SCORE = "UPDATE arcade.scores SET points = %s, corrected = true WHERE score_id = %s"
_DELETE_SCORE = "DELETE FROM arcade.scores WHERE score_id = %s"


def insert_player(
    player_id: int, name: str, country: str, platform: str, joined_us: int, at_us: int
) -> Statement:
    badges: list[str] = []
    params = (player_id, name, country, platform, badges, to_date(joined_us), to_datetime(at_us))
    return Statement(_INSERT_PLAYER, params, PLAYERS, INSERT, player_id)


def rename_player(player_id: int, name: str, at_us: int) -> Statement:
    return Statement(
        _RENAME_PLAYER, (name, to_datetime(at_us), player_id), PLAYERS, UPDATE, player_id
    )


def move_player(player_id: int, country: str, platform: str, at_us: int) -> Statement:
    params = (country, platform, to_datetime(at_us), player_id)
    return Statement(_MOVE_PLAYER, params, PLAYERS, UPDATE, player_id)


def set_banned(player_id: int, banned: bool, at_us: int) -> Statement:
    params = (banned, to_datetime(at_us), player_id)
    return Statement(_BAN_PLAYER, params, PLAYERS, UPDATE, player_id)


def played(player_id: int, badges: list[str], at_us: int) -> Statement:
    at = to_datetime(at_us)
    return Statement(_PLAYED, (at, badges, at, player_id), PLAYERS, UPDATE, player_id)


def delete_player(player_id: int) -> Statement:
    return Statement(_DELETE_PLAYER, (player_id,), PLAYERS, DELETE, player_id)


def insert_match(
    match_id: int, game: str, server_id: uuid.UUID, settings: dict[str, Any], at_us: int
) -> Statement:
    params = (
        match_id,
        game,
        server_id,
        json.dumps(settings, sort_keys=True, separators=(",", ":")),
        to_datetime(at_us),
    )
    return Statement(_INSERT_MATCH, params, MATCHES, INSERT, match_id)


def finish_match(match_id: int, at_us: int) -> Statement:
    return Statement(_FINISH_MATCH, (to_datetime(at_us), match_id), MATCHES, UPDATE, match_id)


def delete_match(match_id: int) -> Statement:
    return Statement(_DELETE_MATCH, (match_id,), MATCHES, DELETE, match_id)


def insert_score(
    score_id: int, player_id: int, match_id: int, points: int, at_us: int
) -> Statement:
    params = (score_id, player_id, match_id, points, to_datetime(at_us))
    return Statement(_INSERT_SCORE, params, SCORES, INSERT, score_id)


def correct_score(score_id: int, points: int) -> Statement:
    return Statement(_CORRECT_SCORE, (points, score_id), SCORES, UPDATE, score_id)


def delete_score(score_id: int) -> Statement:
    return Statement(_DELETE_SCORE, (score_id,), SCORES, DELETE, score_id)
