//! Document records: metadata and versions. The bytes live sealed in the document store.

use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::code::Code;
use crate::domain::event::EventType;
use crate::domain::payload;
use crate::domain::{DocumentId, MessageId};

use super::cases::visible;
use super::{Documents, Sibling, StoreError, StoreInner, StoreResult, admin_flag, audit, emit};
use crate::domain::document::DocumentType;
use crate::domain::party::Actor;
use crate::domain::time::Micros;

pub struct NewDocument {
    pub id: DocumentId,
    pub case_id: CaseId,
    pub document_type: DocumentType,
    pub description: Option<String>,
    pub file_name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub storage_key: String,
    pub replaces: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DocumentView {
    pub id: DocumentId,
    pub case_id: CaseId,
    pub document_type: DocumentType,
    pub description: Option<String>,
    pub file_name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub storage_key: String,
    pub version: i64,
    pub replaces_document_id: Option<String>,
    pub is_latest: bool,
    pub uploaded_by: String,
    pub uploaded_at: Micros,
    /// Where it is mirrored (read for the API's answers only; empty elsewhere).
    pub mirrors: Vec<super::drives::Mirror>,
}

const COLUMNS: &str = "d.id, d.case_id, d.document_type, d.description_sealed, d.file_name, d.file_name_sealed, d.content_type, d.size, d.sha256, \
     d.storage_key, d.version, d.replaces_document_id, d.is_latest, d.uploaded_by, d.uploaded_by_sealed, d.uploaded_at";

/// A row of `documents` as `COLUMNS` selects it, the description still sealed.
#[derive(sqlx::FromRow)]
struct DocumentRow {
    id: DocumentId,
    case_id: CaseId,
    document_type: String,
    description_sealed: Option<Vec<u8>>,
    /// Clear only in rows from before file names were sealed.
    file_name: String,
    file_name_sealed: Option<Vec<u8>>,
    content_type: String,
    size: i64,
    sha256: String,
    storage_key: String,
    version: i32,
    replaces_document_id: Option<String>,
    is_latest: i32,
    uploaded_by: String,
    uploaded_by_sealed: Option<Vec<u8>>,
    uploaded_at: i64,
}

/// The version a new upload replaces.
#[derive(sqlx::FromRow)]
struct ReplacedRow {
    version: i32,
    is_latest: i32,
}

pub(super) fn description_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("doc:{id}:description")
}

pub(super) fn file_name_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("doc:{id}:file_name")
}

pub(super) fn uploader_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("doc:{id}:uploader")
}

/// What `documents.key_id` holds for a file sealed under its case's subject key.
pub(crate) const SUBJECT_SEALED: &str = "subject";

/// The next version of the document `old`, which stops being the latest: it must be the
/// latest version of a document of the case.
async fn replace_version(
    tx: &mut sqlx::AnyConnection,
    old: &str,
    case_id: &CaseId,
) -> StoreResult<i64> {
    let row = sqlx::query_as::<_, ReplacedRow>("SELECT version, is_latest FROM documents WHERE id = $1 AND case_id = $2 AND deleted_at IS NULL")
        .bind(old)
        .bind(case_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(StoreError::invalid(
            Code::InvalidReplaces,
            "replacesDocumentId is not a document of this case",
        ));
    };
    if row.is_latest == 0 {
        return Err(StoreError::invalid(
            Code::InvalidReplaces,
            "replacesDocumentId is not the latest version",
        ));
    }
    let version = i64::from(row.version) + 1;
    sqlx::query("UPDATE documents SET is_latest = 0 WHERE id = $1")
        .bind(old)
        .execute(&mut *tx)
        .await?;
    Ok(version)
}

impl Documents {
    /// A document by its id, whoever asks (the connectors' work); none when it is gone.
    pub(crate) async fn document_by_id(
        &self,
        id: &DocumentId,
    ) -> StoreResult<Option<DocumentView>> {
        let row = sqlx::query_as::<_, DocumentRow>(&format!(
            "SELECT {COLUMNS} FROM documents d WHERE d.id = $1 AND d.deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(self
            .documents_from_rows(row.into_iter().collect())
            .await?
            .pop())
    }

    fn document_from_row(&self, r: DocumentRow) -> StoreResult<DocumentView> {
        Ok(DocumentView {
            description: r
                .description_sealed
                .map(|d| self.open_text(&description_context(&r.id), &d))
                .transpose()?,
            case_id: r.case_id,
            document_type: DocumentType::parse(&r.document_type).map_err(anyhow::Error::from)?,
            file_name: match r.file_name_sealed {
                Some(sealed) => self.open_text(&file_name_context(&r.id), &sealed)?,
                None => r.file_name,
            },
            content_type: r.content_type,
            size: r.size,
            sha256: r.sha256,
            storage_key: r.storage_key,
            version: i64::from(r.version),
            replaces_document_id: r.replaces_document_id,
            is_latest: r.is_latest != 0,
            // A received attachment's sender is personal data: kept sealed.
            uploaded_by: match r.uploaded_by_sealed {
                Some(sealed) => self.open_text(&uploader_context(&r.id), &sealed)?,
                None => r.uploaded_by,
            },
            uploaded_at: r.uploaded_at,
            id: r.id,
            mirrors: Vec::new(),
        })
    }

    /// Documents from their rows, their subject keys looked up first.
    async fn documents_from_rows(&self, rows: Vec<DocumentRow>) -> StoreResult<Vec<DocumentView>> {
        self.unlock(rows.iter().flat_map(|r| {
            [
                r.description_sealed.as_deref(),
                r.uploaded_by_sealed.as_deref(),
                r.file_name_sealed.as_deref(),
            ]
            .into_iter()
            .flatten()
        }))
        .await?;
        rows.into_iter()
            .map(|r| self.document_from_row(r))
            .collect()
    }

    /// Whether the actor may see the case; the document handler asks before writing bytes.
    pub async fn can_see_case(&self, actor: &Actor, case_id: &CaseId) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        StoreInner::case_visible(&mut conn, actor, case_id, "").await
    }

