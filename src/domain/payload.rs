//! What the events of the outbox carry: one struct per event, serialized to the JSON that
//! webhooks deliver (field order as written). Ids and states only: what may name a person
//! (a subject, a sender, a deadline's title) is read from the sealed record when a
//! delivery is made, so that an erasure reaches it.

use crate::domain::{DocumentId, MessageId, NoteId};
use serde::Serialize;

use super::CaseId;

/// `case.created`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseCreated<'a> {
    pub case_id: &'a CaseId,
    pub case_number: &'a str,
}

/// `case.status_changed`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseStatusChanged<'a> {
    pub case_id: &'a CaseId,
    pub case_number: &'a str,
    pub previous_status: &'a str,
    pub status: &'a str,
}

/// An amount as events carry it.
#[derive(Debug, Serialize)]
pub struct Amount<'a> {
    pub value: String,
    pub currency: &'a str,
}

/// `payment.received`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentReceived<'a> {
    pub case_id: &'a CaseId,
    pub payment_id: &'a str,
    pub amount: Amount<'a>,
}

/// `note.created` (internal notes only)
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoteCreated<'a> {
    pub note_id: &'a NoteId,
    pub case_id: &'a CaseId,
    pub category: Option<&'a str>,
    pub created_by: &'a str,
}

/// `document.uploaded`; `message_id` for a received mail's attachment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentUploaded<'a> {
    pub document_id: &'a DocumentId,
    pub case_id: &'a CaseId,
    pub document_type: &'a str,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a MessageId>,
}

/// `message.sent`, `message.delivered`, … : a message's status moved by an event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusChanged<'a> {
    pub message_id: &'a MessageId,
    pub case_id: Option<&'a CaseId>,
    pub event: &'a str,
    pub status: &'a str,
    pub timestamp: String,
}

/// `message.received`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReceived<'a> {
    pub event: &'a str,
    pub message_id: &'a MessageId,
    pub case_id: &'a CaseId,
    pub case_number: &'a str,
    pub message_type: &'a str,
    pub has_attachments: bool,
    pub timestamp: String,
}

/// `message.understood`: a received reply read as a promise to pay or as paid already. Its
/// figures (`promisedAmount`, `promisedDate`) and `confidence` are read from the sealed
/// reading when the webhook is sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageUnderstood<'a> {
    pub message_id: &'a MessageId,
    pub case_id: &'a CaseId,
    pub case_number: &'a str,
    pub intent: &'a str,
    pub timestamp: String,
}

/// `preferences.updated`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesUpdated<'a> {
    pub case_id: &'a CaseId,
    pub do_not_contact: bool,
    pub allow_email: bool,
    pub allow_sms: bool,
}

/// `recipient.unsubscribed`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipientUnsubscribed<'a> {
    pub message_id: &'a MessageId,
    pub case_id: Option<&'a CaseId>,
    pub channel: &'a str,
}

/// `deadline.approaching` (no title: it may name the debtor)
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineApproaching<'a> {
    pub case_id: &'a CaseId,
    pub deadline_id: &'a str,
    pub due_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_serialize_to_the_json_webhooks_deliver() {
        let c = CaseId::parse("0190c6a4-3f1e-7c2a-9d4b-5e6f7a8b9c0d").unwrap();
        let d = super::super::DocumentId::parse("doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c0d").unwrap();
        let p = DocumentUploaded {
            document_id: &d,
            case_id: &c,
            document_type: "invoice",
            version: 2,
            message_id: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"documentId":"doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c0d","caseId":"0190c6a4-3f1e-7c2a-9d4b-5e6f7a8b9c0d","documentType":"invoice","version":2}"#
        );
        let p = PaymentReceived {
            case_id: &c,
            payment_id: "pay_1",
            amount: Amount {
                value: "500.00".into(),
                currency: "DKK",
            },
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"caseId":"0190c6a4-3f1e-7c2a-9d4b-5e6f7a8b9c0d","paymentId":"pay_1","amount":{"value":"500.00","currency":"DKK"}}"#
        );
    }
}
