"""State of the simulated bank and the money movements both normal customers and
fraudsters use. Each operation returns the statements of one application action
and keeps the simulated balances in step, so the plan never overdraws an account
(the schema's CHECK (balance >= 0) would refuse it) and

    balance = sum(amount of the account's pending and settled transactions)

holds for every account after every Postgres transaction.
"""

from __future__ import annotations

import bisect
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.lab.workload import bank_sql as q
from engine.lab.workload.geo import HOME_COUNTRIES
from engine.lab.workload.plan import (
    US_PER_DAY,
    US_PER_H,
    Action,
    Ids,
    PgTxn,
    PlanConfig,
    Scheduler,
    Statement,
)
from engine.lab.workload.rng import Rng

#: Everyday categories with the median amount (EUR) of a purchase there.
EVERYDAY = {
    "grocery": 35.0,
    "restaurant": 28.0,
    "fuel": 55.0,
    "transport": 12.0,
    "pharmacy": 20.0,
    "clothing": 60.0,
    "entertainment": 25.0,
}
#: Rare, expensive categories (a "large purchase").
LARGE = {"electronics": 650.0, "furniture": 900.0, "travel": 1100.0}
#: Categories of online-only merchants.
ONLINE = {
    "electronics": 120.0,
    "clothing": 55.0,
    "digital": 15.0,
    "gift_cards": 50.0,
    "travel": 300.0,
    "entertainment": 13.0,
}
_LANGUAGES = {
    "DE": "de",
    "AT": "de",
    "FR": "fr",
    "BE": "fr",
    "NL": "nl",
    "ES": "es",
    "IT": "it",
    "PL": "pl",
    "IE": "en",
}
SEGMENTS = ("student", "professional", "professional", "family", "retired")


@dataclass
class Merchant:
    merchant_id: int
    category: str
    country: str
    online: bool
    tags: list[str]


@dataclass
class Account:
    account_id: int
    customer_id: int
    kind: str
    opened_us: int
    balance: int = 0  # cents
    status: str = "open"
    holds: set[int] = field(default_factory=set)


@dataclass
class Customer:
    customer_id: int
    name: str
    email: str
    home: str
    segment: str
    profile: dict[str, Any]
    typical_eur: float
    categories: tuple[str, ...]
    online_share: float
    rate_per_h: float
    salary_cents: int
    location: str = ""
    accounts: list[int] = field(default_factory=list)
    devices: list[uuid.UUID] = field(default_factory=list)
    #: Set while a fraud scenario or a trip is using this customer.
    busy: bool = False


@dataclass
class Hold:
    account_id: int
    cents: int
    #: Part of a fraud case: settles or is reversed, never silently expires.
    labelled: bool = False


@dataclass(frozen=True)
class Outcome:
    """What an operation produced: its statements and the transaction ids it wrote."""

    statements: list[Statement]
    txn_ids: list[int]
    status: str = "settled"


