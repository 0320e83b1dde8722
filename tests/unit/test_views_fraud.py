"""fraud_alerts: each rule on hand-built batches, near misses, replays, late events."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from engine.core.config import Settings
from engine.decode.model import MirrorName
from engine.lab.views.handbatch import HandBatch
from engine.state.deltas import MirrorDelta
from engine.views import MaintainStats, ViewMaintainer

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
SETTINGS = Settings()
TRANSACTIONS = MirrorName("bank", "transactions")


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


class Bank:
    """A state with the views installed; accounts and transactions built by hand."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        self.views = ViewMaintainer(SETTINGS.views_sql_dir, SETTINGS.views.params())
        self.views.create_mirror_tables(self.con)
        self.views.install(self.con)
        self.batch_ids = itertools.count(1)
        self.txn_ids = itertools.count(1000)
        self.merchants = itertools.count(1)
        self.last: dict[str, MirrorDelta] = {}

    def edit(self) -> HandBatch:
        return HandBatch(self.con)

    def commit(self, edit: HandBatch, batch_id: int | None = None) -> MaintainStats:
        self.last = edit.apply()
        return self.maintain(self.last, batch_id)

    def maintain(
        self, changes: dict[str, MirrorDelta], batch_id: int | None = None
    ) -> MaintainStats:
        bid = next(self.batch_ids) if batch_id is None else batch_id
        return self.views.maintain(self.con, changes, bid, datetime.now(UTC))

    def account(
        self,
        edit: HandBatch,
        aid: int,
        *,
        home: str = "DE",
        opened: datetime = T0 - timedelta(days=400),
        balance: str = "5000.00",
    ) -> HandBatch:
        edit.insert(
            "bank.accounts",
            account_id=aid,
            customer_id=aid,
            iban=f"DE{aid}",
            kind="checking",
            currency="EUR",
            balance=Decimal(balance),
            status="open",
            home_country=home,
            opened_at=opened,
        )
        return edit

    def txn(
        self,
        edit: HandBatch,
        aid: int,
        amount: str,
        at: datetime,
        *,
        kind: str = "purchase",
        channel: str = "card_present",
        country: str = "DE",
        status: str = "settled",
        merchant: int | None = None,
        device: uuid.UUID | None = None,
        counterparty: int | None = None,
        txn_id: int | None = None,
    ) -> int:
        tid = next(self.txn_ids) if txn_id is None else txn_id
        edit.insert(
            "bank.transactions",
            txn_id=tid,
            account_id=aid,
            kind=kind,
            amount=Decimal(amount),
            currency="EUR",
            merchant_id=merchant if merchant is not None else next(self.merchants),
            counterparty_account_id=counterparty,
            channel=channel,
            country=country,
            device_id=device,
            status=status,
            created_at=at,
            updated_at=at,
        )
        return tid

    def alerts(self, rule: str | None = None) -> list[dict[str, Any]]:
        rows = self.con.sql(
            "SELECT * FROM live.fraud_alerts WHERE $rule IS NULL OR rule = $rule "
            "ORDER BY event_time",
            params={"rule": rule},
        ).pl()
        return rows.to_dicts()


@pytest.fixture
def bank() -> Iterator[Bank]:
    b = Bank()
    b.commit(b.account(b.edit(), 1))
    yield b
    b.con.close()


def payments(
    bank: Bank, edit: HandBatch, n: int, start: datetime, every_s: float = 40
) -> list[int]:
    return [bank.txn(edit, 1, "-25.00", start + s(i * every_s)) for i in range(n)]


# -- velocity_burst -----------------------------------------------------------------------


def test_velocity_burst_alert_names_the_numbers(bank: Bank) -> None:
    e = bank.edit()
    ids = payments(bank, e, 7, T0)
    stats = bank.commit(e)
    [alert] = bank.alerts()
    assert alert["rule"] == "velocity_burst"
    assert alert["account_id"] == 1 and alert["customer_id"] == 1
    assert alert["evidence_txn_ids"] == ids
    assert alert["reason"] == "7 card payments in 10.0 min, usual max 0 per 10.0 min"
    assert alert["event_time"] == T0 + s(5 * 40)  # the sixth payment crossed the threshold
    assert stats.new_alerts == 1


def test_five_payments_are_no_burst(bank: Bank) -> None:
    e = bank.edit()
    payments(bank, e, 5, T0)
    bank.commit(e)
    assert bank.alerts() == []


