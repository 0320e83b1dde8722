"""Plan building blocks: statements, Postgres transactions, ids and the simulated clock.

Everything here is pure and deterministic: a planner turns a seed into an iterator
of `PgTxn` values; the writer executes them. Simulated time is kept as integer
microseconds since the Unix epoch so that arithmetic is exact.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

#: Where the simulated clock starts on an empty schema.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)

US_PER_S = 1_000_000
US_PER_MIN = 60 * US_PER_S
US_PER_H = 60 * US_PER_MIN
US_PER_DAY = 24 * US_PER_H


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = moment - _UNIX
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def to_datetime(us: int) -> datetime:
    return _UNIX + timedelta(microseconds=us)


def to_date(us: int) -> date:
    return to_datetime(us).date()


EPOCH_US = to_us(EPOCH)

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with bound parameters that changes exactly one row.

    `table` is `schema.table`; `key` the primary key of the row it changes.
    A statement on a table that is not captured (`captured=False`) is not an event.
    """

    sql: str
    params: tuple[object, ...]
    table: str
    op: str
    key: object
    captured: bool = True


@dataclass(frozen=True, slots=True)
class PgTxn:
    """Statements committed together, as the application would. `at_us` is simulated time."""

    label: str
    at_us: int
    statements: tuple[Statement, ...]

    @property
    def events(self) -> int:
        return sum(1 for s in self.statements if s.captured)


@dataclass(frozen=True)
class PlanConfig:
    """Inputs of a plan. Same config -> same plan."""

    seed: int = 1
    #: Customers (bank) or players (arcade) created at the start of the run.
    population: int = 300
    #: bank: approximate share of transactions that belong to injected fraud scenarios.
    fraud_rate: float = 0.02
    #: Share of activity sent to `hot_key_count` keys (accounts / players).
    hot_key_share: float = 0.0
    hot_key_count: int = 3
    #: Simulated time of the first streamed event.
    start_us: int = EPOCH_US
    #: First free id per serial table (`schema.table` -> id); missing tables start at 1.
    id_bases: Mapping[str, int] = field(default_factory=dict)

    @property
    def uuid_salt(self) -> int:
        """What is mixed into the plan's uuids (bank device ids, arcade server ids).

        Ids continue after what the database holds and the clock after its newest row,
        but uuids are drawn from the seed alone: a second run of the same seed on the
        same database would draw the first run's device ids again (a primary key). So
        they are mixed with where this run starts (id bases, clock), which differs
        from run to run on one database and is the same for the same starting
        database. On a fresh schema the salt is 0: the uuids are exactly as drawn.
        """
        if self.start_us == EPOCH_US and all(v <= 1 for v in self.id_bases.values()):
            return 0
        where = repr((self.start_us, sorted(self.id_bases.items())))
        return int.from_bytes(hashlib.sha256(where.encode()).digest()[:16], "big")


class Ids:
    """Hands out ids per table, continuing after what the database already holds."""

    def __init__(self, bases: Mapping[str, int]) -> None:
        self._bases = dict(bases)
        self._next = dict(bases)

    def take(self, table: str) -> int:
        n = self._next.get(table, 1)
        self._next[table] = n + 1
        return n

    def high_water(self) -> dict[str, int]:
        """Largest id handed out per table (only tables that got at least one)."""
        return {t: n - 1 for t, n in self._next.items() if n > self._bases.get(t, 1)}


Action = Callable[[int], PgTxn | None]


class Scheduler:
    """Discrete-event core: actions run in simulated-time order, ties in scheduling order.

    An action gets the simulated time it runs at, may schedule further actions and
    returns the Postgres transaction it produced (or None when it wrote nothing).
    """

    def __init__(self, start_us: int) -> None:
        self.now_us = start_us
        self._heap: list[tuple[int, int, Action]] = []
        self._seq = itertools.count()

    def at(self, when_us: int, action: Action) -> None:
        heapq.heappush(self._heap, (max(when_us, self.now_us), next(self._seq), action))

    def after(self, delay_us: float, action: Action) -> None:
        self.at(self.now_us + max(1, int(delay_us)), action)

    def run(self) -> Iterator[PgTxn]:
        while self._heap:
            when, _, action = heapq.heappop(self._heap)
            self.now_us = when
            txn = action(when)
            if txn is not None and txn.statements:
                yield txn
