//! The mail archive: every inbound and outbound email of the cases an `archive` connector
//! serves, the exact bytes, journaled once to its target: an IMAP mailbox (APPEND), an SMTP
//! journal address (the original attached as `message/rfc822`) or the case's documents (an
//! `.eml` file).
//!
//! Durable through the queue: the `archive_message` job is written in the transaction that
//! stores a received mail or records a sent one, so a crash between delivery and journaling
//! journals it later. Never twice: what a connector journaled is recorded
//! (`archive_items`); an IMAP APPEND is preceded by a search for the Message-ID (an APPEND
//! whose record a crash lost is found there), a document is filed in the same transaction
//! as its record, and an SMTP journal report carries a Message-ID made of the connector's
//! and the message's ids, so a journal that receives it again can tell.
//!
//! A sent email's bytes are kept for this (sealed in the document store under its case's
//! key, so an erasure makes them unreadable) only while an archive connector serves its
//! case: [`Archive::serves`] is asked by the delivery worker before it hands a mail over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;

use super::messaging::Messaging;
use super::{AppError, AppResult};
use crate::documents::store::{DocumentStore, WriteError};
use crate::domain::audit::AuditAction;
use crate::domain::clock::SharedClock;
use crate::domain::connector::ArchiveTarget;
use crate::domain::document::DocumentType;
use crate::domain::message::Direction;
use crate::domain::message::{MessageStatus, MessageType};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{CaseId, DocumentId, MessageId, PartyId};
use crate::store::{Connector, NewDocument, SentCopy, Store, SyncEnd, ToArchive};
use crate::store::{MessageFilter, MessageView};

mod targets;

/// How long the list of archive connectors is kept before it is read again (a mail sent
/// within this long of a connector's creation is not kept for it).
const KEPT: Duration = Duration::from_secs(1);
/// The largest message journaled (an inbound mail is at most 64 MiB; a sent one 36 MiB).
const MAX_MESSAGE: u64 = 80 << 20;
/// Journalings at once in a process.
const JOURNALING: usize = 4;

#[derive(Clone)]
pub struct Archive(Arc<Inner>);

struct Inner {
    archive: crate::store::Archive,
    connectors: crate::store::Connectors,
    inbound: crate::store::Inbound,
    documents: crate::store::Documents,
    files: DocumentStore,
    /// The envelope sender of SMTP journal reports (`PARLEY_EMAIL_FROM`).
    from: String,
    /// The domain of journal reports' Message-IDs (`PARLEY_INBOUND_DOMAIN`).
    domain: String,
    audit: crate::store::Audit,
    clock: SharedClock,
    /// The connections of the IMAP and SMTP targets.
    targets: targets::Targets,
    /// Journalings at once in this process: each holds a message (up to 80 MiB) in memory.
    at_once: tokio::sync::Semaphore,
    listed: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Connector>>)>>,
}

impl Archive {
    pub fn new(
        store: &Store,
        files: DocumentStore,
        (from, domain): (String, String),
        clock: SharedClock,
    ) -> Self {
        Self(Arc::new(Inner {
            archive: store.archive(),
            connectors: store.connectors(),
            inbound: store.inbound(),
            documents: store.documents(),
            files,
            audit: store.audit(),
            from,
            domain,
            clock,
            targets: Default::default(),
            at_once: tokio::sync::Semaphore::new(JOURNALING),
            listed: Default::default(),
        }))
    }

    /// The archive connectors, read again every few seconds.
    async fn listed(&self) -> AppResult<Arc<Vec<Connector>>> {
        let mut kept = self.0.listed.lock().await;
        if let Some((at, list)) = kept.as_ref()
            && at.elapsed() < KEPT
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.0.archive.archive_connectors().await?);
        *kept = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Whether an archive connector serves `creditor`'s cases (then a sent email's bytes are
    /// kept). When the connectors cannot be read, yes: better a copy too many.
    pub async fn serves(&self, creditor: &PartyId) -> bool {
        match self.listed().await {
            Ok(list) => list.iter().any(|c| in_scope(c, creditor)),
            Err(_) => true,
        }
    }