def test_velocity_is_relative_to_the_accounts_usual_maximum(bank: Bank) -> None:
    # A busy account: 6 payments in 10 minutes every day of the last week.
    e = bank.edit()
    for day in range(1, 7):
        payments(bank, e, 6, T0 - timedelta(days=day), every_s=60)
    bank.commit(e)
    first = bank.alerts()
    e = bank.edit()
    payments(bank, e, 9, T0, every_s=30)  # 9 < 2 x usual max 6
    bank.commit(e)
    assert bank.alerts() == first
    e = bank.edit()
    payments(bank, e, 6, T0 + s(300), every_s=20)  # 12 + ... within 10 min >= 12
    bank.commit(e)
    new = [a for a in bank.alerts() if a not in first]
    assert len(new) == 1
    assert "usual max 6 per 10.0 min" in new[0]["reason"]


def test_burst_split_over_batches_is_one_alert_raised_once(bank: Bank) -> None:
    e = bank.edit()
    first = payments(bank, e, 6, T0)
    bank.commit(e)
    [alert] = bank.alerts()
    e = bank.edit()
    more = payments(bank, e, 4, T0 + s(240))
    stats = bank.commit(e)
    [grown] = bank.alerts()
    assert grown["alert_id"] == alert["alert_id"]
    assert grown["detected_at"] == alert["detected_at"]
    assert grown["first_batch"] == alert["first_batch"] < grown["last_batch"]
    assert grown["evidence_txn_ids"] == sorted(first + more)
    assert grown["reason"].startswith("10 card payments")
    assert stats.new_alerts == 0


def test_late_payment_joins_the_alert_of_its_event_time(bank: Bank) -> None:
    e = bank.edit()
    ids = payments(bank, e, 8, T0)
    bank.commit(e)
    e = bank.edit()
    bank.txn(e, 1, "-3000.00", T0 + timedelta(days=1))  # the stream moved on
    bank.commit(e)
    e = bank.edit()
    late = bank.txn(e, 1, "-12.00", T0 + s(100))  # arrives a day late, belongs to the burst
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["evidence_txn_ids"] == sorted([*ids, late])


def test_replayed_batch_raises_nothing_twice(bank: Bank) -> None:
    e = bank.edit()
    payments(bank, e, 8, T0)
    bank.commit(e, batch_id=50)
    before = bank.alerts()
    assert bank.maintain(bank.last, batch_id=50).applied is False
    redelivered = {t: MirrorDelta(c.mirror, c.after, c.after) for t, c in bank.last.items()}
    stats = bank.maintain(redelivered, batch_id=51)
    assert stats.applied and stats.new_alerts == 0
    assert bank.alerts() == before


# -- card_testing ---------------------------------------------------------------------------


def test_card_testing_then_the_large_payment_joins(bank: Bank) -> None:
    e = bank.edit()
    tiny = [
        bank.txn(e, 1, "-1.20", T0 + s(30 * i), channel="online", merchant=100 + i)
        for i in range(5)
    ]
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["rule"] == "card_testing"
    assert alert["reason"] == "5 payments under 5.00 EUR at 5 merchants within 15.0 min"
    e = bank.edit()
    big = bank.txn(e, 1, "-850.00", T0 + s(400), channel="online", merchant=300)
    bank.commit(e)
    [grown] = bank.alerts()
    assert grown["alert_id"] == alert["alert_id"]
    assert grown["evidence_txn_ids"] == [*tiny, big]
    assert grown["reason"].endswith("then one of 850.00 EUR")


def test_tiny_payments_at_one_merchant_are_no_card_testing(bank: Bank) -> None:
    e = bank.edit()
    for i in range(6):
        bank.txn(e, 1, "-1.20", T0 + s(30 * i), channel="online", merchant=7)
    bank.commit(e)
    assert bank.alerts() == []


# -- impossible_travel ------------------------------------------------------------------------


def test_card_present_in_two_far_countries_minutes_apart(bank: Bank) -> None:
    e = bank.edit()
    home = bank.txn(e, 1, "-30.00", T0, country="DE")
    away = bank.txn(e, 1, "-90.00", T0 + timedelta(minutes=20), country="BR")
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["rule"] == "impossible_travel"
    assert alert["evidence_txn_ids"] == [home, away]
    # centre points 9,390 km apart, less 500 km of slack for borders
    assert alert["reason"] == (
        "card used in DE then in BR, at least 8,890 km away, 20 min later (26,671 km/h)"
    )


@pytest.mark.parametrize(
    ("there", "after"),
    [("FR", timedelta(minutes=20)), ("US", timedelta(hours=11)), ("BR", timedelta(minutes=20))],
    ids=["neighbour", "after-a-flight", "online"],
)
def test_possible_travel_is_no_alert(bank: Bank, there: str, after: timedelta) -> None:
    e = bank.edit()
    bank.txn(e, 1, "-30.00", T0, country="DE")
    channel = "online" if there == "BR" else "card_present"
    bank.txn(e, 1, "-90.00", T0 + after, country=there, channel=channel)
    bank.commit(e)
    assert bank.alerts() == []


