//! Background delivery: the queue engine (`worker.rs`) claims due delivery jobs; a
//! [`DeliveryJob`] sends each message through its transport and records the attempt and its
//! outcome. Transient failures are retried on the configured schedule with jitter;
//! permanent ones, and the last attempt, end the message as `failed` with the reason.

pub mod attach;
pub mod dkim;
pub mod email;
mod html;
mod side;
pub mod sms;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::app::AppError;

use crate::app::archive::Archive;
use crate::app::connectors::{Handover, MailboxRoutes, Route};
use crate::app::documents::Documents;
use crate::app::messaging::Messaging;
use crate::app::policy::{Allowed, Question, SendPolicy};
use crate::app::tracking::LinkMaker;
use crate::config::{DeliveryConfig, MailConfig, SmsConfig};
use crate::domain::MessageId;
use crate::domain::clock::SharedClock;
use crate::domain::code::Code;
use crate::domain::message::{Channel, JobKind, MessageStatus};
use crate::domain::policy::Evidence;
use crate::domain::time::from_micros;
use crate::domain::{CaseId, ConnectorId};
use crate::store::queue::{Claim, DELIVERY_JOBS, QueueTable, Transition};
use crate::store::{AttemptRecord, Delivered, Delivering, Store};
use crate::worker::{Backoff, Job};
use bytes::Bytes;
use email::{Composed, EmailContext, EmailTransport};
use futures_util::StreamExt;
use sms::{SenderPacer, SmsTransport};

#[derive(Debug)]
pub enum SendError {
    /// Worth another attempt: connection trouble, SMTP 4xx, SMS API 5xx or 429.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will not succeed: SMTP 5xx, SMS API 4xx, a message that cannot be built.
    Permanent(String),
}

/// What an attempt learnt on its way: the message's channel, the policy's evidence.
#[derive(Default)]
struct Attempted {
    channel: Option<Channel>,
    evidence: Option<Evidence>,
}

/// What delivery needs of the configuration: its own section, mail and SMS, where the
/// outbox is and the base URL of tracking links.
#[derive(Debug, Clone)]
pub struct DeliverySetup {
    pub delivery: DeliveryConfig,
    pub mail: MailConfig,
    pub sms: SmsConfig,
    pub public_url: String,
    pub outbox: PathBuf,
}

pub struct DeliveryJob {
    /// Documents' rows (their files are read through `documents`).
    document_rows: crate::store::Documents,
    queue: crate::store::Queue,
    system: crate::store::System,
    policy: SendPolicy,
    /// The side jobs of the jobs table.
    side: side::SideJobs,
    /// Where attachments are read from, and received ones filed.
    documents: Documents,
    /// Signs outbound email (`PARLEY_DKIM_KEY`).
    dkim: Option<dkim::DkimSigner>,
    config: DeliverySetup,
    clock: SharedClock,
    email: EmailTransport,
    sms: SmsTransport,
    pacer: SenderPacer,
    backoff: Backoff,
    /// What the deliveries of the last claims read together ([`Job::preload`]), by job,
    /// until each attempt takes its own.
    preloaded: crate::worker::Preloaded<Delivering>,
    /// The mailboxes (connectors) that carry the mail of the cases they serve.
    mailboxes: Option<std::sync::Arc<dyn MailboxRoutes>>,
    /// Keeps the bytes of sent mail an archive connector is to journal.
    archive: Archive,
    /// One permit a hand-over to the SMS provider, and to each mailbox connector its own:
    /// however many deliveries run at once, each sees at most [`PEER_SESSIONS`] requests,
    /// and a slow one (one creditor's mailbox) holds up none of the others.
    sms_handovers: tokio::sync::Semaphore,
    mailbox_handovers:
        std::sync::Mutex<HashMap<ConnectorId, std::sync::Arc<tokio::sync::Semaphore>>>,
}

