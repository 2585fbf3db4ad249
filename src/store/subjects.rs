//! Data subjects: finding everything held about one person through the blind indexes (never
//! by opening every row), for an export; restricting and erasing a case's debtor.

use super::messages::MESSAGE_COLUMNS_WITH_BODY;
use super::subject_keys::ERASED;
use super::{Cases, Documents, MessageView, Sibling, StoreResult, Subjects, audit};
use crate::domain::audit::AuditAction;
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{CaseId, MessageId};

/// A case of a data subject, with what decides whether its data may be erased.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubjectCase {
    pub id: CaseId,
    pub case_number: String,
    pub status: String,
    /// When it was paid or closed: its retention runs from then.
    pub ended_at: Option<i64>,
    pub restricted_at: Option<i64>,
    pub erased_at: Option<i64>,
}

/// What an erasure left behind: the stored document files to remove.
#[derive(Debug, Default)]
pub struct Erased {
    pub storage_keys: Vec<String>,
    /// The case's messages: their copies outside the database (outbox files, spooled
    /// attachments) are the caller's to remove.
    pub message_ids: Vec<MessageId>,
}

impl Subjects {
    /// The cases whose debtor has this email address or phone number, oldest first.
    pub async fn subject_cases(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let email = email.map(|e| self.keys.blind_index("email", &e.to_lowercase()));
        let phone = phone.map(|p| self.keys.blind_index("phone", p));
        Ok(sqlx::query_scalar(
            "SELECT id FROM cases WHERE ($1 IS NOT NULL AND debtor_email_index = $1) \
             OR ($2 IS NOT NULL AND debtor_phone_index = $2) ORDER BY created_at, id",
        )
        .bind(email)
        .bind(phone)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A page of a case's messages with their bodies and attachments, oldest first, after
    /// the message `after`.
    pub async fn case_messages_with_bodies(
        &self,
        case_id: &CaseId,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<MessageView>> {
        let rows = sqlx::query_as::<_, super::messages::MessageWithBody>(&format!(
            "SELECT {MESSAGE_COLUMNS_WITH_BODY} FROM messages m WHERE m.case_id = $1 \
             AND ($2 IS NULL OR m.id > $2) ORDER BY m.id LIMIT $3"
        ))
        .bind(case_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.unlock(rows.iter().map(|r| r.sealed())).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut m = self.message_with_body(row)?;
            if m.has_attachments {
                m.attachments = self
                    .sibling::<Documents>()
                    .message_attachments(&m.id)
                    .await?;
            }
            out.push(m);
        }
        Ok(out)
    }
}

impl Subjects {
    /// The cases of a data subject found through the blind indexes, erased ones too (their
    /// indexes are gone, so only when `ids` names them).
    pub async fn subject_case_states(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> StoreResult<Vec<SubjectCase>> {
        let email = email.map(|e| self.keys.blind_index("email", &e.to_lowercase()));
        let phone = phone.map(|p| self.keys.blind_index("phone", p));
        Ok(sqlx::query_as(
            "SELECT id, case_number, status, ended_at, restricted_at, erased_at FROM cases \
             WHERE ($1 IS NOT NULL AND debtor_email_index = $1) OR ($2 IS NOT NULL AND debtor_phone_index = $2) \
             ORDER BY created_at, id",
        )
        .bind(email)
        .bind(phone)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Restricts the processing of a case's debtor's data (an erasure asked for while a
    /// retention rule holds): nothing more is sent; the retention sweeper erases it later.
    pub async fn restrict_case(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        now: Micros,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE cases SET restricted_at = $2 WHERE id = $1 AND restricted_at IS NULL AND erased_at IS NULL",
        )
        .bind(case_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            audit(
                &mut tx,
                Some(case_id),
                actor,
                AuditAction::DataSubjectRestricted,
                "case",
                &case_id.to_string(),
                self.now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Erases the personal data of a case's debtor: the subject key is destroyed first (from
    /// then on every copy of what it sealed is unreadable, backups included), then what is
    /// kept in the clear beside it goes: blind indexes, delivery errors that may quote an
    /// address, document names, tags, deadline titles, payment references. Deliveries still
    /// waiting are cancelled. The audit log records that it happened, without the data.
    pub async fn erase_case(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        now: Micros,
    ) -> StoreResult<Erased> {
        // What an earlier version sealed under the master key goes under the case's key
        // first, so that destroying the key reaches it too.
        if let Some(key) = self.key_unless_erased(case_id).await? {
            self.seal_case_under(case_id, &key).await?;
        }
        // The person's addresses, while they can still be read (see `suppression_indexes`);
        // mail and SMS from them that matched no case go with the erasure too.
        let (emails, phones) = self.debtor_addresses(case_id).await?;
        let indexes = self.suppression_indexes(&emails, &phones);
        let unmatched: Vec<String> = emails
            .iter()
            .chain(&phones)
            .map(|a| self.unmatched_sender_index(a))
            .collect();
        self.destroy_case_keys(&[*case_id]).await?;
        let mut tx = self.write_tx().await?;
        let message_ids: Vec<MessageId> =
            sqlx::query_scalar("SELECT id FROM messages WHERE case_id = $1 ORDER BY id")
                .bind(case_id)
                .fetch_all(&mut *tx)
                .await?;
        for index in &unmatched {
            sqlx::query("DELETE FROM inbound_raw WHERE matched = 0 AND sender_index = $1")
                .bind(index)
                .execute(&mut *tx)
                .await?;
        }
        for index in &indexes {
            sqlx::query("UPDATE suppressions SET address_sealed = NULL WHERE value_index = $1")
                .bind(index)
                .execute(&mut *tx)
                .await?;
        }
        // The documents' files, and the sent mail kept for an archive.
        let storage_keys: Vec<String> = sqlx::query_scalar(
            "SELECT storage_key FROM documents WHERE case_id = $1 UNION ALL \
             SELECT s.storage_key FROM sent_copies s JOIN messages m ON m.id = s.message_id \
             WHERE m.case_id = $1",
        )
        .bind(case_id)
        .fetch_all(&mut *tx)
        .await?;
        let statements = erasure_statements();
        for sql in &statements {
            let query = sqlx::query(sql).bind(case_id);
            // Only the statements that name the time take it.
            let query = if sql.contains("$2") {
                query.bind(now)
            } else {
                query
            };
            query.execute(&mut *tx).await?;
        }
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::DataSubjectErased,
            "case",
            &case_id.to_string(),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.known_threads.forget(|(case, _), _| case == case_id);
        self.checkpoint_after_erasure().await;
        Ok(Erased {
            storage_keys,
            message_ids,
        })
    }

    /// Removes the mail and SMS that matched no case from these senders (addresses or
    /// numbers), audited when there was any; how many.
    pub async fn erase_unmatched_from(&self, actor: &Actor, senders: &[&str]) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let mut removed = 0;
        for sender in senders {
            removed +=
                sqlx::query("DELETE FROM inbound_raw WHERE matched = 0 AND sender_index = $1")
                    .bind(self.unmatched_sender_index(sender))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
        }
        if removed > 0 {
            audit(
                &mut tx,
                None,
                actor,
                AuditAction::DataSubjectErased,
                "inbound",
                &format!("{removed} unmatched"),
                self.now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// On SQLite, the pages rewritten without the cleared values go into the database file.
    /// A full checkpoint waits out readers of older snapshots (busy timeout) and leaves the
    /// log's length alone, so readers in other processes are not disturbed; the log's older
    /// frames are overwritten as it is reused.
    async fn checkpoint_after_erasure(&self) {
        if self.backend != super::Backend::Sqlite {
            return;
        }
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(FULL)")
            .fetch_one(&self.writer)
            .await
        {
            Ok((busy, log, done)) if busy != 0 || done < log => tracing::warn!(
                "after an erasure the log could not all be written into the database file (a reader was busy); the next checkpoint does it"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing after an erasure failed"),
        }
    }

    /// The suppression indexes of a case's debtor's addresses and numbers (see
    /// `debtor_addresses`, read while they still can be). Suppressions that name them
    /// without this case (a bounce or a STOP that matched no case, another case's entry) lose
    /// the address at the erasure too; their blind index stays, so that the objection is still
    /// honoured, and nothing readable is left of the person.
    fn suppression_indexes(&self, emails: &[String], phones: &[String]) -> Vec<String> {
        emails
            .iter()
            .map(|e| self.suppression_index("email", e))
            .chain(phones.iter().map(|p| self.suppression_index("sms", p)))
            .collect()
    }

    /// The email addresses and numbers a case's debtor is known by: the case's and those its
    /// preferences name.
    async fn debtor_addresses(&self, case_id: &CaseId) -> StoreResult<(Vec<String>, Vec<String>)> {
        let case = self
            .sibling::<Cases>()
            .get_case(&Actor::system(), case_id)
            .await?;
        let preferred = self
            .sibling::<Cases>()
            .preferences_for_sending(case_id)
            .await
            .ok();
        let emails = case
            .iter()
            .flat_map(|c| c.debtor.email.iter())
            .chain(preferred.iter().flat_map(|p| p.email_address.iter()));
        let phones = case
            .iter()
            .flat_map(|c| c.debtor.phone.iter())
            .chain(preferred.iter().flat_map(|p| p.phone_number.iter()));
        Ok((
            emails.map(|e| e.to_string()).collect(),
            phones.map(|p| p.to_string()).collect(),
        ))
    }

    /// Restricted cases whose retention has ended (ended before `ended_before`), up to
    /// `limit`: the retention sweeper erases them.
    pub async fn cases_due_for_erasure(
        &self,
        ended_before: Micros,
        limit: i64,
    ) -> StoreResult<Vec<CaseId>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM cases WHERE restricted_at IS NOT NULL AND erased_at IS NULL \
             AND ended_at IS NOT NULL AND ended_at <= $1 AND status IN ('paid', 'closed') ORDER BY ended_at, id LIMIT $2",
        )
        .bind(ended_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The tables of the schema (for the test that every table is placed in or out of the
    /// data subject export); a partitioned table once, not its partitions.
    #[doc(hidden)]
    pub async fn table_names(&self) -> StoreResult<Vec<String>> {
        let sql = match self.backend {
            super::Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            super::Backend::Postgres => {
                "SELECT CAST(c.relname AS TEXT) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
            }
        };
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }
}

impl Subjects {
    /// A sealed value as stored (for the tests of what is stored).
    #[doc(hidden)]
    pub async fn stored_value(
        &self,
        table: &'static str,
        column: &'static str,
        id: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar(&format!("SELECT {column} FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Overwrites a sealed value (for the tests of installations from before subject keys).
    #[doc(hidden)]
    pub async fn overwrite_stored_value(
        &self,
        table: &'static str,
        column: &'static str,
        id: &str,
        sealed: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(&format!("UPDATE {table} SET {column} = $1 WHERE id = $2"))
            .bind(sealed)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Runs one statement naming one row (for the tests of installations from before).
    #[doc(hidden)]
    pub async fn execute_on_row(&self, sql: &str, id: &str) -> StoreResult<()> {
        sqlx::query(sql).bind(id).execute(&self.writer).await?;
        Ok(())
    }

    /// Reads one text of one row (for the tests of what is stored).
    #[doc(hidden)]
    pub async fn text_of_row(&self, sql: &str, id: &str) -> StoreResult<String> {
        Ok(sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await?)
    }
}

/// What an erasure clears beside the destroyed key, in one transaction: `$1` the case, `$2`
/// the time (in the statements that name it).
fn erasure_statements() -> Vec<String> {
    let messages = "SELECT id FROM messages WHERE case_id = $1";
    vec![
        "UPDATE cases SET erased_at = $2, restricted_at = COALESCE(restricted_at, $2), debtor_email_index = NULL, \
         debtor_phone_index = NULL, debtor_language = NULL, debtor_timezone = NULL, invoice_number = NULL \
         WHERE id = $1 AND erased_at IS NULL".to_string(),
        format!(
            "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE kind = 'deliver_message' AND status = 'pending' AND ref_id IN ({messages})"
        ),
        format!(
            "UPDATE messages SET status = 'cancelled', status_rank = {rank}, updated_at = $2 \
             WHERE case_id = $1 AND status IN ('queued', 'scheduled') AND EXISTS \
             (SELECT 1 FROM jobs j WHERE j.ref_id = messages.id AND j.kind = 'deliver_message' \
             AND j.status = 'cancelled')",
            rank = crate::domain::message::MessageStatus::Cancelled.rank()
        ),
        format!(
            "UPDATE messages SET recipient_index = NULL, failure_reason = CASE WHEN failure_reason IS NULL \
             THEN NULL ELSE '{ERASED}' END WHERE case_id = $1"
        ),
        format!("UPDATE message_events SET detail = NULL WHERE message_id IN ({messages})"),
        format!(
            "UPDATE jobs SET last_error = CASE WHEN last_error IS NULL THEN NULL ELSE '{ERASED}' END \
             WHERE ref_id IN ({messages})"
        ),
        format!(
            "UPDATE job_attempts SET error = '{ERASED}' WHERE error IS NOT NULL AND job_id IN \
             (SELECT j.id FROM jobs j WHERE j.ref_id IN ({messages}))"
        ),
        format!("DELETE FROM sent_copies WHERE message_id IN ({messages})"),
        "UPDATE threads SET subject_index = id WHERE case_id = $1".to_string(),
        "UPDATE thread_participants SET participant_index = id WHERE thread_id IN \
         (SELECT id FROM threads WHERE case_id = $1)"
            .to_string(),
        format!("UPDATE documents SET file_name = '{ERASED}', sha256 = '' WHERE case_id = $1"),
        "DELETE FROM note_tags WHERE note_id IN (SELECT id FROM notes WHERE case_id = $1)"
            .to_string(),
        format!("UPDATE deadlines SET title = '{ERASED}' WHERE case_id = $1"),
        "UPDATE payments SET reference = NULL WHERE case_id = $1".to_string(),
        // Language, time zone, contact hours: the debtor's too (the contacts are sealed).
        "DELETE FROM preferences WHERE case_id = $1".to_string(),
        // A key a client chose may hold the address; its replay has no use any more.
        format!("DELETE FROM idempotency_keys WHERE result IN ({messages})"),
        // Records written before results were bare ids keep the response, naming the id.
        "DELETE FROM idempotency_keys WHERE result LIKE '{%' AND EXISTS (SELECT 1 FROM messages m \
         WHERE m.case_id = $1 AND idempotency_keys.result LIKE '%' || m.id || '%')"
            .to_string(),
    ]
}
