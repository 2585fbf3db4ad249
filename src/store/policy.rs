//! What the send policy reads: a case's communication preferences and the suppression list.
//! Suppressed addresses are kept as blind indexes, never in the clear.

use super::{Store, StoreResult};
use crate::domain::event::EventType;
use crate::domain::prefixed_id;
use crate::domain::time::now_micros;

impl Store {
    pub(crate) fn suppression_index(&self, channel: &str, value: &str) -> String {
        self.keys
            .blind_index(&format!("suppression:{channel}"), &value.to_lowercase())
    }

    /// Adds an address or number to the suppression list; `false` when it was there already.
    pub async fn suppress(
        &self,
        channel: &str,
        value: &str,
        reason: &str,
        case_id: Option<&str>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO suppressions (id, channel, value_index, reason, case_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (channel, value_index) DO NOTHING",
        )
        .bind(prefixed_id("sup"))
        .bind(channel)
        .bind(self.suppression_index(channel, value))
        .bind(reason)
        .bind(case_id)
        .bind(now_micros())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts every `To` recipient of an outbound message on the suppression list, in the
    /// caller's transaction (a hard bounce of that message).
    pub(crate) async fn suppress_recipients_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        message_id: &str,
        reason: &str,
        now: crate::domain::time::Micros,
    ) -> StoreResult<()> {
        #[derive(sqlx::FromRow)]
        struct Row {
            case_id: Option<String>,
            message_type: String,
            envelope_sealed: Vec<u8>,
        }
        let row = sqlx::query_as::<_, Row>(
            "SELECT case_id, message_type, envelope_sealed FROM messages WHERE id = $1",
        )
        .bind(message_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let envelope = self.open_envelope(message_id, &row.envelope_sealed)?;
        for to in &envelope.to {
            sqlx::query(
                "INSERT INTO suppressions (id, channel, value_index, reason, case_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (channel, value_index) DO NOTHING",
            )
            .bind(prefixed_id("sup"))
            .bind(row.message_type.as_str())
            .bind(self.suppression_index(&row.message_type, to))
            .bind(reason)
            .bind(row.case_id.as_deref())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// A recipient's one-click unsubscribe from a message: every `To` address of it is
    /// suppressed, and the message and audit log record it, in one transaction. `false` for
    /// an unknown message.
    pub async fn unsubscribe(&self, message_id: &str) -> StoreResult<bool> {
        let Some((case_id, channel, envelope)) = self.message_envelope(message_id).await? else {
            return Ok(false);
        };
        let mut tx = self.write_tx().await?;
        let now = now_micros();
        for to in &envelope.to {
            sqlx::query(
                "INSERT INTO suppressions (id, channel, value_index, reason, case_id, created_at) VALUES ($1, $2, $3, 'unsubscribed', $4, $5) \
                 ON CONFLICT (channel, value_index) DO NOTHING",
            )
            .bind(prefixed_id("sup"))
            .bind(channel.as_str())
            .bind(self.suppression_index(channel.as_str(), to))
            .bind(case_id.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO message_events (message_id, event, at) VALUES ($1, 'unsubscribed', $2)",
        )
        .bind(message_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::audit_as(
            &mut tx,
            case_id.as_deref(),
            None,
            "recipient",
            "recipient.unsubscribed",
            "message",
            message_id,
        )
        .await?;
        let payload =
            serde_json::json!({"messageId": message_id, "caseId": case_id, "channel": channel});
        super::emit(
            &mut tx,
            EventType::RecipientUnsubscribed,
            case_id.as_deref(),
            &payload,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The first of `values` on the suppression list.
    pub async fn suppressed<'a>(
        &self,
        channel: &str,
        values: &[&'a str],
    ) -> StoreResult<Option<&'a str>> {
        if values.is_empty() {
            return Ok(None);
        }
        // One look-up for every recipient at once.
        let indexes: Vec<String> = values
            .iter()
            .map(|v| self.suppression_index(channel, v))
            .collect();
        let placeholders: Vec<String> = (2..indexes.len() + 2).map(|i| format!("${i}")).collect();
        let query = format!(
            "SELECT value_index FROM suppressions WHERE channel = $1 AND value_index IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query_scalar::<_, String>(&query).bind(channel);
        for index in &indexes {
            q = q.bind(index);
        }
        let found = q.fetch_all(&self.pool).await?;
        if let Some(i) = indexes.iter().position(|index| found.contains(index)) {
            return Ok(Some(values[i]));
        }
        Ok(None)
    }
}
