//! Signed webhooks: the webhook job turns outbox events into deliveries, signs each request
//! per the Standard Webhooks specification, and retries on `PARLEY_WEBHOOK_RETRY_SCHEDULE`.
//! Requests connect only to public addresses (the resolver filters them when connecting) and
//! at most [`PER_ENDPOINT`] at a time go to one endpoint, so no tenant's slow receiver holds
//! up another's.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::webhook_target as target;
use crate::config::WebhookConfig;
use crate::domain::clock::SharedClock;
use crate::domain::event::EventType;
use crate::domain::signing;
use crate::store::queue::{Claim, QueueTable, Transition, WEBHOOK_DELIVERIES};
use crate::store::{DueDelivery, Store};
use crate::worker::{Backoff, Job};

/// The events a webhook can subscribe to: every event parley emits.
pub const EVENTS: &[EventType] = EventType::ALL;

/// Attempts of webhook deliveries at once (`PARLEY_WEBHOOK_CONCURRENCY` by default), and how
/// long a claim holds.
pub const CONCURRENCY: usize = 64;
pub const LEASE: Duration = Duration::from_secs(60);

/// Requests in flight to one endpoint (scheme, host and port) at once: a slow endpoint holds
/// at most half of the worker's slots, and deliveries to it beyond that wait their turn
/// without holding a slot.
pub const PER_ENDPOINT: usize = CONCURRENCY / 2;

/// How long a delivery whose endpoint is busy waits before it is claimed again.
const ENDPOINT_BUSY_WAIT: i64 = 500_000;

/// One webhook delivery attempt: a signed POST to the subscriber's URL.
pub struct WebhookJob {
    system: crate::store::System,
    webhooks: crate::store::Webhooks,
    config: WebhookConfig,
    clock: SharedClock,
    client: reqwest::Client,
    backoff: Backoff,
    endpoints: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Deliveries of the last claim, read in one query; each attempt takes its own.
    preloaded: crate::worker::Preloaded<DueDelivery>,
}

impl WebhookJob {
    pub fn new(store: &Store, config: WebhookConfig, clock: SharedClock) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(target::PublicResolver {
                allow_private: config.allow_private,
            }))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            backoff: Backoff::new(config.retry_schedule.clone()),
            system: store.system(),
            webhooks: store.webhooks(),
            config,
            clock,
            client,
            endpoints: std::sync::Mutex::new(HashMap::new()),
            preloaded: crate::worker::Preloaded::default(),
        })
    }

    /// A slot for a request to `url`'s endpoint, if one is free now.
    fn endpoint_slot(&self, url: &str) -> Option<OwnedSemaphorePermit> {
        let key = url::Url::parse(url)
            .map(|u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_else(|_| url.to_string());
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        // Endpoints nobody is sending to are forgotten, so the map stays small.
        endpoints.retain(|_, s| s.available_permits() < PER_ENDPOINT);
        let slots = endpoints
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT)))
            .clone();
        slots.try_acquire_owned().ok()
    }
    /// The body of a delivery: the event's payload with `event` set; `message.received`
    /// gets the sender and subject the seed shows, read from the sealed message now,
    /// `message.understood` the promise's figures, and `deadline.approaching` the
    /// deadline's title.
    async fn body(&self, d: &DueDelivery) -> anyhow::Result<Vec<u8>> {
        let mut payload = match &d.payload {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        payload.insert("event".into(), Value::String(d.event_type.to_string()));
        if d.event_type == EventType::MessageReceived
            && let Some(id) = payload
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string)
            && let Some((from, subject)) = self.webhooks.message_sender_and_subject(&id).await?
        {
            payload.insert("from".into(), Value::String(from));
            payload.insert("subject".into(), subject.map_or(Value::Null, Value::String));
        }
        // A reply's promise: its figures and how sure the reading is, from the sealed
        // reading now.
        if d.event_type == EventType::MessageUnderstood
            && let Some(id) = payload
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string)
            && let Some(u) = self.webhooks.message_understanding(&id).await?
        {
            payload.insert("confidence".into(), serde_json::json!(u.confidence));
            payload.insert(
                "promisedAmount".into(),
                u.promised_amount.map_or(Value::Null, Value::String),
            );
            payload.insert(
                "promisedDate".into(),
                u.promised_date
                    .map_or(Value::Null, |d| Value::String(d.to_string())),
            );
        }
        // A deadline's title, from the deadline now (the outbox keeps no text).
        if d.event_type == EventType::DeadlineApproaching
            && let Some(id) = payload
                .get("deadlineId")
                .and_then(Value::as_str)
                .map(str::to_string)
        {
            let title = self.system.deadline_title(&id).await?;
            payload.insert("title".into(), title.map_or(Value::Null, Value::String));
        }
        Ok(serde_json::to_vec(&Value::Object(payload))?)
    }

    /// One POST: `Ok(status)` for a 2xx, else the status (if any) and why.
    async fn attempt(&self, d: &DueDelivery) -> Result<u16, (Option<u16>, String)> {
        if let Err(e) = target::check_before_request(&d.url, self.config.allow_private) {
            return Err((None, e));
        }
        let body = self
            .body(d)
            .await
            .map_err(|e| (None, format!("building the payload: {e}")))?;
        let message_id = format!("evt_{}", d.event_id);
        let timestamp = self.clock.now() / 1_000_000;
        let signature =
            signing::sign(&d.secret, &message_id, timestamp, &body).map_err(|e| (None, e))?;
        let response = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| (None, format!("request failed: {}", cause(&e.without_url()))))?;
        let code = response.status().as_u16();
        if response.status().is_success() {
            Ok(code)
        } else {
            Err((Some(code), format!("receiver answered {code}")))
        }
    }
}

