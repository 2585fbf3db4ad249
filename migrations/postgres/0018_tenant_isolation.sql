-- Tenant isolation of shared state.
--
-- Case numbers are unique per creditor, not across creditors.
ALTER TABLE cases DROP CONSTRAINT IF EXISTS cases_case_number_key;
ALTER TABLE cases ADD CONSTRAINT cases_creditor_case_number UNIQUE (creditor_id, case_number);
-- Inbound matching looks a number up across all creditors.
CREATE INDEX cases_number ON cases (case_number);

-- A suppression applies to every tenant (`scope` empty: a hard bounce, a provider's drop) or
-- to one creditor (`scope` its party id: the person answered that creditor's message with an
-- unsubscribe, a STOP or a complaint). Earlier entries apply to every tenant, so that each
-- opt-out made before stays honoured.
ALTER TABLE suppressions ADD COLUMN scope TEXT NOT NULL DEFAULT '';
ALTER TABLE suppressions DROP CONSTRAINT IF EXISTS suppressions_channel_value_index_key;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_channel_value_index_scope_key
    UNIQUE (channel, value_index, scope);
CREATE INDEX suppressions_case ON suppressions (case_id);

-- Inbound mail matched only by a case number in its subject, from an address the case does
-- not know, waits for a case worker's review (0); everything else is trusted (1).
ALTER TABLE messages ADD COLUMN sender_verified INTEGER NOT NULL DEFAULT 1;
CREATE INDEX messages_unverified ON messages (case_id, id) WHERE sender_verified = 0;

-- A message to several recipients goes out as one copy per recipient, each with its own
-- links and bounce address; the copies already handed over are kept, so that a retry after
-- a transient failure sends only the others.
CREATE TABLE message_copies (
    message_id  TEXT NOT NULL,
    recipient   INTEGER NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (message_id, recipient)
);

-- Work the program does once after a migration, where SQL alone cannot (it needs the keys):
-- a row here until a starting process has done it. Idempotency keys were kept as clients
-- sent them; from now on they are keyed hashes, and the earlier ones are hashed at start.
CREATE TABLE pending_work (
    name  TEXT PRIMARY KEY NOT NULL
);
INSERT INTO pending_work (name) VALUES ('hash-idempotency-keys');
