-- A webhook delivery carries its event's time (`event_at`). On PostgreSQL the outbox events
-- and their deliveries are partitioned by that month and a month is dropped once it is
-- over (migrations/postgres/0029, which partitions the audit log by month too); SQLite keeps
-- one table each and forgets row by row.
ALTER TABLE webhook_deliveries ADD COLUMN event_at INTEGER NOT NULL DEFAULT 0;
UPDATE webhook_deliveries SET event_at = COALESCE((SELECT e.created_at FROM events e WHERE e.id = webhook_deliveries.event_id), 0);
