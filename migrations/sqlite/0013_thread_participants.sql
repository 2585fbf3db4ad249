-- Everyone who wrote or was written to in a thread, kept as messages join it, so that a
-- thread list needs not open every message of a case. Threads from before keep their
-- participants in their messages only (participants_kept = 0).
CREATE TABLE thread_participants (
    id                  TEXT PRIMARY KEY,
    thread_id           TEXT NOT NULL REFERENCES threads (id),
    participant_index   TEXT NOT NULL,
    participant_sealed  BLOB NOT NULL,
    first_at            BIGINT NOT NULL,
    UNIQUE (thread_id, participant_index)
);
ALTER TABLE threads ADD COLUMN participants_kept INTEGER NOT NULL DEFAULT 0;

-- The sender of a received attachment, sealed (uploaded_by then says "inbound email").
ALTER TABLE documents ADD COLUMN uploaded_by_sealed BLOB;
