//! Messages: queueing (message, `queued` event, delivery job, audit entry and idempotency
//! record in one transaction), reading, and status events.

use super::BindBatch;
use crate::domain::CaseId;
use crate::domain::{DocumentId, MessageId, ThreadId};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::cases::{page_cursor, visible};
use super::{
    Documents, Messages, Page, Sibling, StoreError, StoreInner, StoreResult, admin_flag,
    decode_cursor, emit, rows_sql,
};
use crate::domain::Invalid;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::message::{
    Category, Channel, Direction, MessageStatus, MessageType, Priority, SystemEvent,
};
use crate::domain::party::Actor;
use crate::domain::payload;
use crate::domain::policy::{Decision, Evidence};
use crate::domain::time::{Micros, rfc3339};

/// Who a message is from and to. Personal data: sealed at rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
}

impl Envelope {
    /// What is shown of an erased data subject's envelope.
    pub fn erased() -> Self {
        Self {
            from: super::subject_keys::ERASED.to_string(),
            to: Vec::new(),
            cc: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub case_id: CaseId,
    pub message_type: MessageType,
    /// The channel it is delivered by; `None` for a system message that only informs the
    /// case's parties.
    pub channel: Option<Channel>,
    /// `queued`; a system message may start `refused` (by the policy) or `sent` (to the
    /// parties only).
    pub status: MessageStatus,
    /// A system message's event and the key of the occurrence it answers (one message each).
    pub system: Option<(SystemEvent, String)>,
    /// The send policy's decision at queueing.
    pub evidence: Option<Evidence>,
    /// Documents of the case sent as attachments, in order.
    pub attachments: Vec<AttachmentView>,
    pub priority: Priority,
    pub category: Category,
    pub template_id: Option<String>,
    pub language: Option<String>,
    pub envelope: Envelope,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub rfc_message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub segments: Option<i64>,
    /// When delivery may start: now, or the requested `scheduledAt`.
    pub run_at: Micros,
    pub scheduled_for: Option<Micros>,
    /// The trace context of the request that queues it (see `telemetry`), kept with its job.
    pub trace_parent: Option<String>,
}

/// A document attached to a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentView {
    pub document_id: DocumentId,
    pub file_name: String,
    pub size: i64,
    pub content_type: String,
}

/// The idempotency record written with a new message.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: String,
}

/// What queueing a message did.
#[derive(Debug)]
pub enum Queued {
    /// Committed: the message as it was queued.
    Created(Box<MessageView>),
    /// The case is not visible to the actor.
    NoCase,
    /// A concurrent request with the same idempotency key committed first, or the system
    /// message of this occurrence exists already; nothing was written.
    KeyTaken,
}

/// A message as stored; the result of a send, kept with its idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    pub id: MessageId,
    pub case_id: Option<CaseId>,
    pub thread_id: Option<ThreadId>,
    pub direction: Direction,
    pub message_type: MessageType,
    /// The delivery channel: the type of an email or SMS; of a system message, the channel
    /// that took it to the debtor, if any.
    pub channel: Option<Channel>,
    /// A system message's event.
    #[serde(default)]
    pub event: Option<SystemEvent>,
    pub status: MessageStatus,
    pub priority: Priority,
    pub category: Category,
    pub template_id: Option<String>,
    pub language: Option<String>,
    pub sent_by: Option<String>,
    pub envelope: Envelope,
    pub subject: Option<String>,
    /// Only filled where the body was asked for.
    pub body: Option<String>,
    pub html: Option<String>,
    pub rfc_message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub provider_id: Option<String>,
    pub segments: Option<i64>,
    pub has_attachments: bool,
    /// Only filled where one message is read.
    #[serde(default)]
    pub attachments: Vec<AttachmentView>,
    pub failure_reason: Option<String>,
    pub scheduled_for: Option<Micros>,
    pub sent_at: Option<Micros>,
    pub received_at: Option<Micros>,
    pub created_at: Micros,
    /// `false` for received mail held for review (see `store::review`).
    #[serde(default = "trusted")]
    pub sender_verified: bool,
    /// Received mail: what its sender authentication found (none when not checked).
    #[serde(default)]
    pub authentication: Option<crate::domain::authentication::Authentication>,
    /// Received mail: what the spam filter said (none when no filter was asked).
    #[serde(default)]
    pub spam: Option<crate::domain::authentication::SpamCheck>,
    /// The connector whose mailbox carried it (none: SMTP, IMAP, the API).
    #[serde(default)]
    pub carried_by: Option<crate::domain::connector::Carrier>,
    /// Received email and SMS: what the reply means (`domain::understanding`).
    #[serde(default)]
    pub understanding: Option<crate::domain::understanding::Understanding>,
    /// Where the CRM connectors logged it (filled where one message is read, and in a
    /// case's list).
    #[serde(default)]
    pub crm_activities: Vec<super::CrmActivity>,
}

fn trusted() -> bool {
    true
}

pub struct MessageFilter {
    pub message_type: Option<MessageType>,
    pub direction: Option<Direction>,
    pub status: Option<MessageStatus>,
    pub date_from: Option<Micros>,
    pub date_to: Option<Micros>,
    pub cursor: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatusEvent {
    pub event: String,
    pub at: Micros,
}

/// The columns of [`MESSAGE_COLUMNS`], by name.
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: MessageId,
    case_id: Option<CaseId>,
    thread_id: Option<ThreadId>,
    direction: String,
    message_type: String,
    channel: Option<String>,
    system_event: Option<String>,
    status: String,
    priority: String,
    category: String,
    template_id: Option<String>,
    language: Option<String>,
    sent_by: Option<String>,
    envelope_sealed: Vec<u8>,
    subject_sealed: Option<Vec<u8>>,
    rfc_message_id: Option<String>,
    in_reply_to: Option<String>,
    provider_id: Option<String>,
    segments: Option<i32>,
    has_attachments: i32,
    failure_reason: Option<String>,
    scheduled_for: Option<i64>,
    sent_at: Option<i64>,
    received_at: Option<i64>,
    created_at: i64,
    sender_verified: i32,
    authentication: Option<String>,
    spam: Option<String>,
    carried_by: Option<String>,
    understanding_sealed: Option<Vec<u8>>,
    intent: Option<String>,
    review: Option<String>,
    corrected_by: Option<String>,
    corrected_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageWithBody {
    #[sqlx(flatten)]
    message: MessageRow,
    body_sealed: Option<Vec<u8>>,
    html_sealed: Option<Vec<u8>>,
}

impl MessageWithBody {
    /// A sealed value of the row, naming the subject key all of them are sealed under.
    pub(crate) fn sealed(&self) -> &[u8] {
        &self.message.envelope_sealed
    }
}

/// A column kept as JSON, read back into its type.
pub(super) fn json_column<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
) -> StoreResult<Option<T>> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| super::StoreError::Corrupt(e.to_string()))
}

/// A reply's review as stored (`messages.review`); a word no review knows is corrupt.
pub(super) fn review_column(
    word: Option<&str>,
) -> StoreResult<Option<crate::domain::understanding::Review>> {
    word.map(crate::domain::understanding::Review::parse)
        .transpose()
        .map_err(|e| super::StoreError::Corrupt(e.to_string()))
}

pub(crate) fn context(id: &(impl std::fmt::Display + ?Sized), part: &str) -> String {
    format!("msg:{id}:{part}")
}

