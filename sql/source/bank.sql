-- bank domain: source schema in Postgres, captured by connectors/bank.json.
-- Placeholder until the workload generator fills in the full model.
CREATE SCHEMA IF NOT EXISTS bank;

CREATE TABLE bank.customers (
    customer_id bigserial PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bank.accounts (
    account_id  bigserial PRIMARY KEY,
    customer_id bigint REFERENCES bank.customers,
    balance     numeric(14, 2) NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'open',
    opened_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bank.merchants (
    merchant_id bigserial PRIMARY KEY,
    name        text NOT NULL,
    category    text NOT NULL DEFAULT 'other'
);

CREATE TABLE bank.cards (
    card_id     bigserial PRIMARY KEY,
    account_id  bigint REFERENCES bank.accounts
);

CREATE TABLE bank.transactions (
    txn_id      bigserial PRIMARY KEY,
    account_id  bigint REFERENCES bank.accounts,
    amount      numeric(14, 2) NOT NULL,
    status      text NOT NULL DEFAULT 'pending',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Written by Debezium's heartbeat.action.query so that an idle slot keeps advancing.
-- Not captured (not in the connector's table.include.list).
CREATE TABLE bank.cdc_heartbeat (
    id      int PRIMARY KEY,
    beat_at timestamptz NOT NULL
);
