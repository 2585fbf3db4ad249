-- Suppressions keep the address itself, sealed (the list shows it to admins), and the message
-- that caused them, if any.
ALTER TABLE suppressions ADD COLUMN address_sealed BYTEA;
ALTER TABLE suppressions ADD COLUMN message_id TEXT;
