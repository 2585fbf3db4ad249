//! Messages: channels, priorities, categories and the status machine.

use super::word_enum;

word_enum!(
    /// `messageType`
    Channel, "messageType" { Email => "email", Sms => "sms" }
);
word_enum!(
    /// `messageType` as a message shows it: a system message is one of the case's own
    /// notifications, whatever channel (if any) carried it.
    MessageType, "messageType" { Email => "email", Sms => "sms", System => "system" }
);
impl From<Channel> for MessageType {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Email => Self::Email,
            Channel::Sms => Self::Sms,
        }
    }
}
word_enum!(
    /// The events that make a system message on their case.
    SystemEvent, "event" {
        CaseStatusChanged => "case.status_changed",
        PaymentReceived => "payment.received",
        DocumentUploaded => "document.uploaded",
        DeadlineApproaching => "deadline.approaching",
    }
);
impl SystemEvent {
    /// The template that renders it.
    pub fn template_id(self) -> String {
        format!("system-{}", self.as_str())
    }

    /// The category of its delivery to the debtor, for the send policy.
    pub fn category(self) -> Category {
        match self {
            Self::PaymentReceived => Category::PaymentConfirmations,
            Self::DeadlineApproaching => Category::DeadlineAlerts,
            Self::CaseStatusChanged | Self::DocumentUploaded => Category::StatusNotifications,
        }
    }
}
word_enum!(
    /// Where a message's delivery work stands, as operators list it: `queued` (due, or being
    /// attempted), `scheduled` (waiting for its time, not yet attempted), `retrying` (attempted,
    /// waiting for the next try), `failed`.
    JobState, "state" {
        Queued => "queued",
        Scheduled => "scheduled",
        Retrying => "retrying",
        Failed => "failed",
    }
);
word_enum!(
    /// What a row of the jobs queue asks for: a message's delivery, the system message of an
    /// event, the documents of a received mail's attachments, a message journaled to the
    /// archive, a document mirrored to the document systems.
    JobKind, "kind of job" {
        DeliverMessage => "deliver_message",
        SystemMessage => "system_message",
        InboundAttachments => "inbound_attachments",
        ArchiveMessage => "archive_message",
        MirrorDocument => "mirror_document",
    }
);
word_enum!(Direction, "direction" { Outbound => "outbound", Inbound => "inbound" });
word_enum!(Priority, "priority" { High => "high", Normal => "normal", Low => "low" });
word_enum!(Category, "category" {
    PaymentReminders => "payment_reminders",
    CaseUpdates => "case_updates",
    DocumentRequests => "document_requests",
    SettlementOffers => "settlement_offers",
    StatusNotifications => "status_notifications",
    LegalNotices => "legal_notices",
    PaymentConfirmations => "payment_confirmations",
    DeadlineAlerts => "deadline_alerts",
    General => "general",
});
impl Category {
    /// The categories that pursue the debt (reminders, offers, deadline alerts): held while a
    /// case is disputed or closed (Reg F §1006.34 validation period; Danish inkasso practice).
    pub fn is_collection(self) -> bool {
        matches!(
            self,
            Self::PaymentReminders | Self::SettlementOffers | Self::DeadlineAlerts
        )
    }
}

word_enum!(
    /// The seed's statuses; SMS use the first four and `failed`. `received` marks inbound mail;
    /// `refused`, a system message the send policy kept from the debtor; `cancelled`, a
    /// queued message an operator stopped.
    MessageStatus, "status" {
        Queued => "queued",
        Sent => "sent",
        Delivered => "delivered",
        Opened => "opened",
        Clicked => "clicked",
        Failed => "failed",
        Bounced => "bounced",
        Received => "received",
        Refused => "refused",
        Cancelled => "cancelled",
    }
);

impl Priority {
    /// Queue order: lower runs first.
    pub fn rank(self) -> i64 {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }
}

impl MessageStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Bounced | Self::Refused | Self::Cancelled
        )
    }

    /// How far along a message is; a status only ever moves to a higher rank.
    pub fn rank(self) -> i64 {
        match self {
            Self::Queued => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Opened => 3,
            Self::Clicked => 4,
            Self::Received => 5,
            Self::Failed | Self::Bounced | Self::Refused | Self::Cancelled => 10,
        }
    }

    /// The status after `event` arrives: never backwards, and nothing leaves `failed` or
    /// `bounced`. Events may arrive out of order (a late `delivered` after `opened`).
    pub fn advance(self, event: Self) -> Self {
        if self.is_final() || event.rank() <= self.rank() {
            self
        } else {
            event
        }
    }

    /// Whether `self` is a status a message of this channel can have.
    pub fn applies_to(self, channel: Channel) -> bool {
        match channel {
            Channel::Email => !matches!(self, Self::Received | Self::Refused | Self::Cancelled),
            Channel::Sms => matches!(
                self,
                Self::Queued | Self::Sent | Self::Delivered | Self::Failed
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn status_never_moves_backwards_and_finals_stay() {
        assert_eq!(Queued.advance(Sent), Sent);
        assert_eq!(
            Opened.advance(Delivered),
            Opened,
            "a late delivered after opened keeps opened"
        );
        assert_eq!(Sent.advance(Clicked), Clicked);
        assert_eq!(Delivered.advance(Bounced), Bounced);
        assert_eq!(Bounced.advance(Clicked), Bounced);
        assert_eq!(Failed.advance(Delivered), Failed);
        assert_eq!(Failed.advance(Bounced), Failed);
    }

    #[test]
    fn words_parse_and_name_the_choices() {
        assert_eq!(
            Category::parse("legal_notices").unwrap(),
            Category::LegalNotices
        );
        let err = Priority::parse("urgent").unwrap_err().0;
        assert!(err.contains("high, normal, low"), "{err}");
        assert!(!Opened.applies_to(Channel::Sms));
        assert!(Delivered.applies_to(Channel::Sms));
        assert!(Opened.applies_to(Channel::Email));
    }
}
