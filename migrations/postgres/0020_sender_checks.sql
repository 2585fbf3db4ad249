-- What checking a received mail found: its sender authentication (SPF, DKIM, DMARC, ARC)
-- and its spam filter's verdict, as JSON, on the raw original and on the message it became.
ALTER TABLE inbound_raw ADD COLUMN authentication TEXT;
ALTER TABLE inbound_raw ADD COLUMN spam TEXT;
ALTER TABLE messages ADD COLUMN authentication TEXT;
ALTER TABLE messages ADD COLUMN spam TEXT;

-- The unmatched inbox counts and pages what is open without reading the sealed originals:
-- an index of the open items holding every column its filters name (it replaces the index
-- of all unmatched rows, which made counting read every original). An erasure finds a
-- person's unmatched mail by its sender.
DROP INDEX inbound_raw_unmatched;
CREATE INDEX inbound_raw_open ON inbound_raw (id, source, sender_index, received_at)
    WHERE matched = 0 AND dismissed_at IS NULL;
CREATE INDEX inbound_raw_sender ON inbound_raw (sender_index) WHERE matched = 0 AND sender_index IS NOT NULL;
