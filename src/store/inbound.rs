//! Storing inbound mail: matched to its case (by `In-Reply-To`/`References`, then a per-case
//! address, then a case number in the subject), joined to its thread, announced in the
//! outbox; kept sealed and listed when it matches nothing. Bounces mark the original message.

use serde_json::json;
use sqlx::Row;

use super::messages::{Envelope, apply_event, context};
use super::{Store, StoreResult, audit_as, emit};
use crate::domain::message::MessageStatus;
use crate::domain::prefixed_id;
use crate::domain::thread::{case_from_address, case_number_candidates};
use crate::domain::time::{Micros, now_micros, rfc3339};
use crate::inbound::mime::InboundMail;

/// What became of an inbound mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Matched {
        message_id: String,
        case_id: String,
        thread_id: String,
    },
    /// Kept, waiting for someone to sort it.
    Unmatched { inbound_id: String },
    /// A bounce of one of our messages, which is now `bounced`.
    Bounce { message_id: String },
    /// Its `Message-ID` was received before.
    Duplicate { message_id: String },
}

#[derive(Debug, Clone)]
pub struct UnmatchedMail {
    pub id: String,
    pub source: String,
    pub received_at: Micros,
    pub raw: Vec<u8>,
}

fn raw_context(id: &str) -> String {
    format!("inbound:{id}")
}

impl Store {
    /// Stores one received mail. `inbound_domain` is the domain of per-case addresses.
    pub async fn ingest_email(
        &self,
        source: &str,
        raw: &[u8],
        mail: &InboundMail,
        inbound_domain: &str,
    ) -> StoreResult<Ingested> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;

        if let Some(bounce) = mail.bounce.as_ref().filter(|b| b.is_failure()) {
            let original = match &bounce.original_message_id {
                Some(id) => Self::message_by_rfc_id_in(&mut tx, id).await?,
                None => None,
            };
            if let Some((message_id, _, _)) = original {
                let reason = bounce.reason();
                let event_id = mail.message_id.as_ref().map(|m| format!("dsn:{m}"));
                apply_event(
                    &mut tx,
                    self.backend,
                    &message_id,
                    MessageStatus::Bounced,
                    now,
                    event_id.as_deref(),
                    Some(&reason),
                )
                .await?;
                tx.commit().await?;
                return Ok(Ingested::Bounce { message_id });
            }
        }
        if let Some(id) = &mail.message_id {
            let seen: Option<String> =
                sqlx::query_scalar("SELECT id FROM messages WHERE rfc_message_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(message_id) = seen {
                return Ok(Ingested::Duplicate { message_id });
            }
        }

        // 1. the message it answers, 2. a per-case address, 3. a case number in the subject.
        let mut case_id = None;
        let mut parent_thread = None;
        for parent in &mail.parents {
            if let Some((_, case, thread)) = Self::message_by_rfc_id_in(&mut tx, parent).await? {
                case_id = Some(case);
                parent_thread = thread;
                break;
            }
        }
        if case_id.is_none() {
            for address in mail.to.iter().chain(&mail.cc).chain(&mail.delivered_to) {
                if let Some(id) = case_from_address(address, inbound_domain) {
                    let exists: Option<String> =
                        sqlx::query_scalar("SELECT id FROM cases WHERE id = $1")
                            .bind(&id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if exists.is_some() {
                        case_id = exists;
                        break;
                    }
                }
            }
        }
        if case_id.is_none() {
            for candidate in case_number_candidates(mail.subject.as_deref().unwrap_or_default()) {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT id FROM cases WHERE case_number = $1")
                        .bind(&candidate)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_some() {
                    case_id = found;
                    break;
                }
            }
        }

        let inbound_id = prefixed_id("inb");
        let Some(case_id) = case_id else {
            sqlx::query("INSERT INTO inbound_raw (id, source, received_at, raw_sealed, matched) VALUES ($1, $2, $3, $4, 0)")
                .bind(&inbound_id)
                .bind(source)
                .bind(now)
                .bind(self.keys.seal(&raw_context(&inbound_id), raw))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Ingested::Unmatched { inbound_id });
        };

        let message_id = prefixed_id("msg");
        let thread_id = self
            .join_thread(
                &mut tx,
                &case_id,
                parent_thread,
                mail.subject.as_deref(),
                now,
            )
            .await?;
        let envelope = Envelope {
            from: mail.from.clone().unwrap_or_default(),
            to: mail.to.clone(),
            cc: mail.cc.clone(),
        };
        let envelope = serde_json::to_vec(&envelope).map_err(anyhow::Error::from)?;
        let id = message_id.as_str();
        sqlx::query(
            "INSERT INTO messages (id, case_id, thread_id, direction, message_type, status, status_rank, envelope_sealed, \
             subject_sealed, body_sealed, html_sealed, rfc_message_id, in_reply_to, has_attachments, received_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'inbound', 'email', 'received', $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12)",
        )
        .bind(id)
        .bind(&case_id)
        .bind(&thread_id)
        .bind(MessageStatus::Received.rank())
        .bind(self.keys.seal(&context(id, "envelope"), &envelope))
        .bind(mail.subject.as_deref().map(|s| self.keys.seal_str(&context(id, "subject"), s)))
        .bind(self.keys.seal_str(&context(id, "body"), &mail.text))
        .bind(mail.html.as_deref().map(|h| self.keys.seal_str(&context(id, "html"), h)))
        .bind(mail.message_id.as_deref())
        .bind(mail.parents.first().map(String::as_str))
        .bind(i32::from(mail.attachments > 0))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO message_events (message_id, event, at) VALUES ($1, 'received', $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO inbound_raw (id, source, received_at, raw_sealed, message_id, matched) VALUES ($1, $2, $3, $4, $5, 1)")
            .bind(&inbound_id)
            .bind(source)
            .bind(now)
            .bind(self.keys.seal(&raw_context(&inbound_id), raw))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit_as(
            &mut tx,
            Some(&case_id),
            None,
            "inbound email",
            "message.received",
            "message",
            id,
        )
        .await?;
        let case_number: String = sqlx::query_scalar("SELECT case_number FROM cases WHERE id = $1")
            .bind(&case_id)
            .fetch_one(&mut *tx)
            .await?;
        // Ids only: the dispatcher reads sender and subject from the sealed message when it sends.
        let payload = json!({
            "event": "message.received", "messageId": id, "caseId": case_id, "caseNumber": case_number,
            "messageType": "email", "hasAttachments": mail.attachments > 0, "timestamp": rfc3339(now),
        });
        emit(&mut tx, "message.received", Some(&case_id), &payload).await?;
        tx.commit().await?;
        Ok(Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        })
    }

    /// Inbound mail that matched no case, oldest first.
    pub async fn unmatched_mail(&self, limit: i64) -> StoreResult<Vec<UnmatchedMail>> {
        let rows = sqlx::query("SELECT id, source, received_at, raw_sealed FROM inbound_raw WHERE matched = 0 ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let sealed: Vec<u8> = r.try_get(3)?;
                Ok(UnmatchedMail {
                    raw: self
                        .keys
                        .open(&raw_context(&id), &sealed)
                        .map_err(anyhow::Error::from)?,
                    source: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                    id,
                })
            })
            .collect()
    }
}
