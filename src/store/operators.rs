//! What operators do to the queues: list delivery work by state, retry a failed message,
//! cancel a queued one, resend or recover webhook deliveries; and the queue's figures for
//! `/metrics`. Every change is audited.

use super::cases::{page_cursor, visible};
use super::{Page, Queue, StoreError, StoreResult, admin_flag, audit, decode_cursor};
use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::event::WebhookDeliveryStatus;
use crate::domain::message::{JobState, MessageStatus};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{DeliveryId, MessageId, WebhookId};

/// One message's delivery work.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job_id: String,
    pub message_id: MessageId,
    pub case_id: Option<CaseId>,
    /// The message's type (`email`, `sms`, `system`) and status.
    pub message_type: String,
    pub message_status: String,
    pub state: JobState,
    pub attempts: i32,
    pub run_at: Micros,
    pub last_error: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptView {
    pub job_id: String,
    pub attempt: i32,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Why an operator's change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNow {
    /// The message (or delivery) is not in a state the change applies to; its status.
    State(String),
}

/// The figures of the queues, read when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct QueueFigures {
    /// `(kind, status)` → jobs.
    pub jobs: Vec<(String, String, i64)>,
    /// The earliest due time of a pending job that is due.
    pub oldest_due: Option<Micros>,
    /// Webhook deliveries by status.
    pub webhook_deliveries: Vec<(String, i64)>,
}

/// The condition on `j` (with the time in `$1`) of a state.
fn state_condition(state: JobState) -> &'static str {
    match state {
        JobState::Queued => {
            "((j.status = 'pending' AND j.attempts = 0 AND j.run_at <= $1) OR j.status = 'running')"
        }
        JobState::Scheduled => "(j.status = 'pending' AND j.attempts = 0 AND j.run_at > $1)",
        JobState::Retrying => "(j.status = 'pending' AND j.attempts > 0)",
        JobState::Failed => "(j.status = 'failed')",
    }
}

