-- Version 3: pending orders per network in the order they came, for the resume after a pause
-- (it re-enqueues them oldest first). orders may be large and is the platform's: built
-- CONCURRENTLY, so this step runs outside a transaction; an invalid index left by a failed
-- build is dropped and built again by the next run.
-- migrate:up concurrently
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_waiting_idx
    ON orders (network, created_at, id) WHERE fulfillment_status = 'pending';

-- migrate:down concurrently
DROP INDEX CONCURRENTLY IF EXISTS orders_waiting_idx;
