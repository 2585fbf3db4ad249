-- The audit log is partitioned by the month of its entries, so each month's indexes stay the
-- size of a month and a month's table is vacuumed on its own (the log is kept: no month of it
-- is dropped).
-- The outbox events and their webhook deliveries are partitioned by month: an event by the
-- time it was written, a delivery by its event's time (`event_at`), so an event and every
-- delivery of it share a month, and the retention sweeper drops a month that is over and
-- older than PARLEY_WEBHOOK_RETENTION instead of deleting its rows one by one.
-- The months from the oldest event or entry to two months ahead are made here; the retention
-- sweeper keeps making the next ones. A row no month takes (a clock far off) lands in
-- `_default` (the outbox's, the sweeper empties row by row as before).
-- A partitioned table's keys carry its partition key: an event is (id, created_at), a
-- delivery (id, event_at), and a delivery names its event by both. The rows are copied, so
-- writes to the outbox and the audit log wait while this runs (README, upgrades).

ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_unpartitioned;
ALTER TABLE webhook_deliveries_unpartitioned DROP CONSTRAINT webhook_deliveries_event_id_fkey;
ALTER INDEX webhook_deliveries_pkey RENAME TO webhook_deliveries_unpartitioned_pkey;
ALTER INDEX webhook_deliveries_due RENAME TO webhook_deliveries_unpartitioned_due;
ALTER INDEX webhook_deliveries_event RENAME TO webhook_deliveries_unpartitioned_event;
ALTER INDEX webhook_deliveries_lease RENAME TO webhook_deliveries_unpartitioned_lease;
ALTER INDEX webhook_deliveries_webhook RENAME TO webhook_deliveries_unpartitioned_webhook;
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX events_pending RENAME TO events_unpartitioned_pending;
ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_pkey RENAME TO audit_log_unpartitioned_pkey;
ALTER INDEX audit_log_case RENAME TO audit_log_unpartitioned_case;

CREATE TABLE audit_log (
    id              BIGINT NOT NULL DEFAULT nextval('audit_log_id_seq'),
    case_id         TEXT,
    actor_party_id  TEXT,
    actor_name      TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_case ON audit_log (case_id, id);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

CREATE TABLE events (
    id             BIGINT NOT NULL DEFAULT nextval('events_id_seq'),
    event_type     TEXT NOT NULL,
    case_id        TEXT,
    payload        TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    dispatched_at  BIGINT,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE events_id_seq OWNED BY events.id;
CREATE INDEX events_pending ON events (dispatched_at, id);

CREATE TABLE webhook_deliveries (
    id               TEXT NOT NULL,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id),
    event_id         BIGINT NOT NULL,
    event_at         BIGINT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    lease_owner      TEXT,
    lease_until      BIGINT,
    PRIMARY KEY (id, event_at),
    UNIQUE (webhook_id, event_id, event_at),
    FOREIGN KEY (event_id, event_at) REFERENCES events (id, created_at)
) PARTITION BY RANGE (event_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (status, lease_until);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE webhook_deliveries_default PARTITION OF webhook_deliveries DEFAULT;

-- One partition a month (UTC), named by it: events_y2026m12 holds December 2026.
DO $$
DECLARE
    oldest BIGINT;
    month  TIMESTAMP;
    last   TIMESTAMP := date_trunc('month', now() AT TIME ZONE 'UTC') + INTERVAL '2 months';
    lo     BIGINT;
    hi     BIGINT;
    suffix TEXT;
BEGIN
    SELECT MIN(t) INTO oldest FROM (SELECT MIN(created_at) AS t FROM events_unpartitioned
                                    UNION ALL SELECT MIN(at) FROM audit_log_unpartitioned) o;
    month := date_trunc('month', COALESCE(to_timestamp(oldest / 1000000.0), now()) AT TIME ZONE 'UTC');
    WHILE month <= last LOOP
        lo := (extract(epoch FROM month) * 1000000)::BIGINT;
        hi := (extract(epoch FROM month + INTERVAL '1 month') * 1000000)::BIGINT;
        suffix := to_char(month, '"y"YYYY"m"MM');
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       'events_' || suffix, lo, hi);
        EXECUTE format('CREATE TABLE %I PARTITION OF webhook_deliveries FOR VALUES FROM (%s) TO (%s)',
                       'webhook_deliveries_' || suffix, lo, hi);
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%s) TO (%s)',
                       'audit_log_' || suffix, lo, hi);
        month := month + INTERVAL '1 month';
    END LOOP;
END $$;

INSERT INTO events (id, event_type, case_id, payload, created_at, dispatched_at)
    SELECT id, event_type, case_id, payload, created_at, dispatched_at FROM events_unpartitioned;
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_at, status, attempts,
        next_attempt_at, last_status, last_error, created_at, delivered_at, lease_owner, lease_until)
    SELECT d.id, d.webhook_id, d.event_id, e.created_at, d.status, d.attempts, d.next_attempt_at,
           d.last_status, d.last_error, d.created_at, d.delivered_at, d.lease_owner, d.lease_until
    FROM webhook_deliveries_unpartitioned d JOIN events_unpartitioned e ON e.id = d.event_id;
INSERT INTO audit_log (id, case_id, actor_party_id, actor_name, action, target_type, target_id, at)
    SELECT id, case_id, actor_party_id, actor_name, action, target_type, target_id, at FROM audit_log_unpartitioned;
DROP TABLE audit_log_unpartitioned;
DROP TABLE webhook_deliveries_unpartitioned;
DROP TABLE events_unpartitioned;
