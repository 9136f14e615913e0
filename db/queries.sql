-- Every query of the fleet. Each block starts with `-- name: NAME` and one line of why.
-- Parameters are psycopg named placeholders: SQL is never built from values.

-- name: claim_order
-- Take a due order for one worker; returns the row with the claim and what it was before.
-- With begin, an order never tried (pending, no attempt) is also marked as buying attempt 1,
-- what begin_purchase does for the others: one statement instead of two on the common path.
-- A claim that may buy (may_buy: a fulfill_order message) never takes an order whose network,
-- or the whole fleet ('*'), is paused in fleet_pauses: read here, at every claim, so a pause
-- holds on every host at once. The others only ask the vendor and go on (a callback, the
-- dead-letter consumer's last look, the reconciler's recovery of an expired claim).
-- Only an order of a network this process serves (networks: its NETWORK_VENDORS routes) is
-- taken; the caller reads the order to tell another host's network from nobody's.
WITH prev AS (
    SELECT id, fulfillment_status AS previous_status,
           (fulfillment_status = 'processing' AND claim_token IS NOT NULL) AS taken_over,
           (%(begin)s::boolean AND fulfillment_status = 'pending' AND fulfillment_attempts = 0
            AND fulfillment_in_flight_attempt IS NULL) AS purchase_begun
    FROM orders
    WHERE id = %(order_id)s
    FOR UPDATE
)
UPDATE orders o
SET fulfillment_status = 'processing',
    claim_token = %(token)s,
    claim_expires_at = now() + make_interval(secs => %(ttl_s)s::float8),
    fulfillment_in_flight_attempt = CASE WHEN prev.purchase_begun THEN 1
                                         ELSE o.fulfillment_in_flight_attempt END,
    fulfillment_attempts = CASE WHEN prev.purchase_begun THEN 1 ELSE o.fulfillment_attempts END,
    updated_at = now()
FROM prev
WHERE o.id = prev.id
  AND o.network = ANY(%(networks)s::text[])
  AND (NOT %(may_buy)s::boolean
       OR NOT EXISTS (SELECT 1 FROM fleet_pauses p WHERE p.scope IN ('*', o.network)))
  AND (
        o.fulfillment_status = 'pending'
     OR (o.fulfillment_status = 'failed'
         AND (o.dead_letter_reason IS NULL OR %(in_review)s::boolean)
         AND coalesce(o.next_attempt_at, '-infinity')
             <= now() + make_interval(secs => %(early_s)s::float8))
     -- an order a human holds as outcome unknown is taken only in_review (callback, dead letter)
     OR (o.fulfillment_status = 'processing' AND o.claim_token IS NULL
         AND (o.dead_letter_reason IS NULL OR %(in_review)s::boolean)
         AND (o.next_attempt_at IS NULL
              OR o.next_attempt_at <= now() + make_interval(secs => %(early_s)s::float8)))
     OR (o.fulfillment_status = 'processing' AND o.claim_expires_at < now())
  )
RETURNING o.*, prev.previous_status, prev.taken_over, prev.purchase_begun;

-- name: seconds_until_due
-- How long until a waiting order (retry or status check) is due, by the database's clock.
SELECT extract(epoch FROM next_attempt_at - now())::float8 AS wait_s
FROM orders
WHERE id = %(order_id)s
  AND next_attempt_at IS NOT NULL
  AND claim_token IS NULL
  AND dead_letter_reason IS NULL
  AND fulfillment_status IN ('failed', 'processing');

-- name: get_order
-- One order with its fulfillment columns (a claim that found nothing to do, the CLI).
SELECT * FROM orders WHERE id = %(order_id)s;

-- name: begin_purchase
-- Mark attempt N as under way before the vendor call, so a killed worker is detectable; the
-- attempt counts from here (a vendor-wide failure may give it back, see domain/decision.py).
UPDATE orders
SET fulfillment_in_flight_attempt = %(attempt)s,
    fulfillment_attempts = %(attempt)s,
    claim_expires_at = now() + make_interval(secs => %(ttl_s)s::float8),
    updated_at = now()
WHERE id = %(order_id)s AND claim_token = %(token)s
RETURNING id;

-- name: finish_call
-- One round trip per vendor answer: the audit row and the order's new state together.
WITH updated AS (
    UPDATE orders
    SET fulfillment_status = %(status)s,
        fulfillment_attempts = %(attempts)s,
        fulfillment_in_flight_attempt = %(in_flight)s,
        fulfillment_status_checks = %(status_checks)s,
        fulfillment_deferrals = %(deferrals)s,
        next_attempt_at = CASE WHEN %(delay_s)s::float8 IS NULL THEN NULL
                               ELSE now() + make_interval(secs => %(delay_s)s::float8) END,
        claim_token = CASE WHEN %(keep_claim)s THEN claim_token END,
        claim_expires_at = CASE WHEN %(keep_claim)s THEN claim_expires_at END,
        last_error_code = %(error_code)s,
        last_error_message = %(error_message)s,
        dead_letter_reason = %(dead_letter_reason)s,
        dead_letter_requested_at = CASE WHEN %(dead_letter_reason)s::text IS NULL THEN NULL
                                        ELSE now() END,
        -- back in a worker's hands (a callback confirmed an order in review): off the list
        dead_lettered_at = CASE WHEN %(dead_letter_reason)s::text IS NULL THEN NULL
                                ELSE dead_lettered_at END,
        fulfilled_at = CASE WHEN %(status)s = 'success' THEN now() ELSE fulfilled_at END,
        -- only a live transaction (success, pending) is the order's; a failed one stays in the log
        vendor_transaction_id = CASE WHEN %(log_status)s IN ('success', 'pending')
                                     THEN coalesce(%(transaction_id)s, vendor_transaction_id)
                                     ELSE vendor_transaction_id END,
        updated_at = now()
    WHERE id = %(order_id)s AND claim_token = %(token)s
    RETURNING id, fulfillment_generation, network, phone_number, fulfillment_attempts,
              vendor_transaction_id
), logged AS (
    INSERT INTO fulfillment_logs (
        order_id, network, phone_number, action, status, attempt_number, max_attempts,
        http_status, api_response, error_code, error_message, latency_ms, retry_after,
        fulfilled_at, vendor_transaction_id, worker)
    VALUES (
        %(order_id)s, %(network)s, %(phone_number)s, %(action)s, %(log_status)s,
        %(attempt_number)s, %(max_attempts)s, %(http_status)s, %(api_response)s,
        %(error_code)s, %(error_message)s, %(latency_ms)s,
        CASE WHEN %(delay_s)s::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => %(delay_s)s::float8) END,
        CASE WHEN %(log_status)s = 'success' THEN now() END,
        %(transaction_id)s, %(worker)s)
    RETURNING id
), told AS (
    -- a delivery is a final outcome: the platform's event and the customer's SMS with it
    SELECT fulfillment_record_outcome(id, fulfillment_generation, 'order.fulfilled', network,
                                      phone_number, fulfillment_attempts, vendor_transaction_id,
                                      NULL, false) AS n
    FROM updated WHERE %(status)s = 'success'
)
SELECT (SELECT count(*) FROM updated) AS updated, (SELECT id FROM logged) AS log_id,
       (SELECT coalesce(sum(n), 0) FROM told) AS told;

