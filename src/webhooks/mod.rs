//! Signed webhooks: the dispatcher turns outbox events into deliveries, signs each request
//! per the Standard Webhooks specification, and retries on `PARLEY_WEBHOOK_RETRY_SCHEDULE`.

pub mod signing;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::watch;

use crate::config::Config;
use crate::domain::time::now_micros;
use crate::store::{DueDelivery, Store};

/// The events a webhook can subscribe to.
pub const EVENTS: [&str; 11] = [
    "message.received",
    "message.sent",
    "message.delivered",
    "message.opened",
    "message.clicked",
    "message.failed",
    "message.bounced",
    "document.uploaded",
    "note.created",
    "case.status_changed",
    "preferences.updated",
];

const LEASE_MICROS: i64 = 60_000_000;
const IN_FLIGHT: i64 = 16;

pub struct Dispatcher {
    store: Store,
    config: Arc<Config>,
    client: reqwest::Client,
}

impl Dispatcher {
    pub fn new(store: Store, config: Arc<Config>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            store,
            config,
            client,
        })
    }

    /// Fans out new events and sends the deliveries due now; returns how many it sent.
    /// Tests drive webhooks with this.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        while self.store.fan_out_events(200).await? > 0 {}
        let due = self
            .store
            .claim_webhook_deliveries(IN_FLIGHT, LEASE_MICROS)
            .await?;
        let n = due.len();
        futures_util::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
        Ok(n)
    }

    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let sent = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "webhook dispatch failed");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = stop.changed() => {},
                }
            }
        }
    }

    /// The body of a delivery: the event's payload with `event` set; `message.received`
    /// gets the sender and subject the seed shows, read from the sealed message now.
    async fn body(&self, d: &DueDelivery) -> anyhow::Result<Vec<u8>> {
        let mut payload = match &d.payload {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        payload.insert("event".into(), Value::String(d.event_type.clone()));
        if d.event_type == "message.received"
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

    async fn deliver(&self, d: DueDelivery) {
        let span = tracing::info_span!("webhook", delivery = %d.id, webhook = %d.webhook_id, event = d.event_id, attempt = d.attempt);
        let _guard = span.enter();
        let outcome = self.attempt(&d).await;
        let (status, error) = match &outcome {
            Ok(code) => (Some(*code), None),
            Err((code, e)) => (*code, Some(e.as_str())),
        };
        let retry_at = error.and_then(|_| {
            let schedule = &self.config.webhook_retry_schedule;
            usize::try_from(d.attempt - 1)
                .ok()
                .and_then(|i| schedule.get(i))
                .map(|delay| now_micros() + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX))
        });
        if let Err(e) = self
            .store
            .finish_webhook_delivery(&d.id, status, error, retry_at)
            .await
        {
            tracing::error!(
                error = format!("{e}"),
                "recording a webhook delivery failed"
            );
        }
    }

    /// One POST: `Ok(status)` for a 2xx, else the status (if any) and why.
    async fn attempt(&self, d: &DueDelivery) -> Result<u16, (Option<u16>, String)> {
        if let Err(e) = target::check(&d.url, self.config.webhook_allow_private).await {
            return Err((None, e));
        }
        let body = self
            .body(d)
            .await
            .map_err(|e| (None, format!("building the payload: {e}")))?;
        let message_id = format!("evt_{}", d.event_id);
        let timestamp = now_micros() / 1_000_000;
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
