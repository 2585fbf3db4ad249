-- Inbound routing that never guesses across tenants. An SMS reply goes to the case that last
-- sent an SMS to that number: outbound SMS keep a blind index of their recipient. Mail or SMS
-- that could belong to several cases is kept unmatched with those cases as candidates.
ALTER TABLE messages ADD COLUMN recipient_index TEXT;
CREATE INDEX messages_recipient ON messages (recipient_index, created_at);
ALTER TABLE inbound_raw ADD COLUMN candidates TEXT;
