//! The document systems' use cases beside the talking (`src/connectors/drives.rs`): a
//! document's bytes opened for its mirror, and a file a person put into a case folder taken
//! in as a document of the case (streamed into the document store, sealed, then recorded
//! once). The bookkeeping of folders and remote files is the store's `Drives`, reached
//! through this service.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::{AppError, AppResult};
use crate::crypto::SubjectKey;
use crate::documents::store::{DocumentReader, DocumentStore, WriteError};
use crate::domain::document::DocumentType;
use crate::domain::{CaseId, DocumentId};
use crate::store::{Connector, DocumentView, NewDocument, Store};

#[derive(Clone)]
pub struct Drives {
    drives: crate::store::Drives,
    files: DocumentStore,
    /// The largest document taken in (`PARLEY_MAX_UPLOAD_BYTES`, as an upload).
    max_bytes: u64,
}

impl std::ops::Deref for Drives {
    type Target = crate::store::Drives;

    fn deref(&self) -> &Self::Target {
        &self.drives
    }
}

/// A file in a case folder, to take in.
pub struct Found<'a> {
    pub case_id: CaseId,
    pub document_type: DocumentType,
    pub file_name: &'a str,
    pub content_type: &'a str,
    pub remote_id: &'a str,
}

impl Drives {
    pub fn new(store: &Store, files: DocumentStore, max_bytes: u64) -> Self {
        Self {
            drives: store.drives(),
            files,
            max_bytes,
        }
    }

    /// The largest file taken in.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// A document's bytes, opened under its case's key, chunk by chunk.
    pub async fn reader(
        &self,
        document: &DocumentView,
        key: Arc<SubjectKey>,
    ) -> AppResult<DocumentReader> {
        self.files
            .reader(&document.storage_key, &document.id, Some(key))
            .await
            .map_err(|e| AppError::Store(e.into()))
    }

    /// Takes in a file a person put into a case folder: its bytes streamed into the
    /// document store, sealed, then recorded as a document of the case uploaded by the
    /// connector, once. `false` when the connector took that item before (the bytes written
    /// are removed again).
    pub async fn take_in<S>(
        &self,
        connector: &Connector,
        found: Found<'_>,
        bytes: S,
    ) -> AppResult<bool>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let Some(key) = self.drives.key_of(&found.case_id).await? else {
            return Ok(false);
        };
        let id = DocumentId::new();
        let written = self
            .files
            .write(&id, &key, self.max_bytes, bytes)
            .await
            .map_err(|e| match e {
                WriteError::TooLarge(max) => AppError::TooLarge(format!(
                    "a file in a case folder is larger than documents may be ({max} bytes)"
                )),
                WriteError::Upload => AppError::Malformed("the file's download broke off".into()),
                WriteError::Io(e) => AppError::Store(e.into()),
            })?;
        let new = NewDocument {
            id,
            case_id: found.case_id,
            document_type: found.document_type,
            description: None,
            file_name: found.file_name.to_string(),
            content_type: found.content_type.to_string(),
            size: i64::try_from(written.size).unwrap_or(i64::MAX),
            sha256: written.sha256.clone(),
            storage_key: written.key.clone(),
            replaces: None,
        };
        match self.drives.take_in(connector, new, found.remote_id).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.files.remove(&written.key).await;
                Ok(false)
            }
            Err(e) => {
                self.files.remove(&written.key).await;
                Err(e.into())
            }
        }
    }
}
