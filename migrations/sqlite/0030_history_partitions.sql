-- A provider's event id is unique per message (on PostgreSQL, where a message's events are
-- partitioned by month of the message, a unique index must hold the message). SQLite keeps
-- one table each: its history is not partitioned (README, "Supported sizes").
DROP INDEX message_events_provider;
CREATE UNIQUE INDEX message_events_provider ON message_events (provider_event_id, message_id)
    WHERE provider_event_id IS NOT NULL;
