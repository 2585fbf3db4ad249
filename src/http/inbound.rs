//! Inbound mail over HTTP (`POST /api/inbound/email`, raw MIME) and the mail that matched no
//! case. Both need an admin token.

use crate::domain::CaseId;
use crate::domain::code::Code;
use crate::domain::mail::Source;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Query};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::time::rfc3339;
use crate::store::Ingested;

/// A mail as received (RFC 5322): it starts with a header field, a name of printable ASCII
/// other than `:`, then `:`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[!-9;-~]+:", example = "From: debtor@example.com\r\nSubject: Re: DEB-2024-00001\r\n\r\nI will pay on Friday.\r\n")]
#[allow(dead_code)]
pub struct RawMail(String);

/// Takes one raw mail (`Content-Type: message/rfc822`). A reply to one of our messages, mail
/// to a per-case address or with a case number in its subject joins its case (201); a bounce
/// marks the original message `bounced` (200); anything else is kept for
/// `GET /api/inbound/unmatched` (202).
#[utoipa::path(post, path = "/api/inbound/email", tag = "inbound",
    request_body(content_type = "message/rfc822", content = inline(RawMail),
        description = "The mail as received: header fields, a blank line, the body."),
    responses((status = 201, description = "matched to a case"), (status = 200, description = "a bounce or a duplicate"),
        (status = 202, description = "kept unmatched"), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody),
        (status = 415, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn receive_email(
    State(state): State<AppState>,
    Auth(actor): Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    super::extract::require_admin(&actor, "inbound mail is handled with an admin token")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("message/rfc822")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::UnsupportedMediaType,
            "expected Content-Type: message/rfc822",
        ));
    }
    let limit = usize::try_from(state.config.http.max_upload_bytes).unwrap_or(usize::MAX);
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::PayloadTooLarge,
            "the mail is larger than PARLEY_MAX_UPLOAD_BYTES",
        )
    })?;
    // RFC 5322: a message starts with a header field. What does not is refused here rather
    // than left to the parser's guesses, as the document says.
    let name = raw
        .iter()
        .take_while(|b| matches!(b, b'!'..=b'9' | b';'..=b'~'))
        .count();
    if name == 0 || raw.get(name) != Some(&b':') {
        return Err(ApiError::unprocessable(
            Code::InvalidMail,
            "the body is not an RFC 5322 mail: it does not start with a header field",
        ));
    }
    let outcome = state
        .app
        .inbound
        .receive_email(crate::domain::mail::Source::Http, &raw, Default::default())
        .await?;
    Ok(match outcome {
        Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        } => (
            StatusCode::CREATED,
            axum::Json(
                json!({"outcome": "matched", "messageId": message_id, "caseId": case_id, "threadId": thread_id}),
            ),
        ),
        Ingested::Bounce { message_id } => (
            StatusCode::OK,
            axum::Json(json!({"outcome": "bounce", "messageId": message_id})),
        ),
        Ingested::Duplicate { message_id } => (
            StatusCode::OK,
            axum::Json(json!({"outcome": "duplicate", "messageId": message_id})),
        ),
        Ingested::Unmatched { inbound_id } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"outcome": "unmatched", "inboundId": inbound_id})),
        ),
        // Journal reports come by SMTP only (to the journal address of the envelope).
        Ingested::Journaled { message_id } => (
            StatusCode::OK,
            axum::Json(json!({"outcome": "journaled", "messageId": message_id})),
        ),
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedItem {
    pub inbound_id: String,
    pub source: String,
    pub received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The cases it could belong to when it matched more than one (an SMS from a number that
    /// several cases share, a case number that several creditors use).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub candidate_case_ids: Vec<CaseId>,
    /// What checking its sender found (as on a message); absent when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<crate::domain::authentication::Authentication>,
    /// The spam filter's verdict; absent when no filter was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spam: Option<crate::domain::authentication::SpamCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedList {
    pub messages: Vec<UnmatchedItem>,
    /// How many unmatched mails, not dismissed, the filter takes in all.
    pub total_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedQuery {
    /// At most this many, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
    /// How it arrived: `smtp`, `imap`, `http` or `sms`.
    pub source: Option<Source>,
    /// The sender's address or number (case ignored); `sender` is taken as well.
    #[param(pattern = "^[^\\x00]*$")]
    #[serde(alias = "sender")]
    pub from: Option<String>,
    /// Received at or after: a date or an RFC 3339 date-time.
    #[param(schema_with = super::openapi::instant)]
    pub received_since: Option<String>,
    /// Received before: a date or an RFC 3339 date-time.
    #[param(schema_with = super::openapi::instant)]
    pub received_before: Option<String>,
}

/// Which unmatched mail a bulk dismissal takes: every filter given (not null) must hold, and
/// at least one must be given (up to 10,000 a call).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DismissRequest {
    pub source: Option<Source>,
    /// The sender's address or number (case ignored); `sender` is taken as well.
    #[schema(pattern = "^[^\\x00]*$")]
    #[serde(alias = "sender")]
    pub from: Option<String>,
    /// Received at or after: a date or an RFC 3339 date-time.
    #[schema(format = DateTime)]
    pub received_since: Option<String>,
    /// Received before: a date or an RFC 3339 date-time.
    #[schema(format = DateTime)]
    pub received_before: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DismissAnswer {
    /// How many were dismissed.
    pub dismissed: u64,
}

fn filter(
    source: Option<Source>,
    from: Option<String>,
    (since, before): (Option<&str>, Option<&str>),
) -> ApiResult<crate::store::UnmatchedFilter> {
    if from.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(ApiError::bad_request(
            Code::InvalidQuery,
            "from holds a NUL character",
        ));
    }
    Ok(crate::store::UnmatchedFilter {
        source,
        sender: from.filter(|s| !s.trim().is_empty()),
        since: super::messages::query_time("receivedSince", since, false)?,
        before: super::messages::query_time("receivedBefore", before, false)?,
    })
}

#[utoipa::path(get, path = "/api/inbound/unmatched", tag = "inbound", params(UnmatchedQuery),
    responses((status = 200, body = UnmatchedList), (status = 400, body = ProblemBody, description = "`invalid_query`"),
        (status = 403, body = ProblemBody), (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn unmatched(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<UnmatchedQuery>,
) -> ApiResult<axum::Json<UnmatchedList>> {
    super::extract::require_admin(&actor, "inbound mail is handled with an admin token")?;
    let limit = super::extract::page_limit(q.limit)?;
    let f = filter(
        q.source,
        q.from,
        (q.received_since.as_deref(), q.received_before.as_deref()),
    )?;
    let page = state
        .app
        .inbound
        .unmatched(&f, q.cursor.as_deref(), limit)
        .await?;
    let messages = page
        .items
        .into_iter()
        .map(|m| UnmatchedItem {
            inbound_id: m.inbound_id,
            source: m.source.to_string(),
            received_at: rfc3339(m.received_at),
            from: m.from,
            subject: m.subject,
            message_id: m.message_id,
            candidate_case_ids: m.candidate_case_ids,
            authentication: m.authentication,
            spam: m.spam,
        })
        .collect();
    Ok(axum::Json(UnmatchedList {
        messages,
        total_count: page.total,
        next_cursor: page.next_cursor,
    }))
}

/// Dismisses one unmatched mail or SMS (admin, audited): it leaves the list, and is removed
/// `PARLEY_UNMATCHED_RETENTION` later. Dismissing it again changes nothing.
#[utoipa::path(post, path = "/api/inbound/unmatched/{inboundId}/dismiss", tag = "inbound", params(("inboundId" = String, Path, description = "`inboundId` of `GET /api/inbound/unmatched`")),
    responses((status = 204, description = "dismissed"), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn dismiss(
    State(state): State<AppState>,
    Auth(actor): Auth,
    super::extract::Path(id): super::extract::Path<String>,
) -> ApiResult<StatusCode> {
    super::extract::require_admin(&actor, "inbound mail is handled with an admin token")?;
    state.app.inbound.dismiss(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Dismisses every unmatched mail the filter takes (admin, each audited), oldest first, up
/// to 10,000 a call: a spam wave from one sender, everything before a day.
#[utoipa::path(post, path = "/api/inbound/unmatched/dismiss", tag = "inbound",
    request_body = DismissRequest,
    responses((status = 200, body = DismissAnswer), (status = 403, body = ProblemBody), (status = 400, body = ProblemBody, description = "`invalid_body`: no filter, or `invalid_query`: a bad value")),
    security(("bearer" = [])))]
pub async fn dismiss_many(
    State(state): State<AppState>,
    Auth(actor): Auth,
    super::extract::Json(req): super::extract::Json<DismissRequest>,
) -> ApiResult<axum::Json<DismissAnswer>> {
    super::extract::require_admin(&actor, "inbound mail is handled with an admin token")?;
    let f = filter(
        req.source,
        req.from,
        (
            req.received_since.as_deref(),
            req.received_before.as_deref(),
        ),
    )?;
    if f.source.is_none() && f.sender.is_none() && f.since.is_none() && f.before.is_none() {
        return Err(ApiError::bad_request(
            Code::InvalidBody,
            "name at least one of from, source, receivedSince, receivedBefore",
        ));
    }
    let dismissed = state.app.inbound.dismiss_where(&actor, &f).await?;
    Ok(axum::Json(DismissAnswer { dismissed }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SmsForm {
    /// The sender, E.164.
    #[serde(rename = "From")]
    #[schema(schema_with = super::openapi::phone)]
    from: String,
    #[serde(rename = "To", default)]
    #[schema(pattern = "^[^\\x00]*$")]
    to: String,
    #[serde(rename = "Body", default)]
    #[schema(pattern = "^[^\\x00]*$")]
    body: String,
    #[serde(rename = "MessageSid")]
    #[schema(nullable = false, pattern = "^[^\\x00]*$")]
    sid: Option<String>,
}

/// A received SMS in Twilio's webhook format; answered with empty TwiML, as Twilio expects.
#[utoipa::path(post, path = "/api/inbound/sms", tag = "inbound",
    request_body(content_type = "application/x-www-form-urlencoded", content = SmsForm),
    responses((status = 200, description = "stored (matched to the debtor's case by number, or kept unmatched)", content_type = "text/xml"),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = []), ("basic" = [])))]
pub async fn receive_sms(
    State(state): State<AppState>,
    super::providers::TwilioForm(f): super::providers::TwilioForm<SmsForm>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let from = crate::domain::PhoneNumber::parse(&f.from)
        .map_err(|e| ApiError::unprocessable(Code::InvalidRecipient, e.0))?;
    if [Some(&f.to), Some(&f.body), f.sid.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.contains('\0'))
    {
        return Err(ApiError::unprocessable(
            Code::InvalidBody,
            "a form field holds a NUL character",
        ));
    }
    let sms = crate::app::inbound::ReceivedSms {
        from,
        to: f.to,
        body: f.body,
        provider_id: f.sid,
    };
    let outcome = state.app.inbound.receive_sms(&sms).await?;
    if let Ingested::Matched { message_id, .. } = &outcome {
        tracing::info!(message = %message_id, "inbound SMS stored");
    }
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignRequest {
    pub case_id: String,
}

/// Sorts an unmatched mail or SMS into a case (admin): it becomes a received message of the
/// case, threaded and announced as if it had matched.
#[utoipa::path(post, path = "/api/inbound/unmatched/{inboundId}/assign", tag = "inbound", params(("inboundId" = String, Path, description = "`inboundId` of `GET /api/inbound/unmatched`")),
    request_body = AssignRequest,
    responses((status = 201, description = "now a message of the case"), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn assign(
    State(state): State<AppState>,
    Auth(actor): Auth,
    super::extract::Path(id): super::extract::Path<String>,
    super::extract::Json(req): super::extract::Json<AssignRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    super::extract::require_admin(&actor, "inbound mail is handled with an admin token")?;
    let case_id =
        crate::domain::CaseId::parse(&req.case_id).ok_or_else(|| ApiError::not_found("case"))?;
    match state.app.inbound.assign(&actor, &id, &case_id).await? {
        Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        } => Ok((
            StatusCode::CREATED,
            axum::Json(
                json!({"outcome": "matched", "messageId": message_id, "caseId": case_id, "threadId": thread_id}),
            ),
        )),
        _ => Err(ApiError::not_found("unmatched message")),
    }
}