# -- account_takeover --------------------------------------------------------------------------


def device(
    bank: Bank, edit: HandBatch, country: str, at: datetime, trusted: bool = False
) -> uuid.UUID:
    dev = uuid.uuid4()
    edit.insert(
        "bank.devices",
        device_id=dev,
        customer_id=1,
        platform="android",
        country=country,
        trusted=trusted,
        registered_at=at,
        updated_at=at,
    )
    return dev


def drain(bank: Bank, edit: HandBatch, dev: uuid.UUID, amount: str, at: datetime) -> int:
    tid = bank.txn(
        edit,
        1,
        "-" + amount,
        at,
        kind="transfer_out",
        channel="mobile",
        country="NG",
        device=dev,
        counterparty=2,
    )
    edit.update("bank.accounts", 1, balance=Decimal("5000.00") - Decimal(amount))
    return tid


def test_takeover_transfers_from_a_new_foreign_device(bank: Bank) -> None:
    e = bank.edit()
    dev = device(bank, e, "NG", T0)
    tid = drain(bank, e, dev, "3000.00", T0 + timedelta(minutes=12))
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["rule"] == "account_takeover"
    assert alert["evidence_txn_ids"] == [tid]
    assert alert["reason"] == (
        "1 transfer(s) moved 3,000.00 EUR (60% of the balance) within 0 min from an untrusted "
        "device registered in NG (home DE) 12 min before"
    )


@pytest.mark.parametrize(
    ("country", "trusted", "amount"),
    [("DE", False, "3000.00"), ("NG", True, "3000.00"), ("NG", False, "200.00")],
    ids=["home-device", "trusted-device", "small-share"],
)
def test_no_takeover(bank: Bank, country: str, trusted: bool, amount: str) -> None:
    e = bank.edit()
    dev = device(bank, e, country, T0, trusted=trusted)
    drain(bank, e, dev, amount, T0 + timedelta(minutes=12))
    bank.commit(e)
    assert bank.alerts() == []


def test_takeover_found_when_the_device_arrives_after_the_transfer(bank: Bank) -> None:
    dev = uuid.uuid4()
    e = bank.edit()
    drain(bank, e, dev, "3000.00", T0 + timedelta(minutes=12))
    bank.commit(e)  # the devices topic lags: the transfer names an unknown device
    assert bank.alerts() == []
    e = bank.edit()
    e.insert(
        "bank.devices",
        device_id=dev,
        customer_id=1,
        platform="web",
        country="NG",
        trusted=False,
        registered_at=T0,
        updated_at=T0,
    )
    bank.commit(e)
    assert [a["rule"] for a in bank.alerts()] == ["account_takeover"]


# -- structuring -------------------------------------------------------------------------------


def cash(bank: Bank, edit: HandBatch, amount: str, at: datetime) -> int:
    return bank.txn(edit, 1, amount, at, kind="deposit", channel="branch")


def test_structuring_two_deposits_just_under_the_threshold(bank: Bank) -> None:
    e = bank.edit()
    ids = [cash(bank, e, "9500.00", T0), cash(bank, e, "9800.00", T0 + timedelta(hours=10))]
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["rule"] == "structuring"
    assert alert["evidence_txn_ids"] == ids
    assert alert["reason"] == (
        "2 cash deposits between 9,000 and 10,000 EUR within 10.0 h, 19,300.00 EUR in total "
        "(reporting threshold 10,000 EUR)"
    )


@pytest.mark.parametrize(
    ("second", "after"),
    [("12000.00", timedelta(hours=10)), ("9800.00", timedelta(days=3))],
    ids=["above-threshold", "days-apart"],
)
def test_no_structuring(bank: Bank, second: str, after: timedelta) -> None:
    e = bank.edit()
    cash(bank, e, "9500.00", T0)
    cash(bank, e, second, T0 + after)
    bank.commit(e)
    assert bank.alerts() == []


# -- new_account_large_transfer ------------------------------------------------------------------


def new_account_case(bank: Bank, opened_days_ago: float, onward_status: str = "settled") -> None:
    e = bank.edit()
    bank.account(e, 9, opened=T0 - timedelta(days=opened_days_ago), balance="0.00")
    bank.txn(e, 9, "20000.00", T0, kind="deposit", channel="wire")
    bank.txn(
        e,
        9,
        "-19000.00",
        T0 + timedelta(minutes=40),
        kind="purchase",
        channel="online",
        status=onward_status,
    )
    bank.commit(e)