-- name: defer_order
-- No vendor call now (its circuit open, its rate limit or its share of the threads taken):
-- hand the order back, due later, nothing spent and nothing logged, with why it waits
-- (clear_in_flight: the claim marked attempt 1 and nothing was sent).
UPDATE orders
SET fulfillment_status = %(status)s,
    fulfillment_in_flight_attempt = CASE WHEN %(clear_in_flight)s::boolean THEN NULL
                                         ELSE fulfillment_in_flight_attempt END,
    fulfillment_attempts = CASE WHEN %(clear_in_flight)s::boolean
                                THEN greatest(fulfillment_attempts - 1, 0)
                                ELSE fulfillment_attempts END,
    claim_token = NULL,
    claim_expires_at = NULL,
    next_attempt_at = now() + make_interval(secs => %(delay_s)s::float8),
    last_error_code = %(error_code)s,
    last_error_message = %(error_message)s,
    updated_at = now()
WHERE id = %(order_id)s AND claim_token = %(token)s
RETURNING id;

-- name: release_claim
-- Give an order back untouched (clear_in_flight: its claim marked attempt 1, nothing was sent).
-- One left processing with no schedule (a dead worker's, taken by a callback) is due now:
-- nothing else would ever take it again.
UPDATE orders
SET fulfillment_status = %(status)s,
    next_attempt_at = CASE WHEN %(status)s = 'processing' AND dead_letter_reason IS NULL
                           THEN coalesce(next_attempt_at, now()) ELSE next_attempt_at END,
    fulfillment_in_flight_attempt = CASE WHEN %(clear_in_flight)s::boolean THEN NULL
                                         ELSE fulfillment_in_flight_attempt END,
    fulfillment_attempts = CASE WHEN %(clear_in_flight)s::boolean
                                THEN greatest(fulfillment_attempts - 1, 0)
                                ELSE fulfillment_attempts END,
    claim_token = NULL,
    claim_expires_at = NULL,
    updated_at = now()
WHERE id = %(order_id)s AND claim_token = %(token)s;

-- name: request_dead_letter
-- Fail an order that cannot be delivered (invalid data) without a vendor call; the consumer flags it.
UPDATE orders
SET fulfillment_status = 'failed',
    fulfillment_in_flight_attempt = CASE WHEN %(clear_in_flight)s::boolean THEN NULL
                                         ELSE fulfillment_in_flight_attempt END,
    fulfillment_attempts = CASE WHEN %(clear_in_flight)s::boolean
                                THEN greatest(fulfillment_attempts - 1, 0)
                                ELSE fulfillment_attempts END,
    claim_token = NULL,
    claim_expires_at = NULL,
    next_attempt_at = NULL,
    last_error_code = %(error_code)s,
    last_error_message = %(error_message)s,
    dead_letter_reason = %(reason)s,
    dead_letter_requested_at = now(),
    updated_at = now()
WHERE id = %(order_id)s AND claim_token = %(token)s;

-- name: flag_dead_letter
-- The dead-letter consumer's mark and its admin notification in one statement, so a crash
-- between them cannot leave a flagged order that nobody was told about.
WITH flagged AS (
    UPDATE orders
    -- an order the vendor may hold (an attempt in flight, or pending there) is never failed:
    -- it stays processing, in a human's queue as outcome unknown
    SET fulfillment_status = CASE WHEN fulfillment_in_flight_attempt IS NOT NULL
                                    OR fulfillment_status = 'processing'
                                  THEN 'processing' ELSE 'failed' END,
        dead_letter_reason = coalesce(dead_letter_reason, %(reason)s),
        dead_letter_requested_at = coalesce(dead_letter_requested_at, now()),
        dead_lettered_at = now(),
        last_error_code = coalesce(last_error_code, %(error_code)s),
        next_attempt_at = NULL,
        claim_token = NULL,
        claim_expires_at = NULL,
        -- an attempt in flight stays recorded: a later retry asks the vendor before buying
        updated_at = now()
    WHERE id = %(order_id)s
      AND fulfillment_status IN ('pending', 'processing', 'failed')
      AND (claim_token IS NULL OR claim_expires_at < now())
      AND dead_lettered_at IS NULL
      AND fulfillment_generation = %(generation)s
    RETURNING id, dead_letter_reason, fulfillment_attempts, network, last_error_code,
              fulfillment_generation, fulfillment_status, fulfillment_in_flight_attempt,
              phone_number, vendor_transaction_id
), told AS (
    -- failed is final: the platform's event (a refund advised, nothing being live at the
    -- vendor) and the customer's SMS; an outcome unknown (processing) tells nobody yet
    SELECT fulfillment_record_outcome(id, fulfillment_generation, 'order.failed', network,
                                      phone_number, fulfillment_attempts, vendor_transaction_id,
                                      dead_letter_reason,
                                      fulfillment_in_flight_attempt IS NULL) AS n
    FROM flagged WHERE fulfillment_status = 'failed'
), noted AS (
    INSERT INTO admin_notifications (kind, order_id, message, details, dedupe_key)
    SELECT 'dead_letter', id,
           format('Order %%s dead-lettered after %%s attempt(s): %%s',
                  id, fulfillment_attempts, dead_letter_reason),
           jsonb_build_object('reason', dead_letter_reason, 'error_code', last_error_code,
                              'attempts', fulfillment_attempts, 'network', network,
                              'source', %(source)s::text),
           format('dead_letter:%%s:%%s', id, fulfillment_generation)
    FROM flagged
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, message, details
)
SELECT f.id AS order_id, f.dead_letter_reason, f.fulfillment_attempts, f.last_error_code,
       n.id AS notification_id, n.message, n.details,
       (SELECT coalesce(sum(t.n), 0) FROM told t) AS told
