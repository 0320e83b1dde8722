-- fraud_alerts: rules for the fraud patterns of the bank domain, one alert per
-- episode of a rule on an account, with the numbers that triggered it.
-- inputs: bank.transactions, bank.devices, bank.accounts
-- state: live.payment_buckets
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
-- Incremental: a batch re-evaluates only the accounts it touched, over the event-time
-- span of its changes widened by the longest rule window ($fraud_* settings), reading
-- the mirror within that span only. Rules look at the rows' own timestamps, so a late
-- event is judged with its neighbours in event time.
--
-- Raised once: a rule's hits on an account that lie within the rule's window of each
-- other form one episode; an episode overlapping an existing alert of the same rule
-- and account extends that alert (more evidence, maybe a higher severity); otherwise
-- it becomes a new alert whose id is a digest of rule, account and first triggering
-- transaction. Alerts are findings: they are never withdrawn, but a transaction that
-- was reversed, declined or deleted before a rule saw it does not count where money
-- must have moved (takeover, structuring, new-account transfers).

-- The bank stream's event-time clock: the newest created_at seen.
INSERT INTO live.progress (name, clock, batch_id, updated)
SELECT 'fraud_alerts', (SELECT max(created_at) FROM _after_bank_transactions), $batch_id, now()
ON CONFLICT (name) DO UPDATE SET
    clock = greatest(live.progress.clock, excluded.clock),
    batch_id = excluded.batch_id,
    updated = excluded.updated;

-- Accounts to re-evaluate, with the event-time span the batch changed for each.
CREATE OR REPLACE TEMP TABLE _fa_touched AS
WITH spans AS (
    SELECT account_id, created_at AS t_from, created_at AS t_to FROM _after_bank_transactions
    UNION ALL
    SELECT account_id, created_at, created_at FROM _before_bank_transactions
    UNION ALL
    -- a device registered or changed: what the customer's accounts did while it was new
    SELECT a.account_id, d.registered_at, d.registered_at + to_seconds($fraud_takeover_device_age_s::BIGINT)
    FROM (
        SELECT customer_id, registered_at FROM _after_bank_devices
        UNION ALL
        SELECT customer_id, registered_at FROM _before_bank_devices
    ) AS d
    JOIN bank.accounts AS a ON a.customer_id = d.customer_id
    UNION ALL
    -- a balance moved: transfers out from an untrusted device in the last day are judged
    -- again (the account row and its transfers travel on different topics)
    SELECT t.account_id, t.created_at, t.created_at
    FROM bank.transactions AS t
    JOIN bank.devices AS d ON d.device_id = t.device_id
    WHERE t.kind = 'transfer_out'
        AND NOT coalesce(d.trusted, false)
        AND t.created_at >= (SELECT clock FROM live.progress WHERE name = 'fraud_alerts')
            - to_seconds($fraud_takeover_device_age_s::BIGINT)
        AND t.account_id IN (SELECT account_id FROM _after_bank_accounts)
    UNION ALL
    -- an account that is new (or whose opening changed): its first days
    SELECT n.account_id, n.opened_at, n.opened_at + to_days($fraud_new_account_age_days::INTEGER)
    FROM _after_bank_accounts AS n
    LEFT JOIN _before_bank_accounts AS o USING (account_id)
    WHERE o.account_id IS NULL
        OR o.opened_at IS DISTINCT FROM n.opened_at
        OR o.home_country IS DISTINCT FROM n.home_country
),
spans_by_rule AS (
    SELECT
        -- every rule but the two below looks at most this far around a change
        to_seconds(greatest(
            $fraud_velocity_window_s, $fraud_card_testing_window_s, $fraud_takeover_window_s,
            $fraud_new_account_move_window_s
        )::BIGINT) AS near,
        -- impossible travel: the previous card-present use, up to a day before
        INTERVAL 1 DAY AS travel,
        -- structuring: cash deposits within its window
        to_seconds($fraud_structuring_window_s::BIGINT) AS deposits
)
SELECT
    account_id,
    min(t_from) AS t_from,
    max(t_to) AS t_to,
    (SELECT near FROM spans_by_rule) AS near,
    (SELECT travel FROM spans_by_rule) AS travel,
    (SELECT deposits FROM spans_by_rule) AS deposits,
    min(t_from) - (SELECT greatest(near, travel, deposits) FROM spans_by_rule) AS scan_from,
    max(t_to) + (SELECT greatest(near, travel, deposits) FROM spans_by_rule) AS scan_to
FROM spans
WHERE account_id IS NOT NULL AND t_from IS NOT NULL
GROUP BY account_id;

