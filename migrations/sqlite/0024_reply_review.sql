-- What a reply asks of a person (store/inbox.rs). A reply read as a dispute, a wrong person
-- or a request to stop holds the case's collection messages until a case worker confirms
-- or corrects it: `review` is `pending`, then `confirmed` or `dismissed`; the case names the
-- reply that holds it. A person's correction of the intent is kept beside the machine's
-- reading (sealed, unchanged). `inbox` marks a reply that awaits an answer until someone
-- answers on the case or marks it done.
ALTER TABLE messages ADD COLUMN review TEXT;
ALTER TABLE messages ADD COLUMN reviewed_by TEXT;
ALTER TABLE messages ADD COLUMN reviewed_at BIGINT;
ALTER TABLE messages ADD COLUMN corrected_by TEXT;
ALTER TABLE messages ADD COLUMN corrected_at BIGINT;
ALTER TABLE messages ADD COLUMN inbox INTEGER;
ALTER TABLE messages ADD COLUMN done_by TEXT;
ALTER TABLE messages ADD COLUMN done_at BIGINT;
CREATE INDEX messages_inbox ON messages (id) WHERE inbox = 1;
CREATE INDEX messages_review ON messages (case_id) WHERE review = 'pending';
ALTER TABLE cases ADD COLUMN hold_message_id TEXT;
ALTER TABLE cases ADD COLUMN hold_intent TEXT;
ALTER TABLE cases ADD COLUMN hold_since BIGINT;
