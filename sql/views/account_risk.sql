-- account_risk: current risk per account, from its recent alerts and behaviour.
-- inputs: bank.transactions, bank.devices, bank.accounts
-- after: fraud_alerts
-- state: live.account_risk
--
-- risk_score = 1 - (1 - alerts) * (1 - behaviour), where
--   alerts    = 1 - prod(1 - severity * decay) over the account's alerts of the last
--               7 days of event time, decay = exp(-age in hours / 24);
--   behaviour = 0.3 * min(1, declined transactions in the last 24 h / 5).
-- "Now" is the bank stream's event-time clock (live.progress 'fraud_alerts': the
-- newest created_at of the mirror's transactions). A function of the alerts and the
-- mirror rows, so of the history, not of its batches; updated_batch is bookkeeping.
-- risk_level: high >= 0.7, medium >= 0.3, else low. Accounts with no recent alert
-- and no recent decline have no row.
--
-- Incremental: recomputes the accounts the batch touched (declines changed, alerts
-- regrouped by fraud_alerts.sql: its temp table _fa_alert_accounts) plus the accounts
-- already listed (their scores decay as the clock moves), reading only the last day of
-- their transactions and the last week of alerts.

CREATE OR REPLACE TEMP TABLE _ar_now AS
SELECT (SELECT clock FROM live.progress WHERE name = 'fraud_alerts') AS now;

CREATE OR REPLACE TEMP TABLE _ar_accounts AS
SELECT account_id FROM _after_bank_transactions WHERE status = 'declined'
UNION SELECT account_id FROM _before_bank_transactions WHERE status = 'declined'
UNION SELECT account_id FROM _fa_alert_accounts
UNION SELECT account_id FROM live.account_risk;

CREATE OR REPLACE TEMP TABLE _ar_alerts AS
SELECT
    a.account_id,
    count(*) AS alerts_7d,
    arg_max(a.rule, a.severity) AS top_rule,
    max(a.severity) AS top_severity,
    max(a.event_time) AS last_alert_at,
    1 - exp(sum(ln(1 - least(
        0.999, a.severity * exp(-greatest(epoch((SELECT now FROM _ar_now) - a.event_time), 0) / 86400.0)
    )))) AS part
FROM live.fraud_alerts AS a
WHERE a.account_id IN (SELECT account_id FROM _ar_accounts)
    AND a.event_time > (SELECT now FROM _ar_now) - INTERVAL 7 DAYS
GROUP BY a.account_id;

CREATE OR REPLACE TEMP TABLE _ar_declines AS
SELECT t.account_id, count(*) AS declined_24h
FROM bank.transactions AS t
WHERE t.status = 'declined'
    AND t.created_at > (SELECT now FROM _ar_now) - INTERVAL 24 HOURS
    AND t.created_at <= (SELECT now FROM _ar_now)
    AND t.account_id IN (SELECT account_id FROM _ar_accounts)
GROUP BY t.account_id;

CREATE OR REPLACE TEMP TABLE _ar_scores AS
SELECT
    u.account_id,
    acc.customer_id,
    coalesce(al.alerts_7d, 0) AS alerts_7d,
    al.top_rule,
    al.top_severity,
    al.last_alert_at,
    coalesce(de.declined_24h, 0) AS declined_24h,
    round(1 - (1 - coalesce(al.part, 0))
        * (1 - 0.3 * least(1.0, coalesce(de.declined_24h, 0) / 5.0)), 3) AS risk_score
FROM _ar_accounts AS u
LEFT JOIN _ar_alerts AS al USING (account_id)
LEFT JOIN _ar_declines AS de USING (account_id)
LEFT JOIN bank.accounts AS acc USING (account_id);

DELETE FROM live.account_risk
WHERE account_id IN (SELECT account_id FROM _ar_scores WHERE alerts_7d = 0 AND declined_24h = 0);

INSERT INTO live.account_risk (
    account_id, customer_id, risk_score, risk_level, alerts_7d, top_rule, last_alert_at,
    declined_24h, reason, as_of, updated_batch
)
SELECT
    account_id,
    customer_id,
    risk_score,
    CASE WHEN risk_score >= 0.7 THEN 'high' WHEN risk_score >= 0.3 THEN 'medium' ELSE 'low' END,
    alerts_7d,
    top_rule,
    last_alert_at,
    declined_24h,
    concat_ws(
        '; ',
        CASE WHEN alerts_7d > 0 THEN format(
            '{} alert(s) in 7 days, most severe {} ({:.2f})', alerts_7d, top_rule, top_severity
        ) END,
        CASE WHEN declined_24h > 0 THEN format('{} declined in 24 h', declined_24h) END
    ),
    (SELECT now FROM _ar_now),
    $batch_id
FROM _ar_scores
WHERE alerts_7d > 0 OR declined_24h > 0
ON CONFLICT (account_id) DO UPDATE SET
    customer_id = excluded.customer_id,
    risk_score = excluded.risk_score,
    risk_level = excluded.risk_level,
    alerts_7d = excluded.alerts_7d,
    top_rule = excluded.top_rule,
    last_alert_at = excluded.last_alert_at,
    declined_24h = excluded.declined_24h,
    reason = excluded.reason,
    as_of = excluded.as_of,
    updated_batch = excluded.updated_batch;