    /// Keeps the exact bytes of a sent email, sealed under its case's key, for the archive
    /// job that follows its sending. An erased debtor's mail is not kept.
    pub async fn keep_sent<S>(&self, message: &MessageId, case: &CaseId, bytes: S) -> AppResult<()>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let Some(key) = self.0.documents.key_unless_erased(case).await? else {
            return Ok(());
        };
        let file_id = DocumentId::new();
        let written = self
            .0
            .files
            .write(&file_id, &key, MAX_MESSAGE, bytes)
            .await
            .map_err(|e| AppError::Store(anyhow::anyhow!("keeping the sent bytes: {e}").into()))?;
        let copy = SentCopy {
            case_id: *case,
            file_id,
            storage_key: written.key.clone(),
            size: i64::try_from(written.size).unwrap_or(i64::MAX),
            sha256: written.sha256,
        };
        match self.0.archive.keep_sent_copy(message, &copy).await {
            Ok(Some(replaced)) => self.0.files.remove(&replaced).await,
            Ok(None) => {}
            Err(e) => {
                self.0.files.remove(&written.key).await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The exact bytes of an email: a received one as it arrived, a sent one as it left
    /// (when they were kept). `None`: not kept, or its debtor erased.
    pub async fn original(&self, m: &ToArchive) -> AppResult<Option<Vec<u8>>> {
        match m.direction {
            Direction::Inbound => Ok(self
                .0
                .inbound
                .received_original(&m.id)
                .await?
                .map(|(_, _, raw)| raw)),
            Direction::Outbound => match self.0.archive.sent_copy(&m.id).await? {
                Some(copy) => self.read_copy(&copy).await,
                None => Ok(None),
            },
        }
    }

    async fn read_copy(&self, copy: &SentCopy) -> AppResult<Option<Vec<u8>>> {
        let Some(key) = self.0.documents.key_unless_erased(&copy.case_id).await? else {
            return Ok(None);
        };
        let store = |e: anyhow::Error| AppError::Store(e.into());
        let mut reader = self
            .0
            .files
            .reader(&copy.storage_key, &copy.file_id, Some(key))
            .await
            .map_err(store)?;
        let mut bytes = Vec::with_capacity(usize::try_from(copy.size).unwrap_or(0).min(1 << 20));
        while let Some(chunk) = reader.next_chunk().await.map_err(store)? {
            if (bytes.len() + chunk.len()) as u64 > MAX_MESSAGE {
                return Err(store(anyhow::anyhow!(
                    "a kept copy is larger than it may be"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// The job `archive_message`: journals the message to every archive connector serving
    /// its case that has not journaled it yet. A target that fails marks its connector
    /// failing and fails the job, which the queue retries; the others are recorded done.
    pub async fn journal(&self, message: &MessageId) -> AppResult<()> {
        let Some(m) = self.0.archive.to_archive(message).await? else {
            return Ok(());
        };
        let done = self.0.archive.archived_by(&m.id).await?;
        let pending: Vec<Connector> = self
            .0
            .archive
            .archive_connectors()
            .await?
            .into_iter()
            .filter(|c| in_scope(c, &m.creditor_id) && !done.contains(&c.id))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let _turn = self
            .0
            .at_once
            .acquire()
            .await
            .map_err(|e| AppError::Store(anyhow::anyhow!(e).into()))?;
        let Some(raw) = self.original(&m).await? else {
            tracing::info!(message = %m.id, "nothing to journal: the bytes were not kept or the debtor was erased");
            return Ok(());
        };
        let mut failed = None;
        for c in &pending {
            let started = self.0.clock.now();
            // What worked is recorded with the connector's counters by the target's step.
            let Err(e) = self.journal_to(c, &m, &raw).await else {
                continue;
            };
            tracing::warn!(connector = %c.id, message = %m.id, "journaling failed");
            let error = format!("{e:#}");
            let end = SyncEnd::Failed {
                status: crate::domain::connector::ConnectorStatus::Failing,
                error: error.clone(),
                items: 0,
            };
            failed = Some(error);
            self.0
                .connectors
                .record_sync(&c.id, (started, c.updated_at), &end)
                .await?;
        }
        match failed {
            Some(error) => Err(AppError::Store(
                anyhow::anyhow!("journaling {}: {error}", m.id).into(),
            )),
            None => Ok(()),
        }
    }

    async fn journal_to(&self, c: &Connector, m: &ToArchive, raw: &[u8]) -> anyhow::Result<()> {
        match ArchiveTarget::of(&c.settings).map_err(|e| anyhow::anyhow!(e.0))? {
            ArchiveTarget::Imap => {
                self.0.targets.append(c, m, raw).await?;
                self.0.archive.record_archived(&c.id, &m.id).await?;
            }
            ArchiveTarget::Smtp => {
                let sender = (self.0.from.as_str(), self.0.domain.as_str());
                self.0.targets.journal(c, m, raw, sender).await?;
                self.0.archive.record_archived(&c.id, &m.id).await?;
            }
            ArchiveTarget::Documents => self.file(c, m, raw).await?,
        }
        Ok(())
    }

    /// Files the message as an `.eml` document of its case.
    async fn file(&self, c: &Connector, m: &ToArchive, raw: &[u8]) -> anyhow::Result<()> {
        let Some(key) = self.0.documents.key_unless_erased(&m.case_id).await? else {
            return Ok(());
        };
        let id = DocumentId::new();
        let bytes =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(raw))]);
        let written = match self.0.files.write(&id, &key, MAX_MESSAGE, bytes).await {
            Ok(w) => w,
            Err(WriteError::Io(e)) => return Err(e),
            Err(e) => anyhow::bail!("storing the message: {e}"),
        };
        let new = NewDocument {
            id,
            case_id: m.case_id,
            document_type: DocumentType::Correspondence,
            description: None,
            file_name: format!("{}.eml", m.id),
            content_type: "message/rfc822".into(),
            size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
            sha256: written.sha256.clone(),
            storage_key: written.key.clone(),
            replaces: None,
        };
        match self.0.archive.add_archived_document(c, &m.id, new).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.0.files.remove(&written.key).await;
                Ok(())
            }
            Err(e) => {
                self.0.files.remove(&written.key).await;
                Err(e.into())
            }
        }
    }
}

/// One message of an export: its bytes, whether they are the exact ones, and its time.
#[derive(Debug)]
pub struct Exported {
    pub bytes: Vec<u8>,
    /// The bytes as they were received or sent; otherwise a rendition of what is stored.
    pub exact: bool,
    pub at: Micros,
}

impl Archive {
    /// The emails and text messages of a case the actor may see, oldest first, for an
    /// export (audited as `messages.exported`); `NotFound` for a case it may not see.
    pub async fn export_list(
        &self,
        messaging: &Messaging,
        actor: &Actor,
        case: &CaseId,
    ) -> AppResult<Vec<MessageView>> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let filter = MessageFilter {
                message_type: None,
                direction: None,
                status: None,
                date_from: None,
                date_to: None,
                cursor: cursor.take(),
                limit: 200,
            };
            let (page, _) = messaging.messages(actor, case, filter).await?;
            all.extend(
                page.items
                    .into_iter()
                    .filter(|m| m.message_type != MessageType::System),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        all.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        self.0
            .audit
            .audit_export(actor, case, AuditAction::MessagesExported)
            .await?;
        Ok(all)
    }

    /// One message of an export: the exact bytes where parley kept them (a received
    /// email; a sent one while an archive served its case), else a plain-text rendition of
    /// what is stored, marked `X-Parley-Export: rebuilt`. `None`: gone since it was listed.
    pub async fn export_one(
        &self,
        messaging: &Messaging,
        actor: &Actor,
        listed: &MessageView,
    ) -> AppResult<Option<Exported>> {
        let at = listed
            .received_at
            .or(listed.sent_at)
            .unwrap_or(listed.created_at);
        // A sent mail's kept bytes only once it went (one that failed after they were kept
        // is shown as stored, with its status).
        let went = listed.direction == Direction::Inbound
            || matches!(
                listed.status,
                MessageStatus::Sent
                    | MessageStatus::Delivered
                    | MessageStatus::Opened
                    | MessageStatus::Clicked
                    | MessageStatus::Bounced
            );
        if listed.message_type == MessageType::Email
            && went
            && let Some(m) = self.0.archive.to_archive(&listed.id).await?
            && let Some(bytes) = self.original(&m).await?
        {
            return Ok(Some(Exported {
                bytes,
                exact: true,
                at,
            }));
        }
        let view = match messaging.message(actor, &listed.id).await {
            Ok(view) => view,
            Err(AppError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Exported {
            bytes: crate::domain::mailfile::rendition(&rendered(&view, at), &self.0.domain),
            exact: false,
            at,
        }))
    }
}

/// What a rendition shows of a stored message.
fn rendered(view: &MessageView, at: Micros) -> crate::domain::mailfile::Rendition<'_> {
    crate::domain::mailfile::Rendition {
        id: view.id.as_str(),
        sms: view.message_type == MessageType::Sms,
        direction: view.direction.as_str(),
        status: view.status.as_str(),
        from: &view.envelope.from,
        to: &view.envelope.to,
        cc: &view.envelope.cc,
        subject: view.subject.as_deref(),
        body: view.body.as_deref().unwrap_or_default(),
        message_id: view.rfc_message_id.as_deref(),
        in_reply_to: view.in_reply_to.as_deref(),
        at,
    }
}

fn in_scope(c: &Connector, creditor: &PartyId) -> bool {
    c.creditor_id.as_ref().is_none_or(|only| only == creditor)
}
