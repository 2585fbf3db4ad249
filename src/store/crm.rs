//! The CRMs' activities (`connectors/crm.rs` does the talking): a queue of the one queue
//! engine's shape, `crm_activities`. A message of a case a CRM connector serves is queued
//! there in the transaction that records it sent or received; a change of such a case (its
//! status, a payment) in the transaction that makes it. The row's id is the connector's and
//! the message's, so a message is queued once per connector whatever queues it.

use sqlx::AnyConnection;

use crate::domain::connector::ConnectorType;
use crate::domain::time::Micros;
use crate::domain::{CaseId, ConnectorId, MessageId};

use super::queue::{CRM_ACTIVITIES, Transition, transition};
use super::{Backend, Crm, StoreResult};

/// What a queued activity is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    /// A message, logged once as an activity.
    Message,
    /// A case whose status or payments changed: its record updated.
    Record,
    /// An activity of an erased case, to delete from the CRM.
    Erase,
}

impl ActivityKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(Self::Message),
            "record" => Some(Self::Record),
            "erase" => Some(Self::Erase),
            _ => None,
        }
    }
}

/// A claimed activity.
#[derive(Debug, Clone)]
pub struct DueActivity {
    pub id: String,
    pub connector_id: ConnectorId,
    pub case_id: CaseId,
    pub kind: ActivityKind,
    /// The message (or the case) it is about.
    pub subject_id: String,
    /// The activity in the CRM, once logged (`Type/id`).
    pub remote_id: Option<String>,
    /// Which attempt this is (1 on the first).
    pub attempts: i32,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: String,
    connector_id: ConnectorId,
    case_id: CaseId,
    kind: String,
    subject_id: String,
    remote_id: Option<String>,
    attempts: i32,
}

/// Where an attempt leaves an activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Logged (or the record updated, or the copy deleted): the activity's id in the CRM,
    /// the record or contact it is on, and where a person opens it.
    Logged {
        remote_id: Option<String>,
        target: Option<String>,
        link: Option<String>,
    },
    /// No record holds the case number and no contact the debtor's email.
    Unlinked(String),
    /// Deleted from the CRM (an erasure): the row goes.
    Forgotten,
    /// Tried again later, or failed for good.
    Next(Transition),
}

/// Where a message was logged, as its view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrmActivity {
    #[schema(value_type = String)]
    pub connector_id: ConnectorId,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
    /// `pending`, `logging`, `logged`, `failed` or `unlinked`.
    pub status: String,
    /// Where a person opens the activity, when the CRM gives a link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The CRM connector types, as SQL's `IN (...)` list.