def test_new_account_moves_a_large_inflow_on() -> None:
    bank = Bank()
    new_account_case(bank, 2)
    [alert] = bank.alerts()
    assert alert["rule"] == "new_account_large_transfer"
    assert alert["account_id"] == 9
    assert alert["reason"] == (
        "account opened 2.0 days earlier received 20,000.00 EUR and moved 95% of it on "
        "within 40 min"
    )


@pytest.mark.parametrize(
    ("days", "status"), [(60, "settled"), (2, "reversed")], ids=["old-account", "reversed"]
)
def test_no_new_account_alert(days: float, status: str) -> None:
    """An old account is no mule; a reversed onward payment moved no money."""
    bank = Bank()
    new_account_case(bank, days, status)
    assert bank.alerts() == []


def test_takeover_judged_again_when_the_balance_arrives_late(bank: Bank) -> None:
    """The account row and the transfer come from different topics: the transfer may be
    folded while the mirror still shows an older, larger balance."""
    e = bank.edit()
    dev = device(bank, e, "NG", T0)
    bank.txn(
        e,
        1,
        "-3000.00",
        T0 + timedelta(minutes=12),
        kind="transfer_out",
        channel="mobile",
        country="NG",
        device=dev,
        counterparty=2,
    )
    e.update("bank.accounts", 1, balance=Decimal("30000.00"))  # stale: 10% would move
    bank.commit(e)
    assert bank.alerts() == []
    bank.commit(bank.edit().update("bank.accounts", 1, balance=Decimal("2000.00")))
    [alert] = bank.alerts()
    assert alert["rule"] == "account_takeover"
    assert "(60% of the balance)" in alert["reason"]


def test_takeover_share_counts_what_happened_after_the_transfer(bank: Bank) -> None:
    e = bank.edit()
    dev = device(bank, e, "NG", T0)
    drain(bank, e, dev, "3000.00", T0 + timedelta(minutes=12))
    # the account row already shows a deposit whose transaction comes in a later batch
    e.update("bank.accounts", 1, balance=Decimal("12000.00"))
    bank.commit(e)
    assert bank.alerts() == []  # 3,000 of 15,000: 20%
    e = bank.edit()
    bank.txn(e, 1, "10000.00", T0 + timedelta(hours=1), kind="deposit", channel="wire")
    bank.commit(e)
    [alert] = bank.alerts()
    assert "(60% of the balance)" in alert["reason"]


def test_truncated_transactions_keep_raised_alerts(bank: Bank) -> None:
    e = bank.edit()
    payments(bank, e, 8, T0)
    bank.commit(e)
    raised = bank.alerts()
    gone = bank.con.sql("SELECT * FROM bank.transactions").pl()
    bank.con.execute("DELETE FROM bank.transactions")
    stats = bank.maintain(
        {"bank.transactions": MirrorDelta(TRANSACTIONS, gone, gone.clear(), truncated=True)}
    )
    assert stats.applied
    assert bank.alerts() == raised  # findings stay; derived counts start over
    assert bank.con.execute("SELECT count(*) FROM live.fraud_hits").fetchall() == [(0,)]


def test_an_alert_goes_with_its_evidence_whichever_batch_deletes_it() -> None:
    """Alerts are a function of the current rows: expired holds deleted in the batch
    that brought them, or a batch later, leave the same (no) alert."""

    def run(split: bool) -> list[dict[str, Any]]:
        bank = Bank()
        bank.commit(bank.account(bank.edit(), 1))
        e = bank.edit()
        ids = payments(bank, e, 7, T0)
        if split:
            bank.commit(e)
            assert [a["rule"] for a in bank.alerts()] == ["velocity_burst"]
            e = bank.edit()
        for tid in ids[:3]:
            e.delete("bank.transactions", tid)
        bank.commit(e)
        return bank.alerts()

    assert run(split=False) == run(split=True) == []


def test_an_alert_shrinks_with_its_evidence(bank: Bank) -> None:
    e = bank.edit()
    ids = payments(bank, e, 9, T0)
    bank.commit(e)
    [alert] = bank.alerts()
    assert alert["evidence_txn_ids"] == ids
    bank.commit(bank.edit().delete("bank.transactions", ids[-1]))
    [shrunk] = bank.alerts()
    assert shrunk["alert_id"] == alert["alert_id"]
    assert shrunk["evidence_txn_ids"] == ids[:-1]
    assert shrunk["detected_at"] == alert["detected_at"]  # bookkeeping of the first raising
