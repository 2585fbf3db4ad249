//! Delivery jobs: what a delivery worker reads of a message, and the bookkeeping of an
//! attempt (the job's next state, the attempt record, the message's status and the outbox
//! event) in one transaction. Claiming and leases are the queue engine's (`queue.rs`).

use super::messages::{Envelope, apply_event};
use super::queue::{DELIVERY_JOBS, Transition, transition};
use sqlx::AnyConnection;

use super::{Store, StoreError, StoreResult};
use crate::domain::message::{Category, Channel, MessageStatus};
use crate::domain::time::Micros;

/// What a delivery worker needs of a message.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub case_id: String,
    pub channel: Channel,
    pub category: Category,
    pub status: MessageStatus,
    pub envelope: Envelope,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub rfc_message_id: Option<String>,
    pub in_reply_to: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OutgoingRow {
    id: String,
    case_id: Option<String>,
    message_type: String,
    category: String,
    status: String,
    envelope_sealed: Vec<u8>,
    subject_sealed: Option<Vec<u8>>,
    body_sealed: Option<Vec<u8>>,
    html_sealed: Option<Vec<u8>>,
    rfc_message_id: Option<String>,
    in_reply_to: Option<String>,
}

/// One recorded attempt of a message's delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// One attempt of a delivery job, as it is recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub job_id: &'a str,
    pub message_id: &'a str,
    /// 1 on the first attempt.
    pub attempt: i32,
    pub started_at: Micros,
    pub finished_at: Micros,
}

/// What an attempt did to the message, besides moving its job.
#[derive(Debug, Clone)]
pub enum Delivered {
    /// Nothing was sent (a deferral, a transient failure).
    Nothing,
    /// Handed to the transport; the provider's id, where it gives one.
    Sent { provider_id: Option<String> },
    /// The message ends `failed`.
    Failed { reason: String },
}

impl Store {
    /// The message of a delivery job, decoded strictly: a stored word that does not parse is
    /// [`StoreError::Corrupt`], so the worker fails the message rather than guess.
    pub async fn outgoing(&self, message_id: &str) -> StoreResult<Option<Outgoing>> {
        let row = sqlx::query_as::<_, OutgoingRow>(
            "SELECT id, case_id, message_type, category, status, envelope_sealed, subject_sealed, body_sealed, html_sealed, \
             rfc_message_id, in_reply_to FROM messages WHERE id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let corrupt = |e: crate::domain::Invalid| StoreError::Corrupt(e.0);
        Ok(Some(Outgoing {
            envelope: self.open_envelope(&r.id, &r.envelope_sealed)?,
            subject: self.open_opt(&r.id, "subject", r.subject_sealed)?,
            body: self
                .open_opt(&r.id, "body", r.body_sealed)?
                .unwrap_or_default(),
            html: self.open_opt(&r.id, "html", r.html_sealed)?,
            case_id: r.case_id.unwrap_or_default(),
            channel: Channel::parse(&r.message_type).map_err(corrupt)?,
            category: Category::parse(&r.category).map_err(corrupt)?,
            status: MessageStatus::parse(&r.status).map_err(corrupt)?,
            rfc_message_id: r.rfc_message_id,
            in_reply_to: r.in_reply_to,
            id: r.id,
        }))
    }

    /// Records an attempt and its consequences in one transaction: the attempt (unless the
    /// job was only deferred), the job's next state, the message's status and event, and the
    /// outbox event.
    pub async fn finish_delivery(
        &self,
        a: AttemptRecord<'_>,
        next: Transition,
        delivered: Delivered,
    ) -> StoreResult<()> {
        let store = self.clone();
        let (job_id, message_id) = (a.job_id.to_string(), a.message_id.to_string());
        let (attempt, started_at, finished_at) = (a.attempt, a.started_at, a.finished_at);
        self.pipeline
            .submit(move |conn| {
                let (store, job_id, message_id) =
                    (store.clone(), job_id.clone(), message_id.clone());
                let (next, delivered) = (next.clone(), delivered.clone());
                Box::pin(async move {
                    let a = AttemptRecord {
                        job_id: &job_id,
                        message_id: &message_id,
                        attempt,
                        started_at,
                        finished_at,
                    };
                    store.finish_delivery_in(conn, a, next, delivered).await
                })
            })
            .await
    }

    /// Recording an attempt on `conn`, in the commit pipeline.
    async fn finish_delivery_in(
        &self,
        tx: &mut AnyConnection,
        a: AttemptRecord<'_>,
        next: Transition,
        delivered: Delivered,
    ) -> StoreResult<()> {
        let (job_id, message_id, now) = (a.job_id, a.message_id, a.finished_at);
        if !matches!(next, Transition::Defer(_)) {
            let (label, error) = match (&next, &delivered) {
                (Transition::Done, _) => ("sent", None),
                (Transition::Retry { error, .. }, _) => ("retry", Some(error.as_str())),
                (_, Delivered::Failed { reason }) => ("failed", Some(reason.as_str())),
                (Transition::Failed { error }, _) => ("failed", Some(error.as_str())),
                (Transition::Defer(_), _) => ("deferred", None),
            };
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job_id)
            .bind(a.attempt)
            .bind(a.started_at)
            .bind(now)
            .bind(label)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        transition(&mut *tx, DELIVERY_JOBS, job_id, &next, now).await?;
        match &delivered {
            Delivered::Nothing => {}
            Delivered::Sent { provider_id } => {
                sqlx::query(
                    "UPDATE messages SET sent_at = $2, provider_id = COALESCE($3, provider_id) WHERE id = $1",
                )
                .bind(message_id)
                .bind(now)
                .bind(provider_id.as_deref())
                .execute(&mut *tx)
                .await?;
                apply_event(
                    &mut *tx,
                    self.backend,
                    message_id,
                    MessageStatus::Sent,
                    now,
                    None,
                    None,
                )
                .await?;
            }
            Delivered::Failed { reason } => {
                apply_event(
                    &mut *tx,
                    self.backend,
                    message_id,
                    MessageStatus::Failed,
                    now,
                    None,
                    Some(reason),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Attempts recorded for the delivery of a message, oldest first.
    pub async fn delivery_attempts(&self, message_id: &str) -> StoreResult<Vec<DeliveryAttempt>> {
        Ok(sqlx::query_as::<_, DeliveryAttempt>(
            "SELECT a.attempt, a.outcome, a.error FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.ref_id = $1 ORDER BY a.id",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
