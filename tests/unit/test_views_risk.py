"""account_risk and the money-conservation check on hand-built batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from test_views_fraud import T0, Bank, payments, s

from engine.lab.views.handbatch import HandBatch
from engine.views.maintainer import STUCK_AFTER_BATCHES


@pytest.fixture
def bank() -> Iterator[Bank]:
    b = Bank()
    e = b.edit()
    b.account(e, 1)
    b.account(e, 2)
    b.commit(e)
    yield b
    b.con.close()


def risk(bank: Bank) -> dict[int, tuple[object, ...]]:
    rows = bank.con.execute(
        "SELECT account_id, risk_level, alerts_7d, top_rule, declined_24h, reason "
        "FROM live.account_risk ORDER BY account_id"
    ).fetchall()
    return {int(r[0]): r[1:] for r in rows}


def risk_score(bank: Bank, account: int) -> float:
    rows = bank.con.execute(
        "SELECT risk_score FROM live.account_risk WHERE account_id = ?", [account]
    ).fetchall()
    return float(rows[0][0])


def tick(bank: Bank, at: object) -> None:
    """Move the bank stream's clock: a payment on account 2 at `at`."""
    e = bank.edit()
    bank.txn(e, 2, "-1.00", at)  # type: ignore[arg-type]
    bank.commit(e)


def test_an_alert_makes_the_account_risky_until_it_ages(bank: Bank) -> None:
    e = bank.edit()
    payments(bank, e, 8, T0)
    bank.commit(e)
    level, alerts, rule, declined, reason = risk(bank)[1]
    assert (level, alerts, rule, declined) == ("medium", 1, "velocity_burst", 0)
    assert str(reason).startswith("1 alert(s) in 7 days, most severe velocity_burst")
    score = risk_score(bank, 1)
    tick(bank, T0 + timedelta(days=1))  # the score decays with event time
    assert 0 < risk_score(bank, 1) < score
    tick(bank, T0 + timedelta(days=8))
    assert 1 not in risk(bank)


def test_declines_count_and_a_deleted_decline_no_longer_does(bank: Bank) -> None:
    e = bank.edit()
    ids = [bank.txn(e, 1, "-80.00", T0 + s(60 * i), status="declined") for i in range(3)]
    bank.commit(e)
    assert risk(bank)[1][:4] == ("low", 0, None, 3)
    bank.commit(bank.edit().delete("bank.transactions", ids[0]))
    assert risk(bank)[1][3] == 2
    tick(bank, T0 + timedelta(days=2))
    assert risk(bank) == {}


# -- money conservation ------------------------------------------------------------------


def leg(bank: Bank, e: HandBatch, tid: int, src: int, dst: int, amount: str) -> None:
    out = Decimal(amount)
    bank.txn(
        e,
        src if out < 0 else dst,
        amount,
        T0,
        kind="transfer_out" if out < 0 else "transfer_in",
        channel="mobile",
        counterparty=dst if out < 0 else src,
        txn_id=tid,
    )


def unbalanced(bank: Bank) -> list[tuple[object, ...]]:
    return bank.con.execute(
        "SELECT txn_id, problem FROM live.unbalanced_transfers ORDER BY txn_id"
    ).fetchall()


def test_both_legs_in_one_batch_conserve_money(bank: Bank) -> None:
    e = bank.edit()
    leg(bank, e, 1, 1, 2, "-50.00")
    leg(bank, e, 2, 1, 2, "50.00")
    assert bank.commit(e).conservation_violations == 0
    assert unbalanced(bank) == []


def test_a_batch_that_cuts_a_transfer_in_half_is_counted(bank: Bank) -> None:
    e = bank.edit()
    leg(bank, e, 1, 1, 2, "-50.00")
    stats = bank.commit(e)
    assert stats.conservation_violations == 1
    assert unbalanced(bank) == [(1, "the transfer_in leg is missing")]
    e = bank.edit()
    leg(bank, e, 2, 1, 2, "50.00")  # the other partition's batch brings the other leg
    assert bank.commit(e).conservation_violations == 0
    assert unbalanced(bank) == []


def test_legs_that_do_not_offset_are_a_violation(bank: Bank) -> None:
    e = bank.edit()
    leg(bank, e, 1, 1, 2, "-50.00")
    leg(bank, e, 2, 1, 2, "50.00")
    bank.commit(e)
    e = bank.edit().update("bank.transactions", 2, amount=Decimal("45.00"))
    stats = bank.commit(e)
    # the changed leg no longer pairs with the other: both stand alone
    assert stats.conservation_violations == 2
    assert [r[0] for r in unbalanced(bank)] == [1, 2]


def test_a_declined_transfer_needs_no_second_leg(bank: Bank) -> None:
    e = bank.edit()
    bank.txn(
        e,
        1,
        "-9000.00",
        T0,
        kind="transfer_out",
        channel="mobile",
        counterparty=2,
        status="declined",
    )
    assert bank.commit(e).conservation_violations == 0


def test_only_a_transfer_half_written_for_many_batches_is_warned_about(
    bank: Bank, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine.views.maintainer")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    e = bank.edit()
    leg(bank, e, 1, 1, 2, "-50.00")  # the other leg comes the next batch: usual
    bank.commit(e)
    e = bank.edit()
    leg(bank, e, 2, 1, 2, "50.00")
    leg(bank, e, 3, 1, 2, "-70.00")  # this one's other leg never comes
    bank.commit(e)
    for _ in range(STUCK_AFTER_BATCHES + 3):
        tick(bank, T0)
    stuck = warnings()
    assert len(stuck) == 1, stuck
    assert "1 transfer(s) unbalanced in the bank mirror" in stuck[0]
    assert f"for {STUCK_AFTER_BATCHES} batches or more; see live.unbalanced_transfers" in stuck[0]
    # batch by batch it was reported at debug level only
    assert any("unbalanced" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
