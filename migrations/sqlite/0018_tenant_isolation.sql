-- Tenant isolation of shared state.
--
-- Case numbers are unique per creditor, not across creditors: the table is rebuilt without
-- its single-column UNIQUE (SQLite cannot drop one). `Store::migrate` runs the migrations of
-- SQLite with foreign key enforcement off, as SQLite's own procedure for this asks.
CREATE TABLE cases_rebuilt (
    id                  TEXT PRIMARY KEY,
    case_number         TEXT NOT NULL,
    creditor_id         TEXT NOT NULL REFERENCES parties (id),
    partner_id          TEXT REFERENCES parties (id),
    status              TEXT NOT NULL,
    debtor_sealed       BLOB NOT NULL,
    debtor_email_index  TEXT,
    debtor_phone_index  TEXT,
    debtor_language     TEXT,
    debtor_timezone     TEXT,
    amount_minor        BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    invoice_number      TEXT,
    due_date            TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    ended_at            BIGINT,
    restricted_at       BIGINT,
    erased_at           BIGINT,
    UNIQUE (creditor_id, case_number)
);
INSERT INTO cases_rebuilt (id, case_number, creditor_id, partner_id, status, debtor_sealed,
    debtor_email_index, debtor_phone_index, debtor_language, debtor_timezone, amount_minor,
    currency, invoice_number, due_date, created_at, updated_at, ended_at, restricted_at, erased_at)
SELECT id, case_number, creditor_id, partner_id, status, debtor_sealed,
    debtor_email_index, debtor_phone_index, debtor_language, debtor_timezone, amount_minor,
    currency, invoice_number, due_date, created_at, updated_at, ended_at, restricted_at, erased_at
FROM cases;
DROP TABLE cases;
ALTER TABLE cases_rebuilt RENAME TO cases;
CREATE INDEX cases_creditor ON cases (creditor_id, id);
CREATE INDEX cases_partner ON cases (partner_id, id);
CREATE INDEX cases_debtor_email ON cases (debtor_email_index);
CREATE INDEX cases_debtor_phone ON cases (debtor_phone_index);
CREATE INDEX cases_restricted ON cases (restricted_at) WHERE restricted_at IS NOT NULL AND erased_at IS NULL;
-- Inbound matching looks a number up across all creditors.
CREATE INDEX cases_number ON cases (case_number);

-- A suppression applies to every tenant (`scope` empty: a hard bounce, a provider's drop) or
-- to one creditor (`scope` its party id: the person answered that creditor's message with an
-- unsubscribe, a STOP or a complaint). Earlier entries apply to every tenant, so that each
-- opt-out made before stays honoured.
CREATE TABLE suppressions_rebuilt (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    value_index     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    case_id         TEXT,
    created_at      BIGINT NOT NULL,
    address_sealed  BLOB,
    message_id      TEXT,
    scope           TEXT NOT NULL DEFAULT '',
    UNIQUE (channel, value_index, scope)
);
INSERT INTO suppressions_rebuilt (id, channel, value_index, reason, case_id, created_at,
    address_sealed, message_id, scope)
SELECT id, channel, value_index, reason,
    case_id, created_at, address_sealed, message_id, ''
FROM suppressions;
DROP TABLE suppressions;
ALTER TABLE suppressions_rebuilt RENAME TO suppressions;
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
