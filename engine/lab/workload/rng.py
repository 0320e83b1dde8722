"""Seeded randomness for planners: one `Rng` per run, never the global `random`.

Only methods of `random.Random` whose output is fixed for a given seed within one
Python version are used (random, expovariate, lognormvariate, getrandbits, ...).
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import TypeVar

T = TypeVar("T")

_FIRST = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elif",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Karin",
    "Lars",
    "Mila",
    "Nora",
    "Omar",
    "Paula",
    "Quentin",
    "Rosa",
    "Sami",
    "Tara",
    "Uwe",
    "Vera",
    "Wim",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Alba",
    "Bruno",
    "Chiara",
    "Dario",
    "Emma",
    "Felix",
    "Giulia",
    "Henrik",
    "Ida",
    "Jan",
    "Lea",
    "Marco",
    "Nils",
    "Olga",
    "Piet",
    "Rui",
    "Sofia",
    "Tomas",
    "Ulla",
    "Viktor",
]
_LAST = [
    "Albers",
    "Bauer",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ivanova",
    "Jansen",
    "Keller",
    "Lopez",
    "Moreau",
    "Novak",
    "Olsen",
    "Petit",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Torres",
    "Urban",
    "Visser",
    "Weber",
    "Yilmaz",
    "Zimmer",
    "Bianchi",
    "Kowalski",
    "Martin",
    "Nagy",
    "Silva",
]
_TAG_ADJ = [
    "Swift",
    "Lucky",
    "Silent",
    "Cosmic",
    "Pixel",
    "Turbo",
    "Neon",
    "Rusty",
    "Frozen",
    "Mighty",
    "Sneaky",
    "Atomic",
    "Wild",
    "Hyper",
    "Lazy",
    "Brave",
    "Retro",
    "Quantum",
    "Shadow",
    "Solar",
]
_TAG_NOUN = [
    "Fox",
    "Comet",
    "Ninja",
    "Otter",
    "Wizard",
    "Rocket",
    "Panda",
    "Falcon",
    "Golem",
    "Badger",
    "Viking",
    "Yeti",
    "Cobra",
    "Raven",
    "Tiger",
    "Koala",
    "Dragon",
    "Moose",
    "Phoenix",
    "Walrus",
]


class Rng(random.Random):
    """`random.Random` with the few helpers the planners need."""

    def chance(self, p: float) -> bool:
        return self.random() < p

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def int_between(self, low: int, high: int) -> int:
        """Integer in [low, high]."""
        return low + int(self.random() * (high - low + 1))

    def exp_us(self, mean_us: float) -> int:
        """Waiting time of a Poisson process with the given mean, in microseconds."""
        return max(1, int(self.expovariate(1.0) * mean_us))

    def cents(self, median_eur: float, sigma: float = 0.6) -> int:
        """Money amount in cents, log-normally spread around `median_eur`; at least 1 cent."""
        return max(1, round(median_eur * 100 * math.exp(self.gauss(0.0, sigma))))

    #: XORed into every uuid4 (see `PlanConfig.uuid_salt`); 0 leaves them as drawn.
    uuid_salt: int = 0

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.getrandbits(128) ^ self.uuid_salt, version=4)

    def person_name(self) -> str:
        return f"{self.pick(_FIRST)} {self.pick(_LAST)}"

    def gamer_tag(self) -> str:
        return f"{self.pick(_TAG_ADJ)}{self.pick(_TAG_NOUN)}{self.int_between(1, 999)}"

    def phone(self) -> str:
        return f"+{self.int_between(1, 9)}{self.digits(10)}"

    def digits(self, n: int) -> str:
        return "".join(str(int(self.random() * 10)) for _ in range(n))


def money(cents: int) -> Decimal:
    """Cents as a numeric(14, 2) value."""
    return Decimal(cents).scaleb(-2)
