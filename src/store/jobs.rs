//! Delivery jobs: what a delivery worker reads of a message, and the bookkeeping of an
//! attempt (the job's next state, the attempt record, the message's status and the outbox
//! event) in one transaction. Claiming and leases are the queue engine's (`queue.rs`).

use super::BindBatch;
use super::messages::{Envelope, apply_event};
use super::queue::{DELIVERY_JOBS, Transition, transition};
use crate::domain::CaseId;
use crate::domain::MessageId;
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;

use super::{Backend, Cases, Queue, Sibling, StoreError, StoreResult};
use crate::domain::message::{Category, Channel, MessageStatus};
use crate::domain::policy::Evidence;
use crate::domain::time::Micros;

/// What a delivery worker needs of a message.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: MessageId,
    pub case_id: CaseId,
    pub channel: Channel,
    pub category: Category,
    pub status: MessageStatus,
    pub envelope: Envelope,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub rfc_message_id: Option<String>,
    pub in_reply_to: Option<String>,
    /// The debtor's time zone, as the case names it, for the contact window.
    pub debtor_timezone: Option<String>,
    /// The case's status now (a case disputed since queueing holds collection messages).
    pub case_status: crate::domain::CaseStatus,
    /// A reply on the case awaits review: collection messages wait at sending too.
    pub awaiting_review: bool,
    /// The debtor asked for erasure: the policy refuses.
    pub restricted: bool,
    /// Whether it carries documents (`message_attachments`).
    pub has_attachments: bool,
    /// The creditor of its case (a connector serving that creditor may carry it).
    pub creditor_id: crate::domain::PartyId,
}

