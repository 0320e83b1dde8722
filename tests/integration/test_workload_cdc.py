"""A generator run in the captured database reaches every captured topic, one change
event per row change, with inserts, updates and deletes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
from support import Event, read_until

from engine.core.config import Settings
from engine.lab.workload.domains import get_domain
from engine.lab.workload.runner import RunSummary, WorkloadOptions, run_workload

_OPS = {"insert": "c", "update": "u", "delete": "d"}

#: What a run must show per captured table (bank customers, accounts and merchants are
#: never deleted by the application).
EXPECTED_OPS = {
    "bank.customers": {"c", "u"},
    "bank.accounts": {"c", "u"},
    "bank.merchants": {"c", "u"},
    "bank.devices": {"c", "u", "d"},
    "bank.transactions": {"c", "u", "d"},
    "arcade.players": {"c", "u", "d"},
    "arcade.matches": {"c", "u", "d"},
    "arcade.scores": {"c", "u", "d"},
}


def _row(ev: Event) -> dict[str, object]:
    p = ev.payload
    return p["after"] or p["before"] or {}


def _mine(summary: RunSummary, table: str) -> Callable[[Event], bool]:
    """Events of rows this run wrote: keys from the run's id bases on."""
    bases = summary.id_bases
    if table == "bank.devices":  # uuid keys: tell them by their customer
        first = bases["bank.customers"]
        return lambda ev: int(_row(ev)["customer_id"]) >= first  # type: ignore[call-overload]
    first = bases[table]
    return lambda ev: next(iter(ev.key["payload"].values())) >= first


def _changes(summary: RunSummary, table: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (t, op), n in (summary.setup.changes + summary.stream.changes).items():
        if t == table:
            out[_OPS[op]] += n
    return out


@pytest.mark.parametrize(("domain", "seconds"), [("bank", 4.0), ("arcade", 3.0)])
def test_every_captured_table_gets_its_change_events(
    stack: Settings, domain: str, seconds: float
) -> None:
    summary = run_workload(
        stack, WorkloadOptions(domain, rate=2000, duration_s=seconds, seed=1, fraud_rate=0.05)
    )
    for table in get_domain(domain).captured:
        expected = _changes(summary, table)
        assert set(expected) == EXPECTED_OPS[table], f"the run itself wrote {expected} to {table}"
        mine = _mine(summary, table)
        total = sum(expected.values())

        def seen(events: list[Event], mine: Callable[[Event], bool] = mine) -> Counter[str]:
            # Distinct by (key, op, lsn): a redelivered event would not count twice.
            distinct = {
                (json.dumps(e.key, sort_keys=True), e.payload["op"], e.payload["source"]["lsn"])
                for e in events
                if e.value is not None and e.payload["op"] != "r" and mine(e)
            }
            return Counter(op for _, op, _ in distinct)

        def complete(events: list[Event], total: int = total) -> bool:
            return sum(seen(events).values()) >= total

        topic = f"{domain}.{table}"
        events = read_until(stack, topic, complete, timeout_s=180)
        assert seen(events) == expected, topic