class BankWorld:
    """Customers, accounts, merchants and holds, plus the operations that change them."""

    def __init__(self, cfg: PlanConfig, rng: Rng, ids: Ids, sched: Scheduler) -> None:
        self.cfg = cfg
        self.rng = rng
        self.ids = ids
        self.sched = sched
        self.customers: dict[int, Customer] = {}
        self.accounts: dict[int, Account] = {}
        self.merchants: list[Merchant] = []
        self.local: dict[tuple[str, str], list[Merchant]] = {}
        self.online: dict[str, list[Merchant]] = {}
        self.holds: dict[int, Hold] = {}
        #: Customers that can act, with cumulative activity weights for picking.
        self.active: list[int] = []
        self._cum: list[float] = []
        self._dirty = True
        self.hot_accounts: list[int] = []

    # -- picking -------------------------------------------------------------------------

    def mark_changed(self) -> None:
        self._dirty = True

    def total_rate_per_h(self) -> float:
        self._refresh()
        return self._cum[-1] if self._cum else 0.0

    def pick_customer(self) -> Customer | None:
        self._refresh()
        if not self._cum:
            return None
        i = bisect.bisect_right(self._cum, self.rng.random() * self._cum[-1])
        return self.customers[self.active[min(i, len(self.active) - 1)]]

    def _refresh(self) -> None:
        if not self._dirty:
            return
        self.active = [c.customer_id for c in self.customers.values() if self.main_account(c)]
        self._cum = list(itertools.accumulate(self.customers[c].rate_per_h for c in self.active))
        self._dirty = False

    def main_account(self, cust: Customer) -> Account | None:
        """The customer's first account that is not closed."""
        for a in cust.accounts:
            acct = self.accounts[a]
            if acct.status != "closed":
                return acct
        return None

    def other_account(self, exclude_customer: int) -> Account | None:
        """An open account of some other customer (for transfers), or None."""
        for _ in range(8):
            cust = self.pick_customer()
            if cust is None or cust.customer_id == exclude_customer:
                continue
            acct = self.main_account(cust)
            if acct is not None and acct.status == "open":
                return acct
        return None

    def local_merchant(self, country: str, category: str) -> Merchant:
        return self.rng.pick(self.local[(country, category)])

    def online_merchant(self, category: str) -> Merchant:
        return self.rng.pick(self.online[category])

    def device(self, cust: Customer) -> uuid.UUID | None:
        return cust.devices[-1] if cust.devices else None

    # -- onboarding -----------------------------------------------------------------------

    def new_customer(
        self,
        opened_us: int,
        *,
        kind: str = "checking",
        segment: str | None = None,
        trust: str = "later",
    ) -> tuple[Customer, list[Statement]]:
        """A customer with one account and one device (deposits are up to the caller)."""
        rng = self.rng
        cid = self.ids.take(q.CUSTOMERS)
        home = rng.pick(HOME_COUNTRIES)
        seg = segment or rng.pick(SEGMENTS)
        name = rng.person_name()
        typical = {"student": 14.0, "retired": 22.0, "business": 60.0}.get(seg, 30.0)
        typical *= rng.between(0.6, 1.8)
        cats = tuple(sorted(set(rng.sample(sorted(EVERYDAY), rng.int_between(3, 5)))))
        rate = rng.lognormvariate(0.0, 0.5) / 6.0  # about one activity per 6 simulated hours
        # Pay covers the expected spending (activities/week x typical amount) plus a margin.
        salary = int(rate * 24 * 7 * typical * 100 * rng.between(1.3, 1.9))
        profile = {
            "segment": seg,
            "phone": rng.phone(),
            "city": f"{home}-{rng.int_between(1, 40):02d}",
            "language": _LANGUAGES.get(home, "en"),
            "marketing_opt_in": rng.chance(0.4),
        }
        cust = Customer(
            customer_id=cid,
            name=name,
            email=f"{name.split()[0].lower()}.{cid}@example.net",
            home=home,
            segment=seg,
            profile=profile,
            typical_eur=typical,
            categories=cats,
            online_share=rng.between(0.1, 0.5),
            rate_per_h=rate,
            salary_cents=salary,
            location=home,
        )
        self.customers[cid] = cust
        born = opened_us - int(rng.between(19, 80) * 365.25 * US_PER_DAY)
        stmts = [q.insert_customer(cid, name, cust.email, born, home, profile, opened_us)]
        stmts.append(self.open_account(cust, kind, opened_us))
        dev_stmt, _ = self.add_device(cust, home, opened_us, trust=trust)
        stmts.append(dev_stmt)
        self.mark_changed()
        return cust, stmts

    def open_account(self, cust: Customer, kind: str, at_us: int) -> Statement:
        aid = self.ids.take(q.ACCOUNTS)
        self.accounts[aid] = Account(aid, cust.customer_id, kind, at_us)
        cust.accounts.append(aid)
        self.mark_changed()
        iban = f"{cust.home}{(aid * 7) % 89 + 10:02d}CFLD{aid:012d}"
        return q.insert_account(aid, cust.customer_id, iban, kind, cust.home, at_us)

    def add_device(
        self, cust: Customer, country: str, at_us: int, *, trust: str = "later"
    ) -> tuple[Statement, uuid.UUID]:
        """Register a device; `trust`: "now" (long known), "later" (in 1-4 days), "never"."""
        dev = self.rng.uuid4()
        cust.devices.append(dev)
        platform = self.rng.pick(("ios", "android", "android", "web"))
        if trust == "later":
            self.sched.after(self.rng.between(1, 4) * US_PER_DAY, self._trust(cust, dev))
        stmt = q.insert_device(dev, cust.customer_id, platform, country, trust == "now", at_us)
        return stmt, dev

    def _trust(self, cust: Customer, dev: uuid.UUID) -> Action:
        def action(at_us: int) -> PgTxn | None:
            if dev not in cust.devices:
                return None
            return PgTxn("device_trusted", at_us, (q.trust_device(dev, at_us),))

        return action

    # -- money ------------------------------------------------------------------------------

    def card_payment(
        self,
        acct: Account,
        at_us: int,
        cents: int,
        merchant: Merchant,
        channel: str,
        country: str,
        device: uuid.UUID | None,
        *,
        labelled: bool = False,
    ) -> Outcome:
        """A card purchase: a pending hold (balance drops now) or a decline."""
        tid = self.ids.take(q.TRANSACTIONS)
        if acct.status != "open" or acct.balance < cents:
            stmt = q.insert_txn(
                tid,
                acct.account_id,
                "purchase",
                -cents,
                merchant.merchant_id,
                None,
                channel,
                country,
                device,
                "declined",
                at_us,
            )
            return Outcome([stmt], [tid], "declined")
        acct.balance -= cents
        acct.holds.add(tid)
        self.holds[tid] = Hold(acct.account_id, cents, labelled)
        self.sched.after(self.rng.between(2, 30) * US_PER_H, self._resolve_hold(tid))
        stmts = [
            q.insert_txn(
                tid,
                acct.account_id,
                "purchase",
                -cents,
                merchant.merchant_id,
                None,
                channel,
                country,
                device,
                "pending",
                at_us,
            ),
            q.change_balance(acct.account_id, -cents, at_us),
        ]
        return Outcome(stmts, [tid], "pending")

    def _resolve_hold(self, tid: int) -> Action:
        """Settle (most), reverse (merchant voids) or expire (deleted) a pending hold."""

        def action(at_us: int) -> PgTxn | None:
            hold = self.holds.pop(tid)
            acct = self.accounts[hold.account_id]
            acct.holds.discard(tid)
            roll = self.rng.random()
            if roll < 0.88:
                return PgTxn("settle", at_us, (q.set_txn_status(tid, "settled", at_us),))
            acct.balance += hold.cents
            give_back = q.change_balance(acct.account_id, hold.cents, at_us)
            if roll < 0.94 or hold.labelled:
                stmts = (q.set_txn_status(tid, "reversed", at_us), give_back)
                return PgTxn("reverse", at_us, stmts)
            return PgTxn("expire_hold", at_us, (q.delete_txn(tid), give_back))

        return action

    def cash(
        self,
        acct: Account,
        at_us: int,
        cents: int,
        kind: str,
        channel: str,
        country: str,
        device: uuid.UUID | None = None,
    ) -> Outcome:
        """A settled deposit (cents > 0) or withdrawal (cents < 0); declined if uncovered."""
        tid = self.ids.take(q.TRANSACTIONS)
        if cents < 0 and (acct.status != "open" or acct.balance < -cents):
            stmt = q.insert_txn(
                tid,
                acct.account_id,
                kind,
                cents,
                None,
                None,
                channel,
                country,
                device,
                "declined",
                at_us,
            )
            return Outcome([stmt], [tid], "declined")
        acct.balance += cents
        stmts = [
            q.insert_txn(
                tid,
                acct.account_id,
                kind,
                cents,
                None,
                None,
                channel,
                country,
                device,
                "settled",
                at_us,
            ),
            q.change_balance(acct.account_id, cents, at_us),
        ]
        return Outcome(stmts, [tid])

    def transfer(
        self,
        src: Account,
        dst: Account,
        at_us: int,
        cents: int,
        channel: str,
        country: str,
        device: uuid.UUID | None,
    ) -> Outcome:
        """Debit row, credit row and both balance updates: one Postgres transaction."""
        out_id = self.ids.take(q.TRANSACTIONS)
        if src.status != "open" or src.balance < cents or cents <= 0:
            stmt = q.insert_txn(
                out_id,
                src.account_id,
                "transfer_out",
                -cents,
                None,
                dst.account_id,
                channel,
                country,
                device,
                "declined",
                at_us,
            )
            return Outcome([stmt], [out_id], "declined")
        in_id = self.ids.take(q.TRANSACTIONS)
        src.balance -= cents
        dst.balance += cents
        stmts = [
            q.insert_txn(
                out_id,
                src.account_id,
                "transfer_out",
                -cents,
                None,
                dst.account_id,
                channel,
                country,
                device,
                "settled",
                at_us,
            ),
            q.insert_txn(
                in_id,
                dst.account_id,
                "transfer_in",
                cents,
                None,
                src.account_id,
                channel,
                country,
                device,
                "settled",
                at_us,
            ),
            q.change_balance(src.account_id, -cents, at_us),
            q.change_balance(dst.account_id, cents, at_us),
        ]
        return Outcome(stmts, [out_id, in_id])
