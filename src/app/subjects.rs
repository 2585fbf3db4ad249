//! Data subjects: erasure on request, where no retention rule holds; restriction where one
//! does, and erasure by the retention sweeper when it ends.
//!
//! The data subject is the debtor of a case, found by email or phone through the blind
//! indexes. A case's data is kept while the case is open, and for `PARLEY_RETENTION` after it
//! ended (paid or closed): bookkeeping law keeps records that long.

use crate::domain::{CaseId, MessageId};
use std::time::Duration;

use serde::Serialize;

use super::AppResult;
use super::connectors::{DocumentSystems, RemoteCopy};
use crate::documents::store::DocumentStore;
use crate::domain::clock::SharedClock;
use crate::domain::party::Actor;
use crate::domain::time::{Micros, duration_micros, rfc3339};
use crate::store::{Store, SubjectCase};

/// Cases the sweeper erases in one round at most (the round runs before the delivery
/// worker's claim: it stays short).
const SWEEP_BATCH: i64 = 20;

#[derive(Clone)]
pub struct DataSubjects {
    pub(super) audit: crate::store::Audit,
    pub(super) documents: crate::store::Documents,
    pub(super) inbound: crate::store::Inbound,
    pub(super) policy: crate::store::Policy,
    pub(super) queue: crate::store::Queue,
    /// Reads a case's records for an export.
    pub(super) cases: super::cases::Cases,
    pub(super) subjects: crate::store::Subjects,
    files: DocumentStore,
    /// The data folder: the outbox and the spool of outgoing mail are copies to erase.
    data_dir: std::path::PathBuf,
    retention: Duration,
    /// How long dismissed unmatched mail is kept.
    unmatched_retention: Duration,
    /// How long finished webhook deliveries and their events are kept.
    webhook_retention: Duration,
    webhooks: crate::store::Webhooks,
    /// Whose idempotency keys past their 24 hours the sweeper forgets.
    parties: crate::store::Parties,
    pub(super) clock: SharedClock,
    /// The document systems whose copies an erasure deletes (set once the connectors'
    /// runtime exists).
    remote: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn DocumentSystems>>>,
}

/// A case whose data was erased.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasedCase {
    pub case_id: CaseId,
    pub case_number: String,
    pub erased_at: String,
}

/// A case whose data is kept, restricted, and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedCase {
    pub case_id: CaseId,
    pub case_number: String,
    /// `case_open` (kept while the case runs, and for the retention period after it ends)
    /// or `retention_period` (the case ended less than `PARLEY_RETENTION` ago).
    pub rule: &'static str,
    /// When the sweeper erases it; `None` while the case is open.
    pub retained_until: Option<String>,
    pub restricted_at: String,
}

/// The answer to an erasure request.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub erased: Vec<ErasedCase>,
    pub retained: Vec<RetainedCase>,
    /// Mail and SMS from the person that matched no case, removed (retained cases or not:
    /// they are no case's record).
    pub unmatched_erased: u64,
    /// The copies of the erased cases on document systems: each connector's case folder,
    /// `deleted` or `failed` (tried again until it is deleted).
    pub remote_copies: Vec<RemoteCopy>,
}

impl DataSubjects {
    pub fn new(
        store: &Store,
        files: DocumentStore,
        data_dir: std::path::PathBuf,
        (retention, unmatched_retention, webhook_retention): (Duration, Duration, Duration),
        clock: SharedClock,
    ) -> Self {
        Self {
            cases: super::cases::Cases::new(store, clock.clone()),
            audit: store.audit(),
            documents: store.documents(),
            inbound: store.inbound(),
            policy: store.policy(),
            queue: store.queue(),
            subjects: store.subjects(),
            files,
            data_dir,
            retention,
            unmatched_retention,
            webhook_retention,
            webhooks: store.webhooks(),
            parties: store.parties(),
            clock,
            remote: Default::default(),
        }
    }

    /// The document systems an erasure deletes copies from.
    pub fn with_document_systems(&self, systems: std::sync::Arc<dyn DocumentSystems>) {
        let _ = self.remote.set(systems);
    }

    /// When the data of a case that ended at `ended_at` may go.
    fn retained_until(&self, ended_at: Micros) -> Micros {
        ended_at.saturating_add(duration_micros(self.retention))
    }

