-- Keys that outlive a master key rotation, sealed under the master key: the key of blind
-- indexes, so suppressions, opt-outs, frequency counts and inbound matching find rows indexed
-- before a rotation.
CREATE TABLE key_material (
    purpose     TEXT PRIMARY KEY NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);
