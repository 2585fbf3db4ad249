//! Background delivery: workers claim due jobs from the durable queue, send each message
//! through its transport, and record the attempt and its outcome. Transient failures are
//! retried on the configured schedule with jitter; permanent ones, and the last attempt,
//! end the message as `failed` with the reason.

pub mod email;
pub mod sms;
pub mod tracking;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::domain::message::{Category, Channel};
use crate::domain::policy::{SendContext, decide};
use crate::domain::time::now_micros;
use crate::store::{ClaimedJob, Outcome, Outgoing, Store};
use email::{EmailContext, EmailTransport};
use sms::{SenderPacer, SmsTransport};
use tracking::LinkMaker;

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

pub struct Delivery {
    store: Store,
    config: Arc<Config>,
    email: EmailTransport,
    sms: SmsTransport,
    pacer: SenderPacer,
    owner: String,
    wake: Arc<Notify>,
}

impl Delivery {
    pub fn new(store: Store, config: Arc<Config>, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let outbox = config.data_dir.join("outbox");
        let email =
            EmailTransport::new(config.smtp_url.as_ref().map(|s| s.expose()), outbox.clone())?;
        let sms = match (&config.sms_url, &config.sms_account, &config.sms_token) {
            (Some(base), Some(account), Some(token)) => SmsTransport::Api {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .context("building the HTTP client")?,
                base: base.clone(),
                account: account.clone(),
                token: token.clone(),
                status_callback: config.sms_status_callback_url.clone(),
            },
            (Some(_), _, _) => anyhow::bail!(
                "PARLEY_SMS_URL is set: PARLEY_SMS_ACCOUNT and PARLEY_SMS_TOKEN are needed too"
            ),
            _ => SmsTransport::Outbox(outbox),
        };
        Ok(Self {
            pacer: SenderPacer::new(config.sms_rate_per_second),
            owner: crate::domain::prefixed_id("worker"),
            store,
            config,
            email,
            sms,
            wake,
        })
    }

    /// Claims what is due now (up to the concurrency) and delivers it; returns how many jobs
    /// it handled. Tests drive the queue with this instead of waiting for the loop.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let jobs = self
            .store
            .claim_jobs(&self.owner, self.concurrency() as i64, self.lease_micros())
            .await?;
        let n = jobs.len();
        futures_util::future::join_all(
            jobs.into_iter()
                .map(|job| async move { self.handle().process(job).await }),
        )
        .await;
        Ok(n)
    }

    fn concurrency(&self) -> usize {
        self.config.delivery_concurrency.max(1)
    }

    fn lease_micros(&self) -> i64 {
        i64::try_from(self.config.delivery_lease.as_micros()).unwrap_or(i64::MAX)
    }

    fn handle(&self) -> Handle<'_> {
        Handle(self)
    }

    /// Delivers until `stop` turns true, then lets the jobs in flight finish.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.concurrency()));
        let mut set: JoinSet<()> = JoinSet::new();
        tracing::info!(worker = %self.owner, concurrency = self.concurrency(), "delivery worker started");
        while !*stop.borrow() {
            while set.try_join_next().is_some() {}
            let free = slots.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                match self
                    .store
                    .claim_jobs(&self.owner, free as i64, self.lease_micros())
                    .await
                {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::error!(error = format!("{e}"), "claiming delivery jobs failed");
                        Vec::new()
                    }
                }
            };
            if claimed.is_empty() {
                let idle = self.idle_wait().await;
                tokio::select! {
                    () = self.wake.notified() => {},
                    () = tokio::time::sleep(idle) => {},
                    _ = stop.changed() => {},
                    Some(_) = set.join_next(), if !set.is_empty() => {},
                }
                continue;
            }
            for job in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                set.spawn(async move {
                    Handle(&this).process(job).await;
                    drop(permit);
                });
            }
        }
        tracing::info!(in_flight = set.len(), "delivery worker stopping");
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while set.join_next().await.is_some() {}
        })
        .await;
    }

    /// How long to wait for work: until the next job is due, at most a second.
    async fn idle_wait(&self) -> Duration {
        let max = Duration::from_secs(1);
        match self.store.next_job_due().await {
            Ok(Some(due)) => Duration::from_micros(u64::try_from(due - now_micros()).unwrap_or(0))
                .clamp(Duration::from_millis(5), max),
            _ => max,
        }
    }
}

struct Handle<'a>(&'a Delivery);

