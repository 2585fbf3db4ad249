//! Messages: queueing (message, `queued` event, delivery job, audit entry and idempotency
//! record in one transaction), reading, and status events.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::cases::{page_cursor, visible};
use super::{Page, Store, StoreError, StoreResult, admin_flag, audit, decode_cursor, emit};
use crate::domain::message::{Category, Channel, MessageStatus, Priority};
use crate::domain::party::Actor;
use crate::domain::time::{Micros, now_micros, rfc3339};

/// Who a message is from and to. Personal data: sealed at rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
}

pub struct NewMessage {
    pub id: String,
    pub case_id: String,
    pub channel: Channel,
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
}

/// The idempotency record written with a new message.
pub struct IdempotencyRecord<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
}

#[derive(Debug, Clone)]
pub struct MessageView {
    pub id: String,
    pub case_id: Option<String>,
    pub thread_id: Option<String>,
    pub direction: String,
    pub channel: String,
    pub status: String,
    pub priority: String,
    pub category: String,
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
    pub failure_reason: Option<String>,
    pub scheduled_for: Option<Micros>,
    pub sent_at: Option<Micros>,
    pub received_at: Option<Micros>,
    pub created_at: Micros,
}

pub struct MessageFilter {
    pub channel: Option<Channel>,
    pub direction: Option<String>,
    pub status: Option<MessageStatus>,
    pub date_from: Option<Micros>,
    pub date_to: Option<Micros>,
    pub cursor: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub event: String,
    pub at: Micros,
}

pub(crate) fn context(id: &str, part: &str) -> String {
    format!("msg:{id}:{part}")
}

const MESSAGE_COLUMNS: &str = "m.id, m.case_id, m.thread_id, m.direction, m.message_type, m.status, m.priority, m.category, \
     m.template_id, m.language, m.sent_by, m.envelope_sealed, m.subject_sealed, m.rfc_message_id, m.in_reply_to, \
     m.provider_id, m.segments, m.has_attachments, m.failure_reason, m.scheduled_for, m.sent_at, m.received_at, m.created_at";

impl Store {
    pub(crate) fn open_envelope(&self, id: &str, sealed: &[u8]) -> StoreResult<Envelope> {
        let json = self
            .keys
            .open(&context(id, "envelope"), sealed)
            .map_err(anyhow::Error::from)?;
        Ok(serde_json::from_slice(&json).map_err(anyhow::Error::from)?)
    }

    pub(crate) fn open_opt(
        &self,
        id: &str,
        part: &str,
        sealed: Option<Vec<u8>>,
    ) -> StoreResult<Option<String>> {
        sealed
            .map(|s| self.keys.open_string(&context(id, part), &s))
            .transpose()
            .map_err(StoreError::from)
    }

    fn message_from_row(&self, r: &AnyRow) -> StoreResult<MessageView> {
        let id: String = r.try_get("id")?;
        let envelope_sealed: Vec<u8> = r.try_get("envelope_sealed")?;
        let envelope = self.open_envelope(&id, &envelope_sealed)?;
        Ok(MessageView {
            subject: self.open_opt(&id, "subject", r.try_get("subject_sealed")?)?,
            case_id: r.try_get("case_id")?,
            thread_id: r.try_get("thread_id")?,
            direction: r.try_get("direction")?,
            channel: r.try_get("message_type")?,
            status: r.try_get("status")?,
            priority: r.try_get("priority")?,
            category: r.try_get("category")?,
            template_id: r.try_get("template_id")?,
            language: r.try_get("language")?,
            sent_by: r.try_get("sent_by")?,
            envelope,
            body: None,
            html: None,
            rfc_message_id: r.try_get("rfc_message_id")?,
            in_reply_to: r.try_get("in_reply_to")?,
            provider_id: r.try_get("provider_id")?,
            segments: r.try_get::<Option<i32>, _>("segments")?.map(i64::from),
            has_attachments: r.try_get::<i32, _>("has_attachments")? != 0,
            failure_reason: r.try_get("failure_reason")?,
            scheduled_for: r.try_get("scheduled_for")?,
            sent_at: r.try_get("sent_at")?,
            received_at: r.try_get("received_at")?,
            created_at: r.try_get("created_at")?,
            id,
        })
    }

