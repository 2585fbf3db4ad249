-- IMAP polling's progress per mailbox: the highest UID stored, valid while the mailbox's
-- UIDVALIDITY is the one recorded. `mailbox` is a digest of server, user and mailbox name.
CREATE TABLE imap_progress (
    mailbox       TEXT PRIMARY KEY,
    uid_validity  BIGINT NOT NULL,
    last_uid      BIGINT NOT NULL
);