impl DeliveryJob {
    pub fn new(
        store: &Store,
        policy: SendPolicy,
        messaging: Messaging,
        (documents, archive): (Documents, Archive),
        config: DeliverySetup,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let outbox = config.outbox.clone();
        let email = EmailTransport::new(
            config.mail.smtp_url.as_ref().map(|s| s.expose()),
            outbox.clone(),
            config.delivery.concurrency.min(PEER_SESSIONS),
        )?;
        let sms = match (&config.sms.url, &config.sms.account, &config.sms.token) {
            (Some(base), Some(account), Some(token)) => SmsTransport::Api {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .context("building the HTTP client")?,
                base: base.clone(),
                account: account.clone(),
                token: token.clone(),
                status_callback: config.sms.status_callback_url.clone(),
            },
            (Some(_), _, _) => anyhow::bail!(
                "PARLEY_SMS_URL is set: PARLEY_SMS_ACCOUNT and PARLEY_SMS_TOKEN are needed too"
            ),
            _ => SmsTransport::Outbox(outbox),
        };
        attach::sweep(&config.outbox.with_file_name("spool"));
        let dkim = config
            .mail
            .dkim
            .as_ref()
            .map(|d| dkim::DkimSigner::from_pem(d.key_pem.expose(), &d.domain, &d.selector))
            .transpose()
            .context("PARLEY_DKIM_KEY")?;
        Ok(Self {
            dkim,
            pacer: SenderPacer::new(store, config.sms.rate_per_second),
            backoff: Backoff::new(config.delivery.retry_schedule.clone()),
            document_rows: store.documents(),
            queue: store.queue(),
            system: store.system(),
            policy,
            side: side::SideJobs::new(messaging, documents.clone(), archive.clone()),
            archive,
            documents,
            preloaded: crate::worker::Preloaded::default(),
            mailboxes: None,
            config,
            clock,
            email,
            sms,
            sms_handovers: tokio::sync::Semaphore::new(PEER_SESSIONS),
            mailbox_handovers: std::sync::Mutex::default(),
        })
    }

    /// Mail of the cases a mailbox connector serves leaves through it.
    /// The document systems the `mirror_document` jobs mirror to.
    pub fn with_document_systems(
        mut self,
        systems: std::sync::Arc<dyn crate::app::connectors::DocumentSystems>,
    ) -> Self {
        self.side.drives = Some(systems);
        self
    }

    pub fn with_mailboxes(mut self, mailboxes: std::sync::Arc<dyn MailboxRoutes>) -> Self {
        self.mailboxes = Some(mailboxes);
        self
    }

    /// How many attempts found what they read preloaded with their claim (for tests).
    #[doc(hidden)]
    pub fn preloaded_attempts(&self) -> usize {
        self.preloaded.taken()
    }

    fn retry(
        &self,
        attempt: i32,
        reason: String,
        retry_after: Option<Duration>,
    ) -> (Transition, Delivered) {
        match self.backoff.next(attempt, self.clock.now(), retry_after) {
            Some(at) => (Transition::Retry { at, error: reason }, Delivered::Nothing),
            None => {
                let reason = format!("gave up after {attempt} attempts: {reason}");
                (
                    Transition::Failed {
                        error: reason.clone(),
                    },
                    Delivered::Failed { reason },
                )
            }
        }
    }

    /// One attempt at delivering a message: the policy again, then the transport; with what
    /// it learnt on the way.
    async fn attempt(&self, claim: &Claim) -> (Transition, Delivered, Attempted) {
        let mut seen = Attempted::default();
        let (next, delivered) = self.attempt_with(claim, &mut seen).await;
        (next, delivered, seen)
    }

