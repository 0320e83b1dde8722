-- Money conservation for completed transfers, checked after every batch.
-- inputs: bank.transactions
-- state: live.unbalanced_transfers
-- returns: conservation_violations
-- label: transfer(s) unbalanced in the bank mirror (one leg missing or not offsetting the other)
-- stuck: live.unbalanced_transfers.batch_id
--
-- A transfer is two rows written in one Postgres transaction: transfer_out on the
-- paying account (negative) and transfer_in on the receiving one (positive), each
-- naming the other account, with the same created_at. Once settled, both legs must
-- be in the mirror and sum to zero. A batch that holds one leg but not the other
-- (the legs are keyed by txn_id, so they can sit in different partitions and arrive
-- in different batches) leaves a transfer unbalanced until the other leg arrives.
--
-- Checks only the transfers whose legs the batch touched; live.unbalanced_transfers
-- lists the settled legs that are unbalanced right now. The last statement returns
-- the number of transfers this batch left unbalanced.

CREATE OR REPLACE TEMP TABLE _tc_touched AS
SELECT DISTINCT
    least(account_id, counterparty_account_id) AS side_a,
    greatest(account_id, counterparty_account_id) AS side_b,
    created_at,
    abs(amount) AS size
FROM (
    SELECT account_id, counterparty_account_id, created_at, amount, kind FROM _after_bank_transactions
    UNION ALL
    SELECT account_id, counterparty_account_id, created_at, amount, kind FROM _before_bank_transactions
)
WHERE kind IN ('transfer_out', 'transfer_in') AND account_id IS NOT NULL;

CREATE OR REPLACE TEMP TABLE _tc_legs AS
SELECT t.txn_id, t.account_id, t.counterparty_account_id, t.amount, t.created_at, t.kind,
    u.side_a, u.side_b, u.size
FROM bank.transactions AS t
JOIN _tc_touched AS u
    ON t.created_at = u.created_at
    AND least(t.account_id, t.counterparty_account_id) = u.side_a
    AND greatest(t.account_id, t.counterparty_account_id) = u.side_b
    AND abs(t.amount) = u.size
WHERE t.kind IN ('transfer_out', 'transfer_in') AND t.status = 'settled';

CREATE OR REPLACE TEMP TABLE _tc_groups AS
SELECT
    side_a, side_b, created_at, size,
    count(*) FILTER (WHERE kind = 'transfer_out') AS outs,
    count(*) FILTER (WHERE kind = 'transfer_in') AS ins,
    sum(amount) AS net
FROM _tc_legs
GROUP BY side_a, side_b, created_at, size;

DELETE FROM live.unbalanced_transfers
WHERE txn_id IN (
    SELECT txn_id FROM _after_bank_transactions
    UNION SELECT txn_id FROM _before_bank_transactions
    UNION SELECT txn_id FROM _tc_legs
);

INSERT INTO live.unbalanced_transfers
    (txn_id, account_id, counterparty_account_id, amount, created_at, problem, batch_id)
SELECT
    l.txn_id, l.account_id, l.counterparty_account_id, l.amount, l.created_at,
    CASE
        WHEN g.outs = 0 THEN 'the transfer_out leg is missing'
        WHEN g.ins = 0 THEN 'the transfer_in leg is missing'
        ELSE format('{} out and {} in legs sum to {}', g.outs, g.ins, g.net)
    END,
    $batch_id
FROM _tc_legs AS l
JOIN _tc_groups AS g USING (side_a, side_b, created_at, size)
WHERE g.net <> 0 OR g.outs <> g.ins
ON CONFLICT (txn_id) DO UPDATE SET problem = excluded.problem, batch_id = excluded.batch_id;

SELECT count(*) AS violations FROM _tc_groups WHERE net <> 0 OR outs <> ins;
