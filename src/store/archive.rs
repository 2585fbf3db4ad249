//! The mail archive's records: the exact bytes of each sent email while an archive connector
//! serves its case (`sent_copies`, the bytes sealed in the document store), the queue's
//! `archive_message` jobs (written in the transaction that stores a received mail or records
//! a sent one), and what each archive connector journaled (`archive_items`).

use sqlx::AnyConnection;

use crate::domain::connector::ConnectorType;
use crate::domain::message::{Direction, JobKind};
use crate::domain::time::Micros;
use crate::domain::{CaseId, ConnectorId, DocumentId, MessageId, PartyId};

use super::{
    Archive, Backend, Connector, Connectors, Documents, NewDocument, Sibling, StoreResult,
};

/// The sealed file of a sent email's exact bytes.
#[derive(Debug, Clone)]
pub struct SentCopy {
    pub case_id: CaseId,
    /// The id its file is sealed under in the document store.
    pub file_id: DocumentId,
    pub storage_key: String,
    pub size: i64,
    pub sha256: String,
}

/// A message to archive: what decides where it goes and how it is found again there.
#[derive(Debug, Clone)]
pub struct ToArchive {
    pub id: MessageId,
    pub case_id: CaseId,
    pub case_number: String,
    pub creditor_id: PartyId,
    pub direction: Direction,
    /// Its `Message-ID`, without the angle brackets.
    pub rfc_message_id: Option<String>,
    pub at: Micros,
}

#[derive(sqlx::FromRow)]
struct ToArchiveRow {
    id: MessageId,
    case_id: Option<CaseId>,
    case_number: String,
    creditor_id: PartyId,
    direction: String,
    rfc_message_id: Option<String>,
    at: i64,
}

impl Archive {
    /// The archive connectors.
    pub async fn archive_connectors(&self) -> StoreResult<Vec<Connector>> {
        Ok(self
            .sibling::<Connectors>()
            .connectors()
            .await?
            .into_iter()
            .filter(|c| c.kind == ConnectorType::Archive)
            .collect())
    }

    /// Keeps where a sent email's bytes are; answers the file it replaces (an earlier
    /// attempt's), to be removed.
    pub async fn keep_sent_copy(
        &self,
        message_id: &MessageId,
        copy: &SentCopy,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.write_tx().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT storage_key FROM sent_copies WHERE message_id = $1")
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM sent_copies WHERE message_id = $1")
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sent_copies (message_id, file_id, storage_key, size, sha256, kept_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(message_id)
        .bind(&copy.file_id)
        .bind(&copy.storage_key)
        .bind(copy.size)
        .bind(&copy.sha256)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before.filter(|b| *b != copy.storage_key))
    }

    /// Where a sent email's exact bytes are, if they were kept.
    pub async fn sent_copy(&self, message_id: &MessageId) -> StoreResult<Option<SentCopy>> {
        let row: Option<(CaseId, DocumentId, String, i64, String)> = sqlx::query_as(
            "SELECT m.case_id, s.file_id, s.storage_key, s.size, s.sha256 FROM sent_copies s \
             JOIN messages m ON m.id = s.message_id WHERE s.message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(case_id, file_id, storage_key, size, sha256)| SentCopy {
                case_id,
                file_id,
                storage_key,
                size,
                sha256,
            }),
        )
    }

    /// An email of a case, to archive (none: gone, not an email, or of no case).
    pub async fn to_archive(&self, message_id: &MessageId) -> StoreResult<Option<ToArchive>> {
        let row: Option<ToArchiveRow> = sqlx::query_as(
            "SELECT m.id, m.case_id, c.case_number, c.creditor_id, m.direction, m.rfc_message_id, \
             COALESCE(m.received_at, m.sent_at, m.created_at) AS at \
             FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE m.id = $1 AND m.message_type = 'email'",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let Some(case_id) = r.case_id else {
            return Ok(None);
        };
        Ok(Some(ToArchive {
            id: r.id,
            case_id,
            case_number: r.case_number,
            creditor_id: r.creditor_id,
            direction: Direction::parse(&r.direction)
                .map_err(|e| super::StoreError::Corrupt(format!("message direction: {}", e.0)))?,
            rfc_message_id: r.rfc_message_id,
            at: r.at,
        }))
    }

    /// The connectors that journaled the message.
    pub async fn archived_by(&self, message: &MessageId) -> StoreResult<Vec<ConnectorId>> {
        Ok(
            sqlx::query_scalar("SELECT connector_id FROM archive_items WHERE message_id = $1")
                .bind(message)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records that the connector journaled the message (again: nothing more than its
    /// counters changes).
    pub async fn record_archived(
        &self,
        connector: &ConnectorId,
        message: &MessageId,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        record(&mut tx, connector, message, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Files a message's bytes as a document of its case, journaled by `connector`, once:
    /// `false`, writing nothing, when the connector filed it before.
    pub async fn add_archived_document(
        &self,
        connector: &Connector,
        message_id: &MessageId,
        new: NewDocument,
    ) -> StoreResult<bool> {
        let key = self.live_case_key(&new.case_id).await?;
        let mut tx = self.write_tx().await?;
        let done: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM archive_items WHERE connector_id = $1 AND message_id = $2",
        )
        .bind(&connector.id)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        if done.is_some() {
            return Ok(false);
        }
        self.sibling::<Documents>()
            .insert_received(
                &mut tx,
                &key,
                (connector.id.as_str(), &connector.name),
                &new,
                Some(message_id),
            )
            .await?;
        record(&mut tx, &connector.id, message_id, self.now()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Records a journaled message, and on its connector that it works: `active`, one more
/// item, `lastSyncAt` now (one transaction for both).
async fn record(
    conn: &mut AnyConnection,
    connector: &ConnectorId,
    message: &MessageId,
    now: Micros,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO archive_items (connector_id, message_id, archived_at) VALUES ($1, $2, $3) \
         ON CONFLICT (connector_id, message_id) DO NOTHING",
    )
    .bind(connector)
    .bind(message)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE connectors SET status = 'active', last_error = NULL, last_sync_at = $2, \
         last_attempt_at = $2, syncs = syncs + 1, items = items + 1 WHERE id = $1",
    )
    .bind(connector)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queues an `archive_message` job for each of these messages that is an email of a case an
/// archive connector serves, in the caller's transaction: what is stored or sent is
/// journaled later even across a crash. With no archive connector, one cheap statement.
pub(super) async fn enqueue(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &[&str],
    at: Micros,
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT m.id FROM messages m JOIN cases c ON c.id = m.case_id \
         WHERE m.id IN ({}) AND m.message_type = 'email' AND EXISTS (SELECT 1 FROM connectors k \
         WHERE k.connector_type = 'archive' AND (k.creditor_id IS NULL OR k.creditor_id = c.creditor_id)) \
         AND EXISTS (SELECT 1 FROM connectors g WHERE g.connector_type = 'archive')",
        super::batch_list(backend, 1, "TEXT")
    );
    let q = sqlx::query_scalar::<_, String>(&sql).bind(super::list_param(backend, ids)?);
    let found = q.fetch_all(&mut *conn).await?;
    for id in found {
        super::side_job(&mut *conn, JobKind::ArchiveMessage, &id, at).await?;
    }
    Ok(())
}
