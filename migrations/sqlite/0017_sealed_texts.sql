-- Texts that may name a debtor, sealed under the case's subject key like the rest of the
-- debtor's data: a document's file name, a deadline's title, a payment's reference. Rows
-- from before keep the clear column until `parley migrate` (or an erasure) moves them.
ALTER TABLE documents ADD COLUMN file_name_sealed BLOB;
ALTER TABLE deadlines ADD COLUMN title_sealed BLOB;
ALTER TABLE payments ADD COLUMN reference_sealed BLOB;