#[derive(sqlx::FromRow)]
struct OutgoingRow {
    id: MessageId,
    case_id: Option<CaseId>,
    message_type: String,
    category: String,
    status: String,
    envelope_sealed: Vec<u8>,
    subject_sealed: Option<Vec<u8>>,
    body_sealed: Option<Vec<u8>>,
    html_sealed: Option<Vec<u8>>,
    rfc_message_id: Option<String>,
    in_reply_to: Option<String>,
    debtor_timezone: Option<String>,
    case_status: Option<String>,
    awaiting_review: i32,
    restricted: i32,
    has_attachments: i32,
    creditor_id: Option<String>,
    #[sqlx(flatten)]
    preferences: super::preferences::JoinedPreferences,
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
    pub message_id: &'a MessageId,
    /// 1 on the first attempt.
    pub attempt: i32,
    pub started_at: Micros,
    pub finished_at: Micros,
    /// The send policy's decision, when it was asked.
    pub evidence: Option<Evidence>,
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

/// What one delivery attempt reads before it decides: the message, its case's preferences,
/// and whether one of its recipients is suppressed.
#[derive(Debug, Clone)]
pub struct Delivering {
    pub message: Outgoing,
    /// Its case's preferences; the error when they could not be read (the policy then
    /// cannot decide, and the attempt is tried again later).
    pub preferences: Result<crate::domain::policy::Preferences, String>,
    pub suppressed: bool,
    /// The creditor of its case: whose suppressions apply besides everyone's.
    creditor_id: String,
}

impl Queue {
    /// The recipients (places among `to` then `cc`) whose copy of a message went out.
    pub async fn copies_sent(&self, message_id: &MessageId) -> StoreResult<Vec<usize>> {
        let sent: Vec<i32> = sqlx::query_scalar(
            "SELECT recipient FROM message_copies WHERE message_id = $1 ORDER BY recipient",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(sent
            .into_iter()
            .filter_map(|r| usize::try_from(r).ok())
            .collect())
    }

    /// Records that these recipients' copies of a message went out.
    pub async fn copies_sent_now(
        &self,
        message_id: &MessageId,
        recipients: &[usize],
        at: Micros,
    ) -> StoreResult<()> {
        let rows: Vec<String> = (0..recipients.len())
            .map(|i| format!("($1, ${}, $2)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO message_copies (message_id, recipient, sent_at) VALUES {} \
             ON CONFLICT (message_id, recipient) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(message_id).bind(at);
        for r in recipients {
            q = q.bind(i32::try_from(*r).unwrap_or(i32::MAX));
        }
        q.execute(&self.writer).await?;
        Ok(())
    }

    /// What the delivery of one message reads; `None` when the message no longer exists. The
    /// message is decoded strictly: a stored word that does not parse is
    /// [`StoreError::Corrupt`], so the worker fails the message rather than guess.
    pub async fn delivering(&self, message_id: &MessageId) -> StoreResult<Option<Delivering>> {
        self.delivering_many(&[message_id.as_str()])
            .await?
            .into_iter()
            .next()
            .map(|(_, d)| d)
            .transpose()
    }

    /// What the deliveries of a claim read, in two queries whatever their number: the
    /// messages with their cases and preferences, then the suppression list for all their
    /// recipients. One result a message found (a message that cannot be read fails alone).
    pub async fn delivering_many(
        &self,
        message_ids: &[&str],
    ) -> StoreResult<Vec<(MessageId, StoreResult<Delivering>)>> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT m.id, m.case_id, COALESCE(m.channel, m.message_type) AS message_type, m.category, m.status, m.envelope_sealed, m.subject_sealed, m.body_sealed, \
             m.html_sealed, m.rfc_message_id, m.in_reply_to, c.debtor_timezone, c.status AS case_status, m.has_attachments, \
             CASE WHEN c.hold_message_id IS NULL THEN 0 ELSE 1 END AS awaiting_review, \
             CASE WHEN c.restricted_at IS NULL AND c.erased_at IS NULL THEN 0 ELSE 1 END AS restricted, c.creditor_id, {} \
             FROM messages m LEFT JOIN cases c ON c.id = m.case_id LEFT JOIN preferences pr ON pr.case_id = m.case_id \
             WHERE m.id IN ({})",
            super::preferences::PREFERENCE_COLUMNS,
            super::batch_list(self.backend, 1, "TEXT")
        );
        let rows = sqlx::query_as::<_, OutgoingRow>(&sql)
            .bind(super::list_param(self.backend, message_ids)?)
            .fetch_all(&self.pool)
            .await?;
        self.unlock(rows.iter().map(|r| &r.envelope_sealed[..]))
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in rows {
            let id = r.id.clone();
            found.push((id, self.outgoing_from_row(r).await));
        }

        // Every recipient of every message, asked about at once.
        let asked: Vec<Vec<String>> = found
            .iter()
            .map(|(_, d)| match d {
                Ok(d) => {
                    let m = &d.message;
                    let channel = m.channel.as_str();
                    m.envelope
                        .to
                        .iter()
                        .chain(&m.envelope.cc)
                        .map(|r| self.suppression_index(channel, r))
                        .collect()
                }
                Err(_) => Vec::new(),
            })
            .collect();
        let all: Vec<&String> = asked.iter().flatten().collect();
        if all.is_empty() {
            return Ok(found);
        }
        let list: Vec<String> = (3..all.len() + 3).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT channel, value_index, scope FROM suppressions WHERE channel IN ($1, $2) AND value_index IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql)
            .bind(Channel::Email.as_str())
            .bind(Channel::Sms.as_str());
        for index in &all {
            q = q.bind(index.as_str());
        }
        let suppressed = q.fetch_all(&self.pool).await?;
        for ((_, d), indexes) in found.iter_mut().zip(&asked) {
            if let Ok(d) = d {
                let channel = d.message.channel.as_str();
                d.suppressed = indexes.iter().any(|index| {
                    suppressed.iter().any(|(c, i, scope)| {
                        c == channel && i == index && (scope.is_empty() || *scope == d.creditor_id)
                    })
                });
            }
        }
        Ok(found)
    }