/// The filters of a case's message list: `$1` the case, `$2`–`$6` optional filters.
const LIST_CONDITIONS: &str = "m.case_id = $1 AND ($2 IS NULL OR m.message_type = $2) AND ($3 IS NULL OR m.direction = $3) \
     AND ($4 IS NULL OR m.status = $4) AND ($5 IS NULL OR m.created_at >= $5) AND ($6 IS NULL OR m.created_at <= $6)";

/// A page of a case's messages, newest first: `$7` the cursor, `$8` the page size + 1.
pub(crate) fn list_messages_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {LIST_CONDITIONS} AND ($7 IS NULL OR m.id < $7) \
         ORDER BY m.id DESC LIMIT $8"
    )
}

/// How many messages of a case match the list's filters.
pub(crate) fn count_messages_sql() -> String {
    format!("SELECT COUNT(*) FROM messages m WHERE {LIST_CONDITIONS}")
}

/// The columns of a message as [`MessageRow`] reads them (a macro, so that the list with the
/// body can be built from it at compile time).
macro_rules! message_columns {
    () => {
        "m.id, m.case_id, m.thread_id, m.direction, m.message_type, m.channel, m.system_event, m.status, m.priority, \
         m.category, m.template_id, m.language, m.sent_by, m.envelope_sealed, m.subject_sealed, m.rfc_message_id, \
         m.in_reply_to, m.provider_id, m.segments, m.has_attachments, m.failure_reason, m.scheduled_for, m.sent_at, \
         m.received_at, m.created_at, m.sender_verified, m.authentication, m.spam, m.carried_by, \
         m.understanding_sealed, m.intent, m.review, m.corrected_by, m.corrected_at"
    };
}
const MESSAGE_COLUMNS: &str = message_columns!();
/// [`MESSAGE_COLUMNS`] with the sealed body and HTML.
pub(crate) const MESSAGE_COLUMNS_WITH_BODY: &str =
    concat!(message_columns!(), ", m.body_sealed, m.html_sealed");

/// A reading with what people made of it: the review of a reply that holds, and a case
/// worker's correction (the intent theirs, the reading's kept as `from`).
fn reviewed(
    mut read: crate::domain::understanding::Understanding,
    intent: Option<String>,
    review: Option<crate::domain::understanding::Review>,
    corrected: Option<(String, i64)>,
) -> crate::domain::understanding::Understanding {
    use crate::domain::understanding::{Correction, Intent};
    read.review = review;
    if let Some((by, at)) = corrected
        && let Some(now) = intent.as_deref().and_then(|i| Intent::parse(i).ok())
    {
        read.correction = Some(Correction {
            from: std::mem::replace(&mut read.intent, now),
            by,
            at: crate::domain::time::from_micros(at),
        });
    }
    read
}

impl StoreInner {
    /// A message's envelope (its subject key looked up first by `unlock`); an erased one
    /// is from `[erased]` to no one.
    pub(crate) fn open_envelope(
        &self,
        id: &(impl std::fmt::Display + ?Sized),
        sealed: &[u8],
    ) -> StoreResult<Envelope> {
        match self.open_kept(&context(id, "envelope"), sealed)? {
            Some(json) => Ok(serde_json::from_slice(&json).map_err(anyhow::Error::from)?),
            None => Ok(Envelope::erased()),
        }
    }

    /// A sealed part of a message; `[erased]` when its data subject was erased.
    pub(crate) fn open_opt(
        &self,
        id: &(impl std::fmt::Display + ?Sized),
        part: &str,
        sealed: Option<Vec<u8>>,
    ) -> StoreResult<Option<String>> {
        sealed
            .map(|s| self.open_text(&context(id, part), &s))
            .transpose()
    }

    fn message_from_row(&self, r: MessageRow) -> StoreResult<MessageView> {
        let corrupt = |e: Invalid| StoreError::Corrupt(e.0);
        Ok(MessageView {
            envelope: self.open_envelope(&r.id, &r.envelope_sealed)?,
            subject: self.open_opt(&r.id, "subject", r.subject_sealed)?,
            case_id: r.case_id,
            thread_id: r.thread_id,
            direction: Direction::parse(&r.direction).map_err(corrupt)?,
            message_type: MessageType::parse(&r.message_type).map_err(corrupt)?,
            channel: delivery_channel(&r.message_type, r.channel.as_deref())?,
            event: r
                .system_event
                .as_deref()
                .map(SystemEvent::parse)
                .transpose()
                .map_err(corrupt)?,
            status: MessageStatus::parse(&r.status).map_err(corrupt)?,
            priority: Priority::parse(&r.priority).map_err(corrupt)?,
            category: Category::parse(&r.category).map_err(corrupt)?,
            template_id: r.template_id,
            language: r.language,
            sent_by: r.sent_by,
            body: None,
            html: None,
            rfc_message_id: r.rfc_message_id,
            in_reply_to: r.in_reply_to,
            provider_id: r.provider_id,
            segments: r.segments.map(i64::from),
            has_attachments: r.has_attachments != 0,
            attachments: Vec::new(),
            failure_reason: r.failure_reason,
            scheduled_for: r.scheduled_for,
            sent_at: r.sent_at,
            received_at: r.received_at,
            created_at: r.created_at,
            sender_verified: r.sender_verified != 0,
            authentication: json_column(r.authentication.as_deref())?,
            spam: json_column(r.spam.as_deref())?,
            carried_by: json_column(r.carried_by.as_deref())?,
            crm_activities: Vec::new(),
            // Gone with an erased debtor's key.
            understanding: self
                .open_opt(&r.id, "understanding", r.understanding_sealed)?
                .and_then(|json| serde_json::from_str(&json).ok())
                .map(|read| -> StoreResult<_> {
                    let review = review_column(r.review.as_deref())?;
                    Ok(reviewed(
                        read,
                        r.intent,
                        review,
                        r.corrected_by.zip(r.corrected_at),
                    ))
                })
                .transpose()?,
            id: r.id,
        })
    }
}

impl Messages {
    /// Queues an outbound message at `now`: the message, its `queued` event, its delivery
    /// job, the audit entry and the idempotency record (naming the message), all or none.
    /// Concurrent sends are written together (`queue_all`: multi-row statements, on
    /// PostgreSQL often a single one); the result comes once they are committed.
    pub async fn queue_message(
        &self,
        actor: &Actor,
        new: NewMessage,
        idempotency: Option<IdempotencyRecord>,
        access: Access,
        now: Micros,
    ) -> StoreResult<Queued> {
        let id = new.id.as_str();
        let envelope = serde_json::to_vec(&new.envelope).map_err(anyhow::Error::from)?;
        let new_thread = crate::domain::prefixed_id("thread");
        let subject_index = self.subject_index(new.subject.as_deref());
        let known_thread = self
            .known_threads
            .get(&(new.case_id, subject_index.clone()));
        // A system message is the case's own: no party sent it.
        let system = new.system.is_some();
        // Everything about the message is sealed under the key of the case's debtor.
        let key = self.case_key(&new.case_id).await?;
        let item = QueueItem {
            party_id: (!system).then(|| actor.party_id.as_str().to_string()),
            actor_name: if system {
                "system".to_string()
            } else {
                actor.name.clone()
            },
            admin: if system { 1 } else { admin_flag(actor) },
            idempotency,
            envelope_sealed: key.seal(&context(id, "envelope"), &envelope),
            subject_sealed: new
                .subject
                .as_deref()
                .map(|s| key.seal_str(&context(id, "subject"), s)),
            body_sealed: key.seal_str(&context(id, "body"), &new.body),
            html_sealed: new
                .html
                .as_deref()
                .map(|h| key.seal_str(&context(id, "html"), h)),
            // An SMS reply is routed to the case that last wrote to its number.
            recipient_index: match new.channel {
                Some(Channel::Sms) => new
                    .envelope
                    .to
                    .first()
                    .map(|to| self.keys.blind_index("phone", to)),
                _ => None,
            },
            subject_index,
            access,
            known_thread,
            threads: self.known_threads.clone(),
            new_thread_subject: new
                .subject
                .as_deref()
                .map(|s| key.seal_str(&super::threads::thread_context(&new_thread), s)),
            participants: self.participants_of(&key, &new.envelope),
            new_thread,
            job_id: crate::domain::prefixed_id("job"),
            now,
            new,
        };
        self.queued.submit(item).await
    }

