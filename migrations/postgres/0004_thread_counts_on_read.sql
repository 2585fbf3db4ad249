-- Threads are counted from their messages when read: no counter row that every new
-- message of a busy thread would have to lock. One thread per case and subject.
ALTER TABLE threads DROP COLUMN message_count;
ALTER TABLE threads DROP COLUMN last_message_at;
CREATE UNIQUE INDEX threads_case_subject ON threads (case_id, subject_index);
