//! The stable, machine-readable reasons of a refusal: the `code` of every problem response.
//! Clients branch on these words, so they are one enum, never loose strings.

use super::word_enum;

word_enum!(
    /// A refusal's `code`.
    Code, "code" {
        // The caller and the request.
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        RateLimited => "rate_limited",
        NotFound => "not_found",
        MethodNotAllowed => "method_not_allowed",
        MalformedJson => "malformed_json",
        InvalidBody => "invalid_body",
        InvalidQuery => "invalid_query",
        InvalidCursor => "invalid_cursor",
        UnsupportedMediaType => "unsupported_media_type",
        PayloadTooLarge => "payload_too_large",
        RequestTimeout => "request_timeout",
        ValidationFailed => "validation_failed",
        InvalidIdempotencyKey => "invalid_idempotency_key",
        IdempotencyConflict => "idempotency_conflict",
        InvalidState => "invalid_state",
        // Cases, payments, parties.
        CaseNumberTaken => "case_number_taken",
        CurrencyMismatch => "currency_mismatch",
        AmountOutOfRange => "amount_out_of_range",
        InvalidParty => "invalid_party",
        // Messages and templates.
        InvalidRecipient => "invalid_recipient",
        TemplateNotFound => "template_not_found",
        TemplateExists => "template_exists",
        TemplateTypeMismatch => "template_type_mismatch",
        TemplateVariablesMissing => "template_variables_missing",
        InvalidAttachment => "invalid_attachment",
        // The send policy.
        DoNotContact => "do_not_contact",
        Restricted => "restricted",
        CaseNotContactable => "case_not_contactable",
        ChannelNotAllowed => "channel_not_allowed",
        FrequencyCapExceeded => "frequency_cap_exceeded",
        RecipientSuppressed => "recipient_suppressed",
        AwaitingReview => "awaiting_review",
        // Documents, inbound mail, webhooks.
        InvalidDocumentType => "invalid_document_type",
        InvalidReplaces => "invalid_replaces",
        InvalidMail => "invalid_mail",
        WebhookUrlNotAllowed => "webhook_url_not_allowed",
        // The service itself.
        ServiceUnavailable => "service_unavailable",
        NotReady => "not_ready",
        InternalError => "internal_error",
    }
);

impl Code {
    /// A refusal of the send policy (kept as evidence in the case's audit log).
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Self::DoNotContact
                | Self::Restricted
                | Self::CaseNotContactable
                | Self::ChannelNotAllowed
                | Self::FrequencyCapExceeded
                | Self::RecipientSuppressed
                | Self::AwaitingReview
        )
    }
}
