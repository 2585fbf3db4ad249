//! Received mail held for review: matched to a case only by a case number in its subject,
//! from an address the case did not know. A case worker accepts it (then it acts as any
//! received mail: participants, documents, `message.received`) or rejects it (then it leaves
//! the case for the unmatched list, as if it had never matched).

use super::cases::visible;
use super::inbound::{Announced, raw_context};
use super::messages::{MESSAGE_COLUMNS_WITH_BODY, MessageWithBody};
use super::operators::NotNow;
use super::{Inbound, MessageView, StoreResult, admin_flag, audit};
use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::party::Actor;
use crate::domain::{MessageId, ThreadId};

#[derive(sqlx::FromRow)]
struct HeldRow {
    case_id: CaseId,
    thread_id: Option<ThreadId>,
    message_type: String,
    envelope_sealed: Vec<u8>,
    has_attachments: i32,
    sender_verified: i32,
}

impl HeldRow {
    /// What a held message's review reads of it (`m`, the message).
    const COLUMNS: &str = "m.case_id, m.thread_id, m.message_type, m.envelope_sealed, m.has_attachments, m.sender_verified";
}

impl Inbound {
    /// A received message `id` on a case the actor sees, locked for a change: `columns` of
    /// it (of `m`, the message) read as `R`; with `proven`, only one whose sender is proven.
    /// The reviews of a reply's reading and of a held mail both start here.
    pub(super) async fn locked_received<R>(
        &self,
        conn: &mut sqlx::AnyConnection,
        (actor, id): (&Actor, &MessageId),
        columns: &str,
        proven: bool,
    ) -> StoreResult<Option<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let proven = if proven {
            " AND m.sender_verified = 1"
        } else {
            ""
        };
        Ok(sqlx::query_as::<_, R>(&format!(
            "SELECT {columns} FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.id = $1 AND m.direction = 'inbound'{proven} AND {}{}",
            visible(2, 3),
            self.backend.for_update()
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// Accepts a held message: its sender becomes a participant, its attachments documents,
    /// and `message.received` goes out, all in one transaction. `None`: no such received
    /// message on a case the actor sees; `Some(Err)`: it is not held.
    pub async fn accept_received(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> StoreResult<Option<Result<(), NotNow>>> {
        let mut tx = self.write_tx().await?;
        let Some(row) = self
            .locked_received::<HeldRow>(&mut tx, (actor, id), HeldRow::COLUMNS, false)
            .await?
        else {
            return Ok(None);
        };
        if row.sender_verified != 0 {
            return Ok(Some(Err(NotNow::State("accepted".into()))));
        }
        let now = self.now();
        let key = self.live_case_key(&row.case_id).await?;
        self.unlock([&row.envelope_sealed[..]]).await?;
        let envelope = self.open_envelope(id, &row.envelope_sealed)?;
        sqlx::query("UPDATE messages SET sender_verified = 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let thread_id = row.thread_id.ok_or_else(|| {
            super::StoreError::Corrupt(format!("received message {id} without a thread"))
        })?;
        let announced = Announced {
            id,
            case_id: &row.case_id,
            thread_id: &thread_id,
            channel: crate::domain::message::Channel::parse(&row.message_type)
                .map_err(|e| super::StoreError::Corrupt(e.0))?,
            envelope: &envelope,
            has_attachments: row.has_attachments != 0,
            at: now,
        };
        self.announce_received(&mut tx, &key, &announced, &actor.name)
            .await?;
        audit(
            &mut tx,
            Some(&row.case_id),
            actor,
            AuditAction::MessageAccepted,
            "message",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// Rejects a held message: it leaves the case (message, events, and its thread when it
    /// was the thread's only message) and its original goes back to the unmatched list
    /// under the master key, naming the case as a candidate. Answers as
    /// [`Store::accept_received`]; `Ok(Some(Ok(inbound id)))` when rejected.
    pub async fn reject_received(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> StoreResult<Option<Result<String, NotNow>>> {
        let mut tx = self.write_tx().await?;
        let Some(row) = self
            .locked_received::<HeldRow>(&mut tx, (actor, id), HeldRow::COLUMNS, false)
            .await?
        else {
            return Ok(None);
        };
        if row.sender_verified != 0 {
            return Ok(Some(Err(NotNow::State("accepted".into()))));
        }
        let raw: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, raw_sealed FROM inbound_raw WHERE message_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((inbound_id, sealed)) = raw else {
            return Ok(Some(Err(NotNow::State("without its original".into()))));
        };
        self.unlock([&sealed[..]]).await?;
        let Some(original) = self.open_kept(&raw_context(&inbound_id), &sealed)? else {
            return Ok(Some(Err(NotNow::State("erased".into()))));
        };
        let candidates = serde_json::to_string(&[&row.case_id]).map_err(anyhow::Error::from)?;
        sqlx::query(
            "UPDATE inbound_raw SET matched = 0, message_id = NULL, raw_sealed = $2, candidates = $3 WHERE id = $1",
        )
        .bind(&inbound_id)
        .bind(self.keys.seal(&raw_context(&inbound_id), &original))
        .bind(candidates)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM message_events WHERE message_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM messages WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(thread_id) = &row.thread_id {
            let left: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM messages WHERE thread_id = $1 LIMIT 1")
                    .bind(thread_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if left.is_none() {
                sqlx::query("DELETE FROM thread_participants WHERE thread_id = $1")
                    .bind(thread_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM threads WHERE id = $1")
                    .bind(thread_id)
                    .execute(&mut *tx)
                    .await?;
                self.known_threads.forget(|_, known| thread_id == known);
            }
        }
        audit(
            &mut tx,
            Some(&row.case_id),
            actor,
            AuditAction::MessageRejected,
            "message",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ok(inbound_id)))
    }

    /// Received messages held for review on the cases the actor sees, oldest first.
    /// Each with its body, read in one query (held mail has no documents yet).
    pub async fn held_for_review(
        &self,
        actor: &Actor,
        limit: i64,
    ) -> StoreResult<Vec<MessageView>> {
        let rows = sqlx::query_as::<_, MessageWithBody>(&format!(
            "SELECT {MESSAGE_COLUMNS_WITH_BODY} FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.sender_verified = 0 AND {} ORDER BY m.id LIMIT $1",
            visible(2, 3)
        ))
        .bind(limit)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_all(&self.pool)
        .await?;
        self.unlock(rows.iter().map(MessageWithBody::sealed))
            .await?;
        rows.into_iter()
            .map(|row| self.message_with_body(row))
            .collect()
    }
}
