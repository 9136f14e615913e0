-- Version 2: the runtime pause. One row per paused scope, '*' for the whole fleet or a
-- network code; a worker claims no order of a paused scope (claim_order reads this table),
-- so a pause reaches every host at once without a restart. Who paused and why is kept here
-- while the pause lasts, and in admin_audit for good. Older workers ignore the table.
-- migrate:up
CREATE TABLE IF NOT EXISTS fleet_pauses (
    scope text PRIMARY KEY CHECK (scope <> ''),
    reason text NOT NULL CHECK (btrim(reason) <> ''),
    paused_by text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
-- Loses the pauses in force (the fleet resumes: stop it with FULFILLMENT_ENABLED=false first
-- if it must stay paused); their history stays in admin_audit.
DROP TABLE IF EXISTS fleet_pauses;