    async fn attempt_with(&self, claim: &Claim, seen: &mut Attempted) -> (Transition, Delivered) {
        let evidence = &mut seen.evidence;
        let fail = |reason: String| {
            (
                Transition::Failed {
                    error: reason.clone(),
                },
                Delivered::Failed { reason },
            )
        };
        let read = match self.preloaded.take(&claim.id) {
            Some(d) => Ok(Some(d)),
            None => {
                self.queue
                    .delivering(&MessageId::from_stored(claim.subject.clone()))
                    .await
            }
        };
        let delivering = match read {
            Ok(Some(d)) => d,
            Ok(None) => return fail("message no longer exists".into()),
            // A stored word this build cannot read: never sent on a guess.
            Err(crate::store::StoreError::Corrupt(e)) => {
                return fail(format!("unreadable message: {e}"));
            }
            Err(e) => return self.retry(claim.attempts, format!("reading the message: {e}"), None),
        };
        let message = &delivering.message;
        seen.channel = Some(message.channel);
        if message.status != MessageStatus::Queued {
            // Sent before a crash cut the bookkeeping short, or finished by another worker.
            return (Transition::Done, Delivered::Nothing);
        }
        match self.policy_at_send(&delivering).await {
            Ok(allowed) => {
                *evidence = Some(allowed.evidence);
                if let Some(at) = allowed.not_before.filter(|at| *at > self.clock.now()) {
                    return (Transition::Defer(at), Delivered::Nothing);
                }
            }
            Err(AppError::Refused {
                code: Code::AwaitingReview,
                ..
            }) => {
                // Held, not refused: a reply on the case awaits a person's review; the
                // message goes once it is dismissed, and fails if it is confirmed.
                let at = self.clock.now() + REVIEW_RECHECK;
                *evidence = Some(Evidence::deferred(
                    Code::AwaitingReview,
                    from_micros(self.clock.now()),
                ));
                return (Transition::Defer(at), Delivered::Nothing);
            }
            Err(AppError::Refused { code, detail, .. }) => {
                *evidence = Some(Evidence::refused(code, from_micros(self.clock.now())));
                return fail(format!("{code}: {detail}"));
            }
            Err(e) => {
                return (
                    Transition::Retry {
                        at: self.clock.now() + 5_000_000,
                        error: format!("reading the send policy: {e}"),
                    },
                    Delivered::Nothing,
                );
            }
        }
        let sent = match message.channel {
            Channel::Email => self.send_email(message).await,
            Channel::Sms => {
                let max_wait = self.config.delivery.lease / 2;
                if let Err(wait) = self.pacer.wait(&message.envelope.from, max_wait).await {
                    let at = self.clock.now() + crate::domain::time::duration_micros(wait);
                    return (Transition::Defer(at), Delivered::Nothing);
                }
                let _handover = self.sms_handovers.acquire().await;
                self.sms.send(message).await
            }
        };
        match sent {
            Ok(provider_id) => (Transition::Done, Delivered::Sent { provider_id }),
            Err(SendError::Permanent(reason)) => fail(reason),
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => self.retry(claim.attempts, reason, retry_after),
        }
    }

    /// An email: one copy, or to several recipients one copy each, with links and a bounce
    /// address of its own, so that a cc reader's click or bounce names the cc reader only.
    /// When a copy fails, the copies already handed over are recorded, and a later attempt
    /// (a retry, or an operator's) sends only the others; an attempt that goes through
    /// writes nothing more than one copy would (a crash in between may send a copy twice, as
    /// it may any mail). An address named twice (in `to` and `cc`) gets one copy. The outbox
    /// keeps `<id>.eml` for the first copy and `<id>.<n>.eml` for the others.
    async fn send_email(
        &self,
        message: &crate::store::Outgoing,
    ) -> Result<Option<String>, SendError> {
        if let Some(mailboxes) = &self.mailboxes
            && let Some(route) = mailboxes.route(&message.creditor_id).await
        {
            return self.send_through(mailboxes.as_ref(), &route, message).await;
        }
        self.send_by_smtp(message).await.map(|()| None)
    }

