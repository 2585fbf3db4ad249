-- A queue's indexes hold its live work only: the pending items in claim order, the held
-- items by the end of their lease, the failed ones for the operators. An item that is over
-- leaves them, so a claim walks the work waiting, not five years of finished work, and
-- finishing an item writes no entry into them (fewer index writes per delivered message).
DROP INDEX jobs_ready;
DROP INDEX jobs_due;
DROP INDEX jobs_lease;
CREATE INDEX jobs_ready ON jobs (priority, run_at) WHERE status = 'pending';
CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'pending';
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_failed ON jobs (id) WHERE status = 'failed';

DROP INDEX webhook_deliveries_due;
DROP INDEX webhook_deliveries_lease;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (id) WHERE status = 'failed';

DROP INDEX crm_activities_due;
DROP INDEX crm_activities_lease;
CREATE INDEX crm_activities_due ON crm_activities (next_attempt_at) WHERE status = 'pending';
CREATE INDEX crm_activities_lease ON crm_activities (lease_until) WHERE status = 'logging';

-- The outbox: events not yet dispatched, in order; the dispatched ones by when, for the
-- retention that forgets them.
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (id) WHERE dispatched_at IS NULL;
CREATE INDEX events_dispatched ON events (dispatched_at) WHERE dispatched_at IS NOT NULL;
