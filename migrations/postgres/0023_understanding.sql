-- What a received reply means (domain/understanding.rs): its intent in the clear, for the
-- inbox and the holds; the whole reading (confidence, the debtor's words as evidence, a
-- promised amount and date) sealed under the case's key like the body.
ALTER TABLE messages ADD COLUMN intent TEXT;
ALTER TABLE messages ADD COLUMN understanding_sealed BYTEA;
