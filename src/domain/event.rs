//! The events parley announces: written to the outbox by every change that other systems
//! hear of, and the names webhooks subscribe to. One enum for both, so an event that is
//! emitted can always be subscribed to.

use super::message::MessageStatus;
use super::word_enum;

word_enum!(
    /// An event type, `resource.happening`.
    EventType, "event" {
        CaseCreated => "case.created",
        CaseStatusChanged => "case.status_changed",
        PaymentReceived => "payment.received",
        NoteCreated => "note.created",
        DocumentUploaded => "document.uploaded",
        DeadlineApproaching => "deadline.approaching",
        PreferencesUpdated => "preferences.updated",
        RecipientUnsubscribed => "recipient.unsubscribed",
        MessageReceived => "message.received",
        MessageSent => "message.sent",
        MessageDelivered => "message.delivered",
        MessageOpened => "message.opened",
        MessageClicked => "message.clicked",
        MessageFailed => "message.failed",
        MessageBounced => "message.bounced",
        MessageUnderstood => "message.understood",
        ConnectorFailed => "connector.failed",
    }
);

word_enum!(
    /// Where a webhook delivery stands.
    WebhookDeliveryStatus, "delivery status" {
        Pending => "pending",
        Sending => "sending",
        Delivered => "delivered",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl EventType {
    /// The system message this event makes on its case, if any.
    pub fn system_event(self) -> Option<crate::domain::message::SystemEvent> {
        use crate::domain::message::SystemEvent;
        Some(match self {
            Self::CaseStatusChanged => SystemEvent::CaseStatusChanged,
            Self::PaymentReceived => SystemEvent::PaymentReceived,
            Self::DocumentUploaded => SystemEvent::DocumentUploaded,
            Self::DeadlineApproaching => SystemEvent::DeadlineApproaching,
            _ => return None,
        })
    }

    /// The event that announces a message reaching `status`; `None` for `queued`, which is
    /// the answer to the request itself.
    pub fn for_status(status: MessageStatus) -> Option<Self> {
        Some(match status {
            MessageStatus::Queued | MessageStatus::Refused | MessageStatus::Cancelled => {
                return None;
            }
            MessageStatus::Sent => Self::MessageSent,
            MessageStatus::Delivered => Self::MessageDelivered,
            MessageStatus::Opened => Self::MessageOpened,
            MessageStatus::Clicked => Self::MessageClicked,
            MessageStatus::Failed => Self::MessageFailed,
            MessageStatus::Bounced => Self::MessageBounced,
            MessageStatus::Received => Self::MessageReceived,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_but_queued_has_an_event_that_parses_back() {
        for s in MessageStatus::ALL {
            match EventType::for_status(*s) {
                None => assert!(matches!(
                    s,
                    MessageStatus::Queued | MessageStatus::Refused | MessageStatus::Cancelled
                )),
                Some(e) => {
                    assert_eq!(e.as_str(), format!("message.{}", s.as_str()));
                    assert_eq!(EventType::parse(e.as_str()), Ok(e));
                }
            }
        }
    }
}
