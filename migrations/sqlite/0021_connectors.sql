-- Connectors to the systems agencies already use (a Microsoft 365 or Gmail mailbox, ...).
-- `settings` holds what may be shown (JSON); the secret settings are sealed together in
-- `secrets_sealed`. `cursor` is where the connector's last sync stopped (a Graph deltaLink,
-- a Gmail historyId). The counters feed /metrics.
CREATE TABLE connectors (
    id                TEXT PRIMARY KEY,
    connector_type    TEXT NOT NULL,
    name              TEXT NOT NULL,
    creditor_id       TEXT REFERENCES parties (id),
    settings          TEXT NOT NULL,
    secrets_sealed    BLOB NOT NULL,
    status            TEXT NOT NULL,
    last_error        TEXT,
    last_sync_at      BIGINT,
    last_attempt_at   BIGINT,
    sync_requested_at BIGINT,
    sync_cursor       TEXT,
    syncs             BIGINT NOT NULL DEFAULT 0,
    items             BIGINT NOT NULL DEFAULT 0,
    failures          BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX connectors_creditor ON connectors (creditor_id);

-- What a connector has taken in, by the remote system's id: a resync from the start (an
-- expired delta or history) stores nothing twice.
CREATE TABLE connector_items (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    remote_id    TEXT NOT NULL,
    taken_at     BIGINT NOT NULL,
    PRIMARY KEY (connector_id, remote_id)
);

-- The connector whose mailbox carried a message, in or out: {"connectorId", "type"}.
ALTER TABLE messages ADD COLUMN carried_by TEXT;
