-- What checking a received mail found: its sender authentication (SPF, DKIM, DMARC, ARC)
-- and its spam filter's verdict, as JSON, on the raw original and on the message it became.
ALTER TABLE inbound_raw ADD COLUMN authentication TEXT;
ALTER TABLE inbound_raw ADD COLUMN spam TEXT;
ALTER TABLE messages ADD COLUMN authentication TEXT;
ALTER TABLE messages ADD COLUMN spam TEXT;