fn crm_types() -> String {
    ConnectorType::ALL
        .iter()
        .filter(|k| k.is_crm())
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Queues these messages (email and SMS of a case) for every CRM connector serving their
/// case, in the caller's transaction. With no CRM connector, one cheap statement.
pub(super) async fn enqueue_messages(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &[&str],
    at: Micros,
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO crm_activities (id, connector_id, case_id, kind, subject_id, status, attempts, \
         next_attempt_at, created_at, updated_at) \
         SELECT k.id || ':' || m.id, k.id, m.case_id, 'message', m.id, 'pending', 0, $1, $1, $1 \
         FROM messages m JOIN cases c ON c.id = m.case_id JOIN connectors k ON k.connector_type IN ({types}) \
         AND (k.creditor_id IS NULL OR k.creditor_id = c.creditor_id) \
         WHERE m.id IN ({}) AND m.message_type IN ('email', 'sms') \
         AND EXISTS (SELECT 1 FROM connectors g WHERE g.connector_type IN ({types})) \
         ON CONFLICT (id) DO NOTHING",
        super::batch_list(backend, 2, "TEXT"),
        types = crm_types(),
    );
    sqlx::query(&sql)
        .bind(at)
        .bind(super::list_param(backend, ids)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Queues an update of the case's record for every CRM connector serving it, in the
/// caller's transaction (its status changed, or a payment came).
pub(super) async fn enqueue_record(
    conn: &mut AnyConnection,
    case_id: &CaseId,
    at: Micros,
) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO crm_activities (id, connector_id, case_id, kind, subject_id, status, attempts, \
         next_attempt_at, created_at, updated_at) \
         SELECT k.id || ':' || c.id || ':' || $3, k.id, c.id, 'record', c.id, 'pending', 0, $1, $1, $1 \
         FROM cases c JOIN connectors k ON k.connector_type IN ({}) \
         AND (k.creditor_id IS NULL OR k.creditor_id = c.creditor_id) \
         WHERE c.id = $2 ON CONFLICT (id) DO NOTHING",
        crm_types()
    );
    sqlx::query(&sql)
        .bind(at)
        .bind(case_id)
        .bind(at.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Crm {
    /// The claimed activities `ids`, as they stand.
    pub async fn due_activities(&self, ids: &[&str]) -> StoreResult<Vec<DueActivity>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = super::positional(
            format!(
                "SELECT id, connector_id, case_id, kind, subject_id, remote_id, attempts \
                 FROM crm_activities WHERE id IN ({})",
                params.join(", ")
            ),
            self.backend,
        );
        let mut q = sqlx::query_as::<_, DueRow>(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(DueActivity {
                    kind: ActivityKind::parse(&r.kind)?,
                    id: r.id,
                    connector_id: r.connector_id,
                    case_id: r.case_id,
                    subject_id: r.subject_id,
                    remote_id: r.remote_id,
                    attempts: r.attempts,
                })
            })
            .collect())
    }

    /// Records where each attempt left its activity, and on each connector that it works
    /// (`logged` of them counted as its items), in one transaction.
    pub async fn finish(
        &self,
        outcomes: &[(String, Outcome)],
        worked: &[(ConnectorId, i64)],
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        let release =
            "lease_owner = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = $2";
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Logged {
                    remote_id,
                    target,
                    link,
                } => {
                    sqlx::query(&format!(
                        "UPDATE crm_activities SET status = 'logged', last_error = NULL, \
                         remote_id = COALESCE($3, remote_id), target = COALESCE($4, target), \
                         link = COALESCE($5, link), {release} WHERE id = $1"
                    ))
                    .bind(id)
                    .bind(now)
                    .bind(remote_id.as_deref())
                    .bind(target.as_deref())
                    .bind(link.as_deref())
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Unlinked(why) => {
                    sqlx::query(&format!(
                        "UPDATE crm_activities SET status = 'unlinked', last_error = $3, {release} WHERE id = $1"
                    ))
                    .bind(id)
                    .bind(now)
                    .bind(why.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Forgotten => {
                    sqlx::query("DELETE FROM crm_activities WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Outcome::Next(next) => transition(&mut tx, CRM_ACTIVITIES, id, next, now).await?,
            }
        }
        for (connector, items) in worked {
            sqlx::query(
                "UPDATE connectors SET status = 'active', last_error = NULL, last_sync_at = $2, \
                 last_attempt_at = $2, syncs = syncs + 1, items = items + $3 WHERE id = $1",
            )
            .bind(connector)
            .bind(now)
            .bind(*items)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Where each of these messages was logged (one statement), by message.
    pub async fn activities_of(
        &self,
        messages: &[&MessageId],
    ) -> StoreResult<Vec<(MessageId, CrmActivity)>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=messages.len()).map(|i| format!("${i}")).collect();
        let sql = super::positional(
            format!(
                "SELECT a.subject_id, a.connector_id, k.connector_type, a.status, a.link \
                 FROM crm_activities a JOIN connectors k ON k.id = a.connector_id \
                 WHERE a.kind = 'message' AND a.subject_id IN ({}) ORDER BY a.connector_id",
                params.join(", ")
            ),
            self.backend,
        );
        let mut q =
            sqlx::query_as::<_, (MessageId, ConnectorId, String, String, Option<String>)>(&sql);
        for m in messages {
            q = q.bind(m.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(message, connector_id, kind, status, url)| {
                let kind =
                    ConnectorType::parse(&kind).map_err(|e| super::StoreError::Corrupt(e.0))?;
                Ok((
                    message,
                    CrmActivity {
                        connector_id,
                        kind,
                        status,
                        url,
                    },
                ))
            })
            .collect()
    }

    /// How many of a connector's activities stand where (`pending`, `logged`, …).
    pub async fn activity_counts(
        &self,
        connector: &ConnectorId,
    ) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM crm_activities WHERE connector_id = $1 AND kind = 'message' \
             GROUP BY status ORDER BY status",
        )
        .bind(connector)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Hands the logged activities of these (erased) cases to the erasure: what was never
    /// logged is forgotten at once, and what was is held (leased to `owner` for a minute,
    /// so the worker leaves it while the erasure deletes it; a crash leaves it due) as an
    /// `erase` activity. Answers those: `(row, connector, remote id)`.
    pub async fn hand_to_erasure(
        &self,
        cases: &[CaseId],
        owner: &str,
    ) -> StoreResult<Vec<(String, ConnectorId, CaseId, String)>> {
        if cases.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut tx = self.write_tx().await?;
        let mut held = Vec::new();
        for case in cases {
            sqlx::query(
                "DELETE FROM crm_activities WHERE case_id = $1 AND (remote_id IS NULL OR kind = 'record')",
            )
            .bind(case)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE crm_activities SET kind = 'erase', status = 'logging', attempts = 1, \
                 lease_owner = $2, lease_until = $3, next_attempt_at = $4, updated_at = $4 \
                 WHERE case_id = $1 AND remote_id IS NOT NULL",
            )
            .bind(case)
            .bind(owner)
            .bind(now + 60_000_000)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let rows: Vec<(String, ConnectorId, String)> = sqlx::query_as(
                "SELECT id, connector_id, remote_id FROM crm_activities WHERE case_id = $1 AND kind = 'erase' \
                 ORDER BY connector_id, id",
            )
            .bind(case)
            .fetch_all(&mut *tx)
            .await?;
            held.extend(rows.into_iter().map(|(id, c, r)| (id, c, *case, r)));
        }
        tx.commit().await?;
        Ok(held)
    }
}