impl Queue {
    /// Delivery work in `state`, newest first, with every attempt: `$2` a case, `$3` the
    /// cursor, `$4` the page size + 1.
    pub async fn list_jobs(
        &self,
        state: JobState,
        case_id: Option<&CaseId>,
        cursor: Option<&str>,
        limit: i64,
        now: Micros,
    ) -> StoreResult<Page<JobView>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: String,
            ref_id: String,
            attempts: i32,
            run_at: i64,
            last_error: Option<String>,
            case_id: Option<CaseId>,
            message_type: String,
            message_status: String,
        }
        let cursor = cursor.map(decode_cursor).transpose()?;
        let rows = sqlx::query_as::<_, Row>(&format!(
            "SELECT j.id, j.ref_id, j.attempts, j.run_at, j.last_error, m.case_id, m.message_type, \
             m.status AS message_status FROM jobs j JOIN messages m ON m.id = j.ref_id \
             WHERE j.kind = 'deliver_message' AND {} AND ($2 IS NULL OR m.case_id = $2) \
             AND ($3 IS NULL OR j.id < $3) ORDER BY j.id DESC LIMIT $4",
            state_condition(state)
        ))
        .bind(now)
        .bind(case_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<JobView> = rows
            .into_iter()
            .map(|r| JobView {
                job_id: r.id,
                message_id: MessageId::from_stored(r.ref_id),
                case_id: r.case_id,
                message_type: r.message_type,
                message_status: r.message_status,
                state,
                attempts: r.attempts,
                run_at: r.run_at,
                last_error: r.last_error,
                attempt_log: Vec::new(),
            })
            .collect();
        let next_cursor = page_cursor(&mut items, limit, |j| j.job_id.clone());
        if !items.is_empty() {
            let list: Vec<String> = (1..=items.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT job_id, attempt, outcome, error, started_at, finished_at FROM job_attempts \
                 WHERE job_id IN ({}) ORDER BY id",
                list.join(", ")
            );
            let mut q = sqlx::query_as::<_, AttemptView>(&sql);
            for j in &items {
                q = q.bind(j.job_id.as_str());
            }
            for a in q.fetch_all(&self.pool).await? {
                if let Some(j) = items.iter_mut().find(|j| j.job_id == a.job_id) {
                    j.attempt_log.push(a);
                }
            }
        }
        Ok(Page { items, next_cursor })
    }

    /// Queues a `failed` message of a case the actor can see again: the same message (its
    /// `Message-ID` kept), its job pending now with a fresh count of attempts, a `queued`
    /// event, audited. `Ok(None)`: no such message for the actor.
    pub async fn retry_message(
        &self,
        actor: &Actor,
        id: &str,
        now: Micros,
    ) -> StoreResult<Option<Result<(), NotNow>>> {
        let mut tx = self.write_tx().await?;
        let Some((case_id, status)) = self.message_for_change(&mut tx, actor, id).await? else {
            return Ok(None);
        };
        if status != MessageStatus::Failed.as_str() {
            return Ok(Some(Err(NotNow::State(status))));
        }
        let moved = sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = 0, run_at = $2, last_error = NULL, \
             lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE kind = 'deliver_message' AND ref_id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            sqlx::query(
                "INSERT INTO jobs (id, kind, ref_id, priority, status, run_at, attempts, created_at, updated_at) \
                 VALUES ($1, 'deliver_message', $2, 1, 'pending', $3, 0, $3, $3)",
            )
            .bind(crate::domain::prefixed_id("job"))
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        self.set_message_state(&mut tx, id, MessageStatus::Queued, now)
            .await?;
        audit(
            &mut tx,
            case_id.as_ref(),
            actor,
            AuditAction::MessageRetried,
            "message",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// Stops a `queued` message of a case the actor can see: it ends `cancelled` and its job
    /// is not attempted. One being sent at this moment cannot be stopped.
    pub async fn cancel_message(
        &self,
        actor: &Actor,
        id: &str,
        now: Micros,
    ) -> StoreResult<Option<Result<(), NotNow>>> {
        let mut tx = self.write_tx().await?;
        let Some((case_id, status)) = self.message_for_change(&mut tx, actor, id).await? else {
            return Ok(None);
        };
        if status != MessageStatus::Queued.as_str() {
            return Ok(Some(Err(NotNow::State(status))));
        }
        let stopped = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE kind = 'deliver_message' AND ref_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stopped == 0 {
            return Ok(Some(Err(NotNow::State("being sent".into()))));
        }
        self.set_message_state(&mut tx, id, MessageStatus::Cancelled, now)
            .await?;
        audit(
            &mut tx,
            case_id.as_ref(),
            actor,
            AuditAction::MessageCancelled,
            "message",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// An outbound message of a case the actor can see, locked for a change: its case and status.
    async fn message_for_change(
        &self,
        conn: &mut sqlx::AnyConnection,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<Option<(Option<CaseId>, String)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            case_id: Option<CaseId>,
            status: String,
        }
        let row = sqlx::query_as::<_, Row>(&format!(
            "SELECT m.case_id, m.status FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.id = $1 AND m.direction = 'outbound' AND {}{}",
            visible(2, 3),
            self.backend.for_update()
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|r| (r.case_id, r.status)))
    }

    async fn set_message_state(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        status: MessageStatus,
        now: Micros,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE messages SET status = $2, status_rank = $3, failure_reason = NULL, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(status.rank())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO message_events (message_id, event, at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Sends a delivery of one of the actor's webhooks again (a delivered or failed one): it
    /// is pending now with a fresh count of attempts. `Ok(None)`: not theirs.
    pub async fn resend_webhook_delivery(
        &self,
        actor: &Actor,
        webhook_id: &WebhookId,
        delivery_id: &DeliveryId,
        now: Micros,
    ) -> StoreResult<Option<Result<(), NotNow>>> {
        let mut tx = self.write_tx().await?;
        if !self.owns_webhook(&mut tx, actor, webhook_id).await? {
            return Ok(None);
        }
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2",
        )
        .bind(delivery_id)
        .bind(webhook_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(status) = status else {
            return Ok(None);
        };
        let finished = matches!(
            WebhookDeliveryStatus::parse(&status).map_err(|e| StoreError::Corrupt(e.0))?,
            WebhookDeliveryStatus::Delivered
                | WebhookDeliveryStatus::Failed
                | WebhookDeliveryStatus::Cancelled
        );
        if !finished {
            return Ok(Some(Err(NotNow::State(status))));
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(delivery_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            None,
            actor,
            AuditAction::WebhookDeliveryResent,
            "webhook_delivery",
            delivery_id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// Sends every failed delivery of one of the actor's webhooks created at `since` or
    /// later again; how many. `None`: not theirs.
    pub async fn recover_webhook(
        &self,
        actor: &Actor,
        webhook_id: &WebhookId,
        since: Micros,
        now: Micros,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.write_tx().await?;
        if !self.owns_webhook(&mut tx, actor, webhook_id).await? {
            return Ok(None);
        }
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, \
             lease_owner = NULL, lease_until = NULL \
             WHERE webhook_id = $1 AND status = 'failed' AND created_at >= $2",
        )
        .bind(webhook_id)
        .bind(since)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit(
            &mut tx,
            None,
            actor,
            AuditAction::WebhookRecovered,
            "webhook",
            webhook_id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(n))
    }

    async fn owns_webhook(
        &self,
        conn: &mut sqlx::AnyConnection,
        actor: &Actor,
        webhook_id: &WebhookId,
    ) -> StoreResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE id = $1 AND (owner_party_id = $2 OR $3 = 1) AND deleted_at IS NULL",
        )
        .bind(webhook_id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(found.is_some())
    }

    /// The queues as `/metrics` shows them.
    pub async fn queue_figures(&self, now: Micros) -> StoreResult<QueueFigures> {
        #[derive(sqlx::FromRow)]
        struct Count {
            kind: String,
            status: String,
            n: i64,
        }
        // One count a status, each read from that status's own partial index (an `IN` of
        // the three would read the whole table, finished work included).
        let by_status = |table: &str, group: &str, statuses: &[&str]| {
            statuses
                .iter()
                .map(|s| {
                    format!(
                        "SELECT {group}status, CAST(COUNT(*) AS BIGINT) AS n FROM {table} \
                         WHERE status = '{s}' GROUP BY {group}status"
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        };
        let jobs = sqlx::query_as::<_, Count>(&by_status(
            "jobs",
            "kind, ",
            &["pending", "running", "failed"],
        ))
        .fetch_all(&self.pool)
        .await?;
        let oldest_due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(run_at) FROM jobs WHERE status = 'pending' AND run_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        #[derive(sqlx::FromRow)]
        struct ByStatus {
            status: String,
            n: i64,
        }
        let hooks = sqlx::query_as::<_, ByStatus>(&by_status(
            "webhook_deliveries",
            "",
            &["pending", "sending", "failed"],
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(QueueFigures {
            jobs: jobs.into_iter().map(|c| (c.kind, c.status, c.n)).collect(),
            oldest_due,
            webhook_deliveries: hooks.into_iter().map(|h| (h.status, h.n)).collect(),
        })
    }

    /// Connections of the pool: open, and idle among them.
    pub fn pool_use(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }
}