FROM flagged f LEFT JOIN noted n ON true;

-- name: record_callback
-- Remember a signed vendor callback; no row back means it is a replay of one already seen.
INSERT INTO vendor_callbacks (digest, order_id, status)
VALUES (%(digest)s, %(order_id)s, %(status)s)
ON CONFLICT (digest) DO NOTHING
RETURNING digest;

-- name: prune_callbacks
-- Forget callbacks long past their signature's window (the reconciler's pass).
DELETE FROM vendor_callbacks
WHERE received_at < now() - make_interval(secs => %(keep_s)s::float8);

-- name: insert_notification
-- Store an admin notification once per dedupe key; nothing is returned for a repeat.
INSERT INTO admin_notifications (kind, order_id, message, details, dedupe_key)
VALUES (%(kind)s, %(order_id)s, %(message)s, %(details)s, %(dedupe_key)s)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id;

-- name: record_webhook_delivery
-- Where the notification's webhook POST stands after a delivery try.
UPDATE admin_notifications
SET webhook_state = %(state)s,
    webhook_attempts = webhook_attempts + %(attempts)s,
    webhook_last_error = %(last_error)s,
    delivered_at = CASE WHEN %(state)s = 'delivered' THEN now() ELSE delivered_at END,
    updated_at = now()
WHERE id = %(id)s;

