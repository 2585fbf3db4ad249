-- The unmatched inbox as a work list: its sender as a blind index (to filter by), and
-- dismissal (kept for PARLEY_UNMATCHED_RETENTION, then removed by the retention sweeper).
ALTER TABLE inbound_raw ADD COLUMN sender_index TEXT;
ALTER TABLE inbound_raw ADD COLUMN dismissed_at BIGINT;
ALTER TABLE inbound_raw ADD COLUMN dismissed_by TEXT;
CREATE INDEX inbound_raw_dismissed ON inbound_raw (dismissed_at) WHERE dismissed_at IS NOT NULL;
