//! What the audit log records: one action per kind of change or disclosure, spelled as the
//! API shows it (`case.created`, `document.downloaded`).

/// An action recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// `case.created`
    CaseCreated,
    /// `case.debtor_updated`
    CaseDebtorUpdated,
    /// `case.partner_changed`
    CasePartnerChanged,
    /// `case.status_changed`
    CaseStatusChanged,
    /// `data_subject.erased`
    DataSubjectErased,
    /// `data_subject.exported`
    DataSubjectExported,
    /// `data_subject.restricted`
    DataSubjectRestricted,
    /// `deadline.created`
    DeadlineCreated,
    /// `document.downloaded`
    DocumentDownloaded,
    /// `document.uploaded`
    DocumentUploaded,
    /// `inbound.assigned`
    InboundAssigned,
    /// `message.accepted`
    MessageAccepted,
    /// `message.cancelled`
    MessageCancelled,
    /// `message.held_for_review`
    MessageHeldForReview,
    /// `message.queued`
    MessageQueued,
    /// `message.received`
    MessageReceived,
    /// `message.refused`
    MessageRefused,
    /// `message.rejected`
    MessageRejected,
    /// `message.retried`
    MessageRetried,
    /// `note.created`
    NoteCreated,
    /// `payment.recorded`
    PaymentRecorded,
    /// `preferences.updated`
    PreferencesUpdated,
    /// `recipient.unsubscribed`
    RecipientUnsubscribed,
    /// `suppression.lifted`
    SuppressionLifted,
    /// `system_message.created`
    SystemMessageCreated,
    /// `template.created`
    TemplateCreated,
    /// `template.deleted`
    TemplateDeleted,
    /// `template.replaced`
    TemplateReplaced,
    /// `webhook.created`
    WebhookCreated,
    /// `webhook.deleted`
    WebhookDeleted,
    /// `webhook.delivery_resent`
    WebhookDeliveryResent,
    /// `webhook.recovered`
    WebhookRecovered,
}

impl AuditAction {
    pub const ALL: &'static [AuditAction] = &[
        Self::CaseCreated,
        Self::CaseDebtorUpdated,
        Self::CasePartnerChanged,
        Self::CaseStatusChanged,
        Self::DataSubjectErased,
        Self::DataSubjectExported,
        Self::DataSubjectRestricted,
        Self::DeadlineCreated,
        Self::DocumentDownloaded,
        Self::DocumentUploaded,
        Self::InboundAssigned,
        Self::MessageAccepted,
        Self::MessageCancelled,
        Self::MessageHeldForReview,
        Self::MessageQueued,
        Self::MessageReceived,
        Self::MessageRefused,
        Self::MessageRejected,
        Self::MessageRetried,
        Self::NoteCreated,
        Self::PaymentRecorded,
        Self::PreferencesUpdated,
        Self::RecipientUnsubscribed,
        Self::SuppressionLifted,
        Self::SystemMessageCreated,
        Self::TemplateCreated,
        Self::TemplateDeleted,
        Self::TemplateReplaced,
        Self::WebhookCreated,
        Self::WebhookDeleted,
        Self::WebhookDeliveryResent,
        Self::WebhookRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CaseCreated => "case.created",
            Self::CaseDebtorUpdated => "case.debtor_updated",
            Self::CasePartnerChanged => "case.partner_changed",
            Self::CaseStatusChanged => "case.status_changed",
            Self::DataSubjectErased => "data_subject.erased",
            Self::DataSubjectExported => "data_subject.exported",
            Self::DataSubjectRestricted => "data_subject.restricted",
            Self::DeadlineCreated => "deadline.created",
            Self::DocumentDownloaded => "document.downloaded",
            Self::DocumentUploaded => "document.uploaded",
            Self::InboundAssigned => "inbound.assigned",
            Self::MessageAccepted => "message.accepted",
            Self::MessageCancelled => "message.cancelled",
            Self::MessageHeldForReview => "message.held_for_review",
            Self::MessageQueued => "message.queued",
            Self::MessageReceived => "message.received",
            Self::MessageRefused => "message.refused",
            Self::MessageRejected => "message.rejected",
            Self::MessageRetried => "message.retried",
            Self::NoteCreated => "note.created",
            Self::PaymentRecorded => "payment.recorded",
            Self::PreferencesUpdated => "preferences.updated",
            Self::RecipientUnsubscribed => "recipient.unsubscribed",
            Self::SuppressionLifted => "suppression.lifted",
            Self::SystemMessageCreated => "system_message.created",
            Self::TemplateCreated => "template.created",
            Self::TemplateDeleted => "template.deleted",
            Self::TemplateReplaced => "template.replaced",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookDeleted => "webhook.deleted",
            Self::WebhookDeliveryResent => "webhook.delivery_resent",
            Self::WebhookRecovered => "webhook.recovered",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_spelled_once_as_a_dotted_name() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::ALL {
            let s = a.as_str();
            assert!(seen.insert(s), "{s} twice");
            let (object, verb) = s.split_once('.').expect("object.verb");
            assert!(!object.is_empty() && !verb.is_empty(), "{s}");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'),
                "{s}"
            );
        }
    }
}
