-- The chaos run's queries, read-only. Each block starts with `-- name: NAME` and one line of why.
-- Queries named like an invariant return the offending rows (none when it holds).

-- name: orders_final
-- Every order with what the checks need: its network (so its vendor), final status, dead-letter
-- mark, vendor transaction.
SELECT id::text AS id, network, fulfillment_status AS status,
       dead_lettered_at IS NOT NULL AS dead_lettered,
       dead_letter_reason, last_error_code, fulfillment_attempts AS attempts,
       fulfillment_status_checks AS status_checks,
       vendor_transaction_id, claim_token IS NOT NULL AS claimed
FROM orders
ORDER BY created_at;

-- name: not_terminal
-- Orders neither delivered nor dead-lettered with their admin notification (failed, or still
-- processing when the outcome is unknown: the vendor may hold it, a human decides).
SELECT o.id::text AS id, o.fulfillment_status AS status, o.dead_lettered_at IS NOT NULL AS flagged,
       o.dead_letter_reason, o.last_error_code, o.next_attempt_at
FROM orders o
WHERE NOT (
        o.fulfillment_status = 'success'
     OR (o.fulfillment_status IN ('failed', 'processing') AND o.dead_lettered_at IS NOT NULL
         AND o.claim_token IS NULL
         AND EXISTS (SELECT 1 FROM admin_notifications n
                     WHERE n.kind = 'dead_letter' AND n.order_id = o.id))
)
ORDER BY o.created_at;

-- name: attempt_gaps
-- Purchase attempt numbers of an order must be exactly {1..max}, and cover every counted attempt.
SELECT o.id::text AS id, o.fulfillment_status AS status, o.fulfillment_attempts AS attempts,
       coalesce(array_agg(DISTINCT l.attempt_number ORDER BY l.attempt_number)
                FILTER (WHERE l.attempt_number IS NOT NULL), '{}') AS numbers
FROM orders o
LEFT JOIN fulfillment_logs l ON l.order_id = o.id AND l.action = 'purchase'
GROUP BY o.id
HAVING coalesce(min(l.attempt_number), 1) <> 1
    OR count(DISTINCT l.attempt_number) <> coalesce(max(l.attempt_number), 0)
    OR o.fulfillment_attempts > coalesce(max(l.attempt_number), 0)
ORDER BY o.id;

-- name: success_without_success_row
-- A delivered order must say so in its audit trail: one log row with status success.
SELECT o.id::text AS id
FROM orders o
WHERE o.fulfillment_status = 'success'
  AND NOT EXISTS (SELECT 1 FROM fulfillment_logs l
                  WHERE l.order_id = o.id AND l.status = 'success')
ORDER BY o.id;

