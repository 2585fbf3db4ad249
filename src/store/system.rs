//! What system messages need of the database: the event a system-message job answers,
//! the deadline scanner, and the bookkeeping of a system-message job.

use crate::domain::CaseId;
use sqlx::AnyConnection;

use super::queue::{DELIVERY_JOBS, Transition, transition};
use super::{Backend, StoreError, StoreResult, System, emit};
use crate::domain::event::EventType;
use crate::domain::message::SystemEvent;
use crate::domain::time::Micros;

/// One occurrence of an event that makes a system message.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// The event's id in the outbox: the key of its one system message.
    pub key: String,
    pub event: SystemEvent,
    pub case_id: CaseId,
    pub payload: serde_json::Value,
    pub at: Micros,
}

impl System {
    /// Readiness: the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The event a system-message job names; `None` if it is gone or makes no message.
    pub async fn occurrence(&self, event_id: &str) -> StoreResult<Option<Occurrence>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            event_type: String,
            case_id: Option<CaseId>,
            payload: String,
            created_at: i64,
        }
        let Ok(id) = event_id.parse::<i64>() else {
            return Ok(None);
        };
        let row = sqlx::query_as::<_, Row>(
            "SELECT event_type, case_id, payload, created_at FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let event = EventType::parse(&r.event_type)
            .map_err(|e| StoreError::Corrupt(e.0))?
            .system_event();
        let (Some(event), Some(case_id)) = (event, r.case_id) else {
            return Ok(None);
        };
        Ok(Some(Occurrence {
            key: format!("event:{event_id}"),
            event,
            case_id,
            payload: serde_json::from_str(&r.payload).map_err(anyhow::Error::from)?,
            at: r.created_at,
        }))
    }

    /// Deadlines due between `now` and `until` that have not been announced (one already
    /// past is not announced late): each is marked and its
    /// `deadline.approaching` event written in one transaction, so that every deadline is
    /// announced once, however many processes scan. Returns how many it announced.
    pub async fn announce_deadlines(&self, until: Micros, now: Micros) -> StoreResult<usize> {
        #[derive(sqlx::FromRow)]
        struct Due {
            id: String,
            case_id: CaseId,
            due_at: i64,
        }
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.write_tx().await?;
        let due = sqlx::query_as::<_, Due>(&format!(
            "UPDATE deadlines SET notified_at = $1 WHERE id IN (SELECT id FROM deadlines \
             WHERE notified_at IS NULL AND due_at <= $2 AND due_at >= $1 ORDER BY due_at LIMIT 100{lock}) \
             AND notified_at IS NULL RETURNING id, case_id, due_at"
        ))
        .bind(now)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        for d in &due {
            // No title: it may name the debtor, and the outbox keeps what it holds. Readers
            // take it from the deadline (`deadline_title`), which an erasure clears.
            let payload = crate::domain::payload::DeadlineApproaching {
                case_id: &d.case_id,
                deadline_id: &d.id,
                due_at: crate::domain::time::rfc3339(d.due_at),
            };
            emit(
                &mut tx,
                EventType::DeadlineApproaching,
                Some(&d.case_id),
                &payload,
                self.now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    /// Records an attempt of a system-message job and moves the job on.
    pub async fn finish_system_job(
        &self,
        job_id: &str,
        attempt: i32,
        started_at: Micros,
        next: Transition,
        now: Micros,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        record_attempt(&mut tx, job_id, attempt, started_at, &next, now).await?;
        transition(&mut tx, DELIVERY_JOBS, job_id, &next, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn record_attempt(
    conn: &mut AnyConnection,
    job_id: &str,
    attempt: i32,
    started_at: Micros,
    next: &Transition,
    now: Micros,
) -> sqlx::Result<()> {
    let (outcome, error) = match next {
        Transition::Done => ("done", None),
        Transition::Defer(_) => return Ok(()),
        Transition::Retry { error, .. } => ("retry", Some(error.as_str())),
        Transition::Failed { error } => ("failed", Some(error.as_str())),
    };
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(started_at)
    .bind(now)
    .bind(outcome)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

impl System {
    /// A deadline's title, read when an announcement is written or delivered.
    pub async fn deadline_title(&self, deadline_id: &str) -> StoreResult<Option<String>> {
        let row: Option<(String, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT title, title_sealed FROM deadlines WHERE id = $1")
                .bind(deadline_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((title, sealed)) = row else {
            return Ok(None);
        };
        match sealed {
            Some(sealed) => {
                self.unlock([&sealed[..]]).await?;
                Ok(Some(self.open_text(
                    &super::payments::title_context(deadline_id),
                    &sealed,
                )?))
            }
            None => Ok(Some(title)),
        }
    }
}
