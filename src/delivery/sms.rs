//! Outbound SMS through a Twilio-compatible HTTP API, or `.json` files in the outbox folder;
//! paced per sender number, as carriers require.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::SendError;
use crate::config::Secret;
use crate::domain::sms::segments;
use crate::store::{Outgoing, Store};

pub enum SmsTransport {
    Api {
        client: reqwest::Client,
        base: String,
        account: String,
        token: Secret,
        status_callback: String,
    },
    /// `<data>/outbox/<message id>.json`
    Outbox(PathBuf),
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

impl SmsTransport {
    pub async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let to = m
            .envelope
            .to
            .first()
            .ok_or_else(|| SendError::Permanent("no recipient".into()))?;
        match self {
            Self::Outbox(dir) => {
                let (encoding, count) = segments(&m.body);
                let json = serde_json::json!({
                    "messageId": m.id, "from": m.envelope.from, "to": to, "body": m.body,
                    "segments": count, "encoding": encoding.as_str(),
                });
                super::write_outbox(dir, &format!("{}.json", m.id), json.to_string().as_bytes())
                    .await
                    .map_err(|e| SendError::Transient {
                        reason: format!("writing the outbox: {e}"),
                        retry_after: None,
                    })?;
                Ok(None)
            }
            Self::Api {
                client,
                base,
                account,
                token,
                status_callback,
            } => {
                let url = format!("{base}/2010-04-01/Accounts/{account}/Messages.json");
                let form = [
                    ("To", to.as_str()),
                    ("From", m.envelope.from.as_str()),
                    ("Body", m.body.as_str()),
                    ("StatusCallback", status_callback.as_str()),
                ];
                let response = client
                    .post(url)
                    .basic_auth(account, Some(token.expose()))
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| SendError::Transient {
                        reason: format!("SMS API unreachable: {}", without_url(&e)),
                        retry_after: None,
                    })?;
                let status = response.status();
                if status.is_success() {
                    let created: Created =
                        response.json().await.map_err(|e| SendError::Transient {
                            reason: format!("SMS API answered without a sid: {}", without_url(&e)),
                            retry_after: None,
                        })?;
                    return Ok(Some(created.sid));
                }
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let detail: String = response
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                let reason = format!("SMS API answered {}: {detail}", status.as_u16());
                if status.as_u16() == 429 || status.is_server_error() {
                    Err(SendError::Transient {
                        reason,
                        retry_after,
                    })
                } else {
                    Err(SendError::Permanent(reason))
                }
            }
        }
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "SMS API");
    }
    s
}

/// Spaces sends from one sender number at least `interval` apart, across every process on
/// the database: the slots are taken in the database (`Store::reserve_send_slot`).
pub struct SenderPacer {
    system: crate::store::System,
    interval: Duration,
}

impl SenderPacer {
    pub fn new(store: &Store, per_second: f64) -> Self {
        let interval = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            system: store.system(),
            interval,
        }
    }

    /// Takes this sender's next slot and waits for it, if it comes within `max_wait`;
    /// otherwise takes nothing and returns how long until a slot is free, so the caller can
    /// put the message back instead of holding its lease while it waits. A database that
    /// does not answer is a wait of a second.
    pub async fn wait(&self, sender: &str, max_wait: Duration) -> Result<(), Duration> {
        if self.interval.is_zero() {
            return Ok(());
        }
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let now = self.system.now();
        let slot = self
            .system
            .reserve_send_slot(sender, micros(self.interval), micros(max_wait), now)
            .await;
        match slot {
            Ok(Ok(at)) => {
                let wait = u64::try_from(at - now).unwrap_or(0);
                tokio::time::sleep(Duration::from_micros(wait)).await;
                Ok(())
            }
            Ok(Err(wait)) => Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0))),
            Err(e) => {
                tracing::warn!(error = %e, "taking an SMS send slot");
                Err(Duration::from_secs(1))
            }
        }
    }
}
