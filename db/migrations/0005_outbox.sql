-- Version 5: the customer's SMS and the platform's outcome events (outboxes).
-- migrate:up
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

-- migrate:down
DROP FUNCTION IF EXISTS fulfillment_record_outcome(uuid, integer, text, text, text, integer, text, text, boolean);
DROP TABLE IF EXISTS platform_events;
DROP TABLE IF EXISTS customer_sms;
