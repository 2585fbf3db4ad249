-- One queue engine for delivery jobs and webhook deliveries: both are leased by an owner
-- until a time, and the lease is renewed while an attempt is in progress.
ALTER TABLE webhook_deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN lease_until BIGINT;
UPDATE webhook_deliveries SET lease_until = next_attempt_at WHERE status = 'sending';

-- Idempotency records keep the result of the command (the queued message), not an HTTP
-- response; rows written before keep the response body, which names the message.
ALTER TABLE idempotency_keys DROP COLUMN response_status;
ALTER TABLE idempotency_keys RENAME COLUMN response_body TO result;