    async fn send_by_smtp(&self, message: &crate::store::Outgoing) -> Result<(), SendError> {
        let everyone: Vec<&String> = message
            .envelope
            .to
            .iter()
            .chain(&message.envelope.cc)
            .collect();
        if everyone.len() <= 1 {
            return self.send_copy(message, None, message.id.as_str()).await;
        }
        let done = self
            .queue
            .copies_sent(&message.id)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("reading the copies sent: {e}"),
                retry_after: None,
            })?;
        let first_of = |i: usize| {
            !everyone[..i]
                .iter()
                .any(|earlier| earlier.eq_ignore_ascii_case(everyone[i]))
        };
        let mut sent = Vec::new();
        for recipient in (0..everyone.len()).filter(|i| !done.contains(i) && first_of(*i)) {
            let name = match recipient {
                0 => message.id.to_string(),
                n => format!("{}.{n}", message.id),
            };
            if let Err(e) = self.send_copy(message, Some(recipient), &name).await {
                if !sent.is_empty()
                    && let Err(w) = self
                        .queue
                        .copies_sent_now(&message.id, &sent, self.clock.now())
                        .await
                {
                    tracing::warn!(message = %message.id, error = %w, "recording the copies sent failed: a retry sends them again");
                }
                return Err(e);
            }
            sent.push(recipient);
        }
        Ok(())
    }

    /// One copy of an email: for every recipient (`None`) or for one; `name` names it in
    /// the outbox.
    async fn send_copy(
        &self,
        message: &crate::store::Outgoing,
        recipient: Option<usize>,
        name: &str,
    ) -> Result<(), SendError> {
        self.send_copy_by(message, recipient, name, Carrier::Smtp)
            .await
            .map(|_| ())
    }

    /// The whole message once, through a mailbox connector: its From is the mailbox's own
    /// address (when the mailbox is named by one), everything else as parley builds it.
    async fn send_through(
        &self,
        mailboxes: &dyn MailboxRoutes,
        route: &Route,
        message: &crate::store::Outgoing,
    ) -> Result<Option<String>, SendError> {
        self.send_copy_by(
            message,
            None,
            message.id.as_str(),
            Carrier::Mailbox(mailboxes, route),
        )
        .await
    }

    /// A whole mail handed to a mailbox connector, at most [`PEER_SESSIONS`] at once a
    /// connector.
    async fn hand_to_mailbox(
        &self,
        mailboxes: &dyn MailboxRoutes,
        route: &Route,
        id: &MessageId,
        bytes: &[u8],
    ) -> Result<Option<String>, SendError> {
        let permits = self
            .mailbox_handovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.connector.clone())
            .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(PEER_SESSIONS)))
            .clone();
        let _handover = permits.acquire().await;
        handed_over(mailboxes.send(route, id, bytes).await)
    }

    async fn send_copy_by(
        &self,
        message: &crate::store::Outgoing,
        recipient: Option<usize>,
        name: &str,
        carrier: Carrier<'_>,
    ) -> Result<Option<String>, SendError> {
        let from = match &carrier {
            Carrier::Mailbox(
                _,
                Route {
                    from: Some(from), ..
                },
            ) => from.as_str(),
            _ => self.config.mail.email_from.as_str(),
        };
        let ctx = EmailContext {
            from,
            inbound_domain: &self.config.mail.inbound_domain,
            links: LinkMaker {
                keys: self.queue.keys(),
                public_url: &self.config.public_url,
                message_id: &message.id,
                recipient,
            },
        };
        // The first copy's bytes are what an archive connector journals.
        let keep = match recipient.unwrap_or(0) {
            0 if self.archive.serves(&message.creditor_id).await => Some(&message.case_id),
            _ => None,
        };
        match email::build(message, &ctx)? {
            Composed::Whole(mime) => {
                let bytes = self.signed(mime.formatted())?;
                if let Some(case) = keep {
                    let whole = Bytes::copy_from_slice(&bytes);
                    self.keep_for_archive(
                        &message.id,
                        case,
                        futures_util::stream::iter([Ok(whole)]),
                    )
                    .await?;
                }
                match carrier {
                    Carrier::Smtp => self
                        .email
                        .send(name, mime.envelope(), &bytes)
                        .await
                        .map(|()| None),
                    Carrier::Mailbox(mailboxes, route) => {
                        self.hand_to_mailbox(mailboxes, route, &message.id, &bytes)
                            .await
                    }
                }
            }
            Composed::Mixed {
                envelope,
                head,
                boundary,
            } => {
                self.send_with_attachments(
                    (&message.id, name, keep),
                    &envelope,
                    (&head, &boundary),
                    carrier,
                )
                .await
            }
        }
    }

    /// The send policy again, at the moment of sending: an opt-out or an unsubscribe since
    /// the message was queued stops it, and outside contact hours (a retry late in the
    /// evening) it waits for the window. `None`: go ahead.
    async fn policy_at_send(&self, d: &Delivering) -> Result<Allowed, AppError> {
        let m = &d.message;
        let preferences = d.preferences.as_ref().map_err(|e| {
            AppError::Store(crate::store::StoreError::Internal(anyhow::anyhow!(
                "reading the preferences: {e}"
            )))
        })?;
        let recipients: Vec<&str> = m
            .envelope
            .to
            .iter()
            .chain(&m.envelope.cc)
            .map(String::as_str)
            .collect();
        self.policy
            .decide(
                preferences,
                &Question {
                    case_id: &m.case_id,
                    channel: m.channel,
                    category: m.category,
                    case_status: m.case_status,
                    awaiting_review: m.awaiting_review,
                    recipients: &recipients,
                    now: self.clock.now(),
                    wanted: None,
                    debtor_timezone: Some(m.debtor_timezone.as_deref()),
                    count_recent: false,
                    restricted: m.restricted,
                    recent: None,
                    suppressed: Some(d.suppressed),
                },
            )
            .await
    }
}