impl Handle<'_> {
    async fn process(&self, job: ClaimedJob) {
        let span = tracing::info_span!("deliver", job = %job.id, message = %job.ref_id, attempt = job.attempt);
        async {
            let started = now_micros();
            let outcome = self.attempt(&job).await;
            let label = match &outcome {
                Outcome::Defer { .. } => "deferred",
                Outcome::Sent { .. } => "sent",
                Outcome::Retry { .. } => "retry",
                Outcome::Failed { .. } => "failed",
            };
            match self.0.store.finish_delivery(&job, started, outcome).await {
                Ok(()) => tracing::info!(outcome = label, "delivery attempt recorded"),
                // The lease runs out and the job is attempted again.
                Err(e) => tracing::error!(
                    error = format!("{e}"),
                    "recording a delivery attempt failed"
                ),
            }
        }
        .instrument(span)
        .await;
    }

    async fn attempt(&self, job: &ClaimedJob) -> Outcome {
        let d = self.0;
        let message = match d.store.outgoing(&job.ref_id).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Outcome::Failed {
                    error: "message no longer exists".into(),
                };
            }
            Err(e) => return retry(d, job, format!("reading the message: {e}"), None),
        };
        if message.status != "queued" {
            // Sent before a crash cut the bookkeeping short, or finished by another worker.
            return Outcome::Sent { provider_id: None };
        }
        if let Some(outcome) = self.policy(&message).await {
            return outcome;
        }
        let sent = match message.channel.as_str() {
            "email" => {
                let ctx = EmailContext {
                    from: &d.config.email_from,
                    inbound_domain: &d.config.inbound_domain,
                    links: LinkMaker {
                        keys: d.store.keys(),
                        public_url: &d.config.public_url,
                        message_id: &message.id,
                    },
                };
                match email::build(&message, &ctx) {
                    Ok(mime) => d.email.send(&message.id, &mime).await.map(|()| None),
                    Err(e) => Err(e),
                }
            }
            "sms" => {
                let max_wait = d.config.delivery_lease / 2;
                if let Err(wait) = d.pacer.wait(&message.envelope.from, max_wait).await {
                    return Outcome::Defer {
                        at: now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX),
                    };
                }
                d.sms.send(&message).await
            }
            other => Err(SendError::Permanent(format!(
                "cannot deliver a message of type {other}"
            ))),
        };
        match sent {
            Ok(provider_id) => Outcome::Sent { provider_id },
            Err(SendError::Permanent(reason)) => Outcome::Failed { error: reason },
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => retry(d, job, reason, retry_after),
        }
    }
}

impl Handle<'_> {
    /// The send policy again, at the moment of sending: an opt-out or an unsubscribe since
    /// the message was queued stops it, and outside contact hours (a retry late in the
    /// evening) it waits for the window. `None`: go ahead.
    async fn policy(&self, m: &Outgoing) -> Option<Outcome> {
        let d = self.0;
        let (Ok(channel), Ok(category)) =
            (Channel::parse(&m.channel), Category::parse(&m.category))
        else {
            return None;
        };
        let facts = async {
            let preferences = d.store.preferences_for_sending(&m.case_id).await?;
            let timezone = d.store.case_timezone(&m.case_id).await?;
            let recipients: Vec<&str> = m
                .envelope
                .to
                .iter()
                .chain(&m.envelope.cc)
                .map(String::as_str)
                .collect();
            let suppressed = d
                .store
                .suppressed(channel.as_str(), &recipients)
                .await?
                .is_some();
            Ok::<_, crate::store::StoreError>((preferences, timezone, suppressed))
        };
        let (preferences, timezone, suppressed) = match facts.await {
            Ok(f) => f,
            Err(e) => {
                return Some(Outcome::Retry {
                    at: now_micros() + 5_000_000,
                    error: format!("reading the send policy: {e}"),
                });
            }
        };
        if suppressed {
            return Some(Outcome::Failed {
                error:
                    "recipient_suppressed: a recipient unsubscribed after the message was queued"
                        .into(),
            });
        }
        let context = SendContext {
            channel,
            category,
            now: chrono::Utc::now(),
            wanted: None,
            default_hours: d.config.default_contact_hours,
            debtor_timezone: timezone.as_deref(),
            recent: 0,
            cap: None,
        };
        match decide(&preferences, &context) {
            Ok(None) => None,
            Ok(Some(at)) => Some(Outcome::Defer {
                at: at.timestamp_micros(),
            }),
            Err(r) => Some(Outcome::Failed {
                error: format!("{}: {}", r.code, r.detail),
            }),
        }
    }
}

/// The next attempt after the schedule's delay for this attempt (±20 % jitter), or the
/// provider's `Retry-After`; `failed` once the schedule is used up.
fn retry(d: &Delivery, job: &ClaimedJob, reason: String, retry_after: Option<Duration>) -> Outcome {
    let schedule = &d.config.delivery_retry_schedule;
    let index = usize::try_from(job.attempt - 1).unwrap_or(usize::MAX);
    let Some(base) = schedule.get(index) else {
        return Outcome::Failed {
            error: format!("gave up after {} attempts: {reason}", job.attempt),
        };
    };
    let jittered = base.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
    let delay = retry_after.unwrap_or(jittered);
    Outcome::Retry {
        at: now_micros() + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX),
        error: reason,
    }
}

/// Writes a file into the outbox atomically: a temporary name, then a rename.
pub(crate) async fn write_outbox(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}
