-- bank domain: a small retail bank, captured by connectors/bank.json (topic prefix `bank`,
-- topics bank.bank.<table>). Written by `changefold generate bank`.
--
-- Captured: customers, accounts, merchants, devices, transactions.
-- Not captured: fraud_truth (labels for evaluating fraud rules; a consumer of the change
-- stream must not see them) and cdc_heartbeat (written by the connector itself).
--
-- Replica identity is chosen per table (see the ALTER TABLE lines): FULL where an update
-- or delete must carry the old row so a downstream aggregate can retract it, DEFAULT
-- (primary key only) where the new row or the key is all a consumer needs.
--
-- Money is numeric(14, 2) in euros (every account is a EUR account). Timestamps written
-- by the generator come from its simulated clock, not from now(); the now() defaults
-- only serve hand-written inserts.
CREATE SCHEMA IF NOT EXISTS bank;

CREATE TYPE bank.account_status AS ENUM ('open', 'frozen', 'closed');

-- Life of a transaction: card purchases start `pending` (the amount is held: the balance
-- drops at once), then become `settled`, or `reversed` (the hold is released). An expired
-- hold is deleted (its amount is given back to the balance in the same transaction).
-- ATM withdrawals, deposits and transfers are `settled` at once. `declined` never moved
-- money.
CREATE TYPE bank.txn_status AS ENUM ('pending', 'settled', 'reversed', 'declined');

CREATE TYPE bank.txn_kind AS ENUM ('purchase', 'withdrawal', 'deposit', 'transfer_out', 'transfer_in');

CREATE TYPE bank.channel AS ENUM ('card_present', 'online', 'mobile', 'atm', 'branch', 'wire');

CREATE TABLE bank.customers (
    customer_id   bigserial PRIMARY KEY,
    name          text NOT NULL,
    email         text NOT NULL DEFAULT '',
    date_of_birth date,
    -- ISO 3166 alpha-2 code of the country the customer lives in.
    home_country  text NOT NULL DEFAULT 'DE',
    -- Contact and marketing details: {"segment", "phone", "city", "language", "marketing_opt_in"}.
    -- An account takeover changes phone and email here shortly before draining the account.
    profile       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- DEFAULT: customers are never deleted, and an update's new row is the whole truth a
-- consumer needs (it mirrors the latest profile; a change is found by comparing with it).
ALTER TABLE bank.customers REPLICA IDENTITY DEFAULT;

CREATE TABLE bank.accounts (
    account_id    bigserial PRIMARY KEY,
    customer_id   bigint NOT NULL REFERENCES bank.customers,
    iban          text NOT NULL UNIQUE,
    kind          text NOT NULL DEFAULT 'checking' CHECK (kind IN ('checking', 'savings', 'business')),
    currency      char(3) NOT NULL DEFAULT 'EUR',
    -- Equals the sum of amounts of the account's pending and settled transactions.
    balance       numeric(14, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    status        bank.account_status NOT NULL DEFAULT 'open',
    home_country  text NOT NULL DEFAULT 'DE',
    opened_at     timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- FULL: every transaction updates a balance; with the old row in the event a consumer can
-- apply the difference (new - old) to totals and see status changes (open -> closed)
-- without keeping its own copy of every account.
ALTER TABLE bank.accounts REPLICA IDENTITY FULL;

CREATE TABLE bank.merchants (
    merchant_id   bigserial PRIMARY KEY,
    name          text NOT NULL,
    -- grocery, restaurant, fuel, transport, pharmacy, clothing, electronics, furniture,
    -- travel, entertainment, gift_cards, digital, ...
    category      text NOT NULL DEFAULT 'other',
    country       text NOT NULL DEFAULT 'DE',
    online        boolean NOT NULL DEFAULT false,
    -- Free labels, e.g. {contactless, high_risk, subscription}.
    tags          text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- DEFAULT: reference data, inserted and now and then re-tagged, never deleted; the new
-- row is all a consumer needs.
ALTER TABLE bank.merchants REPLICA IDENTITY DEFAULT;

-- Phones and browsers a customer has registered for mobile and online banking.
CREATE TABLE bank.devices (
    device_id     uuid PRIMARY KEY,
    customer_id   bigint NOT NULL REFERENCES bank.customers,
    platform      text NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    -- Country the device was registered from.
    country       text NOT NULL,
    -- Becomes true a few days after registration when nothing odd happened.
    trusted       boolean NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- FULL: a replaced device is deleted; the delete event then still says whose device it
-- was (customer_id), so per-customer device counts can be maintained from the stream.
ALTER TABLE bank.devices REPLICA IDENTITY FULL;

CREATE TABLE bank.transactions (
    txn_id        bigserial PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES bank.accounts,
    kind          bank.txn_kind NOT NULL,
    -- Signed, in the account's currency: negative takes money out of the account
    -- (purchase, withdrawal, transfer_out), positive brings it in (deposit, transfer_in).
    amount        numeric(14, 2) NOT NULL,
    currency      char(3) NOT NULL DEFAULT 'EUR',
    merchant_id   bigint REFERENCES bank.merchants,
    -- The other side of a transfer; the two rows of a transfer are written in one
    -- Postgres transaction together with both balance updates.
    counterparty_account_id bigint REFERENCES bank.accounts,
    channel       bank.channel NOT NULL,
    -- Where the customer was: the merchant's country when the card was present,
    -- the device's location for online and mobile use.
    country       text NOT NULL,
    -- Device used for online/mobile transactions. No foreign key: devices are deleted
    -- when replaced, their transactions stay.
    device_id     uuid,
    status        bank.txn_status NOT NULL DEFAULT 'pending',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transactions_account_created ON bank.transactions (account_id, created_at);
-- FULL: status changes (pending -> settled/reversed) and deletes of expired holds must
-- carry the old amount, status and account, so per-status and per-account aggregates can
-- retract the old row.
ALTER TABLE bank.transactions REPLICA IDENTITY FULL;

-- Ground truth of injected fraud: one row per scenario instance with every transaction
-- involved. Written in the same Postgres transaction as the scenario's steps, so it never
-- names a transaction that does not exist. NOT captured (not in the connector's
-- table.include.list): fraud rules must find fraud from the stream alone.
CREATE TABLE bank.fraud_truth (
    case_id       bigserial PRIMARY KEY,
    scenario      text NOT NULL CHECK (scenario IN (
                      'velocity_burst', 'card_testing', 'impossible_travel',
                      'account_takeover', 'structuring', 'new_account_large_transfer')),
    customer_id   bigint NOT NULL,
    account_id    bigint NOT NULL,
    txn_ids       bigint[] NOT NULL DEFAULT '{}',
    steps_planned integer NOT NULL,
    steps_done    integer NOT NULL,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz NOT NULL,
    -- Scenario specifics: countries, device, reporting threshold, ...
    details       jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Written by Debezium's heartbeat.action.query so that an idle slot keeps advancing.
-- Not captured (not in the connector's table.include.list).
CREATE TABLE bank.cdc_heartbeat (
    id      int PRIMARY KEY,
    beat_at timestamptz NOT NULL
);
