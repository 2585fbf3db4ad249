-- Tokens may expire (`parley token create --expires-in 90d`); an expired token is refused.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