-- name: undelivered_notifications
-- Take notifications whose webhook failed, for one reconciler to send again: stamping
-- updated_at hides them from the others for the grace period.
UPDATE admin_notifications
SET updated_at = now()
WHERE id IN (
    SELECT id FROM admin_notifications
    WHERE webhook_state IN ('pending', 'failed')
      AND webhook_attempts < %(max_attempts)s
      AND updated_at < now() - make_interval(secs => %(grace_s)s::float8)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, order_id, message, details, created_at;

-- name: sweep_due_orders
-- The reconciler's pass: orders whose message was lost, due again; stamps them so a concurrent
-- reconciler or the next pass does not enqueue them twice within the grace period. An order of
-- a paused scope (fleet_pauses) is left alone when it would be bought (pending, a retry or a
-- status check overdue); an expired claim's recovery and an unflagged dead letter never buy.
WITH due AS (
    SELECT id,
           CASE
               WHEN fulfillment_status = 'pending' THEN 'pending_unstarted'
               WHEN fulfillment_status = 'processing' AND claim_token IS NOT NULL THEN 'claim_expired'
               WHEN dead_letter_reason IS NOT NULL THEN 'dead_letter_unflagged'
               WHEN fulfillment_status = 'processing' THEN 'status_check_overdue'
               ELSE 'retry_overdue'
           END AS reason
    FROM orders
    WHERE network IN (SELECT network FROM fleet_networks)
      AND coalesce(last_enqueued_at, '-infinity') < now() - make_interval(secs => %(grace_s)s::float8)
      AND (
            (fulfillment_status = 'pending'
             AND created_at < now() - make_interval(secs => %(grace_s)s::float8))
         OR (fulfillment_status = 'processing' AND claim_token IS NOT NULL
             AND claim_expires_at < now())
         OR (fulfillment_status = 'processing' AND claim_token IS NULL
             AND dead_letter_reason IS NULL
             AND next_attempt_at < now() - make_interval(secs => %(grace_s)s::float8))
         OR (fulfillment_status = 'failed' AND dead_letter_reason IS NULL
             AND coalesce(next_attempt_at, '-infinity')
                 < now() - make_interval(secs => %(grace_s)s::float8))
         OR (fulfillment_status IN ('failed', 'processing') AND claim_token IS NULL
             AND dead_letter_reason IS NOT NULL
             AND dead_lettered_at IS NULL
             AND dead_letter_requested_at < now() - make_interval(secs => %(grace_s)s::float8))
      )
      AND (NOT EXISTS (SELECT 1 FROM fleet_pauses p WHERE p.scope IN ('*', orders.network))
           -- the reasons claim_expired and dead_letter_unflagged, as the CASE above names them
           OR (fulfillment_status <> 'pending'
               AND ((fulfillment_status = 'processing' AND claim_token IS NOT NULL)
                    OR dead_letter_reason IS NOT NULL)))
    ORDER BY updated_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE orders o
SET last_enqueued_at = now()
FROM due
WHERE o.id = due.id
RETURNING o.id, due.reason, o.fulfillment_generation, o.dead_letter_reason, o.last_error_code;

-- name: mark_enqueued
-- Stamp orders a producer just published, so the reconciler waits its grace period.
UPDATE orders SET last_enqueued_at = now() WHERE id = %(order_id)s;

-- name: unmark_enqueued
-- Orders stamped enqueued whose message could not be sent after all (Redis away during a
-- resume): the reconciler's next pass takes them instead of waiting its grace period.
UPDATE orders SET last_enqueued_at = NULL WHERE id = ANY(%(order_ids)s::uuid[]) RETURNING id;

-- name: order_logs
-- Every attempt and status check of one order, oldest first (CLI `status`, demo summary).
SELECT * FROM fulfillment_logs WHERE order_id = %(order_id)s ORDER BY id;

-- name: insert_order
-- Used by the demo and tests in place of the purchase platform: commit one pending order.
INSERT INTO orders (id, phone_number, network, size_gb, package_name)
VALUES (%(id)s, %(phone_number)s, %(network)s, %(size_gb)s, %(package_name)s);

-- name: status_counts
-- Orders per network and fulfillment status (metrics, demo, CLI): dead-lettered and outcome
-- unknown counted apart; a network outside the four known ones is 'other' (a bounded label);
-- an order no fleet status was given, or a pending one of a network this fleet does not
-- serve, is 'unmanaged' (not ours: never counted as pending).
SELECT CASE WHEN network IN ('at-ishare', 'mtn', 'telecel', 'at-bigtime') THEN network
            ELSE 'other' END AS network,
       CASE WHEN fulfillment_status = 'processing' AND dead_letter_reason IS NOT NULL
                 THEN 'outcome_unknown'
            WHEN dead_lettered_at IS NOT NULL THEN 'dead_lettered'
            WHEN fulfillment_status = 'pending'
                 AND (network IS NULL OR network NOT IN (SELECT network FROM fleet_networks))
                 THEN 'unmanaged'
            ELSE coalesce(fulfillment_status, 'unmanaged') END AS status,
       count(*) AS n
FROM orders
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: attempts_distribution
-- How many purchase attempts orders needed, per final status (demo summary).
SELECT fulfillment_status AS status, fulfillment_attempts AS attempts, count(*) AS n
FROM orders
WHERE fulfillment_status IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: dead_lettered_orders
-- Flagged orders with their reason (demo summary, CLI).
SELECT id, phone_number, dead_letter_reason, last_error_code, dead_lettered_at,
       fulfillment_attempts
FROM orders
WHERE dead_lettered_at IS NOT NULL
ORDER BY dead_lettered_at DESC
LIMIT %(limit)s;

-- name: unfinished_count
-- Orders not yet in a terminal state (success, or failed and flagged): the demo waits for zero.
SELECT count(*) AS n
FROM orders
WHERE (fulfillment_status IN ('pending', 'processing') AND dead_lettered_at IS NULL)
   OR (fulfillment_status = 'failed' AND dead_lettered_at IS NULL);

-- name: notifications
-- Recent admin notifications, newest first.
SELECT * FROM admin_notifications ORDER BY id DESC LIMIT %(limit)s;

-- Admin surface: the dashboard, the platform API and the CLI ------------------------------
-- list_orders is completed with one filter_* fragment per active filter and, after the first
-- page, the keyset fragment; fragments are fixed text from this file, values stay parameters.
-- The CSV export runs it with limit NULL (no limit, in PostgreSQL), streamed by a cursor.

-- name: list_orders
-- One page of orders, newest first (keyset: no OFFSET, constant cost at any depth).
SELECT o.id, o.phone_number, o.network, o.size_gb, o.package_name, o.fulfillment_status,
       o.fulfillment_attempts, o.fulfillment_extra_attempts, o.last_error_code,
       o.last_error_message, o.next_attempt_at, o.dead_letter_reason, o.dead_lettered_at,
       o.dead_letter_dismissed_at, o.fulfilled_at, o.vendor_transaction_id, o.created_at,
       o.updated_at
FROM orders o
WHERE o.fulfillment_status IS NOT NULL {filters}
ORDER BY o.created_at DESC, o.id DESC
LIMIT %(limit)s

-- name: filter_pending
-- Orders nobody has started.
AND o.fulfillment_status = 'pending'

-- name: filter_processing
-- Orders a worker holds or the vendor is still working on (outcome unknown is its own filter).
AND o.fulfillment_status = 'processing' AND o.dead_letter_reason IS NULL
AND o.dead_lettered_at IS NULL

-- name: filter_outcome_unknown
-- Orders the vendor may have delivered, held for a person to decide (orders_outcome_unknown_idx).
AND o.fulfillment_status = 'processing' AND o.dead_letter_reason IS NOT NULL

-- name: filter_success
-- Delivered orders.
AND o.fulfillment_status = 'success'

-- name: filter_failed
-- Failed attempts waiting for their retry (dead letters are their own filter).
AND o.fulfillment_status = 'failed' AND o.dead_lettered_at IS NULL

-- name: filter_dead_lettered
-- Orders the dead-letter consumer flagged, dismissed or not; never an outcome unknown.
AND o.dead_lettered_at IS NOT NULL
AND NOT (o.fulfillment_status = 'processing' AND o.dead_letter_reason IS NOT NULL)

-- name: filter_open_dead_letters
-- The dead-letter list: flagged and not resolved by hand; never an outcome unknown.
AND o.dead_lettered_at IS NOT NULL AND o.dead_letter_dismissed_at IS NULL
AND NOT (o.fulfillment_status = 'processing' AND o.dead_letter_reason IS NOT NULL)

-- name: filter_phone
-- Search by phone number, typed any way (the msisdn index).
AND ghana_msisdn(o.phone_number) = %(msisdn)s

-- name: filter_network
-- One network's orders.
AND o.network = %(network)s

-- name: filter_since
-- Orders created at or after a time.
AND o.created_at >= %(since)s

-- name: filter_after
-- Keyset: the rows after the last one of the previous page.
AND (o.created_at, o.id) < (%(after_created)s, %(after_id)s)

-- name: order_stats
-- The dashboard's cards: counts per view status and the median time to fulfil over 24 h, of
-- every network or of %(network)s. A pending order of a network no fleet serves is not ours:
-- not counted (nor any order without a fleet status).
-- The main scan reads only orders_status_counts_idx's columns (an index-only scan); outcome
-- unknown needs dead_letter_reason, so it is counted apart on its small partial index and
-- taken out of the processing and dead-letter counts it would otherwise fall into.
WITH unknown AS (
    SELECT count(*) AS n,
           count(*) FILTER (WHERE dead_lettered_at IS NULL) AS unflagged,
           count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS flagged,
           count(*) FILTER (WHERE dead_lettered_at IS NOT NULL
                            AND dead_letter_dismissed_at IS NULL) AS open_flagged
    FROM orders
    WHERE fulfillment_status = 'processing' AND dead_letter_reason IS NOT NULL
      AND (%(network)s::text IS NULL OR network = %(network)s)
)
SELECT count(*) AS total,
       count(*) FILTER (WHERE fulfillment_status = 'success') AS success,
       count(*) FILTER (WHERE fulfillment_status = 'failed' AND dead_lettered_at IS NULL)
           AS failed,
       count(*) FILTER (WHERE fulfillment_status = 'processing' AND dead_lettered_at IS NULL)
           - (SELECT unflagged FROM unknown) AS processing,
       count(*) FILTER (WHERE fulfillment_status = 'pending') AS pending,
       (SELECT n FROM unknown) AS outcome_unknown,
       count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) - (SELECT flagged FROM unknown)
           AS dead_lettered,
       count(*) FILTER (WHERE dead_lettered_at IS NOT NULL
                        AND dead_letter_dismissed_at IS NULL)
           - (SELECT open_flagged FROM unknown)
           AS open_dead_letters,
       (SELECT extract(epoch FROM percentile_cont(0.5)
                       WITHIN GROUP (ORDER BY fulfilled_at - created_at))
        FROM orders
        WHERE fulfillment_status = 'success' AND fulfilled_at > now() - interval '24 hours'
          AND (%(network)s::text IS NULL OR network = %(network)s))
           AS median_fulfil_s_24h
FROM orders
WHERE fulfillment_status IS NOT NULL
  AND (%(network)s::text IS NULL OR network = %(network)s)
  AND (fulfillment_status <> 'pending' OR network IN (SELECT network FROM fleet_networks));

-- name: order_audit
-- The admin actions on one order, oldest first (detail view).
SELECT * FROM admin_audit WHERE order_id = %(order_id)s ORDER BY id;

-- name: order_notifications
-- The notifications raised for one order (detail view).
SELECT * FROM admin_notifications WHERE order_id = %(order_id)s ORDER BY id;

-- name: insert_audit
-- Record an admin action.
INSERT INTO admin_audit (actor, action, order_id, reason, details)
VALUES (%(actor)s, %(action)s, %(order_id)s, %(reason)s, %(details)s)
RETURNING id;

-- name: admin_retry
-- Grant a failed (or dead-lettered) order one more attempt, due now; refused (no row) for
-- any other state. A new generation, so its next dead letter notifies again. A dead letter
-- resolved by hand (dismissed: perhaps refunded) is reopened only when allow_resolved.
UPDATE orders
SET fulfillment_extra_attempts = greatest(fulfillment_extra_attempts,
                                          fulfillment_attempts + 1 - %(max_attempts)s),
    fulfillment_generation = fulfillment_generation + 1,
    fulfillment_deferrals = 0,
    fulfillment_status_checks = 0,
    next_attempt_at = now(),
    last_enqueued_at = now(),
    dead_letter_reason = NULL,
    dead_letter_requested_at = NULL,
    dead_lettered_at = NULL,
    dead_letter_dismissed_at = NULL,
    dead_letter_dismissed_by = NULL,
    updated_at = now()
WHERE id = %(order_id)s
  AND network IN (SELECT network FROM fleet_networks)
  AND fulfillment_status = 'failed'
  AND claim_token IS NULL
  AND (%(allow_resolved)s::boolean OR dead_letter_dismissed_at IS NULL)
RETURNING id, fulfillment_attempts, fulfillment_extra_attempts, fulfillment_generation;

-- name: admin_trigger
-- Stamp a pending order the platform asks to (re)publish; refused (no row) otherwise.
UPDATE orders
SET last_enqueued_at = now()
WHERE id = %(order_id)s AND fulfillment_status = 'pending'
  AND network IN (SELECT network FROM fleet_networks)
RETURNING id;

-- name: admin_dismiss
-- Resolve a dead letter by hand: it leaves the dead-letter list, the order stays failed. An
-- outcome unknown (processing) is never dismissed: it may have been delivered; decide first.
-- The platform is told (order.resolved, with the admin's reason) in the same statement.
WITH dismissed AS (
    UPDATE orders
    SET dead_letter_dismissed_at = now(), dead_letter_dismissed_by = %(actor)s,
        updated_at = now()
    WHERE id = %(order_id)s AND dead_lettered_at IS NOT NULL
      AND dead_letter_dismissed_at IS NULL
      AND fulfillment_status <> 'processing'
    RETURNING id, fulfillment_generation, network, phone_number, fulfillment_attempts,
              vendor_transaction_id
), told AS (
    SELECT fulfillment_record_outcome(id, fulfillment_generation, 'order.resolved', network,
                                      phone_number, fulfillment_attempts, vendor_transaction_id,
                                      %(reason)s::text, false) AS n
    FROM dismissed
)
SELECT d.id, (SELECT coalesce(sum(t.n), 0) FROM told t) AS told FROM dismissed d;

-- name: admin_settle_review
-- A person's decision on an outcome unknown (processing, dead_letter_reason set), one of:
--   recheck: ask the vendor again: back to a worker, due now, with fresh budgets and a new
--     generation; still processing, the attempt still in flight, so the worker looks the
--     reference up first;
--   mark_delivered: delivery confirmed by hand (the vendor's dashboard, the customer): success;
--   mark_not_delivered: confirmed not delivered: failed, an open dead letter (retry or dismiss
--     from there); the in-flight mark stays, so a later retry still looks the reference up.
-- Taken only in that state and with no live claim, so a callback or a worker that holds it,
-- or a second admin, makes the other refused (no row); so is a decision not named here.
-- A delivery or a failure confirmed by hand is a final outcome, told like the workers'.
WITH settled AS (
UPDATE orders
SET fulfillment_status = CASE WHEN d.delivered THEN 'success'
                              WHEN d.not_delivered THEN 'failed'
                              ELSE fulfillment_status END,
    fulfillment_generation = fulfillment_generation + CASE WHEN d.recheck THEN 1 ELSE 0 END,
    fulfillment_status_checks = CASE WHEN d.recheck THEN 0 ELSE fulfillment_status_checks END,
    fulfillment_deferrals = CASE WHEN d.recheck THEN 0 ELSE fulfillment_deferrals END,
    fulfillment_in_flight_attempt = CASE WHEN d.delivered THEN NULL
                                         ELSE fulfillment_in_flight_attempt END,
    fulfilled_at = CASE WHEN d.delivered THEN now() ELSE fulfilled_at END,
    vendor_transaction_id = CASE WHEN d.delivered
                                 THEN coalesce(%(transaction_id)s::text, vendor_transaction_id)
                                 ELSE vendor_transaction_id END,
    next_attempt_at = CASE WHEN d.recheck THEN now() END,
    last_enqueued_at = CASE WHEN d.recheck THEN now() ELSE last_enqueued_at END,
    -- off review (recheck, delivered), or an open dead letter with the admin's reason
    dead_letter_reason = CASE WHEN d.not_delivered THEN %(reason)s::text END,
    dead_letter_requested_at = CASE WHEN d.not_delivered
                                    THEN coalesce(dead_letter_requested_at, now()) END,
    dead_lettered_at = CASE WHEN d.not_delivered THEN coalesce(dead_lettered_at, now()) END,
    dead_letter_dismissed_at = NULL,
    dead_letter_dismissed_by = NULL,
    claim_token = NULL,
    claim_expires_at = NULL,
    updated_at = now()
FROM (SELECT %(decision)s::text = 'recheck' AS recheck,
             %(decision)s::text = 'mark_delivered' AS delivered,
             %(decision)s::text = 'mark_not_delivered' AS not_delivered) AS d
WHERE id = %(order_id)s
  AND (d.recheck OR d.delivered OR d.not_delivered)
  AND network IN (SELECT network FROM fleet_networks)
  AND fulfillment_status = 'processing'
  AND dead_letter_reason IS NOT NULL
  AND (claim_token IS NULL OR claim_expires_at < now())
RETURNING id, fulfillment_generation, fulfillment_attempts, fulfillment_in_flight_attempt,
          vendor_transaction_id, fulfillment_status, network, phone_number, dead_letter_reason
), told AS (
    -- not delivered, confirmed by a person: nothing live at the vendor, a refund advised
    SELECT fulfillment_record_outcome(
               id, fulfillment_generation,
               CASE fulfillment_status WHEN 'success' THEN 'order.fulfilled'
                                       ELSE 'order.failed' END,
               network, phone_number, fulfillment_attempts, vendor_transaction_id,
               dead_letter_reason, fulfillment_status = 'failed') AS n
    FROM settled WHERE fulfillment_status IN ('success', 'failed')
)
SELECT s.id, s.fulfillment_generation, s.fulfillment_attempts, s.fulfillment_in_flight_attempt,
       s.vendor_transaction_id, (SELECT coalesce(sum(t.n), 0) FROM told t) AS told
FROM settled s;

-- name: outcome_unknown_count
-- Orders held as outcome unknown (the fulfillment_outcome_unknown_orders gauge, at scrape time).
SELECT count(*) AS n
FROM orders
WHERE fulfillment_status = 'processing' AND dead_letter_reason IS NOT NULL;

-- name: latest_log
-- The latest attempt of an order (platform API GET).
SELECT * FROM fulfillment_logs WHERE order_id = %(order_id)s ORDER BY id DESC LIMIT 1;

-- name: oldest_pending
-- Per served network, seconds since its oldest order still waiting for its first attempt
-- was created, 0 when none waits (metrics; orders_pending_network_idx).
SELECT f.network,
       coalesce((SELECT extract(epoch FROM now() - min(o.created_at))
                 FROM orders o
                 WHERE o.fulfillment_status = 'pending' AND o.network = f.network), 0)::float8
           AS age_s
FROM fleet_networks f
ORDER BY f.network;

-- The runtime pause (fleet_pauses: '*' for the whole fleet, or a network code) ---------------

-- name: paused_scope
-- Which pause holds an order of this network, the fleet's first (a worker's claim found nothing).
SELECT scope FROM fleet_pauses
WHERE scope IN ('*', %(network)s)
ORDER BY scope = '*' DESC
LIMIT 1;

-- name: list_pauses
-- Every pause in force, the whole fleet's first, with its age by the database's clock.
SELECT scope, reason, paused_by, paused_at,
       extract(epoch FROM now() - paused_at)::float8 AS age_s
FROM fleet_pauses
ORDER BY scope = '*' DESC, scope;

-- name: insert_pause
-- Pause a scope; a scope already paused keeps its first pause (who, why, since when), and
-- `created` says which of the two happened.
WITH added AS (
    INSERT INTO fleet_pauses (scope, reason, paused_by)
    VALUES (%(scope)s, %(reason)s, %(paused_by)s)
    ON CONFLICT (scope) DO NOTHING
    RETURNING scope, reason, paused_by, paused_at
)
SELECT scope, reason, paused_by, paused_at, 0::float8 AS age_s, true AS created FROM added
UNION ALL
SELECT scope, reason, paused_by, paused_at,
       extract(epoch FROM now() - paused_at)::float8 AS age_s, false AS created
FROM fleet_pauses
WHERE scope = %(scope)s AND NOT EXISTS (SELECT 1 FROM added);

-- name: delete_pause
-- Resume a scope; no row back when it was not paused (a second resume, or a concurrent one).
DELETE FROM fleet_pauses WHERE scope = %(scope)s
RETURNING scope, reason, paused_by, paused_at,
          extract(epoch FROM now() - paused_at)::float8 AS age_s;

-- name: requeue_waiting_orders
-- After a resume: the scope's orders that wait for a worker and no pause holds any more,
-- oldest due first: pending ones by when they came (orders_waiting_idx), retries and status
-- checks due by when they fell due, none a human holds (dead_letter_reason) or a worker has;
-- at most `limit`, stamped enqueued in this statement so the reconciler leaves them for its
-- grace period. network NULL: every network the fleet serves (the whole fleet's resume).
WITH pending AS (
    SELECT o.id, o.created_at AS due_at
    FROM orders o
    WHERE o.fulfillment_status = 'pending'
      AND o.network IN (SELECT network FROM fleet_networks)
      AND (%(network)s::text IS NULL OR o.network = %(network)s::text)
      AND NOT EXISTS (SELECT 1 FROM fleet_pauses p WHERE p.scope IN ('*', o.network))
    ORDER BY o.network, o.created_at, o.id
    LIMIT %(limit)s
), due AS (
    SELECT o.id, coalesce(o.next_attempt_at, o.updated_at) AS due_at
    FROM orders o
    WHERE o.fulfillment_status IN ('failed', 'processing')
      AND o.network IN (SELECT network FROM fleet_networks)
      AND (%(network)s::text IS NULL OR o.network = %(network)s::text)
      AND o.claim_token IS NULL
      AND o.dead_letter_reason IS NULL
      AND coalesce(o.next_attempt_at, '-infinity') <= now()
      AND NOT EXISTS (SELECT 1 FROM fleet_pauses p WHERE p.scope IN ('*', o.network))
    ORDER BY 2, o.id
    LIMIT %(limit)s
), chosen AS (
    SELECT id, due_at FROM (SELECT * FROM pending UNION ALL SELECT * FROM due) waiting
    ORDER BY due_at, id
    LIMIT %(limit)s
), stamped AS (
    UPDATE orders o
    SET last_enqueued_at = now()
    FROM chosen
    WHERE o.id = chosen.id
    RETURNING o.id, chosen.due_at
)
SELECT id, due_at FROM stamped ORDER BY due_at, id;

-- The networks the fleet serves (fleet_networks) ------------------------------------------

-- name: record_networks
-- A starting process (or migrate) adds the networks it serves; one already there is seen again.
INSERT INTO fleet_networks (network, enabled_by)
SELECT unnest(%(networks)s::text[]), %(by)s
ON CONFLICT (network) DO UPDATE SET seen_at = now();

-- name: served_networks
-- Every network the fleet serves, with who first enabled it and when a process last said so.
SELECT network, enabled_at, enabled_by, seen_at,
       extract(epoch FROM now() - seen_at)::float8 AS seen_age_s
FROM fleet_networks
ORDER BY network;

-- name: network_served
-- Whether some host serves this network (a worker whose host does not leaves the message to it).
SELECT 1 AS served FROM fleet_networks WHERE network = %(network)s;

-- name: disable_network
-- Stop serving a network fleet-wide: its new orders get no status; those it has stay as they are.
DELETE FROM fleet_networks WHERE network = %(network)s
RETURNING network, enabled_at, enabled_by, seen_at;

-- ---------------------------------------------------------------------------------------
-- The outboxes (customer_sms, platform_events): the notifier's claims and results. A row is
-- worked by whoever holds its claim (claim_token, until claim_expires_at): a duplicate
-- message, or a second notifier host, finds it claimed or not due and leaves it.

-- name: claim_sms
-- One SMS row to work on, with the order's package; none if it is claimed, done or not due.
UPDATE customer_sms s
SET claim_token = %(token)s,
    claim_expires_at = now() + make_interval(secs => %(ttl_s)s::float8),
    updated_at = now()
FROM orders o
WHERE s.id = %(id)s AND o.id = s.order_id
  AND s.status IN ('queued', 'sent')
  AND s.next_attempt_at <= now()
  AND (s.claim_token IS NULL OR s.claim_expires_at < now())
RETURNING s.id, s.order_id, s.generation, s.kind, s.client_reference, s.network,
          s.phone_number, s.refund_advised, s.status, s.content, s.provider_message_id,
          s.attempts, s.status_checks, s.in_flight, o.package_name, o.size_gb;

-- name: sms_sending
-- Before the POST: its text kept (every try sends the same) and the send marked in flight,
-- so that a worker killed during the call leaves a row the next try looks up first.
UPDATE customer_sms
SET content = coalesce(content, %(content)s), in_flight = true, attempts = attempts + 1,
    updated_at = now()
WHERE id = %(id)s AND claim_token = %(token)s
RETURNING content, attempts;

-- name: sms_sent
-- The provider took it (or a lookup found it): its report is polled from now on.
UPDATE customer_sms
SET status = 'sent', in_flight = false, provider_message_id = %(message_id)s,
    provider_status = %(provider_status)s, sent_at = coalesce(sent_at, now()),
    next_attempt_at = now() + make_interval(secs => %(delay_s)s::float8),
    last_error = NULL, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND claim_token = %(token)s;

-- name: sms_later
-- Try again after a delay; in_flight says whether the last send's outcome is unknown.
UPDATE customer_sms
SET next_attempt_at = now() + make_interval(secs => %(delay_s)s::float8),
    in_flight = %(in_flight)s, last_error = %(error)s,
    status_checks = status_checks + %(checked)s::int,
    provider_status = coalesce(%(provider_status)s, provider_status),
    claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND claim_token = %(token)s;

-- name: sms_final
-- Its last word: delivered | failed | undeliverable | skipped (with the reason).
UPDATE customer_sms
SET status = %(status)s, provider_status = coalesce(%(provider_status)s, provider_status),
    in_flight = false, last_error = %(error)s, skip_reason = %(skip_reason)s,
    content = coalesce(content, %(content)s), next_attempt_at = NULL,
    claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND claim_token = %(token)s;

-- name: due_sms
-- SMS rows overdue by more than the grace (their message was lost), for the reconciler.
SELECT id FROM customer_sms
WHERE status IN ('queued', 'sent')
  AND next_attempt_at <= now() - make_interval(secs => %(grace_s)s::float8)
  AND (claim_token IS NULL OR claim_expires_at < now())
ORDER BY next_attempt_at
LIMIT %(limit)s;

-- name: order_outbox_due
-- An order's outbox rows due now (just written by its outcome): the notifier's messages.
SELECT 'sms' AS box, id FROM customer_sms
WHERE order_id = %(order_id)s AND status = 'queued' AND next_attempt_at <= now()
UNION ALL
SELECT 'event', id FROM platform_events
WHERE order_id = %(order_id)s AND status = 'pending' AND next_attempt_at <= now();

-- name: claim_event
-- One event to POST, if it is due and no earlier event of its order is still undelivered
-- (events reach the platform in order per order).
UPDATE platform_events e
SET claim_token = %(token)s,
    claim_expires_at = now() + make_interval(secs => %(ttl_s)s::float8),
    updated_at = now()
WHERE e.id = %(id)s AND e.status = 'pending' AND e.next_attempt_at <= now()
  AND (e.claim_token IS NULL OR e.claim_expires_at < now())
  AND NOT EXISTS (SELECT 1 FROM platform_events p
                  WHERE p.order_id = e.order_id AND p.id < e.id AND p.status <> 'delivered')
RETURNING e.id, e.event_id, e.order_id, e.generation, e.type, e.body, e.attempts;

-- name: event_blocked_by
-- The earliest undelivered event of the same order before this one, if any.
SELECT p.id, p.status FROM platform_events e
JOIN platform_events p ON p.order_id = e.order_id AND p.id < e.id AND p.status <> 'delivered'
WHERE e.id = %(id)s
ORDER BY p.id LIMIT 1;

-- name: event_result
-- One POST's result: delivered (a 2xx), pending again after a delay, or failed (given up).
UPDATE platform_events
SET status = %(status)s, attempts = attempts + %(counted)s::int, last_error = %(error)s,
    last_http_status = %(http_status)s,
    delivered_at = CASE WHEN %(status)s = 'delivered' THEN now() END,
    next_attempt_at = CASE WHEN %(status)s = 'pending'
                           THEN now() + make_interval(secs => %(delay_s)s::float8) END,
    claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND claim_token = %(token)s
RETURNING attempts;

-- name: event_next_of_order
-- The event after this one of its order, waiting for it to be delivered.
SELECT n.id FROM platform_events e
JOIN platform_events n ON n.order_id = e.order_id AND n.id > e.id AND n.status = 'pending'
WHERE e.id = %(id)s
ORDER BY n.id LIMIT 1;

-- name: due_events
-- Events overdue by more than the grace (their message was lost), first of each order only.
SELECT e.id FROM platform_events e
WHERE e.status = 'pending'
  AND e.next_attempt_at <= now() - make_interval(secs => %(grace_s)s::float8)
  AND (e.claim_token IS NULL OR e.claim_expires_at < now())
  AND NOT EXISTS (SELECT 1 FROM platform_events p
                  WHERE p.order_id = e.order_id AND p.id < e.id AND p.status <> 'delivered')
ORDER BY e.next_attempt_at
LIMIT %(limit)s;

-- name: order_sms
-- An order's SMS, for its detail page.
SELECT id, generation, kind, client_reference, status, content, provider_message_id,
       provider_status, attempts, status_checks, in_flight, last_error, skip_reason, sent_at,
       next_attempt_at, created_at, updated_at
FROM customer_sms WHERE order_id = %(order_id)s ORDER BY generation, id;

-- name: order_events
-- An order's outcome events, for its detail page.
SELECT id, event_id, generation, type, body, status, attempts, last_error, last_http_status,
       delivered_at, next_attempt_at, created_at
FROM platform_events WHERE order_id = %(order_id)s ORDER BY id;

-- name: failed_sms
-- SMS an admin may retry (given up, or failed at the provider).
SELECT id, order_id, generation, kind, status, provider_status, attempts, last_error,
       updated_at
FROM customer_sms WHERE status = 'failed' ORDER BY updated_at DESC LIMIT %(limit)s;

-- name: failed_events
-- Events given up on, for an admin to resend.
SELECT id, event_id, order_id, generation, type, status, attempts, last_error,
       last_http_status, updated_at
FROM platform_events WHERE status = 'failed' ORDER BY updated_at DESC LIMIT %(limit)s;

-- name: retry_sms
-- An admin's retry of a failed SMS: queued again now. One the provider took and failed gets
-- a new ClientReference (":r1", ":r2": a new SMS to the provider); one given up before the
-- provider took it keeps its own (an unknown last send is looked up first).
UPDATE customer_sms
SET status = 'queued', attempts = 0, status_checks = 0, next_attempt_at = now(),
    client_reference = CASE WHEN provider_message_id IS NULL THEN client_reference
        ELSE format('%%s:%%s:%%s:r%%s', order_id, generation, kind,
                    coalesce(substring(client_reference from ':r([0-9]+)$')::int, 0) + 1) END,
    provider_message_id = NULL, provider_status = NULL, sent_at = NULL,
    last_error = NULL, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND status = 'failed'
RETURNING id, order_id, client_reference;

-- name: resend_event
-- An admin's resend of an event given up on: pending again now, the same body.
UPDATE platform_events
SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,
    claim_token = NULL, claim_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND status = 'failed'
RETURNING id, order_id;

-- name: outbox_counts
-- SMS and events by status, for the metrics and the dashboard.
SELECT 'sms' AS box, kind, status, count(*) AS n FROM customer_sms GROUP BY kind, status
UNION ALL
SELECT 'event', type, status, count(*) FROM platform_events GROUP BY type, status;

-- ---- the admin's outbox actions (fulfillment/services/admin.py) -------------------------

-- name: sms_state
-- One SMS's order and status: why an admin's retry changed nothing (no such SMS, not failed).
SELECT id, order_id, kind, status FROM customer_sms WHERE id = %(id)s;

-- name: event_state
-- One event's order, event_id and status: the audit of a resend, or why it changed nothing.
SELECT id, event_id, order_id, type, status FROM platform_events WHERE id = %(id)s;