    /// One message with its body, if the actor may see its case.
    pub async fn get_message(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> StoreResult<Option<MessageView>> {
        let row = sqlx::query_as::<_, MessageWithBody>(&format!(
            "SELECT {MESSAGE_COLUMNS_WITH_BODY} FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        self.unlock([row.sealed()]).await?;
        let mut m = self.message_with_body(row)?;
        m.attachments = self.sibling::<Documents>().message_attachments(id).await?;
        m.crm_activities = self
            .sibling::<super::Crm>()
            .activities_of(&[id])
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        Ok(Some(m))
    }

    /// Messages with their bodies, whatever their case (for the system's own work: logging
    /// them in a CRM), in one query per 500; missing ids are left out.
    pub async fn messages_with_bodies(&self, ids: &[MessageId]) -> StoreResult<Vec<MessageView>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = super::positional(
                format!(
                    "SELECT {MESSAGE_COLUMNS_WITH_BODY} FROM messages m JOIN cases c \
                     ON c.id = m.case_id WHERE m.id IN ({})",
                    params.join(", ")
                ),
                self.backend,
            );
            let mut q = sqlx::query_as::<_, MessageWithBody>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            let rows = q.fetch_all(&self.pool).await?;
            self.unlock(rows.iter().map(MessageWithBody::sealed))
                .await?;
            for row in rows {
                out.push(self.message_with_body(row)?);
            }
        }
        Ok(out)
    }

    pub async fn list_messages(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        f: MessageFilter,
    ) -> StoreResult<Option<(Page<MessageView>, i64)>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let cursor = f.cursor.as_deref().map(decode_cursor).transpose()?;
        let rows = sqlx::query_as::<_, MessageRow>(&list_messages_sql())
            .bind(case_id)
            .bind(f.message_type.map(MessageType::as_str))
            .bind(f.direction.map(Direction::as_str))
            .bind(f.status.map(MessageStatus::as_str))
            .bind(f.date_from)
            .bind(f.date_to)
            .bind(cursor.as_deref())
            .bind(f.limit + 1)
            .fetch_all(&mut *conn)
            .await?;
        let total: i64 = sqlx::query_scalar(&count_messages_sql())
            .bind(case_id)
            .bind(f.message_type.map(MessageType::as_str))
            .bind(f.direction.map(Direction::as_str))
            .bind(f.status.map(MessageStatus::as_str))
            .bind(f.date_from)
            .bind(f.date_to)
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        self.unlock(rows.iter().map(|r| &r.envelope_sealed[..]))
            .await?;
        let mut items = rows
            .into_iter()
            .map(|r| self.message_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = page_cursor(&mut items, f.limit, |m| m.id.to_string());
        let ids: Vec<&MessageId> = items.iter().map(|m| &m.id).collect();
        let logged = self.sibling::<super::Crm>().activities_of(&ids).await?;
        for (id, a) in logged {
            if let Some(m) = items.iter_mut().find(|m| m.id == id) {
                m.crm_activities.push(a);
            }
        }
        Ok(Some((Page { items, next_cursor }, total)))
    }

    /// The status and every recorded event of a message the actor may see, oldest first.
    pub async fn delivery_report(
        &self,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<Option<(MessageStatus, Option<Evidence>, Vec<StatusEvent>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            status: String,
            policy_decision: Option<String>,
            policy_rule: Option<String>,
            policy_checked_at: Option<i64>,
        }
        let mut conn = self.pool.acquire().await?;
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT m.status, m.policy_decision, m.policy_rule, m.policy_checked_at FROM messages m \
             JOIN cases c ON c.id = m.case_id WHERE m.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status = row.status;
        let evidence = match (row.policy_decision, row.policy_rule, row.policy_checked_at) {
            (Some(d), Some(rule), Some(at)) => Some(Evidence {
                decision: Decision::parse(&d).map_err(|e| StoreError::Corrupt(e.0))?,
                rule,
                checked_at: crate::domain::time::from_micros(at),
            }),
            _ => None,
        };
        let events = sqlx::query_as::<_, StatusEvent>(
            "SELECT event, at FROM message_events WHERE message_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let status = MessageStatus::parse(&status).map_err(|e| StoreError::Corrupt(e.0))?;
        Ok(Some((status, evidence, events)))
    }

    /// Records a status event reported after sending (a provider callback, a tracked open or
    /// click, a bounce). Every event is kept; the message's status only moves forward. A
    /// provider event id seen before is ignored: `false`.
    pub async fn record_status_event(
        &self,
        message_id: &MessageId,
        event: MessageStatus,
        at: Micros,
        provider_event_id: Option<&str>,
        detail: Option<&str>,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let fresh = apply_event(
            &mut tx,
            self.backend,
            message_id,
            (event, at),
            provider_event_id,
            detail,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// An event that does not move the status (a deferral, a spam report); `false` when the
    /// provider's event id was seen before or the message is gone. The message's row is
    /// locked while the event is written (nothing else keeps an event from outliving it).
    pub async fn record_plain_event(
        &self,
        message_id: &MessageId,
        event: &str,
        at: Micros,
        provider_event_id: &str,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO message_events (message_id, event, at, provider_event_id) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM messages WHERE id = $1{}) \
             ON CONFLICT (provider_event_id, message_id) WHERE provider_event_id IS NOT NULL DO NOTHING",
            self.backend.for_update()
        ))
        .bind(message_id)
        .bind(event)
        .bind(at)
        .bind(provider_event_id)
        .execute(&self.writer)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The message a provider's id or our `Message-ID` names.
    pub async fn message_by_provider_id(
        &self,
        provider_id: &str,
    ) -> StoreResult<Option<MessageId>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM messages WHERE provider_id = $1")
                .bind(provider_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn message_by_rfc_id(&self, rfc_message_id: &str) -> StoreResult<Option<MessageId>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM messages WHERE rfc_message_id = $1")
                .bind(rfc_message_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The envelope of a message, for the unsubscribe and suppression paths.
    pub async fn message_envelope(
        &self,
        id: &MessageId,
    ) -> StoreResult<Option<(Option<CaseId>, Channel, Envelope)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            case_id: Option<CaseId>,
            message_type: String,
            envelope_sealed: Vec<u8>,
        }
        let row = sqlx::query_as::<_, Row>(
            "SELECT case_id, COALESCE(channel, message_type) AS message_type, envelope_sealed FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        self.unlock([&r.envelope_sealed[..]]).await?;
        let envelope = self.open_envelope(id, &r.envelope_sealed)?;
        let Ok(channel) = Channel::parse(&r.message_type) else {
            // A system message that went to no one has no address to act on.
            return Ok(None);
        };
        Ok(Some((r.case_id, channel, envelope)))
    }
}

/// The channel a stored message went by: its type, or a system message's `channel`.
fn delivery_channel(message_type: &str, channel: Option<&str>) -> StoreResult<Option<Channel>> {
    let word = if message_type == MessageType::System.as_str() {
        channel
    } else {
        Some(message_type)
    };
    word.map(Channel::parse)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.0))
}

/// Stores the policy's evidence on messages (`(id, evidence)`), in one statement.
pub(crate) async fn record_evidence(
    conn: &mut AnyConnection,
    backend: super::Backend,
    items: &[(&str, &Evidence)],
) -> StoreResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE messages SET policy_decision = v.d, policy_rule = v.r, policy_checked_at = v.at \
         FROM ({}) v WHERE messages.id = v.id",
        super::batch_rows(
            backend,
            1,
            &[
                ("id", "TEXT"),
                ("d", "TEXT"),
                ("r", "TEXT"),
                ("at", "BIGINT")
            ]
        )
    );
    let rows: Vec<_> = items
        .iter()
        .map(|(id, e)| {
            (
                id,
                e.decision.as_str(),
                e.rule.as_str(),
                crate::domain::time::to_micros(e.checked_at),
            )
        })
        .collect();
    sqlx::query(&sql)
        .bind_batch(super::batch_params(backend, 4, &rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records `event` for a message and moves its status forward (never back; `failed` and
/// `bounced` stay), with the outbox event, inside the caller's transaction. `false` for an
/// unknown message or a provider event id seen before.
pub(crate) async fn apply_event(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    message_id: &MessageId,
    (event, at): (MessageStatus, Micros),
    provider_event_id: Option<&str>,
    detail: Option<&str>,
    now: Micros,
) -> StoreResult<bool> {
    #[derive(sqlx::FromRow)]
    struct Row {
        status: String,
        case_id: Option<CaseId>,
    }
    let row = sqlx::query_as::<_, Row>(&format!(
        "SELECT status, case_id FROM messages WHERE id = $1{}",
        backend.for_update()
    ))
    .bind(message_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let inserted = sqlx::query(
        "INSERT INTO message_events (message_id, event, at, provider_event_id, detail) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (provider_event_id, message_id) WHERE provider_event_id IS NOT NULL DO NOTHING",
    )
    .bind(message_id)
    .bind(event.as_str())
    .bind(at)
    .bind(provider_event_id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    let current = MessageStatus::parse(&row.status).map_err(|e| StoreError::Corrupt(e.0))?;
    let case_id = row.case_id;
    let next = current.advance(event);
    if next != current {
        set_status(
            &mut *conn,
            message_id,
            next,
            detail.filter(|_| next.is_final()),
            now,
        )
        .await?;
    }
    let payload = payload::MessageStatusChanged {
        message_id,
        case_id: case_id.as_ref(),
        event: event.as_str(),
        status: next.as_str(),
        timestamp: rfc3339(at),
    };
    if let Some(event_type) = EventType::for_status(event) {
        emit(&mut *conn, event_type, case_id.as_ref(), &payload, now).await?;
    }
    Ok(true)
}

/// A message handed to its transport, as a batch of outcomes records it.
pub(crate) struct SentMessage<'a> {
    pub id: &'a MessageId,
    pub at: Micros,
    pub provider_id: Option<&'a str>,
    /// The send policy's decision at the moment of sending.
    pub evidence: Option<&'a Evidence>,
}

/// `sent` for a batch of messages: the batch form of [`apply_event`] for an event without a
/// provider event id, in four statements. Each message's row is written once: the time it
/// was sent, the provider's id, the policy's evidence and its status together.
pub(crate) async fn apply_sent_events(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    events: &[SentMessage<'_>],
    now: Micros,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT id, status, case_id FROM messages WHERE id IN ({}){}",
        super::batch_list(backend, 1, "TEXT"),
        backend.for_update()
    );
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rows = sqlx::query_as::<_, SentRow>(&sql)
        .bind(super::list_param(backend, &ids)?)
        .fetch_all(&mut *conn)
        .await?;
    let found: Vec<(&SentRow, &SentMessage<'_>)> = events
        .iter()
        .filter_map(|e| rows.iter().find(|r| *e.id == r.id).map(|r| (r, e)))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO message_events (message_id, event, at) SELECT id, 'sent', at FROM ({}) v",
        super::batch_rows(backend, 1, &[("id", "TEXT"), ("at", "BIGINT")])
    );
    let rows: Vec<_> = found
        .iter()
        .map(|(row, e)| (row.id.as_str(), e.at))
        .collect();
    sqlx::query(&sql)
        .bind_batch(super::batch_params(backend, 2, &rows)?)
        .execute(&mut *conn)
        .await?;

    let mut outbox = Vec::new();
    let mut advanced = Vec::new();
    for (row, e) in &found {
        let current = MessageStatus::parse(&row.status).map_err(|e| StoreError::Corrupt(e.0))?;
        let next = current.advance(MessageStatus::Sent);
        advanced.push(next != current);
        let payload = payload::MessageStatusChanged {
            message_id: &row.id,
            case_id: row.case_id.as_ref(),
            event: MessageStatus::Sent.as_str(),
            status: next.as_str(),
            timestamp: rfc3339(e.at),
        };
        let payload = serde_json::to_string(&payload).map_err(anyhow::Error::from)?;
        outbox.push((row.case_id.as_ref(), payload));
    }
    mark_sent(&mut *conn, backend, &found, &advanced).await?;
    if let Some(event_type) = EventType::for_status(MessageStatus::Sent) {
        super::emit_many(&mut *conn, backend, event_type, &outbox, now).await?;
    }
    Ok(())
}

/// A message's id, status and case, read before its `sent` event is applied.
#[derive(sqlx::FromRow)]
struct SentRow {
    id: MessageId,
    status: String,
    case_id: Option<CaseId>,
}

/// Marks the messages sent in one statement: when, by which provider id, with the policy's
/// evidence at sending, and `sent` where that moves their status forward (`advanced`).
async fn mark_sent(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    found: &[(&SentRow, &SentMessage<'_>)],
    advanced: &[bool],
) -> StoreResult<()> {
    // Status words are this build's own constants, written into the statement.
    let sent = MessageStatus::Sent;
    let sql = format!(
        "UPDATE messages SET sent_at = v.at, provider_id = COALESCE(v.pid, messages.provider_id), \
         status = CASE WHEN v.adv = 1 THEN '{}' ELSE messages.status END, \
         status_rank = CASE WHEN v.adv = 1 THEN {} ELSE messages.status_rank END, \
         updated_at = CASE WHEN v.adv = 1 THEN v.at ELSE messages.updated_at END, \
         policy_decision = COALESCE(v.d, messages.policy_decision), \
         policy_rule = COALESCE(v.r, messages.policy_rule), \
         policy_checked_at = COALESCE(v.pat, messages.policy_checked_at) \
         FROM ({}) v WHERE messages.id = v.id",
        sent.as_str(),
        sent.rank(),
        super::batch_rows(
            backend,
            1,
            &[
                ("id", "TEXT"),
                ("at", "BIGINT"),
                ("pid", "TEXT"),
                ("adv", "INTEGER"),
                ("d", "TEXT"),
                ("r", "TEXT"),
                ("pat", "BIGINT"),
            ]
        )
    );
    let rows: Vec<_> = found
        .iter()
        .zip(advanced)
        .map(|((row, e), advanced)| {
            (
                row.id.as_str(),
                e.at,
                e.provider_id,
                i32::from(*advanced),
                e.evidence.map(|v| v.decision.as_str()),
                e.evidence.map(|v| v.rule.as_str()),
                e.evidence
                    .map(|v| crate::domain::time::to_micros(v.checked_at)),
            )
        })
        .collect();
    sqlx::query(&sql)
        .bind_batch(super::batch_params(backend, 7, &rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn set_status(
    conn: &mut sqlx::AnyConnection,
    message_id: &MessageId,
    status: MessageStatus,
    failure_reason: Option<&str>,
    now: Micros,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET status = $2, status_rank = $3, failure_reason = COALESCE($4, failure_reason), updated_at = $5 WHERE id = $1",
    )
    .bind(message_id)
    .bind(status.as_str())
    .bind(status.rank())
    .bind(failure_reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A message ready to be queued: sealed and indexed beforehand, so that writing a batch
/// needs no keys and a batch run again writes the same values.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    access: Access,
    /// Its thread, if this process knows it already.
    known_thread: Option<String>,
    threads: std::sync::Arc<super::threads::KnownThreads>,
    /// The sending party; `None` for a system message.
    party_id: Option<String>,
    actor_name: String,
    admin: i64,
    idempotency: Option<IdempotencyRecord>,
    envelope_sealed: Vec<u8>,
    subject_sealed: Option<Vec<u8>>,
    body_sealed: Vec<u8>,
    html_sealed: Option<Vec<u8>>,
    recipient_index: Option<String>,
    subject_index: String,
    /// Its envelope's participants, for the thread it joins.
    participants: Vec<super::threads::NewParticipant>,
    /// The thread to open if the message starts one, with its sealed subject.
    new_thread: String,
    new_thread_subject: Option<Vec<u8>>,
    job_id: String,
    now: Micros,
    new: NewMessage,
}

impl QueueItem {
    fn view(&self, thread_id: ThreadId) -> MessageView {
        let new = self.new.clone();
        MessageView {
            id: new.id,
            case_id: Some(new.case_id),
            thread_id: Some(thread_id),
            direction: Direction::Outbound,
            message_type: new.message_type,
            channel: new.channel,
            event: new.system.as_ref().map(|(e, _)| *e),
            status: new.status,
            priority: new.priority,
            category: new.category,
            template_id: new.template_id,
            language: new.language,
            sent_by: Some(self.actor_name.clone()),
            envelope: new.envelope,
            subject: new.subject,
            body: Some(new.body),
            html: new.html,
            rfc_message_id: new.rfc_message_id,
            in_reply_to: new.in_reply_to,
            provider_id: None,
            segments: new.segments,
            has_attachments: !new.attachments.is_empty(),
            attachments: new.attachments,
            failure_reason: None,
            scheduled_for: new.scheduled_for,
            sent_at: (new.status == MessageStatus::Sent).then_some(self.now),
            received_at: None,
            created_at: self.now,
            sender_verified: true,
            authentication: None,
            spam: None,
            carried_by: None,
            crm_activities: Vec::new(),
            understanding: None,
        }
    }
}

/// Whether a message's case was checked to be the sender's before it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller read the case as the actor's within the same request (a send reads it
    /// with the facts its policy decides on): checking it again a moment later would
    /// decide nothing more.
    Checked,
    /// The batch reads it before writing.
    ToCheck,
}

/// The batch writer of queued messages (a [`super::pipeline::Batcher`]).
pub(crate) fn queue_batch<'c>(
    conn: &'c mut AnyConnection,
    backend: super::Backend,
    items: &'c [QueueItem],
) -> BoxFuture<'c, StoreResult<Vec<Queued>>> {
    Box::pin(queue_all(conn, backend, items))
}

/// Writes a batch of sends. One statement first reads what decides whether each item
/// writes at all (its case visible, its system message not made already) and the threads
/// they join; then the idempotency keys are taken and missing threads opened; then the
/// messages, events, jobs and audit entries of all of them are written.
///
/// On PostgreSQL, a batch with no key to take and no thread to open writes with a single
/// statement, which commits on its own: no transaction to open and close around it.
async fn queue_all(
    conn: &mut AnyConnection,
    backend: super::Backend,
    items: &[QueueItem],
) -> StoreResult<Vec<Queued>> {
    // Nothing to read when every item's case was checked by its request and its thread is
    // known: a batch of ordinary sends on a thread is then one statement.
    let known = items.iter().all(|item| {
        item.access == Access::Checked
            && item.known_thread.is_some()
            && item.new.system.is_none()
            && item.new.in_reply_to.is_none()
    });
    let found = if known {
        Lookup::known(items)
    } else {
        Lookup::read(&mut *conn, backend, items).await?
    };
    let mut outcomes: Vec<Option<Queued>> = items.iter().map(|_| None).collect();
    for (i, (item, outcome)) in items.iter().zip(outcomes.iter_mut()).enumerate() {
        if !found.visible(item) {
            *outcome = Some(Queued::NoCase);
            continue;
        }
        // A system message answers one occurrence of its event: one that exists already,
        // or comes earlier in this batch, is not written again (a retried or repeated job).
        if let Some((_, key)) = &item.new.system {
            let earlier = items[..i]
                .iter()
                .any(|other| other.new.system.as_ref().is_some_and(|(_, k)| k == key));
            if earlier || found.system_message(key) {
                *outcome = Some(Queued::KeyTaken);
            }
        }
    }
    let keyed = items
        .iter()
        .zip(&outcomes)
        .any(|(item, outcome)| item.idempotency.is_some() && outcome.is_none());
    let opening = items
        .iter()
        .zip(&outcomes)
        .any(|(item, outcome)| outcome.is_none() && found.thread(item).is_none());
    let going: Vec<&QueueItem> = items
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(item, _)| item)
        .collect();
    let statements = chunks(&going, backend).len();
    if backend == super::Backend::Postgres && !keyed && !opening && statements <= 1 {
        return write_queued(conn, backend, items, outcomes, found).await;
    }
    let mut tx = super::pipeline::begin(conn, backend).await?;
    let outputs = write_queued(&mut tx, backend, items, outcomes, found).await?;
    tx.commit().await?;
    Ok(outputs)
}

/// The items written by each statement: on SQLite 30 at a time, far below every bound on
/// parameters; on PostgreSQL as many as fit in a statement's 65,535 values with room to
/// spare (one statement for any batch of ordinary sends).
fn chunks(items: &[&QueueItem], backend: super::Backend) -> Vec<std::ops::Range<usize>> {
    let budget = match backend {
        super::Backend::Sqlite => 30,
        super::Backend::Postgres => 30_000,
    };
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut values = 0;
    for (i, item) in items.iter().enumerate() {
        let these = match backend {
            super::Backend::Sqlite => 1,
            // Message (31), event (3), job (7) and audit entry (6), then participants and
            // attachments.
            super::Backend::Postgres => {
                47 + 5 * item.participants.len() + 3 * item.new.attachments.len()
            }
        };
        if i > start && values + these > budget {
            ranges.push(start..i);
            start = i;
            values = 0;
        }
        values += these;
    }
    if start < items.len() {
        ranges.push(start..items.len());
    }
    ranges
}

/// What a batch of sends reads before it writes, in one statement.
#[derive(Default)]
struct Lookup {
    /// Per (case, party, admin): whether the case is visible.
    visible: std::collections::HashMap<(CaseId, String, i64), bool>,
    /// Per (case, subject index): the case's thread of that subject.
    threads: std::collections::HashMap<(CaseId, String), String>,
    /// Per parent `Message-ID`: the thread of a reply's parent.
    parents: std::collections::HashMap<String, String>,
    /// System keys of messages made already.
    system: std::collections::HashSet<String>,
}

#[derive(sqlx::FromRow)]
struct LookupRow {
    kind: String,
    n: i64,
    found: Option<String>,
}

/// What a batch asks of the database, each question once.
#[derive(Default)]
struct Asked<'a> {
    /// (case, party, admin): may the party see the case?
    cases: Vec<(&'a CaseId, &'a str, i64)>,
    /// (case, subject index): the case's thread of that subject.
    subjects: Vec<(&'a CaseId, &'a str)>,
    /// Parents' `Message-ID`s: their threads.
    parents: Vec<&'a str>,
    /// System keys: made already?
    system: Vec<&'a str>,
}

impl<'a> Asked<'a> {
    fn of(items: &'a [QueueItem]) -> Self {
        let mut asked = Self::default();
        let Self {
            cases,
            subjects,
            parents,
            system,
        } = &mut asked;
        for item in items {
            let case = (
                &item.new.case_id,
                item.party_id.as_deref().unwrap_or(""),
                item.admin,
            );
            if !cases.contains(&case) {
                cases.push(case);
            }
            let subject = (&item.new.case_id, item.subject_index.as_str());
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
            if let Some(parent) = item.new.in_reply_to.as_deref()
                && !parents.contains(&parent)
            {
                parents.push(parent);
            }
            if let Some((_, key)) = &item.new.system
                && !system.contains(&key.as_str())
            {
                system.push(key);
            }
        }
        asked
    }
}

/// The padded widths of the look-up's `VALUES` tables: cases, subjects, parents, system
/// keys (the last two absent when nothing asks them).
struct Widths(usize, usize, Option<usize>, Option<usize>);

/// The look-up's statement. Each kind of look-up is a `VALUES` table of what the items ask,
/// joined to what answers it: one statement of a few parts however many items, with no
/// bound on a compound select's terms (SQLite's is 500) and few shapes for PostgreSQL to plan
/// (each table padded to a power of two with rows that match nothing).
fn lookup_sql(asked: &Asked<'_>, backend: super::Backend) -> (String, Widths) {
    let mut tables = Vec::new();
    let mut selects = Vec::new();
    let mut first = 1;
    let mut table = |name: &str, columns: &[(&str, &str)], rows: usize| {
        let width = rows.next_power_of_two();
        let (names, types): (Vec<&str>, Vec<&str>) = columns.iter().copied().unzip();
        tables.push(format!(
            "{name} ({}) AS (VALUES {})",
            names.join(", "),
            super::cast_rows(width, &types, first)
        ));
        first += width * columns.len();
        width
    };
    let widths = Widths(
        table(
            "v",
            &[
                ("n", "BIGINT"),
                ("case_id", "TEXT"),
                ("party_id", "TEXT"),
                ("admin", "BIGINT"),
            ],
            asked.cases.len(),
        ),
        table(
            "t",
            &[
                ("n", "BIGINT"),
                ("case_id", "TEXT"),
                ("subject_index", "TEXT"),
            ],
            asked.subjects.len(),
        ),
        (!asked.parents.is_empty()).then(|| {
            table(
                "p",
                &[("n", "BIGINT"), ("rfc_id", "TEXT")],
                asked.parents.len(),
            )
        }),
        (!asked.system.is_empty()).then(|| {
            table(
                "s",
                &[("n", "BIGINT"), ("system_key", "TEXT")],
                asked.system.len(),
            )
        }),
    );
    selects.push(
        "SELECT 'case' AS kind, v.n AS n, c.id AS found FROM v JOIN cases c ON c.id = v.case_id \
         AND (c.creditor_id = v.party_id OR c.partner_id = v.party_id OR v.admin = 1)",
    );
    selects.push(
        "SELECT 'thread', t.n, th.id FROM t JOIN threads th \
         ON th.case_id = t.case_id AND th.subject_index = t.subject_index",
    );
    if widths.2.is_some() {
        selects.push(
            "SELECT 'parent', p.n, m.thread_id FROM p JOIN messages m \
             ON m.rfc_message_id = p.rfc_id AND m.case_id IS NOT NULL",
        );
    }
    if widths.3.is_some() {
        selects.push(
            "SELECT 'system', s.n, m.id FROM s JOIN messages m ON m.system_key = s.system_key",
        );
    }
    let sql = format!("WITH {} {}", tables.join(", "), selects.join(" UNION ALL "));
    let sql = super::positional(sql, backend);
    (sql, widths)
}

impl Lookup {
    async fn read(
        conn: &mut AnyConnection,
        backend: super::Backend,
        items: &[QueueItem],
    ) -> StoreResult<Self> {
        let mut found = Self::default();
        if items.is_empty() {
            return Ok(found);
        }
        let asked = Asked::of(items);
        let (sql, widths) = lookup_sql(&asked, backend);
        let n = |i: usize| Some(i64::try_from(i).unwrap_or(i64::MAX));
        let mut q = sqlx::query_as::<_, LookupRow>(&sql);
        for i in 0..widths.0 {
            let case = asked.cases.get(i).copied();
            q = q
                .bind(case.and(n(i)))
                .bind(case.map(|c| c.0))
                .bind(case.map(|c| c.1))
                .bind(case.map(|c| c.2));
        }
        for i in 0..widths.1 {
            let (case, subject) = asked.subjects.get(i).copied().unzip();
            q = q.bind(case.and(n(i))).bind(case).bind(subject);
        }
        for i in 0..widths.2.unwrap_or(0) {
            let parent = asked.parents.get(i).copied();
            q = q.bind(parent.and(n(i))).bind(parent);
        }
        for i in 0..widths.3.unwrap_or(0) {
            let key = asked.system.get(i).copied();
            q = q.bind(key.and(n(i))).bind(key);
        }
        for row in q.fetch_all(&mut *conn).await? {
            found.keep(row, &asked, items);
        }
        Ok(found)
    }

    /// One answer of the look-up, kept by its kind.
    fn keep(&mut self, row: LookupRow, asked: &Asked<'_>, items: &[QueueItem]) {
        let i = usize::try_from(row.n).unwrap_or(usize::MAX);
        match row.kind.as_str() {
            "case" => {
                if let Some((case, party, admin)) = asked.cases.get(i) {
                    self.visible
                        .insert((**case, party.to_string(), *admin), row.found.is_some());
                }
            }
            "thread" => {
                if let (Some((case, subject)), Some(thread)) = (asked.subjects.get(i), row.found) {
                    items[0]
                        .threads
                        .keep((**case, subject.to_string()), thread.clone());
                    self.threads.insert((**case, subject.to_string()), thread);
                }
            }
            "parent" => {
                if let (Some(parent), Some(thread)) = (asked.parents.get(i), row.found) {
                    self.parents.insert(parent.to_string(), thread);
                }
            }
            _ => {
                if let (Some(key), Some(_)) = (asked.system.get(i), row.found) {
                    self.system.insert(key.to_string());
                }
            }
        }
    }

    /// What the items know already: each case checked by its request, each thread known.
    fn known(items: &[QueueItem]) -> Self {
        let mut found = Self::default();
        for item in items {
            found.visible.insert(
                (
                    item.new.case_id,
                    item.party_id.clone().unwrap_or_default(),
                    item.admin,
                ),
                true,
            );
            if let Some(thread) = &item.known_thread {
                found.threads.insert(
                    (item.new.case_id, item.subject_index.clone()),
                    thread.clone(),
                );
            }
        }
        found
    }

    fn visible(&self, item: &QueueItem) -> bool {
        let key = (
            item.new.case_id,
            item.party_id.clone().unwrap_or_default(),
            item.admin,
        );
        self.visible.get(&key).copied().unwrap_or(false)
    }

    fn system_message(&self, key: &str) -> bool {
        self.system.contains(key)
    }

    /// The thread an item joins: its parent's for a reply, else its case's thread of its
    /// subject, if either exists.
    fn thread(&self, item: &QueueItem) -> Option<&str> {
        item.new
            .in_reply_to
            .as_deref()
            .and_then(|parent| self.parents.get(parent))
            .or_else(|| {
                self.threads
                    .get(&(item.new.case_id, item.subject_index.clone()))
            })
            .map(String::as_str)
    }
}

/// Takes the idempotency keys of the items still going, in one statement: a key taken by
/// an earlier request (within the time keys are kept), or by an item earlier in this batch,
/// means its item writes nothing.
async fn take_keys(
    conn: &mut AnyConnection,
    backend: super::Backend,
    items: &[QueueItem],
    outcomes: &mut [Option<Queued>],
) -> StoreResult<()> {
    let mut taking: Vec<(usize, &QueueItem, &IdempotencyRecord)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (Some(idem), None) = (&item.idempotency, &outcomes[i]) else {
            continue;
        };
        let twice = taking
            .iter()
            .any(|(_, other, k)| other.party_id == item.party_id && k.key == idem.key);
        if twice {
            outcomes[i] = Some(Queued::KeyTaken);
        } else {
            taking.push((i, item, idem));
        }
    }
    if taking.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO idempotency_keys (party_id, idem_key, request_hash, result, created_at) VALUES {} \
         ON CONFLICT (party_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, \
         result = excluded.result, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at < excluded.created_at - {} \
         RETURNING party_id, idem_key",
        rows_sql(taking.len(), &["", "", "", "", ""]),
        super::idempotency::KEEP_MICROS
    );
    let sql = super::positional(sql, backend);
    let mut q = sqlx::query_as::<_, (Option<String>, String)>(&sql);
    for (_, item, idem) in &taking {
        q = q
            .bind(item.party_id.as_deref())
            .bind(idem.key.as_str())
            .bind(idem.request_hash.as_str())
            .bind(item.new.id.as_str())
            .bind(item.now);
    }
    let taken = q.fetch_all(&mut *conn).await?;
    for (i, item, idem) in taking {
        let stored = taken
            .iter()
            .any(|(party, key)| *party == item.party_id && *key == idem.key);
        if !stored {
            outcomes[i] = Some(Queued::KeyTaken);
        }
    }
    Ok(())
}

/// Takes the idempotency keys, opens the threads missing and writes the items that go,
/// inside the caller's transaction when any of that is to do.
async fn write_queued(
    conn: &mut AnyConnection,
    backend: super::Backend,
    items: &[QueueItem],
    mut outcomes: Vec<Option<Queued>>,
    mut found: Lookup,
) -> StoreResult<Vec<Queued>> {
    // Idempotency keys: a key taken (by an earlier request, or earlier in this batch) means
    // this item writes nothing.
    take_keys(&mut *conn, backend, items, &mut outcomes).await?;
    open_threads(&mut *conn, items, &outcomes, &mut found).await?;
    let thread_of = threads_of(items, &outcomes, &found)?;
    let going: Vec<(usize, &QueueItem, &str)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| thread_of[i].as_deref().map(|t| (i, item, t)))
        .collect();
    let all: Vec<&QueueItem> = going.iter().map(|(_, item, _)| *item).collect();
    for range in chunks(&all, backend) {
        let chunk = &going[range];
        // One round trip for all of the chunk's rows on PostgreSQL.
        let mut writes = super::writes::Writes::new(backend);
        add_messages(&mut writes, chunk);
        add_events(&mut writes, chunk);
        add_participants(&mut writes, chunk);
        add_attachments(&mut writes, chunk);
        add_jobs(&mut writes, chunk);
        add_audit(&mut writes, chunk);
        writes.run(&mut *conn).await?;
    }
    for (i, item, thread) in going {
        outcomes[i] = Some(Queued::Created(Box::new(
            item.view(ThreadId::from_stored(thread.to_string())),
        )));
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Queued::NoCase))
        .collect())
}

