"""Fraud scenarios injected into the bank stream, each with its ground truth.

A scenario is a short list of steps spread over simulated minutes or hours. The
first step inserts its row in `bank.fraud_truth`; every later step appends its
transaction ids to that row in the same Postgres transaction as the step itself,
so the ground truth always names exactly the transactions that exist.

Scenarios start in rotation (every kind appears after six starts) at a
probability per customer activity chosen so that about `fraud_rate` of all
transaction rows belong to a scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.lab.workload import bank_sql as q
from engine.lab.workload.bank_world import EVERYDAY, Account, BankWorld, Customer, Outcome
from engine.lab.workload.geo import FRAUD_COUNTRIES, distance_km, far_from
from engine.lab.workload.plan import US_PER_H, US_PER_MIN, US_PER_S, Action, PgTxn

SCENARIOS = (
    "velocity_burst",
    "card_testing",
    "impossible_travel",
    "account_takeover",
    "structuring",
    "new_account_large_transfer",
)
#: Cash deposits at or above this amount (EUR) must be reported; structuring stays below.
REPORTING_THRESHOLD_EUR = 10_000
#: Average transaction rows per scenario and per normal activity, for the start probability.
_TXNS_PER_SCENARIO = 7.5
_TXNS_PER_ACTIVITY = 1.35

Step = Callable[[int], Outcome]


@dataclass
class FraudCase:
    """One injected scenario instance, as planned (mirrors its bank.fraud_truth row)."""

    case_id: int
    scenario: str
    customer_id: int
    account_id: int
    steps_planned: int
    started_us: int
    details: dict[str, Any]
    txn_ids: list[int] = field(default_factory=list)
    steps_done: int = 0
    ended_us: int = 0


@dataclass
class _Plan:
    customer: Customer
    account: Account
    details: dict[str, Any]
    #: (delay after the previous step in microseconds, step); the first delay is ignored.
    steps: Sequence[tuple[int, Step]]


class FraudInjector:
    def __init__(self, world: BankWorld, fraud_rate: float, hot_share: float = 0.0) -> None:
        self.world = world
        self.rng = world.rng
        f = min(max(fraud_rate, 0.0), 0.5)
        # Hot accounts write their own share of the rows; scenarios start from the rest.
        rest = 1.0 - min(max(hot_share, 0.0), 0.95)
        self.p_start = min(1.0, f * _TXNS_PER_ACTIVITY / (_TXNS_PER_SCENARIO * (1.0 - f) * rest))
        self.cases: list[FraudCase] = []
        self._next = self.rng.int_between(0, len(SCENARIOS) - 1)
        self._builders: dict[str, Callable[[int], _Plan | None]] = {
            "velocity_burst": self._velocity_burst,
            "card_testing": self._card_testing,
            "impossible_travel": self._impossible_travel,
            "account_takeover": self._account_takeover,
            "structuring": self._structuring,
            "new_account_large_transfer": self._new_account_large_transfer,
        }

    def maybe_start(self, at_us: int) -> PgTxn | None:
        """Called once per customer activity; starts the next scenario with p_start."""
        if self.p_start <= 0 or not self.rng.chance(self.p_start):
            return None
        scenario = SCENARIOS[self._next]
        plan = self._builders[scenario](at_us)
        if plan is None:  # nobody suitable right now; try this scenario next time
            return None
        self._next = (self._next + 1) % len(SCENARIOS)
        plan.customer.busy = True
        case = FraudCase(
            case_id=self.world.ids.take(q.FRAUD_TRUTH),
            scenario=scenario,
            customer_id=plan.customer.customer_id,
            account_id=plan.account.account_id,
            steps_planned=len(plan.steps),
            started_us=at_us,
            details=plan.details,
        )
        self.cases.append(case)
        return self._run_step(case, plan, 0, at_us)

    def _run_step(self, case: FraudCase, plan: _Plan, index: int, at_us: int) -> PgTxn:
        outcome = plan.steps[index][1](at_us)
        case.txn_ids.extend(outcome.txn_ids)
        case.steps_done += 1
        case.ended_us = at_us
        if index == 0:
            truth = q.insert_case(
                case.case_id,
                case.scenario,
                case.customer_id,
                case.account_id,
                outcome.txn_ids,
                case.steps_planned,
                at_us,
                case.details,
            )
        else:
            truth = q.extend_case(case.case_id, outcome.txn_ids, at_us)
        if index + 1 < len(plan.steps):
            self.world.sched.after(plan.steps[index + 1][0], self._later(case, plan, index + 1))
        else:
            plan.customer.busy = False
        return PgTxn(f"fraud:{case.scenario}", at_us, (*outcome.statements, truth))

    def _later(self, case: FraudCase, plan: _Plan, index: int) -> Action:
        return lambda at_us: self._run_step(case, plan, index, at_us)

    # -- victims --------------------------------------------------------------------------

    def _victim(self, min_balance_cents: int) -> tuple[Customer, Account] | None:
        w = self.world
        for _ in range(10):
            cust = w.pick_customer()
            if cust is None or cust.busy or cust.segment == "business" or not cust.location:
                continue
            acct = w.main_account(cust)
            if acct is not None and acct.status == "open" and acct.balance >= min_balance_cents:
                return cust, acct
        return None

    def _mule(self, exclude: int) -> Account | None:
        return self.world.other_account(exclude)

    # -- scenarios ----------------------------------------------------------------------

    def _velocity_burst(self, at_us: int) -> _Plan | None:
        """Many card payments on one account within a few minutes."""
        found = self._victim(5_000)
        if found is None:
            return None
        cust, acct = found
        w, rng = self.world, self.rng

        def pay(t: int) -> Outcome:
            cat = rng.pick(sorted(EVERYDAY))
            merchant = w.local_merchant(cust.location, cat)
            channel = rng.pick(("card_present", "online"))
            cents = rng.cents(EVERYDAY[cat] * 1.5, 0.5)
            return w.card_payment(
                acct, t, cents, merchant, channel, cust.location, None, labelled=True
            )

        n = rng.int_between(8, 15)
        steps = [(rng.int_between(10, 60) * US_PER_S, pay) for _ in range(n)]
        return _Plan(cust, acct, {"payments": n, "country": cust.location}, steps)

    def _card_testing(self, at_us: int) -> _Plan | None:
        """Tiny online payments at different merchants, then a large one."""
        found = self._victim(2_000)
        if found is None:
            return None
        cust, acct = found
        w, rng = self.world, self.rng
        small = [m for cat in ("digital", "gift_cards", "entertainment") for m in w.online[cat]]
        n = rng.int_between(5, min(10, len(small)))
        merchants = rng.sample(small, n)

        def tiny(i: int) -> Step:
            return lambda t: w.card_payment(
                acct,
                t,
                rng.int_between(50, 299),
                merchants[i],
                "online",
                cust.location,
                None,
                labelled=True,
            )

        def big(t: int) -> Outcome:
            merchant = w.online_merchant(rng.pick(("electronics", "gift_cards")))
            cents = rng.int_between(30_000, 150_000)
            return w.card_payment(
                acct, t, cents, merchant, "online", cust.location, None, labelled=True
            )

        steps: list[tuple[int, Step]] = [
            (rng.int_between(5, 60) * US_PER_S, tiny(i)) for i in range(n)
        ]
        steps.append((rng.int_between(1, 10) * US_PER_MIN, big))
        return _Plan(cust, acct, {"tiny_payments": n}, steps)

    def _impossible_travel(self, at_us: int) -> _Plan | None:
        """Card present in one country, then minutes later in one thousands of km away."""
        found = self._victim(10_000)
        if found is None:
            return None
        cust, acct = found
        w, rng = self.world, self.rng
        here = cust.location
        there = rng.pick(far_from(here))

        def at_home(t: int) -> Outcome:
            cat = rng.pick(cust.categories)
            return w.card_payment(
                acct,
                t,
                rng.cents(EVERYDAY[cat] * cust.typical_eur / 30),
                w.local_merchant(here, cat),
                "card_present",
                here,
                None,
                labelled=True,
            )

        def abroad(t: int) -> Outcome:
            cat = rng.pick(("electronics", "clothing", "restaurant", "grocery"))
            cat = cat if (there, cat) in w.local else "grocery"
            cents = rng.cents(cust.typical_eur * rng.between(2, 6))
            return w.card_payment(
                acct,
                t,
                cents,
                w.local_merchant(there, cat),
                "card_present",
                there,
                None,
                labelled=True,
            )

        gap = rng.int_between(5, 40) * US_PER_MIN
        details = {"countries": [here, there], "km": round(distance_km(here, there))}
        return _Plan(cust, acct, details, [(0, at_home), (gap, abroad)])

    def _account_takeover(self, at_us: int) -> _Plan | None:
        """New device and contact details from abroad, then transfers drain the balance."""
        found = self._victim(20_000)
        if found is None:
            return None
        cust, acct = found
        w, rng = self.world, self.rng
        country = rng.pick(FRAUD_COUNTRIES)
        k = rng.int_between(2, 4)
        holder: dict[str, Any] = {}

        def take_over(t: int) -> Outcome:
            dev_stmt, dev = w.add_device(cust, country, t, trust="never")
            holder["device"] = dev
            cust.email = f"{rng.gamer_tag().lower()}@example.org"
            cust.profile = {**cust.profile, "phone": rng.phone()}
            contact = q.update_customer_contact(cust.customer_id, cust.email, cust.profile, t)
            return Outcome([dev_stmt, contact], [])

        def drain(i: int) -> Step:
            def step(t: int) -> Outcome:
                share = rng.between(0.9, 1.0) if i == k - 1 else rng.between(0.3, 0.6)
                cents = max(1, int(acct.balance * share))
                mule = self._mule(cust.customer_id) or acct
                return w.transfer(acct, mule, t, cents, "mobile", country, holder["device"])

            return step

        steps: list[tuple[int, Step]] = [(0, take_over)]
        steps += [(rng.int_between(2, 15) * US_PER_MIN, drain(i)) for i in range(k)]
        return _Plan(cust, acct, {"country": country, "transfers": k}, steps)

    def _structuring(self, at_us: int) -> _Plan | None:
        """Cash deposits just below the reporting threshold, hours apart."""
        found = self._victim(0)
        if found is None:
            return None
        cust, acct = found
        w, rng = self.world, self.rng
        top = REPORTING_THRESHOLD_EUR * 100

        def deposit(t: int) -> Outcome:
            cents = top - rng.int_between(1_000, 99_000)  # 9,010.00 .. 9,990.00 EUR
            channel = rng.pick(("branch", "atm"))
            return w.cash(acct, t, cents, "deposit", channel, cust.home)

        n = rng.int_between(4, 7)
        steps = [(rng.int_between(2, 12) * US_PER_H, deposit) for _ in range(n)]
        return _Plan(cust, acct, {"threshold_eur": REPORTING_THRESHOLD_EUR, "deposits": n}, steps)

    def _new_account_large_transfer(self, at_us: int) -> _Plan | None:
        """A just-opened account receives a large wire and moves it on within the hour."""
        w, rng = self.world, self.rng
        cust, stmts = w.new_customer(at_us, trust="never")
        cust.rate_per_h /= 10  # a mule account is hardly used otherwise
        acct = w.accounts[cust.accounts[0]]
        w.mark_changed()

        def open_(t: int) -> Outcome:
            dep = w.cash(acct, t, rng.int_between(5_000, 20_000), "deposit", "branch", cust.home)
            return Outcome([*stmts, *dep.statements], dep.txn_ids)

        def wire_in(t: int) -> Outcome:
            return w.cash(
                acct, t, rng.int_between(800_000, 4_000_000), "deposit", "wire", cust.home
            )

        def move_on(t: int) -> Outcome:
            dst = self._mule(cust.customer_id)
            if dst is None:
                return w.cash(acct, t, -int(acct.balance * 0.9), "withdrawal", "branch", cust.home)
            cents = int(acct.balance * rng.between(0.85, 0.98))
            return w.transfer(acct, dst, t, cents, "online", cust.home, w.device(cust))

        steps: list[tuple[int, Step]] = [
            (0, open_),
            (rng.int_between(1, 48) * US_PER_H, wire_in),
            (rng.int_between(5, 90) * US_PER_MIN, move_on),
        ]
        return _Plan(cust, acct, {"account_opened_at_step": 1}, steps)
