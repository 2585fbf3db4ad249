//! Signed webhooks: the dispatcher turns outbox events into deliveries, signs each request
//! per the Standard Webhooks specification, and retries on `PARLEY_WEBHOOK_RETRY_SCHEDULE`.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

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

/// Attempts of webhook deliveries at once, and how long a claim holds.
pub const CONCURRENCY: usize = 16;
pub const LEASE: Duration = Duration::from_secs(60);

/// One webhook delivery attempt: a signed POST to the subscriber's URL.
pub struct WebhookJob {
    store: Store,
    config: WebhookConfig,
    clock: SharedClock,
    client: reqwest::Client,
    backoff: Backoff,
}

impl WebhookJob {
    pub fn new(store: Store, config: WebhookConfig, clock: SharedClock) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            backoff: Backoff::new(config.retry_schedule.clone()),
            store,
            config,
            clock,
            client,
        })
    }
    /// The body of a delivery: the event's payload with `event` set; `message.received`
    /// gets the sender and subject the seed shows, read from the sealed message now.
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
            && let Some((from, subject)) = self.store.message_sender_and_subject(&id).await?
        {
            payload.insert("from".into(), Value::String(from));
            payload.insert("subject".into(), subject.map_or(Value::Null, Value::String));
        }
        Ok(serde_json::to_vec(&Value::Object(payload))?)
    }

    /// One POST: `Ok(status)` for a 2xx, else the status (if any) and why.
    async fn attempt(&self, d: &DueDelivery) -> Result<u16, (Option<u16>, String)> {
        if let Err(e) = target::check(&d.url, self.config.allow_private).await {
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
            .map_err(|e| (None, format!("request failed: {}", e.without_url())))?;
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
        while self.store.fan_out_events(200, self.clock.now()).await? > 0 {}
        Ok(())
    }

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        let Some(d) = self.store.due_delivery(&claim.id).await? else {
            return Ok(());
        };
        let outcome = self.attempt(&d).await;
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
        self.store
            .finish_webhook_delivery(&d.id, status, next, self.clock.now())
            .await?;
        Ok(())
    }
}
