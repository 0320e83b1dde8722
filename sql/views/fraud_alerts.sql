-- fraud_alerts: rules for the fraud patterns of the bank domain, one alert per
-- episode of a rule on an account, with the numbers that triggered it.
-- inputs: bank.transactions, bank.devices, bank.accounts
-- state: live.fraud_hits
-- findings: live.fraud_alerts
-- counts: new_alerts = live.fraud_alerts.first_batch
-- params: fraud_tiny_eur, fraud_baseline_days
-- params: fraud_velocity_window_s, fraud_velocity_min_count, fraud_velocity_baseline_factor
-- params: fraud_card_testing_window_s, fraud_card_testing_min_count
-- params: fraud_card_testing_min_merchants, fraud_card_testing_large_eur
-- params: fraud_travel_max_kmh, fraud_travel_slack_km
-- params: fraud_takeover_window_s, fraud_takeover_device_age_s, fraud_takeover_min_share
-- params: fraud_structuring_threshold_eur, fraud_structuring_band
-- params: fraud_structuring_min_count, fraud_structuring_window_s
-- params: fraud_new_account_age_days, fraud_new_account_min_inflow_eur
-- params: fraud_new_account_move_share, fraud_new_account_move_window_s
--
-- A function of the mirror rows (sql/views/README.md, "Batch boundaries"):
-- live.fraud_hits holds every hit of every rule on the current rows (rule, account,
-- triggering transaction, evidence, severity, reason); a rule's hits on an account
-- whose windows lie within the rule's window of each other form one episode, and
-- live.fraud_alerts holds one alert per episode, id md5(rule:account:first triggering
-- transaction). A hit whose rows changed is judged again, so an alert grows, shrinks
-- or goes away with its evidence (a hold deleted, a payment reversed), whichever batch
-- brought the change. detected_at / detected_event_time / first_batch / last_batch
-- are bookkeeping: the wall clock, the stream's clock and the batch when the alert (by
-- its id) was first raised, and the batch that last changed it.
--
-- Incremental: a hit depends on the account's rows within the rule's window before its
-- triggering transaction (velocity's baseline: the baseline period), so a change at
-- event time c re-judges the account's hits triggered in [c, c + that reach] from the
-- rows of [c - reach, c + reach] only; takeovers are judged again on every change of
-- the account (its transfers from the holder's untrusted foreign devices, and their
-- balance). Episodes are regrouped only for the (rule, account) pairs whose hits were
-- judged again.

-- The bank stream's event-time clock: the newest created_at of the mirror's
-- transactions. The rows the batch did not touch are at or before the old clock, so
-- the mirror is looked up only when the batch retracts the newest row and none of its
-- after-rows reaches the old clock (a deleted or back-dated newest transaction).
-- DuckDB computes a scalar subquery even in a CASE branch not taken: the lookups are
-- guarded by `look` themselves, else they would scan the mirror in every batch.
CREATE OR REPLACE TEMP TABLE _fa_clock AS
WITH old AS (SELECT (SELECT clock FROM live.progress WHERE name = 'fraud_alerts') AS old_now),
flags AS (
    SELECT
        old_now,
        (SELECT max(created_at) FROM _after_bank_transactions) AS added_max,
        coalesce((SELECT max(created_at) FROM _before_bank_transactions) >= old_now, false) AS retracted
    FROM old
),
lookup AS (
    SELECT *, retracted AND coalesce(added_max < old_now, true) AS look FROM flags
)
SELECT
    old_now,
    retracted,
    CASE
        WHEN look THEN coalesce(
            (SELECT max(created_at) FROM bank.transactions
                WHERE created_at > old_now - INTERVAL 1 DAY AND look),
            (SELECT max(created_at) FROM bank.transactions WHERE (SELECT look FROM lookup))
        )
        ELSE greatest(old_now, added_max)
    END AS now
FROM lookup;

INSERT INTO live.progress (name, clock, batch_id, updated)
SELECT 'fraud_alerts', now, $batch_id, now() FROM _fa_clock WHERE now IS NOT NULL OR retracted
ON CONFLICT (name) DO UPDATE SET
    clock = excluded.clock,
    batch_id = excluded.batch_id,
    updated = excluded.updated;

-- Change points: the event times of the batch's transaction rows (before and after);
-- pay_moved: a card payment that came, went or changed its time, amount or kind (not
-- only its status): it moves velocity baselines for the baseline period after it.
CREATE OR REPLACE TEMP TABLE _fa_points AS
WITH pairs AS (
    SELECT
        b.account_id AS b_acc, b.created_at AS b_at, b.kind AS b_kind, b.amount AS b_amt,
        a.account_id AS a_acc, a.created_at AS a_at, a.kind AS a_kind, a.amount AS a_amt
    FROM _before_bank_transactions AS b
    FULL OUTER JOIN _after_bank_transactions AS a USING (txn_id)
),
moved AS (
    SELECT *,
        b_acc IS DISTINCT FROM a_acc OR b_at IS DISTINCT FROM a_at
            OR b_kind IS DISTINCT FROM a_kind OR b_amt IS DISTINCT FROM a_amt AS changed
    FROM pairs
)
SELECT b_acc AS account_id, b_at AS c,
    changed AND b_kind = 'purchase' AND abs(b_amt) >= $fraud_tiny_eur AS pay_moved
FROM moved WHERE b_acc IS NOT NULL AND b_at IS NOT NULL
UNION ALL
SELECT a_acc, a_at, changed AND a_kind = 'purchase' AND abs(a_amt) >= $fraud_tiny_eur
FROM moved WHERE a_acc IS NOT NULL AND a_at IS NOT NULL;

-- An account row that came, went or changed its opening (or holder): the days in which
-- it counts as new.
CREATE OR REPLACE TEMP TABLE _fa_opened AS
WITH changed AS (
    SELECT coalesce(n.account_id, o.account_id) AS account_id, o.opened_at AS o_at, n.opened_at AS n_at
    FROM _after_bank_accounts AS n
    FULL OUTER JOIN _before_bank_accounts AS o USING (account_id)
    WHERE o.account_id IS NULL OR n.account_id IS NULL
        OR o.opened_at IS DISTINCT FROM n.opened_at
        OR o.customer_id IS DISTINCT FROM n.customer_id
),
openings AS (
    SELECT account_id, o_at AS opened_at FROM changed
    UNION ALL
    SELECT account_id, n_at FROM changed
)
SELECT account_id, min(opened_at) AS n_from,
    max(opened_at) + to_days($fraud_new_account_age_days::INTEGER)
        + to_seconds($fraud_new_account_move_window_s::BIGINT) AS n_to
FROM openings
WHERE opened_at IS NOT NULL AND account_id IS NOT NULL
GROUP BY account_id;

CREATE OR REPLACE TEMP TABLE _fa_ranges AS
WITH c AS (
    SELECT account_id, min(c) AS c_from, max(c) AS c_to,
        min(c) FILTER (WHERE pay_moved) AS p_from, max(c) FILTER (WHERE pay_moved) AS p_to
    FROM _fa_points
    GROUP BY account_id
)
SELECT
    coalesce(c.account_id, o.account_id) AS account_id, c.c_from, c.c_to, c.p_from, c.p_to,
    o.n_from, o.n_to,
    to_seconds($fraud_velocity_window_s::BIGINT) AS w_velocity,
    to_seconds($fraud_card_testing_window_s::BIGINT) AS w_card,
    to_seconds($fraud_structuring_window_s::BIGINT) AS w_deposits,
    to_seconds($fraud_new_account_move_window_s::BIGINT) AS w_onward,
    to_days($fraud_baseline_days::INTEGER) AS w_baseline,
    to_seconds(greatest(
        $fraud_velocity_window_s, $fraud_card_testing_window_s, $fraud_new_account_move_window_s
    )::BIGINT) AS near,
    -- the furthest any rule reads around a change (greatest() of numbers: DuckDB's
    -- greatest() of intervals mis-orders seconds against days)
    to_seconds(greatest(
        $fraud_velocity_window_s, $fraud_card_testing_window_s, $fraud_new_account_move_window_s,
        $fraud_structuring_window_s, 86400
    )::BIGINT) AS far
FROM c
FULL OUTER JOIN _fa_opened AS o USING (account_id);

-- Per rule and account, the trigger times whose hits are judged again.
CREATE OR REPLACE TEMP TABLE _fa_rule_spans AS
SELECT 'velocity_burst' AS rule, account_id, c_from AS h_from,
    greatest(c_to + w_velocity, p_to + w_baseline) AS h_to
FROM _fa_ranges WHERE c_from IS NOT NULL
UNION ALL
SELECT 'card_testing', account_id, c_from, c_to + w_card FROM _fa_ranges WHERE c_from IS NOT NULL
UNION ALL
SELECT 'impossible_travel', account_id, c_from, c_to + INTERVAL 1 DAY
FROM _fa_ranges WHERE c_from IS NOT NULL
UNION ALL
SELECT 'structuring', account_id, c_from, c_to + w_deposits FROM _fa_ranges WHERE c_from IS NOT NULL
UNION ALL
SELECT 'new_account_large_transfer', account_id, least(c_from, n_from), greatest(c_to + w_onward, n_to)
FROM _fa_ranges;

-- The judged accounts' transactions their hits can read: all kinds near the changes;
-- further out only what velocity's baseline, impossible travel and structuring read.
CREATE OR REPLACE TEMP TABLE _fa_scope AS
SELECT t.*
FROM bank.transactions AS t
JOIN _fa_ranges AS u
    ON t.account_id = u.account_id
    AND t.created_at >= least(
        u.c_from - u.far, u.p_from - u.w_velocity, u.n_from
    )
    AND t.created_at <= greatest(
        u.c_to + u.far, u.p_to + u.w_baseline, u.n_to
    )
WHERE (t.created_at >= u.c_from - u.near AND t.created_at <= u.c_to + u.near)
    OR (t.created_at >= u.n_from AND t.created_at <= u.n_to)
    OR (
        t.kind = 'purchase' AND abs(t.amount) >= $fraud_tiny_eur
        AND t.created_at >= u.p_from - u.w_velocity AND t.created_at <= u.p_to + u.w_baseline
    )
    OR (
        t.kind IN ('purchase', 'withdrawal') AND t.channel IN ('card_present', 'atm')
        AND t.created_at >= u.c_from - INTERVAL 1 DAY AND t.created_at <= u.c_to + INTERVAL 1 DAY
    )
    OR (
        t.kind = 'deposit' AND t.channel IN ('branch', 'atm')
        AND t.created_at >= u.c_from - u.w_deposits AND t.created_at <= u.c_to + u.w_deposits
    );

-- Takeover: accounts whose transactions, row or holder's devices changed are judged
-- again whole, over the holder's untrusted devices (every hit of theirs is replaced).
CREATE OR REPLACE TEMP TABLE _fa_takeover_accounts AS
SELECT account_id FROM _fa_points
UNION SELECT account_id FROM _after_bank_accounts
UNION SELECT account_id FROM _before_bank_accounts
UNION SELECT a.account_id
    FROM (
        SELECT customer_id FROM _after_bank_devices
        UNION SELECT customer_id FROM _before_bank_devices
    ) AS d
    JOIN bank.accounts AS a ON a.customer_id = d.customer_id;

CREATE OR REPLACE TEMP TABLE _fa_takeover_devices AS
SELECT a.account_id, d.device_id, d.country, d.registered_at
FROM _fa_takeover_accounts AS u
JOIN bank.accounts AS a ON a.account_id = u.account_id
JOIN bank.devices AS d ON d.customer_id = a.customer_id
WHERE NOT coalesce(d.trusted, false) AND d.registered_at IS NOT NULL;

INSERT INTO _fa_rule_spans
SELECT 'account_takeover', account_id, '-infinity'::TIMESTAMPTZ, 'infinity'::TIMESTAMPTZ
FROM _fa_takeover_accounts WHERE account_id IS NOT NULL;

-- Rule hits: (rule, account, triggering transaction, evidence, severity, reason).
-- gap_s: hits of a rule on an account closer than this belong to one episode.
CREATE OR REPLACE TEMP TABLE _fa_hits (
    rule VARCHAR,
    account_id BIGINT,
    trigger_txn_id BIGINT,
    trigger_time TIMESTAMPTZ,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    evidence BIGINT[],
    severity DOUBLE,
    reason VARCHAR,
    gap_s BIGINT
);

-- velocity_burst: more card payments in the window than the account's own usual
-- maximum allows (at least $fraud_velocity_min_count, else factor x usual max).
-- Payments under $fraud_tiny_eur are left to card_testing.
INSERT INTO _fa_hits
WITH pays AS (
    SELECT
        txn_id, account_id, created_at,
        count(*) OVER w AS n,
        list(txn_id) OVER w AS ev,
        min(created_at) OVER w AS first_at
    FROM _fa_scope
    WHERE kind = 'purchase' AND abs(amount) >= $fraud_tiny_eur
    WINDOW w AS (
        PARTITION BY account_id ORDER BY created_at
        RANGE BETWEEN to_seconds($fraud_velocity_window_s::BIGINT) PRECEDING AND CURRENT ROW
    )
),
busy AS (
    SELECT * FROM pays WHERE n >= $fraud_velocity_min_count
),
usual AS (
    -- the account's usual maximum: its busiest bucket of the velocity window over the
    -- baseline period (buckets starting in [t - baseline, t - 3 windows)), read from
    -- the mirror for the busy payments only
    SELECT b.txn_id, coalesce(max(c.payments), 0) AS usual_max
    FROM busy AS b
    LEFT JOIN (
        SELECT b2.txn_id, time_bucket(to_seconds($fraud_velocity_window_s::BIGINT), p.created_at) AS bucket_start,
            count(*) AS payments
        FROM busy AS b2
        JOIN bank.transactions AS p
            ON p.account_id = b2.account_id
            AND p.created_at >= b2.created_at - to_days($fraud_baseline_days::INTEGER)
            AND p.created_at < b2.created_at - to_seconds(2 * $fraud_velocity_window_s::BIGINT)
        WHERE p.kind = 'purchase' AND abs(p.amount) >= $fraud_tiny_eur
        GROUP BY ALL
    ) AS c
        ON c.txn_id = b.txn_id
        AND c.bucket_start >= b.created_at - to_days($fraud_baseline_days::INTEGER)
        AND c.bucket_start < b.created_at - to_seconds(3 * $fraud_velocity_window_s::BIGINT)
    GROUP BY b.txn_id
),
judged AS (
    SELECT
        b.*, u.usual_max,
        greatest($fraud_velocity_min_count, ceil($fraud_velocity_baseline_factor * u.usual_max))::INTEGER
            AS threshold
    FROM busy AS b JOIN usual AS u USING (txn_id)
)
SELECT
    'velocity_burst', account_id, txn_id, created_at, first_at, created_at, ev,
    least(1.0, 0.6 + 0.05 * (n - threshold)),
    format(
        '{} card payments in {} min, usual max {} per {} min',
        n, round($fraud_velocity_window_s / 60.0, 1), usual_max,
        round($fraud_velocity_window_s / 60.0, 1)
    ),
    $fraud_velocity_window_s
FROM judged
WHERE n >= threshold;

-- card_testing: many tiny card-not-present payments at different merchants in a short
-- window; a larger card-not-present payment right after them joins the episode.
INSERT INTO _fa_hits
WITH cnp AS (
    SELECT
        txn_id, account_id, created_at, amount,
        abs(amount) < $fraud_tiny_eur AS tiny,
        count(*) FILTER (WHERE abs(amount) < $fraud_tiny_eur) OVER w AS n_tiny,
        count(DISTINCT merchant_id) FILTER (WHERE abs(amount) < $fraud_tiny_eur) OVER w AS merchants,
        list(txn_id) FILTER (WHERE abs(amount) < $fraud_tiny_eur) OVER w AS ev,
        min(created_at) FILTER (WHERE abs(amount) < $fraud_tiny_eur) OVER w AS first_at
    FROM _fa_scope
    WHERE kind = 'purchase' AND channel NOT IN ('card_present', 'atm')
    WINDOW w AS (
        PARTITION BY account_id ORDER BY created_at
        RANGE BETWEEN to_seconds($fraud_card_testing_window_s::BIGINT) PRECEDING AND CURRENT ROW
    )
)
SELECT
    'card_testing', account_id, txn_id, created_at, first_at, created_at,
    CASE WHEN tiny THEN ev ELSE list_append(ev, txn_id) END,
    CASE WHEN tiny THEN 0.7 ELSE 0.9 END,
    CASE
        WHEN tiny THEN format(
            '{} payments under {:.2f} EUR at {} merchants within {} min',
            n_tiny, $fraud_tiny_eur::DOUBLE, merchants, round($fraud_card_testing_window_s / 60.0, 1)
        )
        ELSE format(
            '{} payments under {:.2f} EUR at {} merchants within {} min, then one of {:,.2f} EUR',
            n_tiny, $fraud_tiny_eur::DOUBLE, merchants, round($fraud_card_testing_window_s / 60.0, 1),
            abs(amount)
        )
    END,
    $fraud_card_testing_window_s
FROM cnp
WHERE n_tiny >= $fraud_card_testing_min_count
    AND merchants >= $fraud_card_testing_min_merchants
    AND (tiny OR abs(amount) >= $fraud_card_testing_large_eur);

-- impossible_travel: the card is present in two countries further apart than anyone
-- can travel in the time between (speed above $fraud_travel_max_kmh), the distance
-- between the countries' centre points taken $fraud_travel_slack_km shorter.
-- Every earlier card-present use of the last day is compared, not only the one just
-- before (each pair is a hit of its own).
INSERT INTO _fa_hits
WITH present AS (
    SELECT txn_id, account_id, created_at, country
    FROM _fa_scope
    WHERE kind IN ('purchase', 'withdrawal') AND channel IN ('card_present', 'atm')
),
moved AS (
    SELECT
        p.txn_id, p.account_id, p.created_at, p.country,
        q.txn_id AS prev_txn, q.created_at AS prev_at, q.country AS prev_country,
        2 * 6371.0 * asin(sqrt(
            pow(sin(radians(b.lat - a.lat) / 2), 2)
            + cos(radians(a.lat)) * cos(radians(b.lat)) * pow(sin(radians(b.lon - a.lon) / 2), 2)
        )) AS km,
        epoch(p.created_at - q.created_at) / 3600.0 AS hours
    FROM present AS p
    JOIN present AS q
        ON q.account_id = p.account_id
        AND q.created_at >= p.created_at - INTERVAL 1 DAY
        AND (q.created_at, q.txn_id) < (p.created_at, p.txn_id)
        AND q.country <> p.country
    JOIN live.country_coords AS a ON a.country = q.country
    JOIN live.country_coords AS b ON b.country = p.country
)
SELECT
    'impossible_travel', account_id, txn_id, created_at, prev_at, created_at,
    [prev_txn, txn_id],
    least(1.0, 0.7 + 0.1 * log10(greatest(kmh / $fraud_travel_max_kmh, 1.0))),
    format(
        'card used in {} then in {}, at least {:,.0f} km away, {} min later ({:,.0f} km/h)',
        prev_country, country, km - $fraud_travel_slack_km, round(hours * 60)::BIGINT, kmh
    ),
    86400
FROM (
    -- country centre points: a border can lie close to both, hence the slack
    SELECT *, greatest(km - $fraud_travel_slack_km, 0) / greatest(hours, 1 / 3600.0) AS kmh
    FROM moved
    WHERE km > $fraud_travel_slack_km
)
WHERE kmh > $fraud_travel_max_kmh;

-- account_takeover: transfers out from a device of the account holder that is new,
-- untrusted and registered outside the account's home country, moving a large share
-- of the balance.
INSERT INTO _fa_hits
WITH suspicious AS (
    SELECT
        t.txn_id, t.account_id, t.created_at, -t.amount AS moved,
        d.country AS device_country, d.registered_at, a.home_country
    FROM _fa_takeover_devices AS d
    JOIN bank.transactions AS t
        ON t.device_id = d.device_id
        AND t.account_id = d.account_id
        AND t.created_at >= d.registered_at
        AND t.created_at <= d.registered_at + to_seconds($fraud_takeover_device_age_s::BIGINT)
    JOIN bank.accounts AS a ON a.account_id = t.account_id
    WHERE t.kind = 'transfer_out' AND t.status = 'settled'
        AND d.country IS DISTINCT FROM a.home_country
),
money AS (
    -- what was left on the account right after each suspicious transfer: the current
    -- balance less what the account's settled or pending transactions after it added
    -- (read from the mirror: as much as happened since, not the history). At every
    -- source commit the balance is the sum of those transactions (sql/source/bank.sql),
    -- so this is the sum up to the transfer: whatever the batches, the same number.
    SELECT
        s.txn_id,
        any_value(a.balance) - coalesce(sum(t.amount), 0) AS balance_after
    FROM suspicious AS s
    JOIN bank.accounts AS a USING (account_id)
    LEFT JOIN bank.transactions AS t
        ON t.account_id = s.account_id
        AND (t.created_at, t.txn_id) > (s.created_at, s.txn_id)
        AND t.status IN ('pending', 'settled')
    GROUP BY s.txn_id
),
drained AS (
    SELECT
        s.*,
        count(*) OVER w AS n,
        sum(moved) OVER w AS moved_total,
        list(txn_id) OVER w AS ev,
        min(created_at) OVER w AS first_at
    FROM suspicious AS s
    WINDOW w AS (
        PARTITION BY account_id ORDER BY created_at
        RANGE BETWEEN to_seconds($fraud_takeover_window_s::BIGINT) PRECEDING AND CURRENT ROW
    )
),
shares AS (
    SELECT d.*, d.moved_total / greatest(d.moved_total + m.balance_after, 0.01) AS share
    FROM drained AS d JOIN money AS m USING (txn_id)
)
SELECT
    'account_takeover', account_id, txn_id, created_at, least(first_at, registered_at), created_at, ev,
    least(1.0, 0.6 + 0.4 * share),
    format(
        '{} transfer(s) moved {:,.2f} EUR ({:.0f}% of the balance) within {} min from an untrusted '
        || 'device registered in {} (home {}) {} min before',
        n, moved_total, 100 * share, round(epoch(created_at - first_at) / 60.0)::BIGINT,
        device_country, home_country, round(epoch(first_at - registered_at) / 60.0)::BIGINT
    ),
    $fraud_takeover_window_s
FROM shares
WHERE share >= $fraud_takeover_min_share;

-- structuring: cash deposits just under the reporting threshold, repeatedly.
INSERT INTO _fa_hits
WITH deposits AS (
    SELECT
        txn_id, account_id, created_at,
        count(*) OVER w AS n,
        sum(amount) OVER w AS total,
        list(txn_id) OVER w AS ev,
        min(created_at) OVER w AS first_at
    FROM _fa_scope
    WHERE kind = 'deposit' AND channel IN ('branch', 'atm') AND status = 'settled'
        AND amount < $fraud_structuring_threshold_eur
        AND amount >= $fraud_structuring_threshold_eur * (1 - $fraud_structuring_band)
    WINDOW w AS (
        PARTITION BY account_id ORDER BY created_at
        RANGE BETWEEN to_seconds($fraud_structuring_window_s::BIGINT) PRECEDING AND CURRENT ROW
    )
)
SELECT
    'structuring', account_id, txn_id, created_at, first_at, created_at, ev,
    least(1.0, 0.5 + 0.1 * n),
    format(
        '{} cash deposits between {:,.0f} and {:,.0f} EUR within {} h, {:,.2f} EUR in total '
        || '(reporting threshold {:,.0f} EUR)',
        n, $fraud_structuring_threshold_eur * (1 - $fraud_structuring_band),
        $fraud_structuring_threshold_eur::DOUBLE, round(epoch(created_at - first_at) / 3600.0, 1),
        total, $fraud_structuring_threshold_eur::DOUBLE
    ),
    $fraud_structuring_window_s
FROM deposits
WHERE n >= $fraud_structuring_min_count;

-- new_account_large_transfer: an account opened days ago receives a large amount
-- (a wire, or a transfer from another customer; not cash, which structuring watches)
-- and moves most of it on shortly after.
INSERT INTO _fa_hits
WITH inflow AS (
    SELECT t.txn_id, t.account_id, t.created_at, t.amount, a.opened_at
    FROM _fa_scope AS t
    JOIN bank.accounts AS a USING (account_id)
    LEFT JOIN bank.accounts AS c ON c.account_id = t.counterparty_account_id
    WHERE t.status = 'settled'
        AND t.amount >= $fraud_new_account_min_inflow_eur
        AND (
            (t.kind = 'deposit' AND t.channel NOT IN ('branch', 'atm'))
            OR (t.kind = 'transfer_in' AND c.customer_id IS DISTINCT FROM a.customer_id)
        )
        AND t.created_at >= a.opened_at
        AND t.created_at <= a.opened_at + to_days($fraud_new_account_age_days::INTEGER)
),
onward AS (
    SELECT
        i.txn_id AS inflow_txn, i.account_id, i.amount AS received, i.opened_at,
        i.created_at AS received_at, o.txn_id, o.created_at,
        sum(-o.amount) OVER w AS moved,
        list(o.txn_id) OVER w AS ev
    FROM inflow AS i
    JOIN _fa_scope AS o
        ON o.account_id = i.account_id
        AND o.created_at > i.created_at
        AND o.created_at <= i.created_at + to_seconds($fraud_new_account_move_window_s::BIGINT)
        AND o.amount < 0
        AND o.status IN ('pending', 'settled')
    WINDOW w AS (
        PARTITION BY i.txn_id ORDER BY o.created_at, o.txn_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    )
)
SELECT
    'new_account_large_transfer', account_id, txn_id, created_at, received_at, created_at,
    list_prepend(inflow_txn, ev),
    least(1.0, 0.6 + 0.4 * moved / received),
    format(
        'account opened {} days earlier received {:,.2f} EUR and moved {:.0f}% of it on within {} min',
        round(epoch(received_at - opened_at) / 86400.0, 1), received, 100 * moved / received,
        round(epoch(created_at - received_at) / 60.0)::BIGINT
    ),
    $fraud_new_account_move_window_s
FROM onward
WHERE moved >= $fraud_new_account_move_share * received;

-- Replace the judged hits: (rule, account) pairs that had or have one are regrouped.
CREATE OR REPLACE TEMP TABLE _fa_pairs AS
SELECT DISTINCT h.rule, h.account_id
FROM live.fraud_hits AS h
JOIN _fa_rule_spans AS s
    ON s.rule = h.rule AND s.account_id = h.account_id
    AND h.trigger_time >= s.h_from AND h.trigger_time <= s.h_to;

DELETE FROM live.fraud_hits AS h
USING _fa_rule_spans AS s
WHERE s.rule = h.rule AND s.account_id = h.account_id
    AND h.trigger_time >= s.h_from AND h.trigger_time <= s.h_to;

INSERT INTO live.fraud_hits
SELECT DISTINCT h.rule, h.account_id, h.trigger_txn_id, h.trigger_time, h.window_start,
    h.window_end, h.evidence, h.severity, h.reason, h.gap_s
FROM _fa_hits AS h
JOIN _fa_rule_spans AS s
    ON s.rule = h.rule AND s.account_id = h.account_id
    AND h.trigger_time >= s.h_from AND h.trigger_time <= s.h_to;

INSERT INTO _fa_pairs
SELECT DISTINCT h.rule, h.account_id
FROM _fa_hits AS h
JOIN _fa_rule_spans AS s
    ON s.rule = h.rule AND s.account_id = h.account_id
    AND h.trigger_time >= s.h_from AND h.trigger_time <= s.h_to;

-- Episodes of the regrouped pairs, from all their hits: hits ordered by trigger time,
-- a new episode where a hit's window starts more than gap_s after the previous ends.
CREATE OR REPLACE TEMP TABLE _fa_episodes AS
WITH ordered AS (
    SELECT
        h.*,
        max(window_end) OVER (
            PARTITION BY rule, account_id
            ORDER BY trigger_time, trigger_txn_id, window_start, evidence
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS prev_end
    FROM live.fraud_hits AS h
    WHERE (h.rule, h.account_id) IN (SELECT (rule, account_id) FROM _fa_pairs)
),
numbered AS (
    SELECT
        *,
        sum(CASE WHEN prev_end IS NULL OR window_start > prev_end + to_seconds(gap_s) THEN 1 ELSE 0 END)
            OVER (
                PARTITION BY rule, account_id
                ORDER BY trigger_time, trigger_txn_id, window_start, evidence
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ) AS episode
    FROM ordered
)
SELECT
    md5(rule || ':' || account_id || ':' || arg_min(trigger_txn_id, (trigger_time, trigger_txn_id)))
        AS alert_id,
    rule,
    account_id,
    min(trigger_time) AS event_time,
    min(window_start) AS window_start,
    max(window_end) AS window_end,
    list_sort(list_distinct(flatten(list(evidence)))) AS evidence,
    max(severity) AS severity,
    arg_max(reason, (severity, trigger_time, trigger_txn_id, window_start, reason)) AS reason
FROM numbered
GROUP BY rule, account_id, episode;

-- The regrouped pairs' alerts: gone with their episode, changed with it, or new.
CREATE OR REPLACE TEMP TABLE _fa_alert_accounts AS
SELECT DISTINCT account_id FROM _fa_pairs;

DELETE FROM live.fraud_alerts
WHERE (rule, account_id) IN (SELECT (rule, account_id) FROM _fa_pairs)
    AND alert_id NOT IN (SELECT alert_id FROM _fa_episodes);

UPDATE live.fraud_alerts
SET evidence_txn_ids = e.evidence,
    window_start = e.window_start,
    window_end = e.window_end,
    event_time = e.event_time,
    severity = e.severity,
    reason = e.reason,
    last_batch = $batch_id
FROM _fa_episodes AS e
WHERE live.fraud_alerts.alert_id = e.alert_id
    AND (live.fraud_alerts.evidence_txn_ids <> e.evidence
        OR live.fraud_alerts.severity <> e.severity
        OR live.fraud_alerts.reason <> e.reason
        OR live.fraud_alerts.event_time <> e.event_time
        OR live.fraud_alerts.window_start <> e.window_start
        OR live.fraud_alerts.window_end <> e.window_end);

INSERT INTO live.fraud_alerts (
    alert_id, rule, account_id, customer_id, severity, reason, evidence_txn_ids, event_time,
    window_start, window_end, detected_at, detected_event_time, first_batch, last_batch
)
SELECT
    e.alert_id, e.rule, e.account_id, acc.customer_id, e.severity, e.reason, e.evidence,
    e.event_time, e.window_start, e.window_end, $detected_at,
    (SELECT now FROM _fa_clock), $batch_id, $batch_id
FROM _fa_episodes AS e
LEFT JOIN bank.accounts AS acc ON acc.account_id = e.account_id
WHERE e.alert_id NOT IN (SELECT alert_id FROM live.fraud_alerts);

-- The holder of an alerted account, as the mirror has it.
UPDATE live.fraud_alerts
SET customer_id = acc.customer_id
FROM bank.accounts AS acc
WHERE acc.account_id = live.fraud_alerts.account_id
    AND live.fraud_alerts.account_id IN (
        SELECT account_id FROM _after_bank_accounts UNION SELECT account_id FROM _before_bank_accounts
    )
    AND live.fraud_alerts.customer_id IS DISTINCT FROM acc.customer_id;
