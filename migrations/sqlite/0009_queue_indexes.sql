-- The queue engine reads each queue along an index and stops at its limit: pending items by
-- due time, held items by the end of their lease (src/store/queue.rs).
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (status, lease_until);
