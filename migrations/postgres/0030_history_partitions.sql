-- The history that only grows, partitioned by month: a message's events and a job's
-- attempts by their message's or job's id (a UUIDv7 after its prefix, so a month is a range
-- of ids, and a message's events sit in one partition with it), the audit log by its time.
-- Each month's partition and its indexes stay the size of a month; a month that is over is
-- dropped whole, not deleted row by row. The partitions are made ahead by the partition
-- keeper (`store::partitions`); a row no month holds yet lands in the DEFAULT partition, and
-- the keeper moves it into its month when it makes that month. This migration makes the
-- months the existing rows fall in (within ten years of now) and the three ahead, with the
-- keeper's names and bounds, then copies the rows once, each into its month.
--
-- PostgreSQL takes a unique index on a partitioned table only with the partition key in it:
-- the primary keys lead with it (and serve the reads by message, by job), and a provider's
-- event id is unique per message.
-- The keys compare bytewise (COLLATE "C"), so the ranges mean the same in any locale.
-- These tables carry no foreign key here: attaching a month would lock the messages or jobs
-- table to check it. A row of history is written only beside its message or job, in the
-- same transaction, and deleted only with it (an unmatched reply's events, then the reply).

ALTER TABLE message_events RENAME TO message_events_unpartitioned;
ALTER INDEX message_events_message RENAME TO message_events_unpartitioned_message;
ALTER INDEX message_events_provider RENAME TO message_events_unpartitioned_provider;
ALTER TABLE message_events_unpartitioned RENAME CONSTRAINT message_events_pkey TO message_events_unpartitioned_pkey;
CREATE TABLE message_events (
    id                 BIGINT NOT NULL DEFAULT nextval('message_events_id_seq'),
    message_id         TEXT COLLATE "C" NOT NULL,
    event              TEXT NOT NULL,
    at                 BIGINT NOT NULL,
    provider_event_id  TEXT,
    detail             TEXT,
    PRIMARY KEY (message_id, id)
) PARTITION BY RANGE (message_id);
ALTER SEQUENCE message_events_id_seq OWNED BY message_events.id;
CREATE TABLE message_events_default PARTITION OF message_events DEFAULT;
CREATE UNIQUE INDEX message_events_provider ON message_events (provider_event_id, message_id)
    WHERE provider_event_id IS NOT NULL;

ALTER TABLE job_attempts RENAME TO job_attempts_unpartitioned;
ALTER INDEX job_attempts_job RENAME TO job_attempts_unpartitioned_job;
ALTER TABLE job_attempts_unpartitioned RENAME CONSTRAINT job_attempts_pkey TO job_attempts_unpartitioned_pkey;
CREATE TABLE job_attempts (
    id           BIGINT NOT NULL DEFAULT nextval('job_attempts_id_seq'),
    job_id       TEXT COLLATE "C" NOT NULL,
    attempt      INTEGER NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT,
    error        TEXT,
    PRIMARY KEY (job_id, id)
) PARTITION BY RANGE (job_id);
ALTER SEQUENCE job_attempts_id_seq OWNED BY job_attempts.id;
CREATE TABLE job_attempts_default PARTITION OF job_attempts DEFAULT;

ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_case RENAME TO audit_log_unpartitioned_case;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_unpartitioned_pkey;
CREATE TABLE audit_log (
    id              BIGINT NOT NULL DEFAULT nextval('audit_log_id_seq'),
    case_id         TEXT,
    actor_party_id  TEXT,
    actor_name      TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE INDEX audit_log_case ON audit_log (case_id, id);

DO $$
DECLARE
    spec record;
    first_month timestamp;
    last_month timestamp;
    this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    m timestamp;
    lo text;
    hi text;
    low text;
    high text;
BEGIN
    FOR spec IN SELECT * FROM (VALUES ('message_events', 'message_id', 'msg'),
                                      ('job_attempts', 'job_id', 'job'),
                                      ('audit_log', 'at', NULL)) AS v (t, c, prefix)
    LOOP
        -- The months of the rows to copy, by the key's time (UTC).
        IF spec.prefix IS NULL THEN
            EXECUTE format('SELECT min(at)::text, max(at)::text FROM %I_unpartitioned '
                           'WHERE at >= %s AND at < %s', spec.t,
                           (extract(epoch FROM this_month - interval '120 months') * 1000000)::bigint,
                           (extract(epoch FROM this_month + interval '120 months') * 1000000)::bigint)
                INTO low, high;
            first_month := date_trunc('month', to_timestamp(low::bigint / 1000000.0) AT TIME ZONE 'UTC');
            last_month := date_trunc('month', to_timestamp(high::bigint / 1000000.0) AT TIME ZONE 'UTC');
        ELSE
            EXECUTE format('SELECT min(%I), max(%I) FROM %I_unpartitioned WHERE %I ~ %L',
                           spec.c, spec.c, spec.t, spec.c, '^' || spec.prefix || '_[0-9a-f]{12}')
                INTO low, high;
            first_month := date_trunc('month', to_timestamp(
                ('x' || lpad(substr(low, length(spec.prefix) + 2, 12), 16, '0'))::bit(64)::bigint / 1000.0)
                AT TIME ZONE 'UTC');
            last_month := date_trunc('month', to_timestamp(
                ('x' || lpad(substr(high, length(spec.prefix) + 2, 12), 16, '0'))::bit(64)::bigint / 1000.0)
                AT TIME ZONE 'UTC');
        END IF;
        first_month := greatest(least(coalesce(first_month, this_month), this_month),
                                this_month - interval '120 months');
        last_month := least(greatest(coalesce(last_month, this_month), this_month + interval '3 months'),
                            this_month + interval '120 months');
        m := first_month;
        WHILE m <= last_month LOOP
            IF spec.prefix IS NULL THEN
                lo := ((extract(epoch FROM m) * 1000000)::bigint)::text;
                hi := ((extract(epoch FROM m + interval '1 month') * 1000000)::bigint)::text;
            ELSE
                lo := quote_literal(spec.prefix || '_' || lpad(to_hex((extract(epoch FROM m) * 1000)::bigint), 12, '0'));
                hi := quote_literal(spec.prefix || '_' || lpad(to_hex((extract(epoch FROM m + interval '1 month') * 1000)::bigint), 12, '0'));
            END IF;
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                           spec.t || '_' || to_char(m, 'YYYY_MM'), spec.t, lo, hi);
            m := m + interval '1 month';
        END LOOP;
    END LOOP;
END
$$;

INSERT INTO message_events (id, message_id, event, at, provider_event_id, detail)
    SELECT id, message_id, event, at, provider_event_id, detail FROM message_events_unpartitioned;
DROP TABLE message_events_unpartitioned;
INSERT INTO job_attempts (id, job_id, attempt, started_at, finished_at, outcome, error)
    SELECT id, job_id, attempt, started_at, finished_at, outcome, error FROM job_attempts_unpartitioned;
DROP TABLE job_attempts_unpartitioned;
INSERT INTO audit_log (id, case_id, actor_party_id, actor_name, action, target_type, target_id, at)
    SELECT id, case_id, actor_party_id, actor_name, action, target_type, target_id, at FROM audit_log_unpartitioned;
DROP TABLE audit_log_unpartitioned;
