//! What the audit log records: one action per kind of change or disclosure, spelled as the
//! API shows it (`case.created`, `document.downloaded`).

use super::word_enum;

word_enum!(
    /// An action recorded in the audit log.
    AuditAction, "audit action" {
        CaseCreated => "case.created",
        CaseDebtorUpdated => "case.debtor_updated",
        CaseHeld => "case.held",
        CasePartnerChanged => "case.partner_changed",
        CaseStatusChanged => "case.status_changed",
        ConnectorCreated => "connector.created",
        ConnectorDeleted => "connector.deleted",
        ConnectorSyncRequested => "connector.sync_requested",
        ConnectorUpdated => "connector.updated",
        DataSubjectErased => "data_subject.erased",
        DataSubjectExported => "data_subject.exported",
        DataSubjectRestricted => "data_subject.restricted",
        DeadlineCreated => "deadline.created",
        DocumentDownloaded => "document.downloaded",
        DocumentUploaded => "document.uploaded",
        InboundAssigned => "inbound.assigned",
        InboundDismissed => "inbound.dismissed",
        MessageAccepted => "message.accepted",
        MessageCancelled => "message.cancelled",
        MessageDone => "message.done",
        MessageHeldForReview => "message.held_for_review",
        MessageJournaled => "message.journaled",
        MessageQueued => "message.queued",
        MessageReceived => "message.received",
        MessageRefused => "message.refused",
        MessageRejected => "message.rejected",
        MessageRetried => "message.retried",
        MessageReviewConfirmed => "message.review_confirmed",
        MessageUnderstandingCorrected => "message.understanding_corrected",
        MessagesExported => "messages.exported",
        NoteCreated => "note.created",
        PaymentRecorded => "payment.recorded",
        PreferencesUpdated => "preferences.updated",
        RecipientUnsubscribed => "recipient.unsubscribed",
        SuppressionLifted => "suppression.lifted",
        SystemMessageCreated => "system_message.created",
        TemplateCreated => "template.created",
        TemplateDeleted => "template.deleted",
        TemplateReplaced => "template.replaced",
        WebhookCreated => "webhook.created",
        WebhookDeleted => "webhook.deleted",
        WebhookDeliveryResent => "webhook.delivery_resent",
        WebhookRecovered => "webhook.recovered",
    }
);

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