impl DeliveryJob {
    /// A whole message with its DKIM signature in front, when a key is configured.
    fn signed(&self, message: Vec<u8>) -> Result<Vec<u8>, SendError> {
        let Some(signer) = &self.dkim else {
            return Ok(message);
        };
        let (head, body) = dkim::split_message(&message)
            .ok_or_else(|| SendError::Permanent("the message has no header block".into()))?;
        let mut hash = dkim::BodyHash::default();
        hash.update(body);
        let signature = signer
            .signature(head, &hash.finish(), self.clock.now() / 1_000_000)
            .map_err(|e| SendError::Permanent(format!("signing the message: {e:#}")))?;
        let mut out = signature.into_bytes();
        out.extend_from_slice(&message);
        Ok(out)
    }

    /// The DKIM signature of a spooled message (empty without a key): its body hashed as
    /// it is read back from the spool, a piece at a time.
    async fn spool_signature(&self, head: &[u8], spool: &Path) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Some(signer) = &self.dkim else {
            return Ok(String::new());
        };
        let (headers, _) = dkim::split_message(head)
            .ok_or_else(|| anyhow::anyhow!("the message has no header block"))?;
        let mut file = tokio::fs::File::open(spool).await?;
        file.seek(std::io::SeekFrom::Start(headers.len() as u64 + 2))
            .await?;
        let mut hash = dkim::BodyHash::default();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        signer.signature(headers, &hash.finish(), self.clock.now() / 1_000_000)
    }

    /// An email with attachments: spooled to a file (the documents streamed from the
    /// document store), sent from it, and the spool removed.
    async fn send_with_attachments(
        &self,
        (id, name, keep): (&MessageId, &str, Option<&CaseId>),
        envelope: &lettre::address::Envelope,
        (head, boundary): (&[u8], &str),
        carrier: Carrier<'_>,
    ) -> Result<Option<String>, SendError> {
        let transient = |what: &str, e: &dyn std::fmt::Display| SendError::Transient {
            reason: format!("{what}: {e}"),
            retry_after: None,
        };
        let documents = self
            .document_rows
            .message_documents(id)
            .await
            .map_err(|e| transient("reading the attachments", &e))?;
        let spool = self
            .config
            .outbox
            .with_file_name("spool")
            .join(format!("{name}-{}.eml", uuid::Uuid::new_v4().simple()));
        // The documents' files open with the key of their case's debtor.
        let subject = match documents.first() {
            Some(doc) => self
                .document_rows
                .key_unless_erased(&doc.case_id)
                .await
                .map_err(|e| transient("reading the attachments' key", &e))?,
            None => None,
        };
        let written = attach::spool(
            &spool,
            head,
            boundary,
            &documents,
            self.documents.files(),
            subject,
        )
        .await;
        let signature = match written {
            Ok(()) => self
                .spool_signature(head, &spool)
                .await
                .map_err(|e| transient("signing the message", &e)),
            Err(e) => Err(transient("spooling the attachments", &e)),
        };
        let signature = match (signature, keep) {
            (Ok(prefix), Some(case)) => {
                match self
                    .keep_spooled_for_archive(id, case, prefix.as_bytes(), &spool)
                    .await
                {
                    Ok(()) => Ok(prefix),
                    Err(e) => Err(e),
                }
            }
            (other, _) => other,
        };
        let sent = match (signature, carrier) {
            (Ok(prefix), Carrier::Smtp) => self
                .email
                .send_spooled(name, envelope, prefix.as_bytes(), &spool)
                .await
                .map(|()| None),
            (Ok(prefix), Carrier::Mailbox(mailboxes, route)) => {
                match read_spooled(prefix.as_bytes(), &spool).await {
                    Ok(bytes) => self.hand_to_mailbox(mailboxes, route, id, &bytes).await,
                    Err(e) => Err(e),
                }
            }
            (Err(e), _) => Err(e),
        };
        let _ = tokio::fs::remove_file(&spool).await;
        sent
    }

    /// Keeps a sent email's exact bytes for the archive, before it is handed over: one
    /// that cannot be kept is not sent yet (tried again later).
    async fn keep_for_archive<S>(
        &self,
        id: &MessageId,
        case: &CaseId,
        bytes: S,
    ) -> Result<(), SendError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        self.archive
            .keep_sent(id, case, bytes)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("keeping the message for the archive: {e}"),
                retry_after: None,
            })
    }

    /// [`Self::keep_for_archive`] for a spooled message: its signature, then the spool,
    /// streamed.
    async fn keep_spooled_for_archive(
        &self,
        id: &MessageId,
        case: &CaseId,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<(), SendError> {
        let file = tokio::fs::File::open(spool)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("reading the spooled message: {e}"),
                retry_after: None,
            })?;
        let head = futures_util::stream::iter([Ok(Bytes::copy_from_slice(prefix))]);
        let rest = tokio_util::io::ReaderStream::with_capacity(file, 64 << 10);
        self.keep_for_archive(id, case, head.chain(rest)).await
    }

    /// A job beside the deliveries ([`side::SideJobs`]), recorded as done or retried.
    async fn side_job(&self, claim: &Claim, kind: Result<JobKind, String>) -> anyhow::Result<()> {
        let started = self.clock.now();
        let archive = matches!(kind, Ok(JobKind::ArchiveMessage | JobKind::MirrorDocument));
        let done = match kind {
            Ok(kind) => self.side.run(kind, &claim.subject).await,
            Err(e) => Err(AppError::Store(anyhow::anyhow!(e).into())),
        };
        let next = match done {
            Ok(()) => Transition::Done,
            Err(e) => match self.retry(claim.attempts, format!("{e}"), None).0 {
                // Journaling and mirroring wait out an archive's or a document system's
                // outage however long it lasts: after the schedule, once an hour.
                Transition::Failed { error } if archive => Transition::Retry {
                    at: self.clock.now() + 3_600_000_000,
                    error,
                },
                other => other,
            },
        };
        tracing::info!(kind = %claim.kind, outcome = next.label(), "job");
        self.system
            .finish_system_job(&claim.id, claim.attempts, started, next, self.clock.now())
            .await?;
        Ok(())
    }
}