    async fn outgoing_from_row(&self, r: OutgoingRow) -> StoreResult<Delivering> {
        // Its debtor was erased (the key is gone, whether or not the case says so yet):
        // nothing is left to send and no one to send it to; the policy refuses it.
        // The envelope opened once: `None` is erased.
        let envelope = self
            .open_kept(
                &super::messages::context(&r.id, "envelope"),
                &r.envelope_sealed,
            )?
            .map(|json| serde_json::from_slice::<Envelope>(&json))
            .transpose()
            .map_err(anyhow::Error::from)?;
        let erased = envelope.is_none();
        let corrupt = |e: crate::domain::Invalid| StoreError::Corrupt(e.0);
        let creditor_id = r.creditor_id.unwrap_or_default();
        // Every queued message has its case (`NewMessage::case_id`).
        let case_id = r.case_id.ok_or_else(|| {
            StoreError::Corrupt(format!("outbound message {} without a case", r.id))
        })?;
        let preferences = self
            .sibling::<Cases>()
            .stored_preferences(&case_id, r.preferences.into_row())
            .await
            .map(|p| p.preferences)
            .map_err(|e| format!("{e}"));
        let message = Outgoing {
            envelope: envelope.unwrap_or_else(Envelope::erased),
            subject: self.open_opt(&r.id, "subject", r.subject_sealed)?,
            body: self
                .open_opt(&r.id, "body", r.body_sealed)?
                .unwrap_or_default(),
            html: self.open_opt(&r.id, "html", r.html_sealed)?,
            case_id,
            channel: Channel::parse(&r.message_type).map_err(corrupt)?,
            category: Category::parse(&r.category).map_err(corrupt)?,
            status: MessageStatus::parse(&r.status).map_err(corrupt)?,
            rfc_message_id: r.rfc_message_id,
            in_reply_to: r.in_reply_to,
            has_attachments: r.has_attachments != 0,
            restricted: r.restricted != 0 || erased,
            debtor_timezone: r.debtor_timezone,
            case_status: crate::domain::CaseStatus::parse(
                r.case_status.as_deref().unwrap_or_default(),
            )
            .map_err(corrupt)?,
            awaiting_review: r.awaiting_review != 0,
            creditor_id: crate::domain::PartyId::from_stored(creditor_id.clone()),
            id: r.id,
        };
        Ok(Delivering {
            message,
            preferences,
            suppressed: false,
            creditor_id,
        })
    }

    /// Records an attempt and its consequences: the attempt (unless the job was only
    /// deferred), the job's next state, the message's status and event, and the outbox
    /// event. Outcomes finishing at the same time are written together (`finish_all`); this
    /// returns once they are committed.
    pub async fn finish_delivery(
        &self,
        a: AttemptRecord<'_>,
        next: Transition,
        delivered: Delivered,
    ) -> StoreResult<()> {
        self.finishes
            .submit(Finish {
                job_id: a.job_id.to_string(),
                message_id: a.message_id.clone(),
                attempt: a.attempt,
                started_at: a.started_at,
                finished_at: a.finished_at,
                evidence: a.evidence,
                next,
                delivered,
            })
            .await
    }

