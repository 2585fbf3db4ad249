-- Data subjects: when a case ended (paid or closed, the start of its retention), when its
-- debtor asked for erasure and processing was restricted, and when the debtor's personal
-- data was erased (its subject key destroyed).
ALTER TABLE cases ADD COLUMN ended_at BIGINT;
ALTER TABLE cases ADD COLUMN restricted_at BIGINT;
ALTER TABLE cases ADD COLUMN erased_at BIGINT;
UPDATE cases SET ended_at = updated_at WHERE status IN ('paid', 'closed');
CREATE INDEX cases_restricted ON cases (restricted_at) WHERE restricted_at IS NOT NULL AND erased_at IS NULL;