impl Job for DeliveryJob {
    const QUEUE: QueueTable = DELIVERY_JOBS;
    const NAME: &'static str = "delivery";

    /// The messages of the claimed deliveries, their cases' preferences and the suppression
    /// of their recipients: two queries for the claim instead of three a message.
    async fn preload(&self, claims: &[Claim]) {
        let jobs: HashMap<&str, &str> = claims
            .iter()
            .filter(|c| c.kind == JobKind::DeliverMessage.as_str())
            .map(|c| (c.subject.as_str(), c.id.as_str()))
            .collect();
        if jobs.len() < 2 {
            return;
        }
        let ids: Vec<&str> = jobs.keys().copied().collect();
        match self.queue.delivering_many(&ids).await {
            // A message that could not be read is read again by its own attempt, which then
            // decides what its error means.
            Ok(found) => self.preloaded.keep(
                found
                    .into_iter()
                    .filter_map(|(id, d)| Some(((*jobs.get(id.as_str())?).to_string(), d.ok()?))),
            ),
            Err(e) => tracing::warn!(error = format!("{e}"), "reading claimed deliveries failed"),
        }
    }

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        match JobKind::parse(&claim.kind) {
            Ok(JobKind::DeliverMessage) => {}
            other => return self.side_job(claim, other.map_err(|e| e.0)).await,
        }
        let started = self.clock.now();
        let (next, delivered, seen) = self.attempt(claim).await;
        crate::worker::free_slot();
        let label = next.label();
        crate::telemetry::OUTCOMES.count(
            "delivery",
            seen.channel.map_or("unknown", Channel::as_str),
            match &delivered {
                Delivered::Sent { .. } => "sent",
                Delivered::Failed { .. } => "failed",
                Delivered::Nothing => label,
            },
        );
        let evidence = seen.evidence;
        self.queue
            .finish_delivery(
                AttemptRecord {
                    job_id: &claim.id,
                    message_id: &MessageId::from_stored(claim.subject.clone()),
                    attempt: claim.attempts,
                    started_at: started,
                    finished_at: self.clock.now(),
                    evidence,
                },
                next,
                delivered,
            )
            .await?;
        tracing::info!(outcome = label, "delivery attempt recorded");
        Ok(())
    }
}