-- name: purchase_rows_per_order
-- How many purchase rows each order has (compared with the vendor's count of requests).
SELECT order_id::text AS id, count(*) AS n
FROM fulfillment_logs
WHERE action = 'purchase'
GROUP BY order_id;

-- name: left_in_flight
-- Nothing may stay pending, processing (but in a human's queue) or claimed once converged.
SELECT id::text AS id, fulfillment_status AS status, claim_token IS NOT NULL AS claimed,
       claim_expires_at, next_attempt_at
FROM orders
WHERE fulfillment_status = 'pending'
   OR (fulfillment_status = 'processing' AND dead_lettered_at IS NULL)
   OR claim_token IS NOT NULL
ORDER BY id;

-- name: duplicate_dedupe_keys
-- One notification per dedupe key (the unique index says so; checked, not assumed).
SELECT dedupe_key, count(*) AS n
FROM admin_notifications
GROUP BY dedupe_key
HAVING count(*) > 1;

-- name: duplicate_dead_letter_notifications
-- At most one dead_letter notification per order and generation.
SELECT order_id::text AS id, count(*) AS n,
       array_agg(dedupe_key ORDER BY id) AS keys
FROM admin_notifications
WHERE kind = 'dead_letter'
GROUP BY order_id, split_part(dedupe_key, ':', 3)
HAVING count(*) > 1;

-- name: dead_letter_notified_but_not_dead
-- A dead_letter notification for an order that is not dead-lettered told an admin a lie.
SELECT n.order_id::text AS id, o.fulfillment_status AS status, n.created_at
FROM admin_notifications n
LEFT JOIN orders o ON o.id = n.order_id
WHERE n.kind = 'dead_letter'
  AND (o.id IS NULL OR o.dead_lettered_at IS NULL
       OR o.fulfillment_status NOT IN ('failed', 'processing'));

-- name: notification_kinds
-- Notifications per kind (the table; malformed ones are compared with what was injected).
SELECT kind, count(*) AS n FROM admin_notifications GROUP BY kind ORDER BY kind;

-- name: unfinished
-- What convergence waits for: orders not yet final (in a human's queue is final here), and
-- claims still held.
SELECT count(*) FILTER (WHERE fulfillment_status IN ('pending', 'processing', 'failed')
                          AND dead_lettered_at IS NULL)
           AS unfinished,
       count(*) FILTER (WHERE claim_token IS NOT NULL) AS claimed,
       count(*) FILTER (WHERE fulfillment_status = 'success') AS success,
       count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead_lettered,
       count(*) FILTER (WHERE fulfillment_status = 'processing' AND dead_lettered_at IS NOT NULL)
           AS outcome_unknown,
       count(*) AS total
FROM orders;

-- name: dead_letter_reasons
-- Why orders were dead-lettered (the table).
SELECT split_part(split_part(coalesce(dead_letter_reason, 'unknown'), ';', 1), ': +', 1) AS reason,
       count(*) AS n
FROM orders
WHERE dead_lettered_at IS NOT NULL
GROUP BY 1
ORDER BY 2 DESC;

-- name: order_trail
-- One order and its audit trail, for the evidence printed under a failed invariant.
SELECT l.id, l.created_at, l.action, l.status, l.attempt_number, l.http_status, l.error_code,
       left(l.error_message, 120) AS error_message, l.vendor_transaction_id, l.worker
FROM fulfillment_logs l
WHERE l.order_id = %(order_id)s
ORDER BY l.id;

-- name: trap_ready
-- Armed orders whose second attempt failed: the moment to set the vendor's trap for the third.
SELECT id::text AS id
FROM orders
WHERE id = ANY(%(ids)s::uuid[])
  AND fulfillment_status = 'failed'
  AND fulfillment_attempts >= 2
  AND dead_letter_reason IS NULL;

-- name: orders_by_network
-- The table's orders per network: how many, delivered, dead-lettered.
SELECT coalesce(network, '?') AS network, count(*) AS total,
       count(*) FILTER (WHERE fulfillment_status = 'success') AS success,
       count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead_lettered
FROM orders
GROUP BY 1
ORDER BY 1;

-- name: deliveries_between
-- Deliveries recorded per network between two wall-clock times (unix seconds): AT-iShare's
-- orders must keep being delivered while the aggregator is down.
SELECT network, count(DISTINCT order_id) AS n
FROM fulfillment_logs
WHERE status = 'success'
  AND created_at >= to_timestamp(%(began)s) AND created_at < to_timestamp(%(ended)s)
GROUP BY network;

-- name: outbox_open
-- What convergence also waits for: SMS still to send or whose report is unread, events not yet
-- acknowledged (a failed row is final: the notifier gave up, an admin resends it).
SELECT (SELECT count(*) FROM customer_sms WHERE status IN ('queued', 'sent')) AS sms,
       (SELECT count(*) FROM platform_events WHERE status = 'pending') AS events;

-- name: outbox_per_order
-- Each order's outcome as the outboxes must mirror it: its final state, and per kind and type
-- how many SMS rows and events its current outcome generation has (any generation: all_*).
SELECT o.id::text AS id, o.fulfillment_status AS status,
       o.dead_lettered_at IS NOT NULL AS dead_lettered, o.fulfillment_generation AS generation,
       count(DISTINCT s.id) FILTER (WHERE s.kind = 'delivered'
                                      AND s.generation = o.fulfillment_generation) AS sms_delivered,
       count(DISTINCT s.id) FILTER (WHERE s.kind = 'failed'
                                      AND s.generation = o.fulfillment_generation) AS sms_failed,
       count(DISTINCT s.id) AS all_sms,
       count(DISTINCT e.id) FILTER (WHERE e.type = 'order.fulfilled'
                                      AND e.generation = o.fulfillment_generation) AS ev_fulfilled,
       count(DISTINCT e.id) FILTER (WHERE e.type = 'order.failed'
                                      AND e.generation = o.fulfillment_generation) AS ev_failed,
       count(DISTINCT e.id) AS all_events
FROM orders o
LEFT JOIN customer_sms s ON s.order_id = o.id
LEFT JOIN platform_events e ON e.order_id = o.id
GROUP BY o.id
ORDER BY o.id;

-- name: outbox_strangers
-- SMS rows and events of no order (the outboxes are written with an outcome, never alone).
SELECT 'sms' AS outbox, s.order_id::text AS id FROM customer_sms s
WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.order_id)
UNION ALL
SELECT 'event', e.order_id::text FROM platform_events e
WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = e.order_id);

-- name: sms_rows
-- Every SMS row: its reference at the provider, status, and whether a send's answer is unread.
SELECT order_id::text AS id, client_reference, kind, status, in_flight,
       provider_message_id IS NOT NULL AS has_message_id, attempts
FROM customer_sms
ORDER BY id;

-- name: event_rows
-- Every platform event row: its event_id (the platform's key), order, type and status.
SELECT event_id::text AS event_id, order_id::text AS id, type, status, attempts, last_error
FROM platform_events
ORDER BY id;
