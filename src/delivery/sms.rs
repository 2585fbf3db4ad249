//! Outbound SMS through a Twilio-compatible HTTP API, or `.json` files in the outbox folder;
//! paced per sender number, as carriers require.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::SendError;
use crate::config::Secret;
use crate::domain::sms::segments;
use crate::store::Outgoing;

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

/// Spaces sends from one sender number at least `interval` apart.
pub struct SenderPacer {
    interval: Duration,
    next: Mutex<HashMap<String, Instant>>,
}

impl SenderPacer {
    pub fn new(per_second: f64) -> Self {
        let interval = if per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Takes this sender's next slot and waits for it, if it comes within `max_wait`;
    /// otherwise takes nothing and returns how long until a slot is free, so the caller can
    /// put the message back instead of holding its lease while it waits.
    pub async fn wait(&self, sender: &str, max_wait: Duration) -> Result<(), Duration> {
        if self.interval.is_zero() {
            return Ok(());
        }
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next
                .get(sender)
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now);
            if slot - now > max_wait {
                return Err(slot - now);
            }
            next.insert(sender.to_string(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(at).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_one_sender_and_not_others() {
        let pacer = SenderPacer::new(1.0);
        let start = Instant::now();
        let max = Duration::from_secs(5);
        pacer.wait("+4511111111", max).await.unwrap();
        pacer.wait("+4522222222", max).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(10));
        pacer.wait("+4511111111", max).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_hands_back_a_slot_too_far_away() {
        let pacer = SenderPacer::new(0.5);
        let max = Duration::from_secs(3);
        pacer.wait("+4511111111", max).await.unwrap();
        pacer.wait("+4511111111", max).await.unwrap();
        let start = Instant::now();
        let wait = pacer
            .wait("+4511111111", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "no waiting when handing back"
        );
    }
}
