-- The whole schema of parley. Times are microseconds since the Unix epoch (UTC); columns
-- ending in _sealed hold values encrypted with the master key (see src/crypto.rs); columns
-- ending in _index hold keyed hashes for equality look-ups of sealed values.

CREATE TABLE parties (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('admin', 'creditor', 'partner')),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    party_id    TEXT NOT NULL REFERENCES parties (id),
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE case_number_counters (
    year        INTEGER PRIMARY KEY,
    last_value  BIGINT NOT NULL
);

CREATE TABLE cases (
    id                  TEXT PRIMARY KEY,
    case_number         TEXT NOT NULL UNIQUE,
    creditor_id         TEXT NOT NULL REFERENCES parties (id),
    partner_id          TEXT REFERENCES parties (id),
    status              TEXT NOT NULL,
    debtor_sealed       BYTEA NOT NULL,
    debtor_email_index  TEXT,
    debtor_phone_index  TEXT,
    debtor_language     TEXT,
    debtor_timezone     TEXT,
    amount_minor        BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    invoice_number      TEXT,
    due_date            TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX cases_creditor ON cases (creditor_id, id);
CREATE INDEX cases_partner ON cases (partner_id, id);
CREATE INDEX cases_debtor_email ON cases (debtor_email_index);
CREATE INDEX cases_debtor_phone ON cases (debtor_phone_index);

CREATE TABLE payments (
    id            TEXT PRIMARY KEY,
    case_id       TEXT NOT NULL REFERENCES cases (id),
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    paid_at       BIGINT NOT NULL,
    reference     TEXT,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX payments_case ON payments (case_id, id);

CREATE TABLE deadlines (
    id           TEXT PRIMARY KEY,
    case_id      TEXT NOT NULL REFERENCES cases (id),
    title        TEXT NOT NULL,
    due_at       BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    notified_at  BIGINT
);
CREATE INDEX deadlines_case ON deadlines (case_id, id);
CREATE INDEX deadlines_due ON deadlines (notified_at, due_at);

CREATE TABLE notes (
    id               TEXT PRIMARY KEY,
    case_id          TEXT NOT NULL REFERENCES cases (id),
    author_party_id  TEXT NOT NULL REFERENCES parties (id),
    created_by       TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('internal', 'private')),
    category         TEXT,
    note_sealed      BYTEA NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX notes_case ON notes (case_id, id);

CREATE TABLE note_tags (
    note_id  TEXT NOT NULL REFERENCES notes (id),
    tag      TEXT NOT NULL,
    PRIMARY KEY (note_id, tag)
);
CREATE INDEX note_tags_tag ON note_tags (tag, note_id);

CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    case_id         TEXT,
    actor_party_id  TEXT,
    actor_name      TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    at              BIGINT NOT NULL
);
CREATE INDEX audit_log_case ON audit_log (case_id, id);

-- The events outbox: written in the transaction of the change it reports, read by the
-- webhook dispatcher and the system-message rules.
CREATE TABLE events (
    id             BIGSERIAL PRIMARY KEY,
    event_type     TEXT NOT NULL,
    case_id        TEXT,
    payload        TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    dispatched_at  BIGINT
);
CREATE INDEX events_pending ON events (dispatched_at, id);

CREATE TABLE threads (
    id               TEXT PRIMARY KEY,
    case_id          TEXT NOT NULL REFERENCES cases (id),
    subject_sealed   BYTEA,
    subject_index    TEXT,
    status           TEXT NOT NULL DEFAULT 'active',
    message_count    BIGINT NOT NULL DEFAULT 0,
    last_message_at  BIGINT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX threads_case ON threads (case_id, subject_index);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    case_id          TEXT REFERENCES cases (id),
    thread_id        TEXT REFERENCES threads (id),
    direction        TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    message_type     TEXT NOT NULL CHECK (message_type IN ('email', 'sms', 'system')),
    status           TEXT NOT NULL,
    status_rank      INTEGER NOT NULL DEFAULT 0,
    priority         TEXT NOT NULL DEFAULT 'normal',
    category         TEXT NOT NULL DEFAULT 'general',
    template_id      TEXT,
    language         TEXT,
    party_id         TEXT REFERENCES parties (id),
    sent_by          TEXT,
    envelope_sealed  BYTEA NOT NULL,
    subject_sealed   BYTEA,
    body_sealed      BYTEA,
    html_sealed      BYTEA,
    rfc_message_id   TEXT UNIQUE,
    in_reply_to      TEXT,
    provider_id      TEXT,
    segments         INTEGER,
    has_attachments  INTEGER NOT NULL DEFAULT 0,
    failure_reason   TEXT,
    scheduled_for    BIGINT,
    sent_at          BIGINT,
    received_at      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX messages_case ON messages (case_id, id);
CREATE INDEX messages_thread ON messages (thread_id, id);
CREATE INDEX messages_provider ON messages (provider_id);

CREATE TABLE message_events (
    id                 BIGSERIAL PRIMARY KEY,
    message_id         TEXT NOT NULL REFERENCES messages (id),
    event              TEXT NOT NULL,
    at                 BIGINT NOT NULL,
    provider_event_id  TEXT,
    detail             TEXT
);
CREATE INDEX message_events_message ON message_events (message_id, id);
CREATE UNIQUE INDEX message_events_provider ON message_events (provider_event_id) WHERE provider_event_id IS NOT NULL;

CREATE TABLE documents (
    id                    TEXT PRIMARY KEY,
    case_id               TEXT NOT NULL REFERENCES cases (id),
    document_type         TEXT NOT NULL,
    description_sealed    BYTEA,
    file_name             TEXT NOT NULL,
    content_type          TEXT NOT NULL,
    size                  BIGINT NOT NULL,
    sha256                TEXT NOT NULL,
    storage_key           TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    version               INTEGER NOT NULL DEFAULT 1,
    replaces_document_id  TEXT REFERENCES documents (id),
    is_latest             INTEGER NOT NULL DEFAULT 1,
    party_id              TEXT REFERENCES parties (id),
    uploaded_by           TEXT NOT NULL,
    uploaded_at           BIGINT NOT NULL,
    deleted_at            BIGINT
);
CREATE INDEX documents_case ON documents (case_id, id);

CREATE TABLE message_attachments (
    message_id   TEXT NOT NULL REFERENCES messages (id),
    document_id  TEXT NOT NULL REFERENCES documents (id),
    PRIMARY KEY (message_id, document_id)
);

CREATE TABLE preferences (
    case_id             TEXT PRIMARY KEY REFERENCES cases (id),
    preferred_channel   TEXT,
    allow_email         INTEGER NOT NULL DEFAULT 1,
    allow_sms           INTEGER NOT NULL DEFAULT 1,
    do_not_contact      INTEGER NOT NULL DEFAULT 0,
    dnc_reason_sealed   BYTEA,
    dnc_effective_date  TEXT,
    dnc_exceptions      TEXT,
    preferred_language  TEXT,
    contact_start       TEXT,
    contact_end         TEXT,
    contact_timezone    TEXT,
    contact_sealed      BYTEA,
    updated_by          TEXT NOT NULL,
    updated_at          BIGINT NOT NULL
);

CREATE TABLE suppressions (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    value_index  TEXT NOT NULL,
    reason       TEXT NOT NULL,
    case_id      TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (channel, value_index)
);

CREATE TABLE templates (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    channel           TEXT NOT NULL,
    default_language  TEXT NOT NULL,
    owner_party_id    TEXT REFERENCES parties (id),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE template_contents (
    template_id  TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    language     TEXT NOT NULL,
    subject      TEXT,
    body         TEXT NOT NULL,
    html_body    TEXT,
    PRIMARY KEY (template_id, language)
);

CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    owner_party_id  TEXT NOT NULL REFERENCES parties (id),
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,
    secret_sealed   BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    deleted_at      BIGINT
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id),
    event_id         BIGINT NOT NULL REFERENCES events (id),
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

-- Durable background work: message delivery, webhook delivery, scheduled sends.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    ref_id       TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 1,
    status       TEXT NOT NULL,
    run_at       BIGINT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, priority, run_at);
CREATE INDEX jobs_ref ON jobs (ref_id);

CREATE TABLE job_attempts (
    id           BIGSERIAL PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    attempt      INTEGER NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT,
    error        TEXT
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, id);

CREATE TABLE idempotency_keys (
    party_id         TEXT NOT NULL REFERENCES parties (id),
    idem_key         TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_status  INTEGER NOT NULL,
    response_body    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (party_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Inbound mail as received, kept sealed; unmatched mail is listed from here.
CREATE TABLE inbound_raw (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    raw_sealed   BYTEA NOT NULL,
    message_id   TEXT REFERENCES messages (id),
    matched      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX inbound_raw_unmatched ON inbound_raw (matched, id);
