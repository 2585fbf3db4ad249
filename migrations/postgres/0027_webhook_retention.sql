-- Finished webhook deliveries and their outbox events are forgotten after
-- PARLEY_WEBHOOK_RETENTION: an event goes once no delivery names it, found by this index
-- (also what a foreign key check of an event's removal looks up).
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