/// Opens the threads the batch's new messages need and finds none of: each by the first
/// message that needs it (another transaction may open the same one first: then that one is
/// found).
async fn open_threads(
    conn: &mut AnyConnection,
    items: &[QueueItem],
    outcomes: &[Option<Queued>],
    found: &mut Lookup,
) -> StoreResult<()> {
    let mut opening: Vec<&QueueItem> = Vec::new();
    for (item, outcome) in items.iter().zip(outcomes) {
        if outcome.is_none()
            && found.thread(item).is_none()
            && !opening
                .iter()
                .any(|o| o.new.case_id == item.new.case_id && o.subject_index == item.subject_index)
        {
            opening.push(item);
        }
    }
    if opening.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO threads (id, case_id, subject_sealed, subject_index, status, created_at, participants_kept) \
         VALUES {} ON CONFLICT (case_id, subject_index) DO NOTHING",
        rows_sql(opening.len(), &["", "", "", "", "'active'", "", "1"])
    );
    let mut q = sqlx::query(&sql);
    for item in &opening {
        q = q
            .bind(&item.new_thread)
            .bind(item.new.case_id)
            .bind(item.new_thread_subject.as_deref())
            .bind(&item.subject_index)
            .bind(item.now);
    }
    q.execute(&mut *conn).await?;
    let selects: Vec<String> = (0..opening.len())
        .map(|i| {
            format!(
                "SELECT case_id, subject_index, id FROM threads WHERE case_id = ${} AND subject_index = ${}",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect();
    let sql = selects.join(" UNION ALL ");
    let mut q = sqlx::query_as::<_, (CaseId, String, String)>(&sql);
    for item in &opening {
        q = q.bind(item.new.case_id).bind(&item.subject_index);
    }
    for (case, subject, thread) in q.fetch_all(&mut *conn).await? {
        found.threads.insert((case, subject), thread);
    }
    Ok(())
}

/// The thread of each item that writes a message (`None` for one already answered).
fn threads_of(
    items: &[QueueItem],
    outcomes: &[Option<Queued>],
    found: &Lookup,
) -> StoreResult<Vec<Option<String>>> {
    let mut thread_of: Vec<Option<String>> = Vec::with_capacity(items.len());
    for (item, outcome) in items.iter().zip(outcomes) {
        thread_of.push(match outcome {
            None => Some(found.thread(item).map(str::to_string).ok_or_else(|| {
                StoreError::Internal(anyhow::anyhow!("a thread opened was not found"))
            })?),
            Some(_) => None,
        });
    }
    Ok(thread_of)
}

/// The chunk's messages.
fn add_messages<'q>(
    writes: &mut super::writes::Writes<'q>,
    chunk: &[(usize, &'q QueueItem, &'q str)],
) {
    // Thirty-two values a row, the direction written in.
    let mut shape = [""; 32];
    shape[2] = "'outbound'";
    let sql = format!(
        "INSERT INTO messages (id, case_id, direction, message_type, status, status_rank, priority, category, \
         template_id, language, party_id, sent_by, envelope_sealed, subject_sealed, body_sealed, html_sealed, \
         rfc_message_id, in_reply_to, segments, scheduled_for, created_at, updated_at, thread_id, recipient_index, \
         channel, system_event, system_key, policy_decision, policy_rule, policy_checked_at, sent_at, has_attachments) \
         VALUES {}",
        rows_sql(chunk.len(), &shape)
    );
    let mut values = writes.add(&sql);
    for (_, item, thread) in chunk {
        let new = &item.new;
        let evidence = new.evidence.as_ref();
        values
            .bind(new.id.as_str())
            .bind(new.case_id)
            .bind(new.message_type.as_str())
            .bind(new.status.as_str())
            .bind(new.status.rank())
            .bind(new.priority.as_str())
            .bind(new.category.as_str())
            .bind(new.template_id.as_deref())
            .bind(new.language.as_deref())
            .bind(item.party_id.as_deref())
            .bind(item.actor_name.as_str())
            .bind(item.envelope_sealed.as_slice())
            .bind(item.subject_sealed.as_deref())
            .bind(item.body_sealed.as_slice())
            .bind(item.html_sealed.as_deref())
            .bind(new.rfc_message_id.as_deref())
            .bind(new.in_reply_to.as_deref())
            .bind(new.segments.and_then(|s| i32::try_from(s).ok()))
            .bind(new.scheduled_for)
            .bind(item.now)
            .bind(item.now)
            .bind(*thread)
            .bind(item.recipient_index.as_deref())
            .bind(new.channel.map(Channel::as_str))
            .bind(new.system.as_ref().map(|(e, _)| e.as_str()))
            .bind(new.system.as_ref().map(|(_, k)| k.as_str()))
            .bind(evidence.map(|e| e.decision.as_str()))
            .bind(evidence.map(|e| e.rule.as_str()))
            .bind(evidence.map(|e| crate::domain::time::to_micros(e.checked_at)))
            .bind((new.status == MessageStatus::Sent).then_some(item.now))
            .bind(i32::from(!new.attachments.is_empty()));
    }
}

/// Each message's first event: its status.
fn add_events<'q>(
    writes: &mut super::writes::Writes<'q>,
    chunk: &[(usize, &'q QueueItem, &'q str)],
) {
    let sql = format!(
        "INSERT INTO message_events (message_id, event, at) VALUES {}",
        rows_sql(chunk.len(), &["", "", ""])
    );
    let mut values = writes.add(&sql);
    for (_, item, _) in chunk {
        values
            .bind(item.new.id.as_str())
            .bind(item.new.status.as_str())
            .bind(item.now);
    }
}

