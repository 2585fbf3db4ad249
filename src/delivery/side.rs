//! The jobs of the jobs table beside deliveries, each its own kind: a `system_message`
//! writes the message of its event, an `inbound_attachments` files a received mail's
//! attachments as documents of its case, an `archive_message` journals a message to the
//! archive connectors. Each is idempotent: a retry finds done what was done.

use crate::app::archive::Archive;
use crate::app::connectors::DocumentSystems;
use crate::app::documents::Documents;
use crate::app::messaging::Messaging;
use crate::app::{AppError, AppResult};
use crate::domain::message::JobKind;

pub struct SideJobs {
    /// Writes system messages.
    messaging: Messaging,
    /// Files received attachments.
    documents: Documents,
    /// Journals messages to the archive connectors.
    archive: Archive,
    /// Mirrors documents to the drive connectors.
    pub(super) drives: Option<std::sync::Arc<dyn DocumentSystems>>,
}

impl SideJobs {
    pub fn new(messaging: Messaging, documents: Documents, archive: Archive) -> Self {
        Self {
            messaging,
            documents,
            archive,
            drives: None,
        }
    }

    /// Does the job of `kind` about `subject` (an outbox event, a received message).
    pub async fn run(&self, kind: JobKind, subject: &str) -> AppResult<()> {
        match kind {
            JobKind::SystemMessage => self.messaging.make_system_message(subject).await,
            JobKind::InboundAttachments => self
                .documents
                .file_received_attachments(&crate::domain::MessageId::from_stored(
                    subject.to_string(),
                ))
                .await
                .map(|_| ()),
            JobKind::ArchiveMessage => {
                self.archive
                    .journal(&crate::domain::MessageId::from_stored(subject.to_string()))
                    .await
            }
            JobKind::MirrorDocument => match &self.drives {
                Some(drives) => {
                    drives
                        .mirror(&crate::domain::DocumentId::from_stored(subject.to_string()))
                        .await
                }
                None => Err(AppError::Store(
                    anyhow::anyhow!("this process mirrors no documents").into(),
                )),
            },
            JobKind::DeliverMessage => Err(AppError::Store(
                anyhow::anyhow!("a delivery is not a side job").into(),
            )),
        }
    }
}
