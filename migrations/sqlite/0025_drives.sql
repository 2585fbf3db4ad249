-- Document systems (connectors/drives.rs). `remote_folders`: the folders a drive connector
-- made or found for a case (its case folder, and sub-folders named by a document type).
-- `remote_files`: each document's file there, one row per connector and document: the name
-- chosen for it before the upload (sealed under the case's key, as the documents' names
-- are), the remote item once it exists, an upload session to resume after a crash, and
-- whether parley mirrored it there (`mirrored`) or took it in from there (`taken`).
-- `remote_erasures`: case folders an erasure could not delete yet, tried again each round.
CREATE TABLE remote_folders (
    connector_id  TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    remote_id     TEXT NOT NULL,
    case_id       TEXT NOT NULL,
    document_type TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (connector_id, remote_id)
);
CREATE INDEX remote_folders_case ON remote_folders (case_id, connector_id);

CREATE TABLE remote_files (
    connector_id   TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    document_id    TEXT NOT NULL,
    case_id        TEXT NOT NULL,
    origin         TEXT NOT NULL,
    name_key       TEXT,
    name_sealed    BLOB,
    remote_id      TEXT,
    link_sealed    BLOB,
    session_sealed BLOB,
    done_at        BIGINT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (connector_id, document_id)
);
CREATE INDEX remote_files_remote ON remote_files (connector_id, remote_id);
CREATE INDEX remote_files_case ON remote_files (case_id);
-- One name a case folder: `name_key` is a keyed hash of the (lowercased) name, so two
-- documents of a case mirrored at once cannot both take it.
CREATE UNIQUE INDEX remote_files_name ON remote_files (connector_id, case_id, name_key);

CREATE TABLE remote_erasures (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    remote_id    TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (connector_id, remote_id)
);