/// The senders and recipients each message makes participants of its thread.
fn add_participants<'q>(
    writes: &mut super::writes::Writes<'q>,
    chunk: &[(usize, &'q QueueItem, &'q str)],
) {
    let joined: Vec<(&str, &super::threads::NewParticipant, Micros)> = chunk
        .iter()
        .flat_map(|(_, item, thread)| {
            item.participants
                .iter()
                .map(move |p| (*thread, p, item.now))
        })
        .collect();
    Messages::keep_participants(writes, &joined);
}

/// The documents each message attaches.
fn add_attachments<'q>(
    writes: &mut super::writes::Writes<'q>,
    chunk: &[(usize, &'q QueueItem, &'q str)],
) {
    let attached: Vec<(&str, usize, &str)> = chunk
        .iter()
        .flat_map(|(_, item, _)| {
            item.new
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| (item.new.id.as_str(), i, a.document_id.as_str()))
        })
        .collect();
    for part in attached.chunks(100) {
        let sql = format!(
            "INSERT INTO message_attachments (message_id, ordinal, document_id) VALUES {}",
            rows_sql(part.len(), &["", "", ""])
        );
        let mut values = writes.add(&sql);
        for (message, position, document) in part {
            values
                .bind(*message)
                .bind(i32::try_from(*position).unwrap_or(i32::MAX))
                .bind(*document);
        }
    }
}