    /// Records an uploaded document, as a new version of `replaces` when given (which must be
    /// the latest version of a document of the same case). `None`: the case is not visible.
    pub async fn add_document(
        &self,
        actor: &Actor,
        new: NewDocument,
    ) -> StoreResult<Option<DocumentView>> {
        let key = self.live_case_key(&new.case_id).await?;
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, &new.case_id, "").await? {
            return Ok(None);
        }
        let version = match &new.replaces {
            Some(old) => replace_version(&mut tx, old, &new.case_id).await?,
            None => 1,
        };
        let now = self.now();
        sqlx::query(
            "INSERT INTO documents (id, case_id, document_type, description_sealed, file_name, content_type, size, sha256, storage_key, \
             key_id, version, replaces_document_id, is_latest, party_id, uploaded_by, uploaded_at, file_name_sealed) \
             VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $14, $15)",
        )
        .bind(&new.id)
        .bind(new.case_id)
        .bind(new.document_type.as_str())
        .bind(new.description.as_deref().map(|d| key.seal_str(&description_context(&new.id), d)))
        .bind(&new.content_type)
        .bind(new.size)
        .bind(&new.sha256)
        .bind(&new.storage_key)
        .bind(SUBJECT_SEALED)
        .bind(i32::try_from(version).unwrap_or(i32::MAX))
        .bind(new.replaces.as_deref())
        .bind(actor.party_id.as_str())
        .bind(&actor.name)
        .bind(now)
        .bind(key.seal_str(&file_name_context(&new.id), &new.file_name))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(&new.case_id),
            actor,
            AuditAction::DocumentUploaded,
            "document",
            new.id.as_str(),
            now,
        )
        .await?;
        let payload = payload::DocumentUploaded {
            document_id: &new.id,
            case_id: &new.case_id,
            document_type: new.document_type.as_str(),
            version,
            message_id: None,
        };
        emit(
            &mut tx,
            EventType::DocumentUploaded,
            Some(&new.case_id),
            &payload,
            now,
        )
        .await?;
        super::drives::enqueue(&mut tx, &new.id, &new.case_id, now).await?;
        tx.commit().await?;
        Ok(Some(DocumentView {
            id: new.id,
            case_id: new.case_id,
            document_type: new.document_type,
            description: new.description,
            file_name: new.file_name,
            content_type: new.content_type,
            size: new.size,
            sha256: new.sha256,
            storage_key: new.storage_key,
            version,
            replaces_document_id: new.replaces,
            is_latest: true,
            uploaded_by: actor.name.clone(),
            uploaded_at: now,
            mirrors: Vec::new(),
        }))
    }

    pub async fn get_document(
        &self,
        actor: &Actor,
        id: &DocumentId,
    ) -> StoreResult<Option<DocumentView>> {
        let row = sqlx::query_as::<_, DocumentRow>(&format!(
            "SELECT {COLUMNS} FROM documents d JOIN cases c ON c.id = d.case_id WHERE d.id = $1 AND d.deleted_at IS NULL AND {}",
            visible(2, 3)
        ))
        .bind(id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&self.pool)
        .await?;
        let mut found = self.documents_from_rows(row.into_iter().collect()).await?;
        self.sibling::<super::Drives>()
            .fill_mirrors(&mut found)
            .await?;
        Ok(found.pop())
    }

    /// The latest version of every document of the case, newest first.
    pub async fn list_documents(
        &self,
        actor: &Actor,
        case_id: &CaseId,
    ) -> StoreResult<Option<Vec<DocumentView>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, DocumentRow>(&format!(
            "SELECT {COLUMNS} FROM documents d WHERE d.case_id = $1 AND d.is_latest = 1 AND d.deleted_at IS NULL ORDER BY d.id DESC"
        ))
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        let mut found = self.documents_from_rows(rows).await?;
        self.sibling::<super::Drives>()
            .fill_mirrors(&mut found)
            .await?;
        Ok(Some(found))
    }

    /// Every download is in the audit log, before the bytes leave.
    pub async fn record_download(&self, actor: &Actor, doc: &DocumentView) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        audit(
            &mut tx,
            Some(&doc.case_id),
            actor,
            AuditAction::DocumentDownloaded,
            "document",
            doc.id.as_str(),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A document an inbound mail brought, stored with the message that carried it (at
    /// `position`) and uploaded by the sender, with its audit entry and `document.uploaded`.
    /// `false`, writing nothing, when that attachment is stored already (a retried job).
    pub async fn add_received_document(
        &self,
        message_id: &MessageId,
        position: i32,
        uploaded_by: &str,
        new: NewDocument,
    ) -> StoreResult<bool> {
        let key = self.live_case_key(&new.case_id).await?;
        let mut tx = self.write_tx().await?;
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT document_id FROM message_attachments WHERE message_id = $1 AND ordinal = $2",
        )
        .bind(message_id)
        .bind(position)
        .fetch_optional(&mut *tx)
        .await?;
        if stored.is_some() {
            return Ok(false);
        }
        self.insert_received(
            &mut tx,
            &key,
            ("inbound email", uploaded_by),
            &new,
            Some(message_id),
        )
        .await?;
        sqlx::query(
            "INSERT INTO message_attachments (message_id, ordinal, document_id) VALUES ($1, $2, $3)",
        )
        .bind(message_id)
        .bind(position)
        .bind(&new.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A document parley filed itself (a received attachment, an archived message): its
    /// row, uploaded by `label` (stored as is) and `who` (sealed), with the audit entry and
    /// `document.uploaded` naming `message_id`.
    pub(super) async fn insert_received(
        &self,
        tx: &mut sqlx::AnyConnection,
        key: &crate::crypto::SubjectKey,
        (label, who): (&str, &str),
        new: &NewDocument,
        message_id: Option<&MessageId>,
    ) -> StoreResult<()> {
        let now = self.now();
        sqlx::query(
            "INSERT INTO documents (id, case_id, document_type, file_name, content_type, size, sha256, storage_key, \
             key_id, version, is_latest, uploaded_by, uploaded_by_sealed, uploaded_at, file_name_sealed) \
             VALUES ($1, $2, $3, '', $4, $5, $6, $7, $8, 1, 1, $12, $9, $10, $11)",
        )
        .bind(&new.id)
        .bind(new.case_id)
        .bind(new.document_type.as_str())
        .bind(&new.content_type)
        .bind(new.size)
        .bind(&new.sha256)
        .bind(&new.storage_key)
        .bind(SUBJECT_SEALED)
        .bind(key.seal_str(&uploader_context(&new.id), who))
        .bind(now)
        .bind(key.seal_str(&file_name_context(&new.id), &new.file_name))
        .bind(label)
        .execute(&mut *tx)
        .await?;
        super::audit_as(
            &mut *tx,
            Some(&new.case_id),
            (None, label),
            AuditAction::DocumentUploaded,
            "document",
            new.id.as_str(),
            now,
        )
        .await?;
        let payload = payload::DocumentUploaded {
            document_id: &new.id,
            case_id: &new.case_id,
            document_type: new.document_type.as_str(),
            version: 1,
            message_id,
        };
        emit(
            &mut *tx,
            EventType::DocumentUploaded,
            Some(&new.case_id),
            &payload,
            now,
        )
        .await?;
        super::drives::enqueue(&mut *tx, &new.id, &new.case_id, now).await?;
        Ok(())
    }

    /// The documents of `case_id` among `ids`, in the order of `ids`; an id that names no
    /// document of that case is left out.
    pub async fn case_documents(
        &self,
        case_id: &CaseId,
        ids: &[String],
    ) -> StoreResult<Vec<DocumentView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM documents d WHERE d.case_id = $1 AND d.deleted_at IS NULL AND d.id IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query_as::<_, DocumentRow>(&sql).bind(case_id);
        for id in ids {
            q = q.bind(id.as_str());
        }
        let found = self
            .documents_from_rows(q.fetch_all(&self.pool).await?)
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|d| &d.id == id).cloned())
            .collect())
    }

    /// The documents a message carries (sent or received), in order.
    pub async fn message_documents(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Vec<DocumentView>> {
        let rows = sqlx::query_as::<_, DocumentRow>(&format!(
            "SELECT {COLUMNS} FROM message_attachments a JOIN documents d ON d.id = a.document_id \
             WHERE a.message_id = $1 ORDER BY a.ordinal"
        ))
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        self.documents_from_rows(rows).await
    }

    /// A message's attachments as its view lists them.
    pub async fn message_attachments(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Vec<super::messages::AttachmentView>> {
        Ok(self
            .message_documents(message_id)
            .await?
            .into_iter()
            .map(|d| super::messages::AttachmentView {
                document_id: d.id,
                file_name: d.file_name,
                size: d.size,
                content_type: d.content_type,
            })
            .collect())
    }

    pub fn keys_arc(&self) -> std::sync::Arc<crate::crypto::KeyRing> {
        self.keys.clone()
    }
}