    /// Queues an outbound message. `respond` renders the API response, which is stored with
    /// the idempotency key (when there is one) in the same transaction. `None`: the case is
    /// not visible to the actor.
    pub async fn queue_message(
        &self,
        actor: &Actor,
        new: NewMessage,
        idempotency: Option<IdempotencyRecord<'_>>,
        respond: impl FnOnce(&MessageView) -> String,
    ) -> StoreResult<Option<(MessageView, String)>> {
        let mut tx = self.write_tx().await?;
        if !Self::case_visible(&mut tx, actor, &new.case_id, "").await? {
            return Ok(None);
        }
        let now = now_micros();
        let id = new.id.as_str();
        let envelope = serde_json::to_vec(&new.envelope).map_err(anyhow::Error::from)?;
        let parent_thread = match new.in_reply_to.as_deref() {
            Some(parent) => Self::message_by_rfc_id_in(&mut tx, parent)
                .await?
                .and_then(|(_, _, thread)| thread),
            None => None,
        };
        let thread_id = self
            .join_thread(
                &mut tx,
                &new.case_id,
                parent_thread,
                new.subject.as_deref(),
                now,
            )
            .await?;
        sqlx::query(
            "INSERT INTO messages (id, case_id, direction, message_type, status, status_rank, priority, category, template_id, \
             language, party_id, sent_by, envelope_sealed, subject_sealed, body_sealed, html_sealed, rfc_message_id, in_reply_to, \
             segments, scheduled_for, created_at, updated_at, thread_id) \
             VALUES ($1, $2, 'outbound', $3, 'queued', 0, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18, $19)",
        )
        .bind(id)
        .bind(&new.case_id)
        .bind(new.channel.as_str())
        .bind(new.priority.as_str())
        .bind(new.category.as_str())
        .bind(new.template_id.as_deref())
        .bind(new.language.as_deref())
        .bind(actor.party_id.as_str())
        .bind(&actor.name)
        .bind(self.keys.seal(&context(id, "envelope"), &envelope))
        .bind(new.subject.as_deref().map(|s| self.keys.seal_str(&context(id, "subject"), s)))
        .bind(self.keys.seal_str(&context(id, "body"), &new.body))
        .bind(new.html.as_deref().map(|h| self.keys.seal_str(&context(id, "html"), h)))
        .bind(new.rfc_message_id.as_deref())
        .bind(new.in_reply_to.as_deref())
        .bind(new.segments.and_then(|s| i32::try_from(s).ok()))
        .bind(new.scheduled_for)
        .bind(now)
        .bind(&thread_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO message_events (message_id, event, at) VALUES ($1, 'queued', $2)")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, ref_id, priority, status, run_at, attempts, created_at, updated_at) \
             VALUES ($1, 'deliver_message', $2, $3, 'pending', $4, 0, $5, $5)",
        )
        .bind(crate::domain::prefixed_id("job"))
        .bind(id)
        .bind(new.priority.rank())
        .bind(new.run_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(&new.case_id),
            actor,
            "message.queued",
            "message",
            id,
        )
        .await?;
        let view = MessageView {
            id: new.id.clone(),
            case_id: Some(new.case_id.clone()),
            thread_id: Some(thread_id),
            direction: "outbound".into(),
            channel: new.channel.as_str().into(),
            status: MessageStatus::Queued.as_str().into(),
            priority: new.priority.as_str().into(),
            category: new.category.as_str().into(),
            template_id: new.template_id,
            language: new.language,
            sent_by: Some(actor.name.clone()),
            envelope: new.envelope,
            subject: new.subject,
            body: Some(new.body),
            html: new.html,
            rfc_message_id: new.rfc_message_id,
            in_reply_to: new.in_reply_to,
            provider_id: None,
            segments: new.segments,
            has_attachments: false,
            failure_reason: None,
            scheduled_for: new.scheduled_for,
            sent_at: None,
            received_at: None,
            created_at: now,
        };
        let response = respond(&view);
        if let Some(idem) = idempotency {
            let cutoff = now - super::idempotency::KEEP_MICROS;
            let stored = sqlx::query(
                "INSERT INTO idempotency_keys (party_id, idem_key, request_hash, response_status, response_body, created_at) \
                 VALUES ($1, $2, $3, 201, $4, $5) \
                 ON CONFLICT (party_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, \
                 response_status = excluded.response_status, response_body = excluded.response_body, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at < $6",
            )
            .bind(actor.party_id.as_str())
            .bind(idem.key)
            .bind(idem.request_hash)
            .bind(&response)
            .bind(now)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            if stored.rows_affected() == 0 {
                // A concurrent request with the same key committed first; this one sends nothing.
                return Err(StoreError::Conflict("idempotency_race"));
            }
        }
        tx.commit().await?;
        Ok(Some((view, response)))
    }