/// A delivery job for each queued message (only a queued message has a delivery to make).
fn add_jobs<'q>(writes: &mut super::writes::Writes<'q>, chunk: &[(usize, &'q QueueItem, &'q str)]) {
    let queued: Vec<_> = chunk
        .iter()
        .filter(|(_, item, _)| item.new.status == MessageStatus::Queued)
        .collect();

    let sql = format!(
        "INSERT INTO jobs (id, kind, ref_id, priority, status, run_at, attempts, created_at, updated_at, trace_parent) VALUES {}",
        rows_sql(
            queued.len(),
            &[
                "",
                "'deliver_message'",
                "",
                "",
                "'pending'",
                "",
                "0",
                "",
                "",
                ""
            ]
        )
    );
    if !queued.is_empty() {
        let mut values = writes.add(&sql);
        for (_, item, _) in &queued {
            values
                .bind(item.job_id.as_str())
                .bind(item.new.id.as_str())
                .bind(item.new.priority.rank())
                .bind(item.new.run_at)
                .bind(item.now)
                .bind(item.now)
                .bind(item.new.trace_parent.as_deref());
        }
    }
}

/// The audit entry of each message.
fn add_audit<'q>(
    writes: &mut super::writes::Writes<'q>,
    chunk: &[(usize, &'q QueueItem, &'q str)],
) {
    let sql = format!(
        "INSERT INTO audit_log (case_id, actor_party_id, actor_name, action, target_type, target_id, at) VALUES {}",
        rows_sql(chunk.len(), &["", "", "", "", "'message'", "", ""])
    );
    let mut values = writes.add(&sql);
    for (_, item, _) in chunk {
        values
            .bind(item.new.case_id)
            .bind(item.party_id.as_deref())
            .bind(item.actor_name.as_str())
            .bind(
                if item.new.system.is_some() {
                    AuditAction::SystemMessageCreated
                } else {
                    AuditAction::MessageQueued
                }
                .as_str(),
            )
            .bind(item.new.id.as_str())
            .bind(item.now);
    }
}

impl StoreInner {
    /// A message read with its body, opened.
    pub(crate) fn message_with_body(&self, row: MessageWithBody) -> StoreResult<MessageView> {
        let mut m = self.message_from_row(row.message)?;
        m.body = self.open_opt(&m.id, "body", row.body_sealed)?;
        m.html = self.open_opt(&m.id, "html", row.html_sealed)?;
        Ok(m)
    }
}
