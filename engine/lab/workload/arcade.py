"""The arcade planner: players play matches; scores feed a leaderboard.

Setup (written first, unpaced): `population` players who joined in the past.
Stream (paced): matches start (insert) and, minutes later, finish in one
transaction that inserts every participant's score, marks the match finished and
bumps each participant's games_played/last_played_at/badges; about 6% of matches
are abandoned before any score and deleted. Around that: sign-ups, renames,
country/platform changes, score corrections by referees, bans that delete the
cheater's scores of the current season in the same transaction (some bans are
lifted on appeal), and removal of players who signed up and never played.

Each player has a hidden skill that shapes their points. With `hot_key_share`,
that share of match seats goes to a few hot players, so the players topic (keyed
by player_id) gets partition skew; as a player takes at most one seat per match,
the share levels off near 0.7. A season lasts 7 simulated days.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.lab.workload import arcade_sql as q
from engine.lab.workload.plan import (
    US_PER_DAY,
    US_PER_H,
    US_PER_MIN,
    US_PER_S,
    Action,
    Ids,
    PgTxn,
    PlanConfig,
    Scheduler,
    Statement,
)
from engine.lab.workload.rng import Rng

_COUNTRIES = ("US", "US", "US", "BR", "DE", "FR", "GB", "JP", "KR", "MX", "PL", "SE", "CA")
_PLATFORMS = ("pc", "pc", "console", "mobile")
_GAMES = ("asteroids", "asteroids", "tetris", "pacman", "galaga")
_MODES = ("solo", "duel", "party")
_REGIONS = ("eu-west", "us-east", "us-west", "ap-north", "sa-east")
#: Mean simulated time between occurrences of each background activity.
_MATCH_EVERY_US = 40 * US_PER_S
_SIGNUP_EVERY_US = 15 * US_PER_MIN
_RENAME_EVERY_US = 25 * US_PER_MIN
_MOVE_EVERY_US = 90 * US_PER_MIN
_CORRECT_EVERY_US = 8 * US_PER_MIN
_BAN_EVERY_US = 3 * US_PER_H
_CLEANUP_EVERY_US = 2 * US_PER_H
_SEASON_US = 7 * US_PER_DAY


@dataclass
class Player:
    player_id: int
    skill: float
    hot: bool = False
    banned: bool = False
    games: int = 0
    best: int = 0
    badges: list[str] = field(default_factory=list)
    #: Scores of the current season: score_id -> points.
    season: dict[int, int] = field(default_factory=dict)


class ArcadePlanner:
    domain = "arcade"

    def __init__(self, cfg: PlanConfig) -> None:
        self.cfg = cfg
        self.rng = Rng(cfg.seed)
        self.rng.uuid_salt = cfg.uuid_salt
        self.ids = Ids(cfg.id_bases)
        self.sched = Scheduler(cfg.start_us)
        self.players: dict[int, Player] = {}
        self._pool: list[int] = []
        self._pool_dirty = True
        self.hot_keys: list[int] = []

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> Iterator[PgTxn]:
        rng, start = self.rng, self.cfg.start_us
        joined = sorted(
            start - int(rng.between(1, 900) * US_PER_DAY) for _ in range(self.cfg.population)
        )
        stmts = []
        for i, at in enumerate(joined):
            stmts.append(self._new_player(at, hot=i < self.cfg.hot_key_count))
        for i in range(0, len(stmts), 50):
            yield PgTxn("players_import", start - US_PER_H, tuple(stmts[i : i + 50]))

    def _new_player(self, at: int, *, hot: bool = False) -> Statement:
        rng = self.rng
        pid = self.ids.take(q.PLAYERS)
        player = Player(pid, skill=rng.lognormvariate(0.0, 0.5), hot=hot)
        self.players[pid] = player
        if hot:
            self.hot_keys.append(pid)
        self._pool_dirty = True
        return q.insert_player(
            pid, rng.gamer_tag(), rng.pick(_COUNTRIES), rng.pick(_PLATFORMS), at, at
        )

    # -- picking --------------------------------------------------------------------------

    def _eligible(self) -> list[int]:
        """Players who can play: not banned, not hot (hot ones are seated separately)."""
        if self._pool_dirty:
            self._pool = [p.player_id for p in self.players.values() if not (p.banned or p.hot)]
            self._pool_dirty = False
        return self._pool

    def _seats(self, k: int) -> list[Player]:
        rng, pool = self.rng, self._eligible()
        hot_free = [h for h in self.hot_keys if not self.players[h].banned]
        chosen: list[int] = []
        for _ in range(k):
            if hot_free and rng.chance(self.cfg.hot_key_share):
                chosen.append(hot_free.pop(int(rng.random() * len(hot_free))))
                continue
            for _attempt in range(5):
                pid = rng.pick(pool) if pool else None
                if pid is not None and pid not in chosen:
                    chosen.append(pid)
                    break
        return [self.players[p] for p in chosen]

    # -- stream ----------------------------------------------------------------------------

    def stream(self) -> Iterator[PgTxn]:
        s, rng, start = self.sched, self.rng, self.cfg.start_us
        s.at(start, self._match)
        for every, action in (
            (_SIGNUP_EVERY_US, self._signup),
            (_RENAME_EVERY_US, self._rename),
            (_MOVE_EVERY_US, self._move),
            (_CORRECT_EVERY_US, self._correct),
            (_BAN_EVERY_US, self._ban),
            (_CLEANUP_EVERY_US, self._cleanup),
        ):
            s.at(start + rng.exp_us(every), self._every(every, action))
        s.at(start + _SEASON_US, self._new_season)
        return s.run()

    def _every(self, mean_us: int, action: Action) -> Action:
        def recurring(at: int) -> PgTxn | None:
            self.sched.after(self.rng.exp_us(mean_us), recurring)
            return action(at)

        return recurring

    def _match(self, at: int) -> PgTxn | None:
        rng = self.rng
        self.sched.after(rng.exp_us(_MATCH_EVERY_US), self._match)
        mid = self.ids.take(q.MATCHES)
        mode = rng.pick(_MODES)
        max_players = {"solo": 4, "duel": 2, "party": 8}[mode]
        settings = {
            "mode": mode,
            "difficulty": rng.pick(("easy", "normal", "hard")),
            "region": rng.pick(_REGIONS),
            "max_players": max_players,
        }
        stmt = q.insert_match(mid, rng.pick(_GAMES), rng.uuid4(), settings, at)
        seats = rng.int_between(2, max_players)
        self.sched.after(rng.between(3, 15) * US_PER_MIN, lambda t: self._finish(mid, seats, t))
        return PgTxn("match_start", at, (stmt,))

    def _finish(self, mid: int, seats: int, at: int) -> PgTxn:
        rng = self.rng
        players = self._seats(seats)
        if not players or rng.chance(0.06):
            return PgTxn("match_abandoned", at, (q.delete_match(mid),))
        stmts: list[Statement] = []
        bumps: list[Statement] = []
        for p in players:
            sid = self.ids.take(q.SCORES)
            points = int(1000 * p.skill * rng.lognormvariate(0.0, 0.35))
            p.season[sid] = points
            p.games += 1
            if points > p.best:
                p.best = points
                if points >= 2500 and "high_scorer" not in p.badges:
                    p.badges = [*p.badges, "high_scorer"]
            if p.games in (10, 50, 100, 500):
                p.badges = [*p.badges, f"veteran_{p.games}"]
            stmts.append(q.insert_score(sid, p.player_id, mid, points, at))
            bumps.append(q.played(p.player_id, p.badges, at))
        self._pool_dirty = True
        return PgTxn("match_finish", at, (*stmts, q.finish_match(mid, at), *bumps))

    def _signup(self, at: int) -> PgTxn | None:
        return PgTxn("signup", at, (self._new_player(at),))

    def _random_player(self) -> Player | None:
        pool = self._eligible()
        return self.players[self.rng.pick(pool)] if pool else None

    def _rename(self, at: int) -> PgTxn | None:
        p = self._random_player()
        if p is None:
            return None
        return PgTxn("rename", at, (q.rename_player(p.player_id, self.rng.gamer_tag(), at),))

    def _move(self, at: int) -> PgTxn | None:
        p = self._random_player()
        if p is None:
            return None
        stmt = q.move_player(p.player_id, self.rng.pick(_COUNTRIES), self.rng.pick(_PLATFORMS), at)
        return PgTxn("player_moved", at, (stmt,))

    def _correct(self, at: int) -> PgTxn | None:
        """A referee corrects a score of the current season up or down."""
        rng = self.rng
        for _ in range(5):
            p = self._random_player()
            if p is not None and p.season:
                sid = rng.pick(sorted(p.season))
                points = max(0, int(p.season[sid] * rng.between(0.7, 1.3)))
                p.season[sid] = points
                return PgTxn("score_corrected", at, (q.correct_score(sid, points),))
        return None

    def _ban(self, at: int) -> PgTxn | None:
        """Ban a cheater and void their season: the ban and the deletes commit together."""
        p = self._random_player()
        if p is None:
            return None
        p.banned = True
        self._pool_dirty = True
        stmts = [q.set_banned(p.player_id, True, at)]
        stmts += [q.delete_score(sid) for sid in sorted(p.season)]
        p.season.clear()
        if self.rng.chance(0.3):
            self.sched.after(self.rng.between(1, 3) * US_PER_DAY, lambda t: self._unban(p, t))
        return PgTxn("ban", at, tuple(stmts))

    def _unban(self, p: Player, at: int) -> PgTxn | None:
        if p.player_id not in self.players:
            return None
        p.banned = False
        self._pool_dirty = True
        return PgTxn("unban", at, (q.set_banned(p.player_id, False, at),))

    def _cleanup(self, at: int) -> PgTxn | None:
        """Remove one player who signed up and never played."""
        idle = [p for p in self.players.values() if p.games == 0 and not p.hot]
        if not idle:
            return None
        p = self.rng.pick(idle)
        del self.players[p.player_id]
        self._pool_dirty = True
        return PgTxn("player_removed", at, (q.delete_player(p.player_id),))

    def _new_season(self, at: int) -> PgTxn | None:
        self.sched.after(_SEASON_US, self._new_season)
        for p in self.players.values():
            p.season.clear()
        return None
