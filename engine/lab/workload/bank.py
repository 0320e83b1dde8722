"""The bank planner: a population of customers with habits, living their lives.

Setup (written first, unpaced): merchants, then `population` customers, each opened
months to years before the simulated start, with accounts, devices and an opening
deposit. Stream (paced): card purchases, ATM withdrawals, transfers, weekly pay,
contact and device changes, sign-ups, account closures, settlements, reversals and
expired holds; injected fraud (fraud.py); and, with `hot_key_share`, a few busy
business accounts that take that share of the activity.

Habits: each customer has a home country, a typical purchase amount, 3-5 favourite
everyday categories, a share of online shopping and an activity rate (about one
activity per 6 simulated hours). Normal but unusual behaviour exists on purpose,
so that naive fraud rules raise false positives: trips abroad (after a realistic
flight time), large purchases, new phones, large transfers between people, new
customers with a large first deposit, and the busy business accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from engine.lab.workload import bank_sql as q
from engine.lab.workload.bank_world import (
    EVERYDAY,
    LARGE,
    ONLINE,
    Account,
    BankWorld,
    Customer,
    Merchant,
)
from engine.lab.workload.fraud import FraudCase, FraudInjector
from engine.lab.workload.geo import MERCHANT_COUNTRIES, TRAVEL_COUNTRIES, flight_us
from engine.lab.workload.plan import (
    US_PER_DAY,
    US_PER_H,
    US_PER_MIN,
    Action,
    Ids,
    PgTxn,
    PlanConfig,
    Scheduler,
    Statement,
)
from engine.lab.workload.rng import Rng

_ONLINE_HOMES = ("DE", "NL", "IE", "FR", "GB", "US")
_ATM_NOTES_EUR = (20, 50, 50, 100, 100, 150, 200, 300)
#: Mean simulated time between sign-ups and between merchant re-tags.
_SIGNUP_EVERY_US = 3 * US_PER_H
_RETAG_EVERY_US = 8 * US_PER_H


class BankPlanner:
    domain = "bank"

    def __init__(self, cfg: PlanConfig) -> None:
        self.cfg = cfg
        self.rng = Rng(cfg.seed)
        self.rng.uuid_salt = cfg.uuid_salt
        self.ids = Ids(cfg.id_bases)
        self.sched = Scheduler(cfg.start_us)
        self.world = BankWorld(cfg, self.rng, self.ids, self.sched)
        self.fraud = FraudInjector(self.world, cfg.fraud_rate, cfg.hot_key_share)
        self._activities: list[tuple[float, Callable[[Customer, int], PgTxn | None]]] = [
            (0.70, self._purchase),
            (0.07, self._atm),
            (0.08, self._transfer),
            (0.012, self._contact_change),
            (0.012, self._new_phone),
            (0.010, self._large_purchase),
            (0.006, self._trip),
            (0.005, self._large_transfer),
            (0.004, self._open_savings),
            (0.003, self._close_account),
            (0.002, self._freeze),
        ]
        total = sum(w for w, _ in self._activities)
        self._activities = [(w / total, f) for w, f in self._activities]

    @property
    def cases(self) -> list[FraudCase]:
        """Fraud cases planned so far (ground truth, as also written to bank.fraud_truth)."""
        return self.fraud.cases

    @property
    def hot_keys(self) -> list[int]:
        return self.world.hot_accounts

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> Iterator[PgTxn]:
        w, rng, start = self.world, self.rng, self.cfg.start_us
        created = start - 800 * US_PER_DAY
        batch: list[Statement] = []
        for country in MERCHANT_COUNTRIES:
            for cat in (*EVERYDAY, *LARGE):
                batch.append(self._merchant(cat, country, False, created))
        for cat in ONLINE:
            for i in range(5):
                batch.append(self._merchant(cat, _ONLINE_HOMES[i], True, created))
        for i in range(0, len(batch), 50):
            yield PgTxn("merchants", created, tuple(batch[i : i + 50]))

        opened = sorted(
            start - int(rng.between(7, 2000) * US_PER_DAY) for _ in range(self.cfg.population)
        )
        for i, at in enumerate(opened):
            business = i < self.cfg.hot_key_count
            cust, stmts = w.new_customer(
                at,
                kind="business" if business else "checking",
                segment="business" if business else None,
                trust="now",
            )
            if business:
                w.hot_accounts.append(cust.accounts[0])
            if rng.chance(0.3):
                stmts.append(w.open_account(cust, "savings", at))
            for aid in cust.accounts:
                weeks = rng.between(2, 10) if w.accounts[aid].kind != "savings" else 20
                out = w.cash(
                    w.accounts[aid],
                    at + US_PER_MIN,
                    int(cust.salary_cents * weeks),
                    "deposit",
                    "branch",
                    cust.home,
                )
                stmts += out.statements
            yield PgTxn("onboard", at, tuple(stmts))

    def _merchant(self, cat: str, country: str, online: bool, at: int) -> Statement:
        rng = self.rng
        mid = self.ids.take(q.MERCHANTS)
        tags = sorted({rng.pick(("contactless", "loyalty", "chain", "independent"))})
        if cat in ("gift_cards", "digital"):
            tags.append("high_risk")
        if cat in ("digital", "entertainment") and online:
            tags.append("subscription")
        m = Merchant(mid, cat, country, online, tags)
        self.world.merchants.append(m)
        if online:
            self.world.online.setdefault(cat, []).append(m)
        else:
            self.world.local.setdefault((country, cat), []).append(m)
        name = f"{cat.replace('_', ' ').title()} {country} {mid}"
        return q.insert_merchant(mid, name, cat, country, online, tags, at)

    # -- stream ----------------------------------------------------------------------------

    def stream(self) -> Iterator[PgTxn]:
        """Endless stream of Postgres transactions in simulated-time order."""
        s, rng, start = self.sched, self.rng, self.cfg.start_us
        s.at(start, self._activity)
        s.at(start + rng.exp_us(_SIGNUP_EVERY_US), self._signup)
        s.at(start + rng.exp_us(_RETAG_EVERY_US), self._retag)
        for cust in list(self.world.customers.values()):
            s.at(start + int(rng.random() * 7 * US_PER_DAY), self._payday(cust))
        if self.cfg.hot_key_share > 0 and self.world.hot_accounts:
            s.at(start, self._hot)
        return s.run()

    def _activity(self, at: int) -> PgTxn | None:
        w = self.world
        self.sched.after(
            self.rng.exp_us(US_PER_H / max(w.total_rate_per_h(), 1e-9)), self._activity
        )
        started = self.fraud.maybe_start(at)
        if started is not None:
            return started
        cust = w.pick_customer()
        if cust is None:
            return None
        roll, acc = self.rng.random(), 0.0
        for weight, act in self._activities:
            acc += weight
            if roll < acc:
                return act(cust, at)
        return self._purchase(cust, at)

    def _hot(self, at: int) -> PgTxn | None:
        """Activity of the busy business accounts (the hot keys)."""
        share = min(self.cfg.hot_key_share, 0.95)
        normal_per_h = self.world.total_rate_per_h()
        # Calibrated so that about `share` of all transaction rows are on hot accounts.
        hot_per_h = share / (1 - share) * normal_per_h * 1.05
        self.sched.after(self.rng.exp_us(US_PER_H / hot_per_h), self._hot)
        w, rng = self.world, self.rng
        acct = w.accounts[rng.pick(w.hot_accounts)]
        cust = w.customers[acct.customer_id]
        if rng.chance(0.5):
            out = w.cash(acct, at, rng.cents(80), "deposit", "wire", cust.home)
            return PgTxn("hot_income", at, tuple(out.statements))
        m = w.online_merchant(rng.pick(sorted(ONLINE)))
        out = w.card_payment(acct, at, rng.cents(60), m, "online", cust.home, w.device(cust))
        return PgTxn("hot_purchase", at, tuple(out.statements))

    def _payday(self, cust: Customer) -> Action:
        def action(at: int) -> PgTxn | None:
            acct = self.world.main_account(cust)
            if acct is None:
                return None
            self.sched.after(7 * US_PER_DAY, action)
            cents = self.rng.cents(cust.salary_cents / 100, 0.05)
            out = self.world.cash(acct, at, cents, "deposit", "wire", cust.home)
            return PgTxn("salary", at, tuple(out.statements))

        return action

    def _signup(self, at: int) -> PgTxn | None:
        self.sched.after(self.rng.exp_us(_SIGNUP_EVERY_US), self._signup)
        w, rng = self.world, self.rng
        cust, stmts = w.new_customer(at)
        acct = w.accounts[cust.accounts[0]]
        # 5%: a large first deposit (inheritance, house sale) that simply stays there.
        big = rng.chance(0.05)
        cents = rng.int_between(1_500_000, 6_000_000) if big else cust.salary_cents * 2
        out = w.cash(
            acct, at + US_PER_MIN, cents, "deposit", "wire" if big else "branch", cust.home
        )
        self.sched.after(self.rng.random() * 7 * US_PER_DAY, self._payday(cust))
        return PgTxn("signup", at, (*stmts, *out.statements))

    def _retag(self, at: int) -> PgTxn | None:
        self.sched.after(self.rng.exp_us(_RETAG_EVERY_US), self._retag)
        m = self.rng.pick(self.world.merchants)
        flag = self.rng.pick(("contactless", "loyalty", "under_review"))
        m.tags = sorted(set(m.tags) ^ {flag})
        return PgTxn("merchant_retag", at, (q.update_merchant_tags(m.merchant_id, m.tags, at),))

    # -- normal activities ------------------------------------------------------------------

    def _purchase(self, cust: Customer, at: int) -> PgTxn | None:
        w, rng = self.world, self.rng
        acct = w.main_account(cust)
        if acct is None or not cust.location:
            return None  # in transit: nothing to buy on the plane
        if rng.chance(cust.online_share):
            cat = rng.pick(("clothing", "digital", "entertainment", "clothing"))
            m = w.online_merchant(cat)
            channel = rng.pick(("online", "mobile"))
            device = w.device(cust)
            cents = rng.cents(ONLINE[cat] * cust.typical_eur / 30)
        else:
            cat = rng.pick(cust.categories)
            m = w.local_merchant(cust.location, cat)
            channel, device = "card_present", None
            cents = rng.cents(EVERYDAY[cat] * cust.typical_eur / 30)
        out = w.card_payment(acct, at, cents, m, channel, cust.location, device)
        return PgTxn("purchase", at, tuple(out.statements))

    def _large_purchase(self, cust: Customer, at: int) -> PgTxn | None:
        w, rng = self.world, self.rng
        acct = w.main_account(cust)
        if acct is None or not cust.location:
            return None
        cat = rng.pick(sorted(LARGE))
        cents = min(rng.cents(LARGE[cat], 0.4), max(acct.balance - 1_000, 100))
        m = w.local_merchant(cust.location, cat)
        out = w.card_payment(acct, at, cents, m, "card_present", cust.location, None)
        return PgTxn("large_purchase", at, tuple(out.statements))

    def _atm(self, cust: Customer, at: int) -> PgTxn | None:
        acct = self.world.main_account(cust)
        if acct is None or not cust.location:
            return None
        cents = self.rng.pick(_ATM_NOTES_EUR) * 100
        out = self.world.cash(acct, at, -cents, "withdrawal", "atm", cust.location)
        return PgTxn("atm", at, tuple(out.statements))

    def _transfer(self, cust: Customer, at: int) -> PgTxn | None:
        w, rng = self.world, self.rng
        acct = w.main_account(cust)
        if acct is None or not cust.location:
            return None
        own = [w.accounts[a] for a in cust.accounts[1:] if w.accounts[a].status == "open"]
        dst: Account | None
        if own and rng.chance(0.4):
            dst = rng.pick(own)
            cents = rng.int_between(50, 500) * 100
        else:
            dst = w.other_account(cust.customer_id)
            rent = rng.chance(0.05)
            cents = rng.int_between(400, 1500) * 100 if rent else rng.cents(40, 0.8)
        if dst is None:
            return None
        out = w.transfer(acct, dst, at, cents, "mobile", cust.location, w.device(cust))
        return PgTxn("transfer", at, tuple(out.statements))

    def _large_transfer(self, cust: Customer, at: int) -> PgTxn | None:
        """Buying a used car or paying a deposit: a big share of the balance, to a person."""
        w, rng = self.world, self.rng
        acct = w.main_account(cust)
        dst = w.other_account(cust.customer_id)
        if acct is None or dst is None or not cust.location:
            return None
        cents = int(acct.balance * rng.between(0.3, 0.8))
        out = w.transfer(acct, dst, at, cents, "online", cust.location, w.device(cust))
        return PgTxn("large_transfer", at, tuple(out.statements))

    def _contact_change(self, cust: Customer, at: int) -> PgTxn | None:
        rng = self.rng
        cust.profile = {
            **cust.profile,
            "phone": rng.phone(),
            "marketing_opt_in": rng.chance(0.4),
        }
        stmt = q.update_customer_contact(cust.customer_id, cust.email, cust.profile, at)
        return PgTxn("contact_change", at, (stmt,))

    def _new_phone(self, cust: Customer, at: int) -> PgTxn | None:
        """A new phone at home; most people remove the old one at the same time."""
        if cust.location != cust.home:
            return None
        stmts: list[Statement] = []
        if cust.devices and self.rng.chance(0.6):
            stmts.append(q.delete_device(cust.devices.pop(0)))
        stmt, _ = self.world.add_device(cust, cust.home, at)
        stmts.append(stmt)
        return PgTxn("new_device", at, tuple(stmts))

    def _trip(self, cust: Customer, at: int) -> PgTxn | None:
        """Travel abroad: away in transit, there for days, back after the flight home."""
        if cust.location != cust.home or cust.busy:
            return None
        rng, s = self.rng, self.sched
        dest = rng.pick([c for c in TRAVEL_COUNTRIES if c != cust.home])
        fly = flight_us(cust.home, dest)
        stay = int(rng.between(2, 10) * US_PER_DAY)
        cust.location = ""

        def arrive(_: int) -> None:
            cust.location = dest

        def leave(_: int) -> None:
            cust.location = ""

        def home(_: int) -> None:
            cust.location = cust.home

        s.after(fly, arrive)
        s.after(fly + stay, leave)
        s.after(2 * fly + stay, home)
        return None

    def _open_savings(self, cust: Customer, at: int) -> PgTxn | None:
        w, rng = self.world, self.rng
        main = w.main_account(cust)
        if main is None or main.status != "open" or len(cust.accounts) > 2:
            return None
        stmts = [w.open_account(cust, "savings", at)]
        savings = w.accounts[cust.accounts[-1]]
        cents = int(main.balance * rng.between(0.1, 0.4))
        if cents > 0:
            stmts += w.transfer(
                main, savings, at, cents, "online", cust.home, w.device(cust)
            ).statements
        return PgTxn("open_savings", at, tuple(stmts))

    def _close_account(self, cust: Customer, at: int) -> PgTxn | None:
        """Close the newest account: move its money to another one, or pay it out."""
        w = self.world
        live = [w.accounts[a] for a in cust.accounts if w.accounts[a].status != "closed"]
        if not live or cust.busy or cust.segment == "business":
            return None
        acct = live[-1]
        if acct.holds or acct.status != "open":
            return None
        cents = acct.balance
        stmts: list[Statement] = []
        if len(live) > 1:
            # money moves to the first open account (if any), the closed one ends at 0
            dst = next((a for a in live[:-1] if a.status == "open"), None)
            if dst is None:
                return None
            if cents > 0:
                out = w.transfer(acct, dst, at, cents, "online", cust.home, w.device(cust))
                stmts += [
                    s for s in out.statements if s.key != acct.account_id or s.table != q.ACCOUNTS
                ]
        elif cents > 0:
            out = w.cash(acct, at, -cents, "withdrawal", "branch", cust.home)
            stmts += [s for s in out.statements if s.table != q.ACCOUNTS]
        acct.status = "closed"
        stmts.append(q.close_account(acct.account_id, -cents, at))
        w.mark_changed()
        return PgTxn("close_account", at, tuple(stmts))

    def _freeze(self, cust: Customer, at: int) -> PgTxn | None:
        """The customer freezes the main account (lost card) and unfreezes it later."""
        acct = self.world.main_account(cust)
        if acct is None or acct.status != "open" or cust.busy or cust.segment == "business":
            return None
        acct.status = "frozen"

        def thaw(t: int) -> PgTxn | None:
            acct.status = "open"
            return PgTxn("unfreeze", t, (q.set_account_status(acct.account_id, "open", t),))

        self.sched.after(self.rng.between(6, 48) * US_PER_H, thaw)
        return PgTxn("freeze", at, (q.set_account_status(acct.account_id, "frozen", at),))