    /// One message with its body, if the actor may see its case.
    pub async fn get_message(&self, actor: &Actor, id: &str) -> StoreResult<Option<MessageView>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS}, m.body_sealed, m.html_sealed FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut m = self.message_from_row(&row)?;
        m.body = self.open_opt(id, "body", row.try_get("body_sealed")?)?;
        m.html = self.open_opt(id, "html", row.try_get("html_sealed")?)?;
        Ok(Some(m))
    }

    pub async fn list_messages(
        &self,
        actor: &Actor,
        case_id: &str,
        f: MessageFilter,
    ) -> StoreResult<Option<(Page<MessageView>, i64)>> {
        let mut conn = self.pool.acquire().await?;
        if !Self::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let cursor = f.cursor.as_deref().map(decode_cursor).transpose()?;
        let conditions = "m.case_id = $1 AND ($2 IS NULL OR m.message_type = $2) AND ($3 IS NULL OR m.direction = $3) \
             AND ($4 IS NULL OR m.status = $4) AND ($5 IS NULL OR m.created_at >= $5) AND ($6 IS NULL OR m.created_at <= $6)";
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {conditions} AND ($7 IS NULL OR m.id < $7) ORDER BY m.id DESC LIMIT $8"
        ))
        .bind(case_id)
        .bind(f.channel.map(Channel::as_str))
        .bind(f.direction.as_deref())
        .bind(f.status.map(MessageStatus::as_str))
        .bind(f.date_from)
        .bind(f.date_to)
        .bind(cursor.as_deref())
        .bind(f.limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM messages m WHERE {conditions}"
        ))
        .bind(case_id)
        .bind(f.channel.map(Channel::as_str))
        .bind(f.direction.as_deref())
        .bind(f.status.map(MessageStatus::as_str))
        .bind(f.date_from)
        .bind(f.date_to)
        .fetch_one(&mut *conn)
        .await?;
        let mut items = rows
            .iter()
            .map(|r| self.message_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = page_cursor(&mut items, f.limit, |m| &m.id);
        Ok(Some((Page { items, next_cursor }, total)))
    }

    /// The status and every recorded event of a message the actor may see, oldest first.
    pub async fn delivery_report(
        &self,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<Option<(String, Vec<StatusEvent>)>> {
        let mut conn = self.pool.acquire().await?;
        let status: Option<String> = sqlx::query_scalar(&format!(
            "SELECT m.status FROM messages m JOIN cases c ON c.id = m.case_id WHERE m.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(status) = status else {
            return Ok(None);
        };
        let events = sqlx::query(
            "SELECT event, at FROM message_events WHERE message_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(StatusEvent {
                event: r.try_get(0)?,
                at: r.try_get(1)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some((status, events)))
    }

    /// Records a status event reported after sending (a provider callback, a tracked open or
    /// click, a bounce). Every event is kept; the message's status only moves forward. A
    /// provider event id seen before is ignored: `false`.
    pub async fn record_status_event(
        &self,
        message_id: &str,
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
            event,
            at,
            provider_event_id,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(fresh)
    }

    /// An event that does not move the status (a deferral, a spam report); `false` when the
    /// provider's event id was seen before.
    pub async fn record_plain_event(
        &self,
        message_id: &str,
        event: &str,
        at: Micros,
        provider_event_id: &str,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO message_events (message_id, event, at, provider_event_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING",
        )
        .bind(message_id)
        .bind(event)
        .bind(at)
        .bind(provider_event_id)
        .execute(&self.writer)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The message a provider's id or our `Message-ID` names.
    pub async fn message_by_provider_id(&self, provider_id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM messages WHERE provider_id = $1")
                .bind(provider_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn message_by_rfc_id(&self, rfc_message_id: &str) -> StoreResult<Option<String>> {
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
        id: &str,
    ) -> StoreResult<Option<(Option<String>, String, Envelope)>> {
        let row = sqlx::query(
            "SELECT case_id, message_type, envelope_sealed FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let sealed: Vec<u8> = r.try_get(2)?;
        let envelope = self.open_envelope(id, &sealed)?;
        Ok(Some((r.try_get(0)?, r.try_get(1)?, envelope)))
    }
}

/// Records `event` for a message and moves its status forward (never back; `failed` and
/// `bounced` stay), with the outbox event, inside the caller's transaction. `false` for an
/// unknown message or a provider event id seen before.
pub(crate) async fn apply_event(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    message_id: &str,
    event: MessageStatus,
    at: Micros,
    provider_event_id: Option<&str>,
    detail: Option<&str>,
) -> StoreResult<bool> {
    let row = sqlx::query(&format!(
        "SELECT status, case_id FROM messages WHERE id = $1{}",
        backend.for_update()
    ))
    .bind(message_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let inserted = sqlx::query(
        "INSERT INTO message_events (message_id, event, at, provider_event_id, detail) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING",
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
    let current =
        MessageStatus::parse(&row.try_get::<String, _>(0)?).map_err(|e| anyhow::anyhow!(e))?;
    let case_id: Option<String> = row.try_get(1)?;
    let next = current.advance(event);
    if next != current {
        set_status(
            &mut *conn,
            message_id,
            next,
            detail.filter(|_| next.is_final()),
        )
        .await?;
    }
    let payload = json!({"messageId": message_id, "caseId": case_id, "event": event.as_str(), "status": next.as_str(), "timestamp": rfc3339(at)});
    emit(
        &mut *conn,
        &format!("message.{}", event.as_str()),
        case_id.as_deref(),
        &payload,
    )
    .await?;
    Ok(true)
}

async fn set_status(
    conn: &mut sqlx::AnyConnection,
    message_id: &str,
    status: MessageStatus,
    failure_reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET status = $2, status_rank = $3, failure_reason = COALESCE($4, failure_reason), updated_at = $5 WHERE id = $1",
    )
    .bind(message_id)
    .bind(status.as_str())
    .bind(status.rank())
    .bind(failure_reason)
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}
