//! Case documents: an upload streams its file into the encrypted document store, then is
//! recorded (a new version where it replaces one); a download reads it back chunk by chunk
//! and is audited. A refused or broken upload leaves no file behind.

use crate::domain::MessageId;
use bytes::Bytes;

use super::{AppError, AppResult};
use crate::documents::store::{DocumentReader, DocumentStore, WriteError, Written};
use crate::domain::code::Code;
use crate::domain::document::DocumentType;
use crate::domain::party::Actor;
use crate::domain::{CaseId, DocumentId};
use crate::store::{DocumentView, NewDocument, Store};

/// An upload in progress: its file, once written, and what was said about it.
#[derive(Debug)]
pub struct Upload {
    id: DocumentId,
    case_id: CaseId,
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
    documents: crate::store::Documents,
    inbound: crate::store::Inbound,
    files: DocumentStore,
    /// `PARLEY_MAX_UPLOAD_BYTES`.
    max_bytes: u64,
}

impl Documents {
    /// Where the bytes are kept.
    pub fn files(&self) -> &DocumentStore {
        &self.files
    }

    pub fn new(store: &Store, files: DocumentStore, max_bytes: u64) -> Self {
        Self {
            documents: store.documents(),
            inbound: store.inbound(),
            files,
            max_bytes,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The documents of a case, newest first.
    #[tracing::instrument(skip_all)]
    pub async fn list(&self, actor: &Actor, case: &CaseId) -> AppResult<Vec<DocumentView>> {
        self.documents
            .list_documents(actor, case)
            .await?
            .ok_or(AppError::NotFound("case"))
    }

    /// One document's metadata.
    #[tracing::instrument(skip_all)]
    pub async fn metadata(&self, actor: &Actor, id: &DocumentId) -> AppResult<DocumentView> {
        self.documents
            .get_document(actor, id)
            .await?
            .ok_or(AppError::NotFound("document"))
    }

    /// Starts an upload to a case the actor can see.
    #[tracing::instrument(skip_all)]
    pub async fn begin(&self, actor: &Actor, case: &CaseId) -> AppResult<Upload> {
        let case_id = *case;
        if !self.documents.can_see_case(actor, &case_id).await? {
            return Err(AppError::NotFound("case"));
        }
        Ok(Upload {
            id: DocumentId::new(),
            case_id,
            file: None,
        })
    }

    /// Streams the upload's file into the store, sealed, never more than the limit.
    #[tracing::instrument(skip_all)]
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
        let key = self.documents.live_case_key(&upload.case_id).await?;
        let written = self
            .files
            .write(&upload.id, &key, self.max_bytes, bytes)
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

    /// Stores the attachments of the received message `message_id` as `correspondence`
    /// documents of its case, uploaded by the sender, each linked from the message. One
    /// stored before (a retried job) is not stored again. Returns how many it stored.
    #[tracing::instrument(skip_all)]
    pub async fn file_received_attachments(&self, message_id: &MessageId) -> AppResult<usize> {
        let Some((case_id, from, raw)) = self.inbound.received_original(message_id).await? else {
            return Ok(0);
        };
        let Some(key) = self.documents.key_unless_erased(&case_id).await? else {
            return Ok(0);
        };
        let mut stored = 0;
        for (position, a) in crate::domain::mail::attachments(&raw)
            .into_iter()
            .enumerate()
        {
            let id = DocumentId::new();
            let size = a.bytes.len();
            let bytes = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(a.bytes))]);
            let written = match self.files.write(&id, &key, self.max_bytes, bytes).await {
                Ok(w) => w,
                // Larger than any upload may be: not filed (the raw mail keeps it).
                Err(WriteError::TooLarge(_)) => {
                    tracing::warn!(
                        message = %message_id,
                        "a received attachment is over PARLEY_MAX_UPLOAD_BYTES: not filed"
                    );
                    continue;
                }
                Err(WriteError::Io(e)) => return Err(AppError::Store(e.into())),
                Err(e) => {
                    return Err(AppError::Store(
                        anyhow::anyhow!("storing an attachment: {e}").into(),
                    ));
                }
            };
            let new = NewDocument {
                id,
                case_id,
                document_type: DocumentType::Correspondence,
                description: None,
                file_name: a.file_name,
                content_type: a.content_type,
                size: i64::try_from(size).unwrap_or(i64::MAX),
                sha256: written.sha256.clone(),
                storage_key: written.key.clone(),
                replaces: None,
            };
            let position = i32::try_from(position).unwrap_or(i32::MAX);
            match self
                .documents
                .add_received_document(message_id, position, &from, new)
                .await
            {
                Ok(true) => stored += 1,
                Ok(false) => self.files.remove(&written.key).await,
                Err(e) => {
                    self.files.remove(&written.key).await;
                    return Err(e.into());
                }
            }
        }
        Ok(stored)
    }

    /// Gives up an upload, removing its file.
    #[tracing::instrument(skip_all)]
    pub async fn abandon(&self, upload: Upload) {
        if let Some((written, _, _)) = upload.file {
            self.files.remove(&written.key).await;
        }
    }

    /// Records the uploaded document; on refusal the file is removed again.
    #[tracing::instrument(skip_all)]
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
            case_id: upload.case_id,
            document_type: kind,
            description: described.description,
            file_name,
            content_type,
            size: i64::try_from(written.size).unwrap_or(i64::MAX),
            sha256: written.sha256.clone(),
            storage_key: written.key.clone(),
            replaces: described.replaces,
        };
        let outcome = match self.documents.add_document(actor, new).await {
            Ok(Some(doc)) => return Ok(doc),
            Ok(None) => Err(AppError::NotFound("case")),
            Err(e) => Err(e.into()),
        };
        self.abandon(upload).await;
        outcome
    }

    /// A document the actor can see and its bytes, chunk by chunk; the download is audited.
    #[tracing::instrument(skip_all)]
    pub async fn open(
        &self,
        actor: &Actor,
        document_id: &DocumentId,
    ) -> AppResult<(DocumentView, DocumentReader)> {
        let doc = self
            .documents
            .get_document(actor, document_id)
            .await?
            .ok_or(AppError::NotFound("document"))?;
        // The file opens with the key of the case's debtor; an erased debtor's is gone.
        let Some(key) = self.documents.key_unless_erased(&doc.case_id).await? else {
            return Err(AppError::NotFound("document"));
        };
        let reader = self
            .files
            .reader(&doc.storage_key, &doc.id, Some(key))
            .await
            .map_err(|e| AppError::Store(e.into()))?;
        self.documents.record_download(actor, &doc).await?;
        Ok((doc, reader))
    }
}
