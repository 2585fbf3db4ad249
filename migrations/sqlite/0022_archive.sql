-- The mail archive. `sent_copies`: the exact bytes of a sent email (its first copy), kept
-- sealed in the document store under its case's subject key while an archive connector
-- serves the case. `archive_items`: what each archive connector journaled, so a retried or
-- recovered job journals nothing twice.
CREATE TABLE sent_copies (
    message_id  TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    file_id     TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    kept_at     BIGINT NOT NULL
);

CREATE TABLE archive_items (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    archived_at  BIGINT NOT NULL,
    PRIMARY KEY (connector_id, message_id)
);
