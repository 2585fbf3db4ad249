//! The durable delivery queue. Workers claim due jobs with a lease: on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so two processes never claim one job; on SQLite the single
//! writer makes the claiming `UPDATE` atomic. A job whose lease ran out (its worker died) is
//! due again.

use sqlx::Row;

use super::messages::{Envelope, apply_event};
use super::{Backend, Store, StoreResult};
use crate::domain::message::MessageStatus;
use crate::domain::time::{Micros, now_micros};

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub kind: String,
    pub ref_id: String,
    /// 1 on the first attempt.
    pub attempt: i64,
}

/// What a delivery worker needs of a message.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub case_id: String,
    pub channel: String,
    pub category: String,
    pub status: String,
    pub envelope: Envelope,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub rfc_message_id: Option<String>,
    pub in_reply_to: Option<String>,
}

pub enum Outcome {
    /// Not attempted (the sender number's pace): due again at `at`, not counted as an attempt.
    Defer {
        at: Micros,
    },
    Sent {
        provider_id: Option<String>,
    },
    Retry {
        at: Micros,
        error: String,
    },
    Failed {
        error: String,
    },
}

impl Store {
    pub async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        lease_micros: i64,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let now = now_micros();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE (status = 'pending' AND run_at <= $3) OR (status = 'running' AND lease_until < $3) \
             ORDER BY priority, run_at LIMIT $4{lock}) \
             RETURNING id, kind, ref_id, attempts"
        ))
        .bind(owner)
        .bind(now + lease_micros)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    ref_id: r.try_get(2)?,
                    attempt: i64::from(r.try_get::<i32, _>(3)?),
                })
            })
            .collect()
    }

    /// The earliest time a pending job becomes due, to sleep until then.
    pub async fn next_job_due(&self) -> StoreResult<Option<Micros>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(CASE WHEN status = 'pending' THEN run_at ELSE lease_until END) FROM jobs WHERE status IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn outgoing(&self, message_id: &str) -> StoreResult<Option<Outgoing>> {
        let row = sqlx::query(
            "SELECT id, case_id, message_type, status, envelope_sealed, subject_sealed, body_sealed, html_sealed, rfc_message_id, \
             in_reply_to, category FROM messages WHERE id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let id: String = r.try_get(0)?;
        let envelope_sealed: Vec<u8> = r.try_get(4)?;
        let envelope = self.open_envelope(&id, &envelope_sealed)?;
        Ok(Some(Outgoing {
            subject: self.open_opt(&id, "subject", r.try_get(5)?)?,
            body: self
                .open_opt(&id, "body", r.try_get(6)?)?
                .unwrap_or_default(),
            html: self.open_opt(&id, "html", r.try_get(7)?)?,
            case_id: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
            channel: r.try_get(2)?,
            status: r.try_get(3)?,
            envelope,
            rfc_message_id: r.try_get(8)?,
            in_reply_to: r.try_get(9)?,
            category: r.try_get(10)?,
            id,
        }))
    }

    /// Records an attempt and its consequences in one transaction: the job's next state, the
    /// message's status and event, and the outbox event.
    pub async fn finish_delivery(
        &self,
        job: &ClaimedJob,
        started_at: Micros,
        outcome: Outcome,
    ) -> StoreResult<()> {
        let now = now_micros();
        if let Outcome::Defer { at } = outcome {
            sqlx::query(
                "UPDATE jobs SET status = 'pending', run_at = $2, attempts = attempts - 1, lease_owner = NULL, \
                 lease_until = NULL, updated_at = $3 WHERE id = $1",
            )
            .bind(&job.id)
            .bind(at)
            .bind(now)
            .execute(&self.writer)
            .await?;
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let (label, error) = match &outcome {
            Outcome::Defer { .. } => ("deferred", None),
            Outcome::Sent { .. } => ("sent", None),
            Outcome::Retry { error, .. } => ("retry", Some(error.as_str())),
            Outcome::Failed { error } => ("failed", Some(error.as_str())),
        };
        sqlx::query("INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&job.id)
            .bind(job.attempt)
            .bind(started_at)
            .bind(now)
            .bind(label)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        let event = match &outcome {
            Outcome::Defer { .. } => None,
            Outcome::Retry { at, error } => {
                sqlx::query("UPDATE jobs SET status = 'pending', run_at = $2, lease_owner = NULL, lease_until = NULL, last_error = $3, updated_at = $4 WHERE id = $1")
                    .bind(&job.id)
                    .bind(at)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                None
            }
            Outcome::Sent { provider_id } => {
                sqlx::query("UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE id = $1")
                    .bind(&job.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE messages SET sent_at = $2, provider_id = COALESCE($3, provider_id) WHERE id = $1")
                    .bind(&job.ref_id)
                    .bind(now)
                    .bind(provider_id.as_deref())
                    .execute(&mut *tx)
                    .await?;
                Some((MessageStatus::Sent, None))
            }
            Outcome::Failed { error } => {
                sqlx::query("UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_until = NULL, last_error = $2, updated_at = $3 WHERE id = $1")
                    .bind(&job.id)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Some((MessageStatus::Failed, Some(error.as_str())))
            }
        };
        if let Some((event, reason)) = event {
            apply_event(&mut tx, self.backend, &job.ref_id, event, now, None, reason).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Attempts recorded for the delivery of a message: (attempt, outcome, error).
    pub async fn delivery_attempts(
        &self,
        message_id: &str,
    ) -> StoreResult<Vec<(i64, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT a.attempt, a.outcome, a.error FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.ref_id = $1 ORDER BY a.id",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    i64::from(r.try_get::<i32, _>(0)?),
                    r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                    r.try_get(2)?,
                ))
            })
            .collect()
    }
}
