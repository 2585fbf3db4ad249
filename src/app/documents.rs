//! Case documents: an upload streams its file into the encrypted document store, then is
//! recorded (a new version where it replaces one); a download reads it back chunk by chunk
//! and is audited. A refused or broken upload leaves no file behind.

use bytes::Bytes;

use super::{AppError, AppResult};
use crate::documents::store::{DocumentReader, DocumentStore, WriteError, Written};
use crate::domain::code::Code;
use crate::domain::document::DocumentType;
use crate::domain::party::Actor;
use crate::domain::{CaseId, prefixed_id};
use crate::store::{DocumentView, NewDocument, Store};

/// An upload in progress: its file, once written, and what was said about it.
#[derive(Debug)]
pub struct Upload {
    id: String,
    case_id: String,
    file: Option<(Written, String, String)>,
}

impl Upload {
    /// Whether the file part has been written.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }
}

/// What the uploader said about the document.
#[derive(Debug, Default)]
pub struct Described {
    pub document_type: Option<String>,
    pub description: Option<String>,
    pub replaces: Option<String>,
}

#[derive(Clone)]
pub struct Documents {
    store: Store,
    files: DocumentStore,
    /// `PARLEY_MAX_UPLOAD_BYTES`.
    max_bytes: u64,
}

impl Documents {
    pub fn new(store: Store, files: DocumentStore, max_bytes: u64) -> Self {
        Self {
            store,
            files,
            max_bytes,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Starts an upload to a case the actor can see.
    pub async fn begin(&self, actor: &Actor, case: &CaseId) -> AppResult<Upload> {
        let case_id = case.to_string();
        if !self.store.can_see_case(actor, &case_id).await? {
            return Err(AppError::NotFound("case"));
        }
        Ok(Upload {
            id: prefixed_id("doc"),
            case_id,
            file: None,
        })
    }

    /// Streams the upload's file into the store, sealed, never more than the limit.
    pub async fn write_file<S>(
        &self,
        upload: &mut Upload,
        file_name: String,
        content_type: String,
        bytes: S,
    ) -> AppResult<()>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let written = self
            .files
            .write(&upload.id, self.max_bytes, bytes)
            .await
            .map_err(|e| match e {
                WriteError::TooLarge(max) => {
                    AppError::TooLarge(format!("documents may be at most {max} bytes"))
                }
                WriteError::Upload => AppError::Malformed("the upload broke off".into()),
                WriteError::Io(e) => AppError::Store(e.into()),
            })?;
        upload.file = Some((written, file_name, content_type));
        Ok(())
    }

    /// Gives up an upload, removing its file.
    pub async fn abandon(&self, upload: Upload) {
        if let Some((written, _, _)) = upload.file {
            self.files.remove(&written.key).await;
        }
    }

    /// Records the uploaded document; on refusal the file is removed again.
    pub async fn finish(
        &self,
        actor: &Actor,
        upload: Upload,
        described: Described,
    ) -> AppResult<DocumentView> {
        let checked = (|| {
            let kind =
                DocumentType::parse(described.document_type.as_deref().ok_or_else(|| {
                    AppError::refused(Code::ValidationFailed, "documentType is required")
                })?)
                .map_err(|e| AppError::refused(Code::InvalidDocumentType, e.0))?;
            let file = upload
                .file
                .as_ref()
                .ok_or_else(|| AppError::refused(Code::ValidationFailed, "file is required"))?;
            Ok::<_, AppError>((kind, file.clone()))
        })();
        let (kind, (written, file_name, content_type)) = match checked {
            Ok(v) => v,
            Err(e) => {
                self.abandon(upload).await;
                return Err(e);
            }
        };
        let new = NewDocument {
            id: upload.id.clone(),
            case_id: upload.case_id.clone(),
            document_type: kind,
            description: described.description,
            file_name,
            content_type,
            size: i64::try_from(written.size).unwrap_or(i64::MAX),
            sha256: written.sha256.clone(),
            storage_key: written.key.clone(),
            replaces: described.replaces,
        };
        let outcome = match self.store.add_document(actor, new).await {
            Ok(Some(doc)) => return Ok(doc),
            Ok(None) => Err(AppError::NotFound("case")),
            Err(e) => Err(e.into()),
        };
        self.abandon(upload).await;
        outcome
    }

    /// A document the actor can see and its bytes, chunk by chunk; the download is audited.
    pub async fn open(
        &self,
        actor: &Actor,
        document_id: &str,
    ) -> AppResult<(DocumentView, DocumentReader)> {
        let doc = self
            .store
            .get_document(actor, document_id)
            .await?
            .ok_or(AppError::NotFound("document"))?;
        let reader = self
            .files
            .reader(&doc.storage_key, &doc.id)
            .await
            .map_err(|e| AppError::Store(e.into()))?;
        self.store.record_download(actor, &doc).await?;
        Ok((doc, reader))
    }
}