    /// Attempts recorded for the delivery of a message, oldest first.
    pub async fn delivery_attempts(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        Ok(sqlx::query_as::<_, DeliveryAttempt>(
            "SELECT a.attempt, a.outcome, a.error FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.ref_id = $1 ORDER BY a.id",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One delivery outcome waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    job_id: String,
    message_id: MessageId,
    attempt: i32,
    started_at: Micros,
    finished_at: Micros,
    evidence: Option<Evidence>,
    next: Transition,
    delivered: Delivered,
}

impl Finish {
    /// The attempt's outcome and error as `job_attempts` records them.
    fn outcome(&self) -> (&'static str, Option<&str>) {
        match (&self.next, &self.delivered) {
            (Transition::Done, _) => ("sent", None),
            (Transition::Retry { error, .. }, _) => ("retry", Some(error.as_str())),
            (_, Delivered::Failed { reason }) => ("failed", Some(reason.as_str())),
            (Transition::Failed { error }, _) => ("failed", Some(error.as_str())),
            (Transition::Defer(_), _) => ("deferred", None),
        }
    }
}

/// Rows per multi-row statement.
const ROWS: usize = 100;

/// The batch writer of delivery outcomes (a [`super::pipeline::Batcher`]).
pub(crate) fn finish_batch<'c>(
    conn: &'c mut AnyConnection,
    backend: Backend,
    items: &'c [Finish],
) -> BoxFuture<'c, StoreResult<Vec<()>>> {
    Box::pin(async move {
        finish_all(conn, backend, items).await?;
        Ok(vec![(); items.len()])
    })
}

/// The attempts of a batch of outcomes, in one statement.
async fn record_attempts(
    conn: &mut AnyConnection,
    backend: Backend,
    recorded: &[&Finish],
) -> StoreResult<()> {
    if recorded.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = recorded
        .iter()
        .map(|f| {
            let (outcome, error) = f.outcome();
            let Finish {
                job_id,
                attempt,
                started_at,
                finished_at,
                ..
            } = f;
            (job_id, attempt, started_at, finished_at, outcome, error)
        })
        .collect();
    let sql = format!(
        "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error) \
         SELECT job_id, attempt, started_at, finished_at, outcome, error FROM ({}) v",
        super::batch_rows(
            backend,
            1,
            &[
                ("job_id", "TEXT"),
                ("attempt", "INTEGER"),
                ("started_at", "BIGINT"),
                ("finished_at", "BIGINT"),
                ("outcome", "TEXT"),
                ("error", "TEXT"),
            ]
        )
    );
    sqlx::query(&sql)
        .bind_batch(super::batch_params(backend, 6, &rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes a batch of outcomes with a few multi-row statements: the attempts, the jobs that
/// are done, the messages sent and their events. What is rare (retries, failures, deferrals,
/// provider ids) is written one by one.
async fn finish_all(
    conn: &mut AnyConnection,
    backend: Backend,
    items: &[Finish],
) -> StoreResult<()> {
    let recorded: Vec<&Finish> = items
        .iter()
        .filter(|f| !matches!(f.next, Transition::Defer(_)))
        .collect();
    record_attempts(&mut *conn, backend, &recorded).await?;

    // A sent message's evidence is written with the rest of its sending, below.
    let evidence: Vec<(&str, &Evidence)> = items
        .iter()
        .filter(|f| !matches!(f.delivered, Delivered::Sent { .. }))
        .filter_map(|f| f.evidence.as_ref().map(|e| (f.message_id.as_str(), e)))
        .collect();
    super::messages::record_evidence(&mut *conn, backend, &evidence).await?;

    let (done, other): (Vec<&Finish>, Vec<&Finish>) =
        items.iter().partition(|f| f.next == Transition::Done);
    for chunk in done.chunks(ROWS) {
        let ids: Vec<&str> = chunk.iter().map(|f| f.job_id.as_str()).collect();
        let now = chunk
            .iter()
            .map(|f| f.finished_at)
            .max()
            .unwrap_or_default();
        super::queue::finish_done(&mut *conn, backend, DELIVERY_JOBS, &ids, now).await?;
    }
    for f in other {
        transition(&mut *conn, DELIVERY_JOBS, &f.job_id, &f.next, f.finished_at).await?;
    }

    let sent: Vec<super::messages::SentMessage<'_>> = items
        .iter()
        .filter_map(|f| match &f.delivered {
            Delivered::Sent { provider_id } => Some(super::messages::SentMessage {
                id: &f.message_id,
                at: f.finished_at,
                provider_id: provider_id.as_deref(),
                evidence: f.evidence.as_ref(),
            }),
            _ => None,
        })
        .collect();
    for chunk in sent.chunks(ROWS) {
        let finished = chunk.iter().map(|s| s.at).max().unwrap_or_default();
        super::messages::apply_sent_events(&mut *conn, backend, chunk, finished).await?;
        let ids: Vec<&str> = chunk.iter().map(|s| s.id.as_str()).collect();
        super::archive::enqueue(&mut *conn, backend, &ids, finished).await?;
        super::crm::enqueue_messages(&mut *conn, backend, &ids, finished).await?;
    }
    for f in items {
        if let Delivered::Failed { reason } = &f.delivered {
            apply_event(
                &mut *conn,
                backend,
                &f.message_id,
                (MessageStatus::Failed, f.finished_at),
                None,
                Some(reason),
                f.finished_at,
            )
            .await?;
        }
    }
    Ok(())
}
