//! What email and SMS providers report about the messages parley gave them: status
//! callbacks (Twilio-style), event webhooks (SendGrid-style). An event is recorded once (by
//! the provider's event id); one about a message parley does not know is ignored.

use super::AppResult;
use crate::domain::clock::SharedClock;
use crate::domain::message::MessageStatus;
use crate::domain::time::Micros;
use crate::store::Store;

/// One email event, as read from the provider's payload.
pub struct EmailEvent<'a> {
    /// The provider's word: `delivered`, `open`, `click`, `bounce`, `dropped`, `deferred`,
    /// `spamreport`.
    pub kind: &'a str,
    /// Our `Message-ID`, with or without its angle brackets.
    pub smtp_id: &'a str,
    /// The provider's id of the event, kept so that a repeated event is recorded once.
    pub event_id: String,
    /// When it happened; now when the provider does not say.
    pub at: Option<Micros>,
    pub reason: Option<String>,
    /// The recipient it concerns.
    pub email: Option<&'a str>,
    /// A bounce's type: `blocked` is one the provider may retry.
    pub bounce_type: Option<&'a str>,
}

/// What became of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    Ignored,
}

#[derive(Clone)]
pub struct ProviderEvents {
    messages: crate::store::Messages,
    policy: crate::store::Policy,
    clock: SharedClock,
}

impl ProviderEvents {
    pub fn new(store: &Store, clock: SharedClock) -> Self {
        Self {
            messages: store.messages(),
            policy: store.policy(),
            clock,
        }
    }

    /// An SMS provider's status of the message it knows as `sid`; other statuses than
    /// `sent`, `delivered`, `undelivered` and `failed` are ignored.
    #[tracing::instrument(skip_all)]
    pub async fn sms_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
    ) -> AppResult<Outcome> {
        let event = match status {
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            "undelivered" | "failed" => MessageStatus::Failed,
            _ => return Ok(Outcome::Ignored),
        };
        let Some(id) = self.messages.message_by_provider_id(sid).await? else {
            return Ok(Outcome::Ignored);
        };
        let detail = error_code
            .filter(|c| !c.is_empty())
            .map(|c| format!("carrier error {c}"));
        let event_id = format!("sms:{sid}:{status}");
        let fresh = self
            .messages
            .record_status_event(
                &id,
                event,
                self.clock.now(),
                Some(&event_id),
                detail.as_deref(),
            )
            .await?;
        Ok(if fresh {
            Outcome::Recorded
        } else {
            Outcome::Ignored
        })
    }

    /// An email provider's event. Spam complaints and hard bounces put the recipient on the
    /// suppression list (`blocked` is SendGrid's word for a bounce it may retry: not hard).
    /// A complaint is the person's answer to one creditor's message and stops that
    /// creditor's sends; a bounce or a drop is a fact about the address and stops everyone's.
    #[tracing::instrument(skip_all)]
    pub async fn email_event(&self, e: EmailEvent<'_>) -> AppResult<Outcome> {
        let status = match e.kind {
            "delivered" => Some(MessageStatus::Delivered),
            "open" => Some(MessageStatus::Opened),
            "click" => Some(MessageStatus::Clicked),
            "bounce" => Some(MessageStatus::Bounced),
            "dropped" => Some(MessageStatus::Failed),
            // Recorded for the history, without moving the status.
            "deferred" | "spamreport" => None,
            _ => return Ok(Outcome::Ignored),
        };
        if e.smtp_id.is_empty() {
            return Ok(Outcome::Ignored);
        }
        let rfc_id = if e.smtp_id.starts_with('<') {
            e.smtp_id.to_string()
        } else {
            format!("<{}>", e.smtp_id)
        };
        let Some(id) = self.messages.message_by_rfc_id(&rfc_id).await? else {
            return Ok(Outcome::Ignored);
        };
        let at = e.at.unwrap_or_else(|| self.clock.now());
        let fresh = match status {
            Some(s) => {
                self.messages
                    .record_status_event(&id, s, at, Some(&e.event_id), e.reason.as_deref())
                    .await?
            }
            None => {
                self.messages
                    .record_plain_event(&id, e.kind, at, &e.event_id)
                    .await?
            }
        };
        let suppress = match e.kind {
            "spamreport" => Some(("spam report", true)),
            "bounce" if e.bounce_type != Some("blocked") => Some(("hard bounce", false)),
            "dropped" => Some(("dropped by the provider", false)),
            _ => None,
        };
        if let Some((why, answered)) = suppress
            && let Some(email) = e.email
        {
            self.policy
                .suppress_reported(&id, "email", email, why, answered)
                .await?;
        }
        Ok(if fresh {
            Outcome::Recorded
        } else {
            Outcome::Ignored
        })
    }
}
