//! The export of everything held about one person: their cases, each with its preferences,
//! payments, deadlines, documents, notes, audit log and messages (bodies, attachments,
//! delivery attempts, and for received mail the original), and the suppression entries of
//! their address or number. It is read case by case and a page at a time and handed to a
//! sink part by part, so a person with many messages needs no memory for all of them.

use super::cases::{Cases, PreferencesView};
use super::subjects::DataSubjects;
use super::{AppError, AppResult};
use crate::domain::CaseId;
use crate::domain::message::Direction;
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::store::{
    AuditEntry, CaseView, Deadline, DeliveryAttempt, DocumentView, MessageView, Note, NoteFilter,
    Payment, Suppression,
};

/// Notes and messages read per round; audit entries per round are `AUDIT_PAGE`.
const PAGE: i64 = 200;
const AUDIT_PAGE: i64 = 1000;

/// What a case holds besides its notes, audit log and messages.
pub struct CaseParts {
    pub case: CaseView,
    pub preferences: Option<PreferencesView>,
    pub payments: Vec<Payment>,
    pub deadlines: Vec<Deadline>,
    pub documents: Vec<DocumentView>,
}

/// A message as exported: attempts for outbound mail, the original for inbound.
pub struct ExportedMessage {
    pub message: MessageView,
    pub attempts: Vec<DeliveryAttempt>,
    pub original: Option<String>,
}

/// The parts of an export, in the order they come.
pub enum ExportPart {
    Begin {
        generated_at: Micros,
    },
    Case(Box<CaseParts>),
    Note(Note),
    /// The notes are done; the audit entries follow.
    AuditLog,
    Audit(AuditEntry),
    /// The audit log is done; the messages follow.
    Messages,
    Message(Box<ExportedMessage>),
    CaseEnd,
    End {
        suppressions: Vec<Suppression>,
    },
}

/// Where the parts go (an HTTP response being streamed); an error stops the export.
pub trait ExportSink {
    fn part(&mut self, part: ExportPart) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The person an export is about: an email address or a phone number, checked.
pub struct Subject {
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// What a read found: `None` for a case that went away meanwhile; other failures stop the
/// export.
fn found<T>(read: AppResult<T>) -> anyhow::Result<Option<T>> {
    match read {
        Ok(found) => Ok(Some(found)),
        Err(AppError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A list of a case that went away meanwhile is empty.
fn or_empty<T>(listed: AppResult<Vec<T>>) -> anyhow::Result<Vec<T>> {
    Ok(found(listed)?.unwrap_or_default())
}

impl DataSubjects {
    /// The cases of the person, oldest first: read before the export starts, so that a
    /// failure here is still an error response.
    #[tracing::instrument(skip_all)]
    pub async fn subject_cases(&self, subject: &Subject) -> AppResult<Vec<CaseId>> {
        let ids = self
            .subjects
            .subject_cases(subject.email.as_deref(), subject.phone.as_deref())
            .await?;
        Ok(ids.iter().filter_map(|id| CaseId::parse(id)).collect())
    }

    /// Hands everything held about the person to `sink`, case by case; each case read is
    /// audited as exported.
    #[tracing::instrument(skip_all)]
    pub async fn export(
        &self,
        actor: &Actor,
        subject: &Subject,
        cases: &[CaseId],
        sink: &mut impl ExportSink,
    ) -> anyhow::Result<()> {
        sink.part(ExportPart::Begin {
            generated_at: self.clock.now(),
        })
        .await?;
        let reader = &self.cases;
        for id in cases {
            self.export_case(actor, reader, id, sink).await?;
        }
        let values: Vec<&str> = subject
            .email
            .iter()
            .chain(subject.phone.iter())
            .map(String::as_str)
            .collect();
        let suppressions = self.policy.suppressions_of(&values, None).await?;
        sink.part(ExportPart::End { suppressions }).await
    }

    async fn export_case(
        &self,
        actor: &Actor,
        cases: &Cases,
        id: &CaseId,
        sink: &mut impl ExportSink,
    ) -> anyhow::Result<()> {
        let case = found(cases.get(actor, id).await)?
            .ok_or_else(|| anyhow::anyhow!("case {id} went away during the export"))?;
        let preferences = found(cases.preferences(actor, id).await)?;
        let parts = CaseParts {
            case,
            preferences,
            payments: or_empty(cases.payments(actor, id).await)?,
            deadlines: or_empty(cases.deadlines(actor, id).await)?,
            documents: self
                .documents
                .list_documents(actor, id)
                .await?
                .unwrap_or_default(),
        };
        sink.part(ExportPart::Case(Box::new(parts))).await?;
        self.export_notes(actor, cases, id, sink).await?;
        sink.part(ExportPart::AuditLog).await?;
        self.export_audit(actor, cases, id, sink).await?;
        sink.part(ExportPart::Messages).await?;
        self.export_messages(id, sink).await?;
        sink.part(ExportPart::CaseEnd).await?;
        self.audit
            .audit_export(
                actor,
                id,
                crate::domain::audit::AuditAction::DataSubjectExported,
            )
            .await?;
        Ok(())
    }

    async fn export_notes(
        &self,
        actor: &Actor,
        cases: &Cases,
        id: &CaseId,
        sink: &mut impl ExportSink,
    ) -> anyhow::Result<()> {
        let mut cursor = None;
        loop {
            let filter = NoteFilter {
                every_party: true,
                category: None,
                tag: None,
                cursor: cursor.take(),
                limit: PAGE,
            };
            let page = cases.notes(actor, id, filter).await?;
            for note in page.items {
                sink.part(ExportPart::Note(note)).await?;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    async fn export_audit(
        &self,
        actor: &Actor,
        cases: &Cases,
        id: &CaseId,
        sink: &mut impl ExportSink,
    ) -> anyhow::Result<()> {
        let mut cursor: Option<String> = None;
        loop {
            let page = cases
                .audit_log(actor, id, cursor.as_deref(), AUDIT_PAGE)
                .await?;
            for entry in page.items {
                sink.part(ExportPart::Audit(entry)).await?;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    async fn export_messages(&self, id: &CaseId, sink: &mut impl ExportSink) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .subjects
                .case_messages_with_bodies(id, after.as_deref(), PAGE)
                .await?;
            let Some(last) = page.last().map(|m| m.id.clone()) else {
                return Ok(());
            };
            for message in page {
                // Attempts are made for outbound mail only, the original kept for inbound only.
                let (attempts, original) = if message.direction == Direction::Inbound {
                    let original = self
                        .inbound
                        .received_original(&message.id)
                        .await?
                        .map(|(_, _, raw)| String::from_utf8_lossy(&raw).into_owned());
                    (Vec::new(), original)
                } else {
                    (self.queue.delivery_attempts(&message.id).await?, None)
                };
                sink.part(ExportPart::Message(Box::new(ExportedMessage {
                    message,
                    attempts,
                    original,
                })))
                .await?;
            }
            after = Some(last.to_string());
        }
    }
}
