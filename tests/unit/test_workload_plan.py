"""Pure planning of the workload generators: determinism, row accounting, money, skew."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from engine.lab.workload import arcade_sql, bank_sql
from engine.lab.workload.arcade import ArcadePlanner
from engine.lab.workload.bank import BankPlanner
from engine.lab.workload.fraud import SCENARIOS
from engine.lab.workload.plan import EPOCH_US, INSERT, UPDATE, PgTxn, PlanConfig
from engine.lab.workload.rng import Rng

Planner = BankPlanner | ArcadePlanner


def _plan(planner: Planner, stream_events: int) -> tuple[list[PgTxn], list[PgTxn]]:
    setup = list(planner.setup())
    stream: list[PgTxn] = []
    seen = 0
    for txn in planner.stream():
        stream.append(txn)
        seen += txn.events
        if seen >= stream_events:
            break
    return setup, stream


@pytest.mark.parametrize("planner_cls", [BankPlanner, ArcadePlanner])
def test_same_seed_gives_the_same_plan_and_another_seed_does_not(planner_cls: type) -> None:
    cfg = PlanConfig(seed=11, fraud_rate=0.05, hot_key_share=0.2)
    first = _plan(planner_cls(cfg), 20_000)
    again = _plan(planner_cls(cfg), 20_000)
    other = _plan(planner_cls(PlanConfig(seed=12, fraud_rate=0.05, hot_key_share=0.2)), 20_000)
    assert first == again
    assert first != other
    # Equality must cover the values, not only the shape.
    assert [t.statements for t in first[1][:50]] != [t.statements for t in other[1][:50]]


@pytest.mark.parametrize("planner_cls", [BankPlanner, ArcadePlanner])
def test_every_update_and_delete_hits_one_existing_row(planner_cls: type) -> None:
    """Each statement changes exactly one row, so one statement = one change event."""
    setup, stream = _plan(planner_cls(PlanConfig(seed=3, hot_key_share=0.3)), 40_000)
    live: set[tuple[str, object]] = set()
    for txn in itertools.chain(setup, stream):
        for st in txn.statements:
            row = (st.table, st.key)
            if st.op == INSERT:
                assert row not in live, f"{txn.label}: {row} inserted twice"
                live.add(row)
            else:
                assert row in live, f"{txn.label}: {st.op} of missing row {row}"
                if st.op != UPDATE:
                    live.remove(row)
            assert st.sql.count("%s") == len(st.params)


@pytest.mark.parametrize("planner_cls", [BankPlanner, ArcadePlanner])
def test_ids_continue_after_the_bases_and_time_moves_forward(planner_cls: type) -> None:
    tables = bank_sql.SERIAL_KEYS if planner_cls is BankPlanner else arcade_sql.SERIAL_KEYS
    bases = {t: 1000 * (i + 1) for i, t in enumerate(tables)}
    start = EPOCH_US + 86_400_000_000
    planner = planner_cls(PlanConfig(seed=5, fraud_rate=0.1, start_us=start, id_bases=bases))
    setup, stream = _plan(planner, 10_000)
    for txn in itertools.chain(setup, stream):
        for st in txn.statements:
            if st.op == INSERT and st.table in bases:
                assert isinstance(st.key, int)
                assert st.key >= bases[st.table]
    assert all(t.at_us < start for t in setup)
    times = [t.at_us for t in stream]
    assert times == sorted(times)
    assert times[0] >= start
    # The simulated clock runs faster than wall time: 10k events cover hours.
    assert times[-1] - start > 3 * 3600 * 1_000_000


Row = tuple[int, str, Decimal, str]  # account, kind, amount, status


def _bank_ledger(txns: list[PgTxn]) -> tuple[dict[object, Decimal], dict[object, Row]]:
    """Replay bank statements: balances (never negative) and live transaction rows."""
    balances: dict[object, Decimal] = {}
    rows: dict[object, Row] = {}
    for txn in txns:
        for st in txn.statements:
            p = st.params
            if st.table == bank_sql.ACCOUNTS and st.op == INSERT:
                balances[st.key] = Decimal(0)
            elif st.table == bank_sql.ACCOUNTS and "balance = balance +" in st.sql:
                delta = p[0]
                assert isinstance(delta, Decimal)
                balances[st.key] += delta
                assert balances[st.key] >= 0, f"{txn.label} overdraws account {st.key}"
            elif st.table == bank_sql.TRANSACTIONS and st.op == INSERT:
                rows[st.key] = (p[1], p[2], p[3], p[9])  # type: ignore[assignment]
            elif st.table == bank_sql.TRANSACTIONS and st.op == UPDATE:
                account, kind, amount, _ = rows[st.key]
                rows[st.key] = (account, kind, amount, p[0])  # type: ignore[assignment]
            elif st.table == bank_sql.TRANSACTIONS:
                del rows[st.key]
    return balances, rows


def test_bank_balances_equal_their_live_transactions_and_transfers_net_to_zero() -> None:
    cfg = PlanConfig(seed=8, fraud_rate=0.1, hot_key_share=0.2)
    setup, stream = _plan(BankPlanner(cfg), 30_000)
    balances, rows = _bank_ledger(setup + stream)
    expected: dict[object, Decimal] = dict.fromkeys(balances, Decimal(0))
    statuses = Counter(status for *_, status in rows.values())
    assert statuses["pending"] and statuses["settled"] and statuses["reversed"]
    assert statuses["declined"]
    for account, _, amount, status in rows.values():
        if status in ("pending", "settled"):
            expected[account] += amount
    assert balances == expected
    transfers = [r for r in rows.values() if r[1].startswith("transfer") and r[3] == "settled"]
    assert transfers
    assert sum(r[2] for r in transfers) == 0


def test_a_transfer_is_four_events_in_one_transaction() -> None:
    _, stream = _plan(BankPlanner(PlanConfig(seed=2)), 20_000)
    transfers = [t for t in stream if t.label == "transfer" and t.events == 4]
    assert transfers
    for t in transfers:
        debit, credit, b1, b2 = t.statements
        assert (debit.table, credit.table) == (bank_sql.TRANSACTIONS, bank_sql.TRANSACTIONS)
        out_amount, in_amount = debit.params[3], credit.params[3]
        assert isinstance(out_amount, Decimal) and isinstance(in_amount, Decimal)
        assert out_amount == -in_amount < 0
        assert (debit.params[2], credit.params[2]) == ("transfer_out", "transfer_in")
        assert (b1.key, b2.key) == (debit.params[1], credit.params[1])
        assert b1.params[0] == debit.params[3] and b2.params[0] == credit.params[3]


def test_every_scenario_is_planned_with_its_transaction_ids_in_the_ground_truth() -> None:
    planner = BankPlanner(PlanConfig(seed=4, fraud_rate=0.05))
    setup, stream = _plan(planner, 40_000)
    inserted = {
        st.key: st
        for t in setup + stream
        for st in t.statements
        if st.table == bank_sql.TRANSACTIONS and st.op == INSERT
    }
    truth: dict[object, list[int]] = {}
    for t in stream:
        for st in t.statements:
            if st.table == bank_sql.FRAUD_TRUTH:
                assert not st.captured and t.label.startswith("fraud:")
                ids = st.params[4] if st.op == INSERT else st.params[0]
                truth.setdefault(st.key, []).extend(ids)  # type: ignore[arg-type]
    assert {c.scenario for c in planner.cases} == set(SCENARIOS)
    for case in planner.cases:
        assert truth[case.case_id] == case.txn_ids
        if case.steps_done == case.steps_planned and case.scenario != "account_takeover":
            assert case.txn_ids, case
        for tid in case.txn_ids:
            account = inserted[tid].params[1]
            counterparty = inserted[tid].params[5]
            assert case.account_id in (account, counterparty)
    finished = [c for c in planner.cases if c.steps_done == c.steps_planned]
    by = {s: [c for c in finished if c.scenario == s] for s in SCENARIOS}
    assert all(len(c.txn_ids) >= 8 for c in by["velocity_burst"])
    for c in by["structuring"]:
        amounts = [inserted[t].params[3] for t in c.txn_ids]
        assert all(Decimal(9000) <= a < Decimal(10000) for a in amounts)  # type: ignore[operator]
    for c in by["impossible_travel"]:
        first, second = (inserted[t] for t in c.txn_ids)
        assert first.params[7] != second.params[7]  # country
        assert (second.params[10] - first.params[10]).total_seconds() <= 45 * 60  # type: ignore[operator]


def test_fraud_rate_is_about_the_share_of_fraud_transactions() -> None:
    for rate in (0.0, 0.02, 0.1):
        planner = BankPlanner(PlanConfig(seed=6, fraud_rate=rate))
        _, stream = _plan(planner, 40_000)
        rows = sum(
            1
            for t in stream
            for st in t.statements
            if st.table == bank_sql.TRANSACTIONS and st.op == INSERT
        )
        fraud = sum(len(c.txn_ids) for c in planner.cases)
        assert fraud / rows == pytest.approx(rate, abs=0.25 * rate + 0.001)


@pytest.mark.parametrize("share", [0.0, 0.3, 0.6])
def test_hot_keys_take_their_share_of_bank_activity(share: float) -> None:
    planner = BankPlanner(PlanConfig(seed=9, hot_key_share=share))
    _, stream = _plan(planner, 40_000)
    hot = set(planner.hot_keys)
    assert len(hot) == 3
    balance_updates = [
        st.key for t in stream for st in t.statements if st.table == bank_sql.ACCOUNTS
    ]
    measured = sum(1 for k in balance_updates if k in hot) / len(balance_updates)
    assert measured == pytest.approx(share, abs=0.05)


def test_hot_keys_take_their_share_of_arcade_seats() -> None:
    planner = ArcadePlanner(PlanConfig(seed=9, hot_key_share=0.3))
    _, stream = _plan(planner, 40_000)
    hot = set(planner.hot_keys)
    scores = [
        st.params[1]
        for t in stream
        for st in t.statements
        if st.table == arcade_sql.SCORES and st.op == INSERT
    ]
    assert sum(1 for p in scores if p in hot) / len(scores) == pytest.approx(0.3, abs=0.05)


def test_arcade_ban_deletes_the_season_scores_in_the_same_transaction() -> None:
    _, stream = _plan(ArcadePlanner(PlanConfig(seed=1)), 80_000)
    bans = [t for t in stream if t.label == "ban"]
    assert bans
    assert any(len(t.statements) > 1 for t in bans)
    for t in bans:
        head, *deletes = t.statements
        assert head.table == arcade_sql.PLAYERS and head.params[0] is True
        assert all(d.table == arcade_sql.SCORES and d.op == "delete" for d in deletes)
    labels = Counter(t.label for t in stream)
    for label in ("rename", "score_corrected", "match_abandoned", "player_removed", "unban"):
        assert labels[label] > 0, label


def _devices(cfg: PlanConfig) -> list[object]:
    planner = BankPlanner(cfg)
    return [
        st.key for txn in planner.setup() for st in txn.statements if st.table == "bank.devices"
    ]


def test_a_second_run_of_a_seed_draws_other_device_ids_and_a_fresh_schema_is_unchanged() -> None:
    fresh = PlanConfig(seed=7, population=50)
    assert fresh.uuid_salt == 0
    first = _devices(fresh)
    # With salt 0 a uuid is exactly the seed's raw draw (as before salting existed).
    assert Rng(7).uuid4() == uuid.UUID(int=Rng(7).getrandbits(128), version=4)
    # The second run starts after the first: ids and clock continue.
    later = PlanConfig(
        seed=7,
        population=50,
        start_us=EPOCH_US + 3_600_000_000,
        id_bases={"bank.customers": 51, "bank.accounts": 70, "bank.merchants": 241},
    )
    second = _devices(later)
    assert len(first) == len(second) == 50
    assert not set(first) & set(second)
    assert _devices(later) == second  # still a function of the seed and the start