/// How an email leaves: by SMTP (or into the outbox), or through a mailbox connector.
enum Carrier<'a> {
    Smtp,
    Mailbox(&'a dyn MailboxRoutes, &'a Route),
}

/// The most connections open to the SMTP relay, and requests to an SMS provider or a mailbox
/// connector, at once, whatever the delivery concurrency: relays limit a client's
/// connections (Postfix: 50 by default), providers their requests.
const PEER_SESSIONS: usize = 32;

/// How long a collection message waits before it asks again whether the reply that holds
/// its case was reviewed (micros).
const REVIEW_RECHECK: i64 = 15 * 60 * 1_000_000;

/// The most of a spooled message read into memory for a mailbox connector (Gmail sends up
/// to 35 MB; Graph refuses more than 4 MB itself).
const MAX_HANDOVER: u64 = 36 * 1024 * 1024;

/// A spooled message, its signature in front, for a connector that takes it whole.
async fn read_spooled(prefix: &[u8], spool: &Path) -> Result<Vec<u8>, SendError> {
    let size = tokio::fs::metadata(spool)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if size > MAX_HANDOVER {
        return Err(SendError::Permanent(format!(
            "the message is {size} bytes, more than a mailbox connector takes"
        )));
    }
    let mut bytes = prefix.to_vec();
    bytes.extend(
        tokio::fs::read(spool)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("reading the spooled message: {e}"),
                retry_after: None,
            })?,
    );
    Ok(bytes)
}

/// What the mailbox did, as delivery reads it.
fn handed_over(handover: Handover) -> Result<Option<String>, SendError> {
    match handover {
        Handover::Sent { provider_id } => Ok(provider_id),
        Handover::Transient {
            reason,
            retry_after,
        } => Err(SendError::Transient {
            reason,
            retry_after,
        }),
        Handover::Permanent(reason) => Err(SendError::Permanent(reason)),
    }
}

/// Writes a file into the outbox atomically: a temporary name, then a rename.
pub(crate) async fn write_outbox(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}
