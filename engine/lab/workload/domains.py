"""The demo domains the generator knows, and what it needs to know about each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from engine.core.errors import WorkloadUsageError
from engine.lab.workload import arcade_sql, bank_sql
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.plan import Ids, PgTxn, PlanConfig


class Planner(Protocol):
    ids: Ids

    @property
    def hot_keys(self) -> list[int]: ...

    def setup(self) -> Iterator[PgTxn]: ...

    def stream(self) -> Iterator[PgTxn]: ...


@dataclass(frozen=True)
class Domain:
    name: str
    planner: Callable[[PlanConfig], Planner]
    #: Tables captured by the domain's connector (connectors/<name>.json).
    captured: tuple[str, ...]
    #: Tables the generator writes (must exist).
    required: tuple[str, ...]
    #: bigserial key column per table; the generator assigns these ids itself.
    serial_keys: Mapping[str, str]
    #: Timestamp columns that tell where a previous run's simulated clock stopped.
    clock_columns: tuple[tuple[str, str], ...]
    #: The Postgres file that creates the schema (sql/source/<file>).
    sql_file: str
    #: Ground-truth table of injected fraud, if the domain has one.
    truth_table: str | None = None


DOMAINS: dict[str, Domain] = {
    "bank": Domain(
        name="bank",
        planner=BankPlanner,
        captured=bank_sql.CAPTURED,
        required=bank_sql.REQUIRED,
        serial_keys=bank_sql.SERIAL_KEYS,
        clock_columns=bank_sql.CLOCK_COLUMNS,
        sql_file="bank.sql",
        truth_table=bank_sql.FRAUD_TRUTH,
    ),
    "arcade": Domain(
        name="arcade",
        planner=ArcadePlanner,
        captured=arcade_sql.CAPTURED,
        required=arcade_sql.REQUIRED,
        serial_keys=arcade_sql.SERIAL_KEYS,
        clock_columns=arcade_sql.CLOCK_COLUMNS,
        sql_file="arcade.sql",
    ),
}


def get_domain(name: str) -> Domain:
    try:
        return DOMAINS[name]
    except KeyError:
        known = ", ".join(sorted(DOMAINS))
        raise WorkloadUsageError(f"unknown domain {name!r}; the generator knows: {known}") from None