    /// Erases the person's data in every case where no retention rule holds, and restricts
    /// it in the others (the sweeper erases those when their retention ends).
    #[tracing::instrument(skip_all)]
    pub async fn erase(
        &self,
        actor: &Actor,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> AppResult<Erasure> {
        let now = self.clock.now();
        let mut answer = Erasure::default();
        for case in self.subjects.subject_case_states(email, phone).await? {
            if let Some(at) = case.erased_at {
                answer.erased.push(ErasedCase {
                    case_id: case.id,
                    case_number: case.case_number,
                    erased_at: rfc3339(at),
                });
                continue;
            }
            match self.rule(&case, now) {
                None => {
                    let copies = self.erase_case(actor, &case.id, now).await?;
                    answer.remote_copies.extend(copies);
                    answer.erased.push(ErasedCase {
                        case_id: case.id,
                        case_number: case.case_number,
                        erased_at: rfc3339(now),
                    });
                }
                Some((rule, until)) => {
                    self.subjects.restrict_case(actor, &case.id, now).await?;
                    answer.retained.push(RetainedCase {
                        case_id: case.id,
                        case_number: case.case_number,
                        rule,
                        retained_until: until.map(rfc3339),
                        restricted_at: rfc3339(case.restricted_at.unwrap_or(now)),
                    });
                }
            }
        }
        let senders: Vec<&str> = email.into_iter().chain(phone).collect();
        answer.unmatched_erased = self.subjects.erase_unmatched_from(actor, &senders).await?;
        Ok(answer)
    }

    /// The retention rule that keeps a case's data, and until when; `None`: none holds.
    fn rule(&self, case: &SubjectCase, now: Micros) -> Option<(&'static str, Option<Micros>)> {
        let ended = matches!(case.status.as_str(), "paid" | "closed");
        match case.ended_at.filter(|_| ended) {
            None => Some(("case_open", None)),
            Some(at) if self.retained_until(at) > now => {
                Some(("retention_period", Some(self.retained_until(at))))
            }
            Some(_) => None,
        }
    }

    /// Erases a case, and its copies on the document systems: what became of those.
    async fn erase_case(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        now: Micros,
    ) -> AppResult<Vec<RemoteCopy>> {
        let erased = self.subjects.erase_case(actor, case_id, now).await?;
        // The files are unreadable already (their key is gone); removing them frees the space.
        for key in &erased.storage_keys {
            self.files.remove(key).await;
        }
        self.remove_copies(&erased.message_ids).await;
        Ok(match self.remote.get() {
            Some(systems) => systems.erase(std::slice::from_ref(case_id)).await,
            None => Vec::new(),
        })
    }

    /// Removes what the file transports and the attachment spool wrote of these messages:
    /// `outbox/<id>.eml` (and `<id>.<n>.eml`, the copies of further recipients) and
    /// `<id>.json`, a temporary file left by a crash, and `spool/<id>…-*.eml`. They hold the
    /// message in the clear, as a mail server would.
    async fn remove_copies(&self, message_ids: &[MessageId]) {
        if message_ids.is_empty() {
            return;
        }
        let ids: std::collections::HashSet<&str> =
            message_ids.iter().map(MessageId::as_str).collect();
        for folder in ["outbox", "spool"] {
            let Ok(mut entries) = tokio::fs::read_dir(self.data_dir.join(folder)).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                // A message id is `msg_` and hex: what follows it is `.` or `-`.
                let id = name
                    .trim_start_matches('.')
                    .split(['.', '-'])
                    .next()
                    .unwrap_or_default();
                if ids.contains(id) {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
    }

    /// One round of the retention sweeper: erases restricted cases whose retention ended,
    /// removes dismissed unmatched mail past its retention, and forgets finished webhook
    /// work past `PARLEY_WEBHOOK_RETENTION` and idempotency keys past their 24 hours.
    /// Returns how many cases it erased.
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> AppResult<usize> {
        let now = self.clock.now();
        let ended_before = now.saturating_sub(duration_micros(self.retention));
        let due = self
            .subjects
            .cases_due_for_erasure(ended_before, SWEEP_BATCH)
            .await?;
        let system = Actor::system();
        let mut erased = 0;
        for case_id in &due {
            // One case that fails does not hold up the others: it is tried again next round.
            match self.erase_case(&system, case_id, now).await {
                Ok(_) => erased += 1,
                Err(e) => {
                    tracing::error!(case = %case_id, error = %e, "erasing a case whose retention ended failed")
                }
            }
        }
        if erased > 0 {
            tracing::info!(cases = erased, "retention ended: erased");
        }
        let dismissed_before = now.saturating_sub(duration_micros(self.unmatched_retention));
        let removed = self
            .inbound
            .remove_dismissed_unmatched(dismissed_before)
            .await?;
        if removed > 0 {
            tracing::info!(mails = removed, "dismissed unmatched mail removed");
        }
        let finished_before = now.saturating_sub(duration_micros(self.webhook_retention));
        let forgotten = self.webhooks.forget_finished(finished_before).await?
            + self.parties.forget_expired_keys(now).await?;
        if forgotten > 0 {
            tracing::info!(
                rows = forgotten,
                "finished webhook work and expired idempotency keys forgotten"
            );
        }
        Ok(erased)
    }
}