impl Job for WebhookJob {
    const QUEUE: QueueTable = WEBHOOK_DELIVERIES;
    const NAME: &'static str = "webhooks";

    /// New outbox events become deliveries before each claim.
    async fn prepare(&self) -> anyhow::Result<()> {
        while self.webhooks.fan_out_events(200, self.clock.now()).await? > 0 {}
        Ok(())
    }

    async fn preload(&self, claims: &[Claim]) {
        let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
        match self.webhooks.due_deliveries(&ids).await {
            Ok(found) => self
                .preloaded
                .keep(found.into_iter().map(|d| (d.id.to_string(), d))),
            Err(e) => tracing::warn!(error = format!("{e}"), "reading claimed deliveries failed"),
        }
    }

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        let d = match self.preloaded.take(&claim.id) {
            Some(d) => Some(d),
            None => self.webhooks.due_delivery(&claim.id).await?,
        };
        let Some(d) = d else {
            return Ok(());
        };
        if !d.allowed {
            // Nothing about a case goes to a party that no longer sees it.
            let ended = Transition::Failed {
                error: "the subscriber no longer has access to this event".into(),
            };
            crate::telemetry::OUTCOMES.count("webhook", "http", ended.label());
            self.webhooks
                .finish_webhook_delivery(&d.id, None, ended, self.clock.now())
                .await?;
            return Ok(());
        }
        let Some(slot) = self.endpoint_slot(&d.url) else {
            let later = Transition::Defer(self.clock.now() + ENDPOINT_BUSY_WAIT);
            self.webhooks
                .finish_webhook_delivery(&d.id, None, later, self.clock.now())
                .await?;
            return Ok(());
        };
        let outcome = self.attempt(&d).await;
        // The endpoint's slot is for requests in flight to it: free it before the outcome's
        // commit, which it does not need to wait for.
        drop(slot);
        crate::worker::free_slot();
        let (status, next) = match outcome {
            Ok(code) => (Some(code), Transition::Done),
            Err((code, error)) => (
                code,
                match self.backoff.next(claim.attempts, self.clock.now(), None) {
                    Some(at) => Transition::Retry { at, error },
                    None => Transition::Failed { error },
                },
            ),
        };
        tracing::info!(webhook = %d.webhook_id, event = d.event_id, outcome = next.label(), "webhook attempt");
        crate::telemetry::OUTCOMES.count("webhook", "http", next.label());
        self.webhooks
            .finish_webhook_delivery(&d.id, status, next, self.clock.now())
            .await?;
        Ok(())
    }
}

/// An error with its causes, `a: b: c`: the resolver's refusal is a cause of reqwest's error.
fn cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
