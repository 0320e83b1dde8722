-- The bank mirror tables as the engine creates them in DuckDB from the Debezium
-- change events of sql/source/bank.sql (schema = topic prefix `bank`): numeric ->
-- DECIMAL, timestamptz -> TIMESTAMPTZ, enums and char(n) -> VARCHAR, text[] ->
-- VARCHAR[], jsonb -> JSON, uuid -> UUID; only the key is NOT NULL.
--
-- The views are checked against these shapes at engine start, and a mirror table a
-- view reads is created with this shape when no event has created it yet (the
-- engine's fold then finds it with the columns and types it would have made).
CREATE TABLE IF NOT EXISTS bank.customers (
    customer_id   BIGINT NOT NULL,
    name          VARCHAR,
    email         VARCHAR,
    date_of_birth DATE,
    home_country  VARCHAR,
    profile       JSON,
    created_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    PRIMARY KEY (customer_id)
);

CREATE TABLE IF NOT EXISTS bank.accounts (
    account_id    BIGINT NOT NULL,
    customer_id   BIGINT,
    iban          VARCHAR,
    kind          VARCHAR,
    currency      VARCHAR,
    balance       DECIMAL(14, 2),
    status        VARCHAR,
    home_country  VARCHAR,
    opened_at     TIMESTAMPTZ,
    closed_at     TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    PRIMARY KEY (account_id)
);

CREATE TABLE IF NOT EXISTS bank.merchants (
    merchant_id   BIGINT NOT NULL,
    name          VARCHAR,
    category      VARCHAR,
    country       VARCHAR,
    online        BOOLEAN,
    tags          VARCHAR[],
    created_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    PRIMARY KEY (merchant_id)
);

CREATE TABLE IF NOT EXISTS bank.devices (
    device_id     UUID NOT NULL,
    customer_id   BIGINT,
    platform      VARCHAR,
    country       VARCHAR,
    trusted       BOOLEAN,
    registered_at TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    PRIMARY KEY (device_id)
);

CREATE TABLE IF NOT EXISTS bank.transactions (
    txn_id        BIGINT NOT NULL,
    account_id    BIGINT,
    kind          VARCHAR,
    amount        DECIMAL(14, 2),
    currency      VARCHAR,
    merchant_id   BIGINT,
    counterparty_account_id BIGINT,
    channel       VARCHAR,
    country       VARCHAR,
    device_id     UUID,
    status        VARCHAR,
    created_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    PRIMARY KEY (txn_id)
);