-- The touched accounts' transactions around their spans: the rules' only input rows.
-- All kinds near the changes; further out only what impossible travel and
-- structuring look back for. (A rule sees fewer rows far from the changes, which can
-- only lower its counts there, never invent a hit.)
CREATE OR REPLACE TEMP TABLE _fa_scope AS
SELECT t.*
FROM bank.transactions AS t
JOIN _fa_touched AS u
    ON t.account_id = u.account_id
    AND t.created_at >= u.scan_from
    AND t.created_at <= u.scan_to
WHERE (t.created_at >= u.t_from - u.near AND t.created_at <= u.t_to + u.near)
    OR (
        t.kind IN ('purchase', 'withdrawal') AND t.channel IN ('card_present', 'atm')
        AND t.created_at >= u.t_from - u.travel AND t.created_at <= u.t_to + u.travel
    )
    OR (
        t.kind = 'deposit' AND t.channel IN ('branch', 'atm')
        AND t.created_at >= u.t_from - u.deposits AND t.created_at <= u.t_to + u.deposits
    );

-- Velocity baseline: recount the card payments of the buckets the batch touched.
CREATE OR REPLACE TEMP TABLE _fa_buckets AS
SELECT DISTINCT
    account_id,
    time_bucket(to_seconds($fraud_velocity_window_s::BIGINT), created_at) AS bucket_start
FROM (
    SELECT account_id, created_at, kind, amount FROM _after_bank_transactions
    UNION ALL
    SELECT account_id, created_at, kind, amount FROM _before_bank_transactions
)
WHERE kind = 'purchase' AND abs(amount) >= $fraud_tiny_eur AND account_id IS NOT NULL;

DELETE FROM live.payment_buckets AS p
USING _fa_buckets AS b
WHERE p.account_id = b.account_id AND p.bucket_start = b.bucket_start;

INSERT INTO live.payment_buckets (account_id, bucket_start, payments)
SELECT b.account_id, b.bucket_start, count(*)
FROM _fa_buckets AS b
JOIN _fa_scope AS s
    ON s.account_id = b.account_id
    AND s.created_at >= b.bucket_start
    AND s.created_at < b.bucket_start + to_seconds($fraud_velocity_window_s::BIGINT)
WHERE s.kind = 'purchase' AND abs(s.amount) >= $fraud_tiny_eur
GROUP BY b.account_id, b.bucket_start;

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
    SELECT b.txn_id, coalesce(max(p.payments), 0) AS usual_max
    FROM busy AS b
    LEFT JOIN live.payment_buckets AS p
        ON p.account_id = b.account_id
        AND p.bucket_start >= b.created_at - to_days($fraud_baseline_days::INTEGER)
        AND p.bucket_start < b.created_at - to_seconds(3 * $fraud_velocity_window_s::BIGINT)
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
-- before: a use that arrives late (from another partition, in a later batch) then
-- adds hits and never hides one, so the alerts do not depend on batch boundaries.
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

