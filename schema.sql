-- The schema of a fresh install, at the code's latest version. `fulfillment migrate` applies
-- it to an empty database and records every step of db/migrations/ as applied; a database
-- that already holds the fleet (or the platform's orders) is moved step by step instead. A
-- test holds the two ways to the same catalog. `orders` belongs to the purchase platform: it
-- is created when absent, and an existing one only gains the fulfillment columns.

CREATE TABLE IF NOT EXISTS orders (
    id uuid PRIMARY KEY,
    phone_number text,
    network text,
    size_gb numeric,
    package_name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE orders ADD COLUMN IF NOT EXISTS phone_number text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS network text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS size_gb numeric;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS package_name text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE orders ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- Rows that existed before the fleet keep a NULL status (not managed: never delivered again).
-- A row committed from now on without a status gets 'pending' when its network is served
-- (the orders_fulfillment_status_default trigger, below with fleet_networks), none otherwise.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_status text;
ALTER TABLE orders ALTER COLUMN fulfillment_status DROP DEFAULT;
-- Purchase attempts used, and the one under way (set before the vendor call, cleared after).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_in_flight_attempt integer;
-- Attempts an admin granted on top of MAX_ATTEMPTS (a retry of a failed order).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_extra_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_status_checks integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_deferrals integer NOT NULL DEFAULT 0;
-- Bumped by each admin retry, so a later dead letter notifies again.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfillment_generation integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS last_enqueued_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS claim_token uuid;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS claim_expires_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS last_error_code text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS last_error_message text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS dead_letter_reason text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS dead_letter_requested_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fulfilled_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS vendor_transaction_id text;
-- Dismissed: resolved by hand (refunded, delivered another way); leaves the dead-letter list.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS dead_letter_dismissed_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS dead_letter_dismissed_by text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_fulfillment_status_check') THEN
        ALTER TABLE orders ADD CONSTRAINT orders_fulfillment_status_check
            CHECK (fulfillment_status IN ('pending', 'processing', 'success', 'failed'));
    END IF;
END $$;

-- The stats cards (order_stats) and unfinished_count as index-only scans (measured at 1M
-- orders: 154 -> 83 ms, see docs/BENCHMARKS.md); it leads with fulfillment_status, so it
-- replaces the plain status index.
CREATE INDEX IF NOT EXISTS orders_status_counts_idx
    ON orders (fulfillment_status, dead_lettered_at, dead_letter_dismissed_at);
DROP INDEX IF EXISTS orders_fulfillment_status_idx;
CREATE INDEX IF NOT EXISTS orders_network_status_idx ON orders (network, fulfillment_status);
-- The reconciler's sweep: only orders not yet final, by when they are due.
CREATE INDEX IF NOT EXISTS orders_fulfillment_due_idx ON orders (next_attempt_at)
    WHERE fulfillment_status IN ('pending', 'processing', 'failed');

CREATE TABLE IF NOT EXISTS fulfillment_logs (
    id bigserial PRIMARY KEY,
    order_id uuid NOT NULL,
    network text NOT NULL,
    phone_number text,
    -- purchase: a POST that may deliver; status_check: a GET of the reference.
    action text NOT NULL DEFAULT 'purchase' CHECK (action IN ('purchase', 'status_check')),
    -- success | pending | failed | not_found
    status text NOT NULL,
    attempt_number integer NOT NULL,
    max_attempts integer NOT NULL,
    http_status integer,
    api_response jsonb,
    error_code text,
    error_message text,
    latency_ms integer,
    retry_after timestamptz,
    fulfilled_at timestamptz,
    vendor_transaction_id text,
    worker text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS fulfillment_logs_status_idx ON fulfillment_logs (status);
CREATE INDEX IF NOT EXISTS fulfillment_logs_network_idx ON fulfillment_logs (network);
CREATE INDEX IF NOT EXISTS fulfillment_logs_created_at_idx ON fulfillment_logs (created_at);
CREATE INDEX IF NOT EXISTS fulfillment_logs_retry_after_idx ON fulfillment_logs (retry_after);
CREATE INDEX IF NOT EXISTS fulfillment_logs_order_idx ON fulfillment_logs (order_id, id);

-- The audit trail is append-only: an UPDATE or DELETE of a log row is refused.
CREATE OR REPLACE FUNCTION fulfillment_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fulfillment_logs is append-only (% refused)', TG_OP;
END $$;

DROP TRIGGER IF EXISTS fulfillment_logs_append_only ON fulfillment_logs;
CREATE TRIGGER fulfillment_logs_append_only BEFORE UPDATE OR DELETE ON fulfillment_logs
    FOR EACH ROW EXECUTE FUNCTION fulfillment_logs_append_only();

CREATE TABLE IF NOT EXISTS admin_notifications (
    id bigserial PRIMARY KEY,
    -- dead_letter | malformed_message | unknown_order | vendor_unauthorized | ...
    kind text NOT NULL,
    order_id uuid,
    message text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- One notification per key: a second dead letter of the same order is not notified twice.
    dedupe_key text NOT NULL UNIQUE,
    webhook_state text NOT NULL DEFAULT 'pending'
        CHECK (webhook_state IN ('pending', 'delivered', 'failed', 'not_configured')),
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS admin_notifications_created_at_idx ON admin_notifications (created_at);
CREATE INDEX IF NOT EXISTS admin_notifications_order_idx ON admin_notifications (order_id);
CREATE INDEX IF NOT EXISTS admin_notifications_undelivered_idx ON admin_notifications (webhook_state)
    WHERE webhook_state IN ('pending', 'failed');

-- Vendor callbacks seen, by a digest of their signed bytes: a replay (same body, timestamp and
-- signature) is answered without any work. Kept a day (the reconciler prunes), far past the
-- 300 s in which a signature is accepted.
CREATE TABLE IF NOT EXISTS vendor_callbacks (
    digest text PRIMARY KEY,
    order_id uuid,
    status text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS vendor_callbacks_received_idx ON vendor_callbacks (received_at);

-- Admin surface ---------------------------------------------------------------------------


-- A Ghana number as digits with country code, whatever way it was typed: the search key.
-- '024 123 4567', '+233241234567', '00233241234567' -> '233241234567'.
CREATE OR REPLACE FUNCTION ghana_msisdn(phone text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN d ~ '^233[0-9]{9}$' THEN d
        WHEN d ~ '^00233[0-9]{9}$' THEN substr(d, 3)
        WHEN d ~ '^0[0-9]{9}$' THEN '233' || substr(d, 2)
        WHEN d ~ '^[0-9]{9}$' THEN '233' || d
        ELSE d
    END
    FROM (SELECT regexp_replace(coalesce(phone, ''), '[^0-9]', '', 'g') AS d) AS digits
$$;

CREATE INDEX IF NOT EXISTS orders_msisdn_idx ON orders (ghana_msisdn(phone_number));
-- Keyset pagination, newest first, overall and per status; dead letters apart.
CREATE INDEX IF NOT EXISTS orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_status_created_idx
    ON orders (fulfillment_status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_dead_lettered_idx ON orders (created_at DESC, id DESC)
    WHERE dead_lettered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_fulfilled_at_idx ON orders (fulfilled_at)
    WHERE fulfillment_status = 'success';

-- Every admin action: who, what, when, why.
CREATE TABLE IF NOT EXISTS admin_audit (
    id bigserial PRIMARY KEY,
    actor text NOT NULL,
    action text NOT NULL,
    order_id uuid,
    reason text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS admin_audit_order_idx ON admin_audit (order_id, id);
CREATE INDEX IF NOT EXISTS admin_audit_created_at_idx ON admin_audit (created_at);

-- Outcome unknown (processing, held for a person with its dead_letter_reason): the filter's
-- keyset pages, the stats' count and the scrape-time gauge, all on a handful of rows.
CREATE INDEX IF NOT EXISTS orders_outcome_unknown_idx
    ON orders (created_at DESC, id DESC) INCLUDE (dead_lettered_at, dead_letter_dismissed_at)
    WHERE fulfillment_status = 'processing' AND dead_letter_reason IS NOT NULL;

-- Version 2: the runtime pause, one row per paused scope ('*' or a network code).
CREATE TABLE IF NOT EXISTS fleet_pauses (
    scope text PRIMARY KEY CHECK (scope <> ''),
    reason text NOT NULL CHECK (btrim(reason) <> ''),
    paused_by text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Version 3: pending orders per network, oldest first (the resume after a pause).
CREATE INDEX IF NOT EXISTS orders_waiting_idx
    ON orders (network, created_at, id) WHERE fulfillment_status = 'pending';

-- Version 4: the networks the fleet serves, fleet-wide (a process adds those of its
-- NETWORKS_ENABLED when it starts; `fulfillment networks disable` removes one), and the
-- network-aware status default: a new row without a status is 'pending' only when its
-- network is served; one inserted with 'pending' explicitly is ours once it is.
CREATE TABLE IF NOT EXISTS fleet_networks (
    network text PRIMARY KEY CHECK (network IN ('at-ishare', 'mtn', 'telecel', 'at-bigtime')),
    enabled_at timestamptz NOT NULL DEFAULT now(),
    enabled_by text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO fleet_networks (network, enabled_by) VALUES ('at-ishare', 'migration 0004')
ON CONFLICT (network) DO NOTHING;

-- SECURITY DEFINER: the role that inserts orders (the purchase platform's) need not be
-- granted anything on fleet_networks; the search path is fixed for it.
CREATE OR REPLACE FUNCTION orders_fulfillment_status_default() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.fulfillment_status IS NULL
       AND EXISTS (SELECT 1 FROM fleet_networks WHERE network = NEW.network) THEN
        NEW.fulfillment_status := 'pending';
    ELSIF NEW.fulfillment_status = 'pending'
       AND NOT EXISTS (SELECT 1 FROM fleet_networks WHERE network = NEW.network)
       AND (SELECT atthasdef FROM pg_attribute
            WHERE attrelid = 'public.orders'::regclass AND attname = 'fulfillment_status') THEN
        -- a previous release's schema.sql set the constant default again (a rolling
        -- upgrade): this 'pending' may be the default's, so it is not taken as a request
        NEW.fulfillment_status := NULL;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS orders_fulfillment_status_default ON orders;
CREATE TRIGGER orders_fulfillment_status_default BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_fulfillment_status_default();

-- What the customer and the platform are told of each final outcome (outboxes). A row is
-- written by the same statement that records the outcome (fulfillment_record_outcome, called
-- from finish_call, flag_dead_letter and the admin's decisions), so an outcome is never
-- recorded without them nor they without it; the notifier's actors send them, each on its
-- own queue, and the reconciler re-enqueues the overdue.
--
-- customer_sms: one per order, outcome generation and kind; its client_reference (the SMS
-- provider's ClientReference) is derived from that key. status: queued (to send), sent (the
-- provider took it; its report is polled), delivered | failed | undeliverable (the
-- provider's last word, or failed: given up), skipped (not sent, with skip_reason).
-- in_flight: a send whose answer was not read (timeout, 5xx, garbage): the next try looks
-- the reference up before it sends again (the provider does not deduplicate).
CREATE TABLE IF NOT EXISTS customer_sms (
    id bigserial PRIMARY KEY,
    order_id uuid NOT NULL,
    generation integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('delivered', 'failed')),
    client_reference text NOT NULL UNIQUE CHECK (length(client_reference) <= 64),
    network text,
    phone_number text,
    refund_advised boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'undeliverable', 'skipped')),
    content text,
    provider_message_id text,
    provider_status text,
    attempts integer NOT NULL DEFAULT 0,
    status_checks integer NOT NULL DEFAULT 0,
    in_flight boolean NOT NULL DEFAULT false,
    next_attempt_at timestamptz DEFAULT now(),
    claim_token uuid,
    claim_expires_at timestamptz,
    last_error text,
    skip_reason text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, generation, kind)
);
CREATE INDEX IF NOT EXISTS customer_sms_due_idx ON customer_sms (next_attempt_at)
    WHERE status IN ('queued', 'sent');
CREATE INDEX IF NOT EXISTS customer_sms_order_idx ON customer_sms (order_id);

-- platform_events: one per order, outcome generation and type. body is the exact JSON POSTed
-- on every try (each try signs it with its own timestamp); id orders an order's events, sent
-- one after the other. status: pending (to send, or waiting behind an earlier event of its
-- order), delivered (a 2xx), failed (given up after the notifier's attempts: an admin resends).
CREATE TABLE IF NOT EXISTS platform_events (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    order_id uuid NOT NULL,
    generation integer NOT NULL,
    type text NOT NULL CHECK (type IN ('order.fulfilled', 'order.failed', 'order.resolved')),
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT now(),
    claim_token uuid,
    claim_expires_at timestamptz,
    last_error text,
    last_http_status integer,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, generation, type)
);
CREATE INDEX IF NOT EXISTS platform_events_due_idx ON platform_events (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS platform_events_order_idx ON platform_events (order_id, id);

-- One final outcome's rows: the platform's event and, for a delivery or a failure, the
-- customer's SMS. Called by the statement that records the outcome, with the order's values
-- as that statement leaves them (a function reading orders would see them as they were).
-- refund_advised as DESIGN.md says: only on order.failed, only when nothing was delivered.
CREATE OR REPLACE FUNCTION fulfillment_record_outcome(
    p_order uuid, p_generation integer, p_type text, p_network text, p_phone text,
    p_attempts integer, p_transaction text, p_reason text, p_refund_advised boolean
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid := gen_random_uuid();
    v_kind text := CASE p_type WHEN 'order.fulfilled' THEN 'delivered'
                               WHEN 'order.failed' THEN 'failed' END;
    v_refund boolean := p_type = 'order.failed' AND coalesce(p_refund_advised, false);
    v_rows integer := 0;
    v_n integer;
BEGIN
    INSERT INTO platform_events (event_id, order_id, generation, type, body)
    VALUES (v_event, p_order, p_generation, p_type, jsonb_strip_nulls(jsonb_build_object(
        'event_id', v_event, 'type', p_type, 'order_id', p_order, 'network', p_network,
        'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'attempts', p_attempts, 'transaction_id', p_transaction, 'reason', p_reason,
        'refund_advised', v_refund))::text)
    ON CONFLICT (order_id, generation, type) DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_rows := v_rows + v_n;
    IF v_kind IS NOT NULL THEN
        INSERT INTO customer_sms (order_id, generation, kind, client_reference, network,
                                  phone_number, refund_advised)
        VALUES (p_order, p_generation, v_kind, format('%s:%s:%s', p_order, p_generation, v_kind),
                p_network, p_phone, v_refund)
        ON CONFLICT (order_id, generation, kind) DO NOTHING;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows := v_rows + v_n;
    END IF;
    RETURN v_rows;
END $$;
