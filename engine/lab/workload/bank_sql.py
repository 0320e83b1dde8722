"""The bank generator's SQL: constant statements with bound parameters, one row each.

Every statement names all the columns it writes, timestamps included, so that
no database default (now(), sequences) leaks into the generated rows.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from engine.lab.workload.plan import DELETE, INSERT, UPDATE, Statement, to_date, to_datetime
from engine.lab.workload.rng import money

CUSTOMERS = "bank.customers"
ACCOUNTS = "bank.accounts"
MERCHANTS = "bank.merchants"
DEVICES = "bank.devices"
TRANSACTIONS = "bank.transactions"
FRAUD_TRUTH = "bank.fraud_truth"

#: Captured tables, in the order the connector lists them.
CAPTURED = (CUSTOMERS, ACCOUNTS, MERCHANTS, DEVICES, TRANSACTIONS)
#: Every table the generator needs (captured ones plus the ground truth).
REQUIRED = (*CAPTURED, FRAUD_TRUTH)
#: Tables with a bigserial key the generator assigns itself: table -> key column.
SERIAL_KEYS = {
    CUSTOMERS: "customer_id",
    ACCOUNTS: "account_id",
    MERCHANTS: "merchant_id",
    TRANSACTIONS: "txn_id",
    FRAUD_TRUTH: "case_id",
}
#: Timestamp columns that tell where a previous run's simulated clock stopped.
CLOCK_COLUMNS = ((TRANSACTIONS, "updated_at"), (CUSTOMERS, "updated_at"))

_INSERT_CUSTOMER = (
    "INSERT INTO bank.customers (customer_id, name, email, date_of_birth, home_country, "
    "profile, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)"
)
_UPDATE_CUSTOMER_CONTACT = (
    "UPDATE bank.customers SET email = %s, profile = %s::jsonb, updated_at = %s "
    "WHERE customer_id = %s"
)
_INSERT_ACCOUNT = (
    "INSERT INTO bank.accounts (account_id, customer_id, iban, kind, currency, balance, status, "
    "home_country, opened_at, closed_at, updated_at) "
    "VALUES (%s, %s, %s, %s, 'EUR', 0, 'open', %s, %s, NULL, %s)"
)
_UPDATE_BALANCE = (
    "UPDATE bank.accounts SET balance = balance + %s, updated_at = %s WHERE account_id = %s"
)
_UPDATE_ACCOUNT_STATUS = (
    "UPDATE bank.accounts SET status = %s, closed_at = %s, updated_at = %s WHERE account_id = %s"
)
_CLOSE_ACCOUNT = (
    "UPDATE bank.accounts SET balance = balance + %s, status = 'closed', closed_at = %s, "
    "updated_at = %s WHERE account_id = %s"
)
_INSERT_MERCHANT = (
    "INSERT INTO bank.merchants (merchant_id, name, category, country, online, tags, "
    "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE_MERCHANT_TAGS = (
    "UPDATE bank.merchants SET tags = %s, updated_at = %s WHERE merchant_id = %s"
)
_INSERT_DEVICE = (
    "INSERT INTO bank.devices (device_id, customer_id, platform, country, trusted, "
    "registered_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_TRUST_DEVICE = "UPDATE bank.devices SET trusted = true, updated_at = %s WHERE device_id = %s"
_DELETE_DEVICE = "DELETE FROM bank.devices WHERE device_id = %s"
_INSERT_TXN = (
    "INSERT INTO bank.transactions (txn_id, account_id, kind, amount, currency, merchant_id, "
    "counterparty_account_id, channel, country, device_id, status, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, 'EUR', %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE_TXN_STATUS = "UPDATE bank.transactions SET status = %s, updated_at = %s WHERE txn_id = %s"
_DELETE_TXN = "DELETE FROM bank.transactions WHERE txn_id = %s"
_INSERT_CASE = (
    "INSERT INTO bank.fraud_truth (case_id, scenario, customer_id, account_id, txn_ids, "
    "steps_planned, steps_done, started_at, ended_at, details) "
    "VALUES (%s, %s, %s, %s, %s::bigint[], %s, 1, %s, %s, %s::jsonb)"
)
_UPDATE_CASE = (
    "UPDATE bank.fraud_truth SET txn_ids = txn_ids || %s::bigint[], "
    "steps_done = steps_done + 1, ended_at = %s WHERE case_id = %s"
)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def insert_customer(
    customer_id: int,
    name: str,
    email: str,
    born_us: int,
    home: str,
    profile: dict[str, Any],
    at_us: int,
) -> Statement:
    at = to_datetime(at_us)
    params = (customer_id, name, email, to_date(born_us), home, _json(profile), at, at)
    return Statement(_INSERT_CUSTOMER, params, CUSTOMERS, INSERT, customer_id)


def update_customer_contact(
    customer_id: int, email: str, profile: dict[str, Any], at_us: int
) -> Statement:
    params = (email, _json(profile), to_datetime(at_us), customer_id)
    return Statement(_UPDATE_CUSTOMER_CONTACT, params, CUSTOMERS, UPDATE, customer_id)


def insert_account(
    account_id: int, customer_id: int, iban: str, kind: str, home: str, at_us: int
) -> Statement:
    at = to_datetime(at_us)
    params = (account_id, customer_id, iban, kind, home, at, at)
    return Statement(_INSERT_ACCOUNT, params, ACCOUNTS, INSERT, account_id)


def change_balance(account_id: int, delta_cents: int, at_us: int) -> Statement:
    params = (money(delta_cents), to_datetime(at_us), account_id)
    return Statement(_UPDATE_BALANCE, params, ACCOUNTS, UPDATE, account_id)


def set_account_status(account_id: int, status: str, at_us: int) -> Statement:
    params = (status, None, to_datetime(at_us), account_id)
    return Statement(_UPDATE_ACCOUNT_STATUS, params, ACCOUNTS, UPDATE, account_id)


def close_account(account_id: int, delta_cents: int, at_us: int) -> Statement:
    at = to_datetime(at_us)
    params = (money(delta_cents), at, at, account_id)
    return Statement(_CLOSE_ACCOUNT, params, ACCOUNTS, UPDATE, account_id)


def insert_merchant(
    merchant_id: int,
    name: str,
    category: str,
    country: str,
    online: bool,
    tags: list[str],
    at_us: int,
) -> Statement:
    at = to_datetime(at_us)
    params = (merchant_id, name, category, country, online, tags, at, at)
    return Statement(_INSERT_MERCHANT, params, MERCHANTS, INSERT, merchant_id)


def update_merchant_tags(merchant_id: int, tags: list[str], at_us: int) -> Statement:
    params = (tags, to_datetime(at_us), merchant_id)
    return Statement(_UPDATE_MERCHANT_TAGS, params, MERCHANTS, UPDATE, merchant_id)


def insert_device(
    device_id: uuid.UUID, customer_id: int, platform: str, country: str, trusted: bool, at_us: int
) -> Statement:
    at = to_datetime(at_us)
    params = (device_id, customer_id, platform, country, trusted, at, at)
    return Statement(_INSERT_DEVICE, params, DEVICES, INSERT, device_id)


def trust_device(device_id: uuid.UUID, at_us: int) -> Statement:
    return Statement(_TRUST_DEVICE, (to_datetime(at_us), device_id), DEVICES, UPDATE, device_id)


def delete_device(device_id: uuid.UUID) -> Statement:
    return Statement(_DELETE_DEVICE, (device_id,), DEVICES, DELETE, device_id)


def insert_txn(
    txn_id: int,
    account_id: int,
    kind: str,
    amount_cents: int,
    merchant_id: int | None,
    counterparty: int | None,
    channel: str,
    country: str,
    device_id: uuid.UUID | None,
    status: str,
    at_us: int,
) -> Statement:
    at = to_datetime(at_us)
    params = (
        txn_id,
        account_id,
        kind,
        money(amount_cents),
        merchant_id,
        counterparty,
        channel,
        country,
        device_id,
        status,
        at,
        at,
    )
    return Statement(_INSERT_TXN, params, TRANSACTIONS, INSERT, txn_id)


def set_txn_status(txn_id: int, status: str, at_us: int) -> Statement:
    params = (status, to_datetime(at_us), txn_id)
    return Statement(_UPDATE_TXN_STATUS, params, TRANSACTIONS, UPDATE, txn_id)


def delete_txn(txn_id: int) -> Statement:
    return Statement(_DELETE_TXN, (txn_id,), TRANSACTIONS, DELETE, txn_id)


def insert_case(
    case_id: int,
    scenario: str,
    customer_id: int,
    account_id: int,
    txn_ids: list[int],
    steps_planned: int,
    at_us: int,
    details: dict[str, Any],
) -> Statement:
    at = to_datetime(at_us)
    params = (
        case_id,
        scenario,
        customer_id,
        account_id,
        txn_ids,
        steps_planned,
        at,
        at,
        _json(details),
    )
    return Statement(_INSERT_CASE, params, FRAUD_TRUTH, INSERT, case_id, captured=False)


def extend_case(case_id: int, txn_ids: list[int], at_us: int) -> Statement:
    params = (txn_ids, to_datetime(at_us), case_id)
    return Statement(_UPDATE_CASE, params, FRAUD_TRUTH, UPDATE, case_id, captured=False)