-- account_takeover: transfers out from a device that is new, untrusted and registered
-- outside the account's home country, moving a large share of the balance.
INSERT INTO _fa_hits
WITH suspicious AS (
    SELECT
        t.txn_id, t.account_id, t.created_at, -t.amount AS moved,
        d.country AS device_country, d.registered_at, a.home_country
    FROM _fa_scope AS t
    JOIN bank.accounts AS a USING (account_id)
    JOIN bank.devices AS d ON d.device_id = t.device_id
    WHERE t.kind = 'transfer_out' AND t.status = 'settled'
        AND NOT coalesce(d.trusted, false)
        AND d.country IS DISTINCT FROM a.home_country
        AND t.created_at >= d.registered_at
        AND t.created_at <= d.registered_at + to_seconds($fraud_takeover_device_age_s::BIGINT)
),
money AS (
    -- what was left on the account right after each suspicious transfer: the current
    -- balance less what the account's settled or pending transactions since then added
    -- (read from the mirror: as much as happened since, not the history)
    SELECT
        s.txn_id,
        any_value(a.balance) - coalesce(sum(t.amount), 0) AS balance_after
    FROM suspicious AS s
    JOIN bank.accounts AS a USING (account_id)
    LEFT JOIN bank.transactions AS t
        ON t.account_id = s.account_id
        AND t.created_at > s.created_at
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

-- Episodes: a rule's hits on an account whose windows lie within gap_s of each other.
CREATE OR REPLACE TEMP TABLE _fa_episodes AS
WITH ordered AS (
    SELECT
        h.*,
        max(window_end) OVER (
            PARTITION BY rule, account_id ORDER BY trigger_time, trigger_txn_id, window_start
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS prev_end
    FROM _fa_hits AS h
),
numbered AS (
    SELECT
        *,
        sum(CASE WHEN prev_end IS NULL OR window_start > prev_end + to_seconds(gap_s) THEN 1 ELSE 0 END)
            OVER (
                PARTITION BY rule, account_id ORDER BY trigger_time, trigger_txn_id, window_start
            ) AS episode
    FROM ordered
)
SELECT
    rule,
    account_id,
    arg_min(trigger_txn_id, (trigger_time, trigger_txn_id)) AS anchor_txn_id,
    min(trigger_time) AS event_time,
    min(window_start) AS window_start,
    max(window_end) AS window_end,
    list_sort(list_distinct(flatten(list(evidence)))) AS evidence,
    max(severity) AS severity,
    arg_max(reason, (severity, trigger_time, trigger_txn_id, window_start)) AS reason,
    max(gap_s) AS gap_s
FROM numbered
GROUP BY rule, account_id, episode;

-- Match episodes with the alerts they continue.
CREATE OR REPLACE TEMP TABLE _fa_matched AS
SELECT
    e.*,
    (
        SELECT arg_min(a.alert_id, a.event_time)
        FROM live.fraud_alerts AS a
        WHERE a.rule = e.rule AND a.account_id = e.account_id
            AND a.window_start <= e.window_end + to_seconds(e.gap_s)
            AND e.window_start <= a.window_end + to_seconds(e.gap_s)
    ) AS existing_id
FROM _fa_episodes AS e;

UPDATE live.fraud_alerts
SET evidence_txn_ids = m.evidence,
    window_start = m.window_start,
    window_end = m.window_end,
    event_time = m.event_time,
    severity = m.severity,
    reason = m.reason,
    last_batch = $batch_id
FROM (
    SELECT
        a.alert_id,
        list_sort(list_distinct(list_concat(any_value(a.evidence_txn_ids), flatten(list(x.evidence)))))
            AS evidence,
        least(any_value(a.window_start), min(x.window_start)) AS window_start,
        greatest(any_value(a.window_end), max(x.window_end)) AS window_end,
        least(any_value(a.event_time), min(x.event_time)) AS event_time,
        greatest(any_value(a.severity), max(x.severity)) AS severity,
        CASE
            WHEN max(x.severity) > any_value(a.severity) THEN arg_max(x.reason, x.severity)
            ELSE any_value(a.reason)
        END AS reason
    FROM _fa_matched AS x
    JOIN live.fraud_alerts AS a ON a.alert_id = x.existing_id
    GROUP BY a.alert_id
) AS m
WHERE live.fraud_alerts.alert_id = m.alert_id
    AND (live.fraud_alerts.evidence_txn_ids <> m.evidence
        OR live.fraud_alerts.severity <> m.severity
        OR live.fraud_alerts.event_time <> m.event_time
        OR live.fraud_alerts.window_start <> m.window_start
        OR live.fraud_alerts.window_end <> m.window_end);

INSERT INTO live.fraud_alerts AS a (
    alert_id, rule, account_id, customer_id, severity, reason, evidence_txn_ids, event_time,
    window_start, window_end, detected_at, detected_event_time, first_batch, last_batch
)
SELECT
    md5(e.rule || ':' || e.account_id || ':' || e.anchor_txn_id),
    e.rule, e.account_id, acc.customer_id, e.severity, e.reason, e.evidence, e.event_time,
    e.window_start, e.window_end, $detected_at,
    (SELECT clock FROM live.progress WHERE name = 'fraud_alerts'),
    $batch_id, $batch_id
FROM _fa_matched AS e
LEFT JOIN bank.accounts AS acc ON acc.account_id = e.account_id
WHERE e.existing_id IS NULL
ON CONFLICT (alert_id) DO UPDATE SET
    evidence_txn_ids = list_sort(list_distinct(list_concat(a.evidence_txn_ids, excluded.evidence_txn_ids))),
    window_start = least(a.window_start, excluded.window_start),
    window_end = greatest(a.window_end, excluded.window_end),
    severity = greatest(a.severity, excluded.severity),
    last_batch = excluded.last_batch;

-- Baseline buckets older than the baseline period are no longer needed.
DELETE FROM live.payment_buckets
WHERE bucket_start < (SELECT clock FROM live.progress WHERE name = 'fraud_alerts')
    - to_days($fraud_baseline_days::INTEGER + 1);
