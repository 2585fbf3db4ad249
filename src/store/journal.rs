//! Mail the agency's people sent around parley (from Outlook or Gmail), as their mail
//! server journals it: filed on its case as an outbound message when it answers a message
//! of the case, is addressed to the case's address, or names exactly one case in its
//! subject; stored once (by its Message-ID, so parley's own mail journaled back is no
//! second copy).

use crate::domain::MessageId;
use crate::domain::audit::AuditAction;
use crate::domain::mail::InboundMail;
use crate::domain::message::MessageStatus;

use super::messages::{Envelope, context};
use super::{Inbound, Ingested, Messages, Sibling, StoreResult, audit_as};

impl Inbound {
    /// Files journaled mail on its case: `Ingested::Matched`, `Duplicate`, or `Journaled`
    /// without a message when it belongs to no case (it is not kept).
    pub async fn file_journaled(
        &self,
        mail: &InboundMail,
        inbound_domain: &str,
    ) -> StoreResult<Ingested> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        if let Some(message_id) = Self::seen_before(&mut tx, mail).await? {
            return Ok(Ingested::Duplicate { message_id });
        }
        let found = Self::find_case(&mut tx, mail, inbound_domain).await?;
        let key = match found.case_id.as_ref() {
            Some(id) => self.key_unless_erased(id).await?,
            None => None,
        };
        let (Some(case_id), Some(key)) = (found.case_id, key) else {
            return Ok(Ingested::Journaled { message_id: None });
        };
        let thread_id = self
            .sibling::<Messages>()
            .join_thread(
                &mut tx,
                &key,
                &case_id,
                found.parent_thread,
                mail.subject.as_deref(),
                now,
            )
            .await?;
        let message_id = MessageId::new();
        let id = &message_id;
        let from = mail.from.clone().unwrap_or_default();
        let envelope = serde_json::to_vec(&Envelope {
            from: from.clone(),
            to: mail.to.clone(),
            cc: mail.cc.clone(),
        })
        .map_err(anyhow::Error::from)?;
        sqlx::query(
            "INSERT INTO messages (id, case_id, thread_id, direction, message_type, channel, status, status_rank, \
             sent_by, envelope_sealed, subject_sealed, body_sealed, html_sealed, rfc_message_id, in_reply_to, \
             has_attachments, sent_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'outbound', 'email', 'email', 'sent', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)",
        )
        .bind(id)
        .bind(case_id)
        .bind(&thread_id)
        .bind(MessageStatus::Sent.rank())
        .bind(&from)
        .bind(key.seal(&context(id, "envelope"), &envelope))
        .bind(mail.subject.as_deref().map(|s| key.seal_str(&context(id, "subject"), s)))
        .bind(key.seal_str(&context(id, "body"), &mail.text))
        .bind(mail.html.as_deref().map(|h| key.seal_str(&context(id, "html"), h)))
        .bind(mail.message_id.as_deref())
        .bind(mail.parents.first().map(String::as_str))
        .bind(i32::from(mail.attachments > 0))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO message_events (message_id, event, at) VALUES ($1, 'sent', $2)")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit_as(
            &mut tx,
            Some(&case_id),
            (None, "journal"),
            AuditAction::MessageJournaled,
            "message",
            id,
            now,
        )
        .await?;
        super::crm::enqueue_messages(&mut tx, self.backend, &[id.as_str()], now).await?;
        tx.commit().await?;
        Ok(Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        })
    }
}
