-- Version 4: every network the platform sells, each ours only once the fleet serves it.
-- fleet_networks is the fleet-wide set of networks served (a process adds those of its
-- NETWORKS_ENABLED when it starts, and `fulfillment migrate` does; `fulfillment networks
-- disable` removes one). The status default becomes network-aware: a row inserted without
-- a fulfillment_status gets 'pending' only when its network is served, and no status (not
-- ours, never counted, swept or adopted later) otherwise; a row inserted with 'pending' set
-- explicitly is a request to fulfil, ours once its network is served. Rows of other
-- networks that the old constant default marked 'pending' and that no fleet ever touched
-- were never requests (no fleet served them): they lose that status here, so that enabling
-- their network later does not adopt its history.
-- migrate:up
CREATE TABLE IF NOT EXISTS fleet_networks (
    network text PRIMARY KEY CHECK (network IN ('at-ishare', 'mtn', 'telecel', 'at-bigtime')),
    enabled_at timestamptz NOT NULL DEFAULT now(),
    enabled_by text NOT NULL,
    -- the last time a process serving it started (or migrate ran with it enabled)
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

-- The clean-up runs before the trigger and the default's drop lock orders (they hold their
-- locks to the commit): the platform keeps inserting while it works through the table, row
-- locks only. The rows it committed meanwhile, with the old default, are cleared after the
-- drop, under its lock, from the last hour only (orders_created_idx).
UPDATE orders SET fulfillment_status = NULL
WHERE fulfillment_status = 'pending'
  AND network IS DISTINCT FROM 'at-ishare'
  AND fulfillment_attempts = 0
  AND last_enqueued_at IS NULL
  AND claim_token IS NULL;

DROP TRIGGER IF EXISTS orders_fulfillment_status_default ON orders;
CREATE TRIGGER orders_fulfillment_status_default BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_fulfillment_status_default();
ALTER TABLE orders ALTER COLUMN fulfillment_status DROP DEFAULT;

UPDATE orders SET fulfillment_status = NULL
WHERE created_at >= now() - interval '1 hour'
  AND fulfillment_status = 'pending'
  AND network IS DISTINCT FROM 'at-ishare'
  AND fulfillment_attempts = 0
  AND last_enqueued_at IS NULL
  AND claim_token IS NULL;

-- migrate:down
-- Back to the constant default: every new row is 'pending' again, whatever its network (the
-- previous release fulfils only at-ishare). Rows cleared by the up section stay without a
-- status; the served networks are forgotten (the next start of this release records them).
ALTER TABLE orders ALTER COLUMN fulfillment_status SET DEFAULT 'pending';
DROP TRIGGER IF EXISTS orders_fulfillment_status_default ON orders;
DROP FUNCTION IF EXISTS orders_fulfillment_status_default();
DROP TABLE IF EXISTS fleet_networks;
