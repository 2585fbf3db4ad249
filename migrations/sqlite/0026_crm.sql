-- CRMs (connectors/crm.rs). `crm_activities` is a queue of the one queue engine's shape:
-- one row per CRM connector and message of a case it serves (`kind` `message`: an activity
-- logged once; its id is the connector's and the message's, so it is written once whatever
-- writes it), and one per change of such a case (`kind` `record`: its record updated).
-- `remote_id` is the activity's id in the CRM (`EmailMessage/02s…`), `target` the record or
-- contact it was logged on, `link` where a person opens it. `unlinked`: no record holds the
-- case number and no contact the debtor's email; a sync asked for tries those again.
CREATE TABLE crm_activities (
    id              TEXT PRIMARY KEY,
    connector_id    TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    case_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    remote_id       TEXT,
    target          TEXT,
    link            TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX crm_activities_due ON crm_activities (status, next_attempt_at);
CREATE INDEX crm_activities_lease ON crm_activities (status, lease_until);
CREATE INDEX crm_activities_subject ON crm_activities (subject_id);
CREATE INDEX crm_activities_case ON crm_activities (case_id, connector_id);
CREATE INDEX crm_activities_connector ON crm_activities (connector_id, status);
