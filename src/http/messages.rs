//! Sending and reading messages: `/api/cases/{caseId}/messages`, `/api/messages/{messageId}`
//! and its delivery report.

use crate::domain::CaseId;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::AppState;
use super::cases::case_id;
use super::extract::{Auth, Json, Path, Query, Sender, page_limit};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::messaging::{Recipients, SendMessage};
use crate::app::render::TemplateChoice;
use crate::domain::code::Code;
use crate::domain::message::{
    Category, Channel, Direction, MessageStatus, MessageType, Priority, SystemEvent,
};
use crate::domain::party::Actor;
use crate::domain::policy::Decision;
use crate::domain::time::{Micros, parse_instant, rfc3339, to_micros};
use crate::domain::{EmailAddress, MessageId, PhoneNumber};
use crate::store::StoreError;
use crate::store::{MessageFilter, MessageView};

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// `email` or `sms`
    #[schema(schema_with = super::openapi::channel)]
    pub message_type: String,
    /// An address (email) or E.164 number (SMS), or a list of at most 50 addresses; the
    /// debtor's when absent.
    pub to: Option<OneOrMany>,
    /// Email only: at most 50 addresses.
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: Option<String>,
    /// Plain text; replaces a template's text and HTML.
    pub body: Option<String>,
    /// HTML part; derived from `body` when absent.
    pub html_body: Option<String>,
    /// `low`, `normal` (default) or `high`
    #[schema(schema_with = super::openapi::priority_or_null)]
    pub priority: Option<String>,
    /// Default `general`.
    #[schema(schema_with = super::openapi::category_or_null)]
    pub category: Option<String>,
    #[schema(schema_with = super::openapi::template_id_or_null)]
    pub template_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
    #[schema(schema_with = super::openapi::language_or_null)]
    pub language: Option<String>,
    /// RFC 3339; the message waits in the queue until then.
    #[schema(schema_with = super::openapi::instant_or_null)]
    pub scheduled_at: Option<String>,
    /// A `messageId` of this case that this email answers (sets In-Reply-To and References).
    pub in_reply_to: Option<String>,
    /// Documents of the case (`doc_…`) sent as attachments of the email.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// A document a message carries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentResponse {
    pub document_id: String,
    pub file_name: String,
    pub size: i64,
    pub content_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageResponse {
    pub message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub case_id: Option<CaseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// `email`, `sms` or `system`.
    pub message_type: MessageType,
    /// A system message's delivery channel (`email`, `sms`), or `null` when it only informs
    /// the case's parties; absent on other messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Channel>)]
    pub channel: Option<Option<Channel>>,
    /// A system message's event: `case.status_changed`, `payment.received`,
    /// `document.uploaded` or `deadline.approaching`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<SystemEvent>,
    pub direction: Direction,
    pub from: String,
    pub to: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    pub status: MessageStatus,
    pub priority: Priority,
    pub category: Category,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<i64>,
    /// The SMS provider's id of the message (its sid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub has_attachments: bool,
    /// Listed where one message is shown (and in the answer to a send).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentResponse>,
    pub created_at: String,
    /// On received messages: `false` while the message is held for review (matched only by
    /// a case number in its subject, from an address the case does not know); then it has
    /// made no document and no webhook until `POST /api/messages/{messageId}/accept`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_verified: Option<bool>,
    /// On received mail: what checking its sender found (SPF, DKIM, DMARC, ARC, and whether
    /// that proves the `From:` domain); absent when sender authentication is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<crate::domain::authentication::Authentication>,
    /// On received mail the SMTP server took with a spam filter on: its score and verdict.
    /// Mail the filter calls spam is held for review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spam: Option<crate::domain::authentication::SpamCheck>,
    /// The connected mailbox (Microsoft 365, Gmail) that carried it, in or out; absent for
    /// SMTP, IMAP and the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_by: Option<crate::domain::connector::Carrier>,
    /// On received email and SMS: what the reply means (`intent`, `confidence`, `evidence`
    /// quoting the debtor's own words, `language`, and a promise's `promisedAmount` and
    /// `promisedDate`); absent once the debtor was erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub understanding: Option<crate::domain::understanding::Understanding>,
    /// Where the CRM connectors serving its case logged it: each connector, its type, the
    /// activity's `status` there (`pending`, `logging`, `logged`, `failed`, `unlinked`:
    /// no record holds the case number and no contact the debtor's email) and, where the
    /// CRM gives one, the activity's `url`. On a message read by its id and in a case's
    /// list of messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crm_activities: Vec<crate::store::CrmActivity>,
}

impl From<MessageView> for MessageResponse {
    fn from(m: MessageView) -> Self {
        Self {
            message_id: m.id.into(),
            case_id: m.case_id,
            thread_id: m.thread_id.map(Into::into),
            message_type: m.message_type,
            channel: (m.message_type == MessageType::System).then_some(m.channel),
            event: m.event,
            direction: m.direction,
            from: m.envelope.from,
            to: m.envelope.to,
            cc: m.envelope.cc,
            subject: m.subject,
            body: m.body,
            html_body: m.html,
            status: m.status,
            priority: m.priority,
            category: m.category,
            template_id: m.template_id,
            language: m.language,
            segments: m.segments,
            provider_message_id: m.provider_id,
            scheduled_for: m.scheduled_for.map(rfc3339),
            sent_at: m.sent_at.map(rfc3339),
            received_at: m.received_at.map(rfc3339),
            sent_by: m.sent_by,
            failure_reason: m.failure_reason,
            has_attachments: m.has_attachments,
            attachments: m
                .attachments
                .into_iter()
                .map(|a| AttachmentResponse {
                    document_id: a.document_id.into(),
                    file_name: a.file_name,
                    size: a.size,
                    content_type: a.content_type,
                })
                .collect(),
            created_at: rfc3339(m.created_at),
            sender_verified: (m.direction == Direction::Inbound).then_some(m.sender_verified),
            authentication: m.authentication,
            spam: m.spam,
            carried_by: m.carried_by,
            understanding: m.understanding,
            crm_activities: m.crm_activities,
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()));
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        ApiError::bad_request(
            Code::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    })
}

/// JSON with object keys sorted, so the same body hashes the same whatever its key order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A message's id from a path; anything else is a message that does not exist.
pub(super) fn message_id(raw: &str) -> ApiResult<MessageId> {
    MessageId::parse(raw).ok_or_else(|| ApiError::not_found("message"))
}

impl SendMessageRequest {
    /// The command this request asks for: every field parsed, nothing looked up yet.
    fn command(self) -> ApiResult<SendMessage> {
        let invalid = |detail: String| ApiError::unprocessable(Code::ValidationFailed, detail);
        let channel = Channel::parse(&self.message_type)?;
        let priority = self
            .priority
            .as_deref()
            .map(Priority::parse)
            .transpose()?
            .unwrap_or(Priority::Normal);
        let category = self
            .category
            .as_deref()
            .map(Category::parse)
            .transpose()?
            .unwrap_or(Category::General);
        let language = self
            .language
            .as_deref()
            .map(crate::domain::case::parse_language)
            .transpose()?;
        let (to, cc) = recipients(channel, self.to, self.cc)?;
        let scheduled_at = self
            .scheduled_at
            .as_deref()
            .map(|s| {
                parse_instant(s).map(to_micros).ok_or_else(|| {
                    invalid(format!("scheduledAt {s:?} is not an RFC 3339 date-time"))
                })
            })
            .transpose()?;
        let template = template(self.template_id, self.variables)?;
        Ok(SendMessage {
            channel,
            to,
            cc,
            subject: self.subject,
            body: self.body,
            html_body: self.html_body,
            priority,
            category,
            template,
            language,
            scheduled_at,
            in_reply_to: self.in_reply_to,
            attachments: self.attachments,
        })
    }
}

/// The recipients a send names: for an email at most 50 addresses and as many cc, for an SMS
/// one number and no cc; none: the debtor's.
fn recipients(
    channel: Channel,
    to: Option<OneOrMany>,
    cc: Vec<String>,
) -> ApiResult<(Option<Recipients>, Vec<EmailAddress>)> {
    let invalid = |detail: String| ApiError::unprocessable(Code::ValidationFailed, detail);
    let bad_recipient =
        |e: crate::domain::Invalid| ApiError::unprocessable(Code::InvalidRecipient, e.0);
    let given = to.map(OneOrMany::into_vec).unwrap_or_default();
    let to = match channel {
        _ if given.is_empty() => None,
        Channel::Email if given.len() > 50 => {
            return Err(ApiError::unprocessable(
                Code::InvalidRecipient,
                "at most 50 recipients",
            ));
        }
        Channel::Email => Some(Recipients::Email(
            given
                .iter()
                .map(|a| EmailAddress::parse(a))
                .collect::<Result<_, _>>()
                .map_err(bad_recipient)?,
        )),
        Channel::Sms if given.len() != 1 => {
            return Err(ApiError::unprocessable(
                Code::InvalidRecipient,
                "an SMS goes to exactly one number",
            ));
        }
        Channel::Sms => Some(Recipients::Sms(
            PhoneNumber::parse(&given[0]).map_err(bad_recipient)?,
        )),
    };
    let cc = match channel {
        Channel::Email if cc.len() > 50 => {
            return Err(ApiError::unprocessable(
                Code::InvalidRecipient,
                "at most 50 cc recipients",
            ));
        }
        Channel::Email => cc
            .iter()
            .map(|c| EmailAddress::parse(c))
            .collect::<Result<_, _>>()
            .map_err(bad_recipient)?,
        Channel::Sms if !cc.is_empty() => {
            return Err(invalid("cc is for email only".into()));
        }
        Channel::Sms => Vec::new(),
    };
    Ok((to, cc))
}

/// The template a send names with its variables (strings, numbers or booleans).
fn template(
    template_id: Option<String>,
    given: BTreeMap<String, Value>,
) -> ApiResult<Option<TemplateChoice>> {
    let invalid = |detail: String| ApiError::unprocessable(Code::ValidationFailed, detail);
    Ok(match template_id {
        None => None,
        Some(template_id) => {
            let mut variables = BTreeMap::new();
            for (k, v) in given {
                let text = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(invalid(format!(
                            "variable {k:?} must be a string or a number"
                        )));
                    }
                };
                variables.insert(k, text);
            }
            Some(TemplateChoice {
                template_id,
                variables,
            })
        }
    })
}

#[utoipa::path(post, path = "/api/cases/{caseId}/messages", tag = "messages", params(("caseId" = uuid::Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "A repeat with the same key and body within 24 hours returns the first response")),
    request_body = SendMessageRequest,
    responses((status = 201, body = MessageResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn send_message(
    State(state): State<AppState>,
    sender: Sender,
    path: Result<Path<String>, ApiError>,
    headers: HeaderMap,
    body: Result<Json<Value>, ApiError>,
) -> ApiResult<Response> {
    let Sender { actor, verified } = sender;
    let token_id = actor.token_id.clone();
    let answer = send_as(&state, actor, verified, path, &headers, body).await;
    // A party taken from memory whose request fails before its token was checked: a token
    // revoked or expired meanwhile is 401, whatever else is wrong with the request.
    match answer {
        Err(ApiError::Problem(p)) if !verified && p.status != StatusCode::UNAUTHORIZED => {
            if state.app.access.token_valid(&token_id).await? {
                Err(ApiError::Problem(p))
            } else {
                Err(StoreError::TokenGone.into())
            }
        }
        other => other,
    }
}

async fn send_as(
    state: &AppState,
    actor: Actor,
    verified: bool,
    path: Result<Path<String>, ApiError>,
    headers: &HeaderMap,
    body: Result<Json<Value>, ApiError>,
) -> ApiResult<Response> {
    let Path(raw) = path?;
    let Json(body) = body?;
    let case = case_id(&raw)?;
    let key = idempotency_key(headers)?;
    // A repeated key is answered before the case is read: its token is checked first.
    if key.is_some() && !verified && !state.app.access.token_valid(&actor.token_id).await? {
        return Err(StoreError::TokenGone.into());
    }
    // Kept only as keyed hashes: a key or a body may hold an address (`remind-jens@...`),
    // and neither is needed again, only recognised.
    let idempotency = key.map(|key| {
        let body_hash = hex::encode(Sha256::digest(format!("{case}\n{}", canonical(&body))));
        state.app.access.idempotency(&key, &body_hash)
    });
    let req: SendMessageRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(Code::InvalidBody, e.to_string()))?;
    let command = req.command()?;
    let sent = state
        .app
        .messaging
        .send(&actor, &case, command, idempotency)
        .await?;
    let body = serde_json::to_string(&MessageResponse::from(MessageView {
        body: None,
        html: None,
        ..sent.message
    }))
    .map_err(ApiError::internal)?;
    let mut r = json_response(StatusCode::CREATED, body);
    if sent.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// What a send would queue, rendered by the server; nothing is stored or sent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePreview {
    /// `email` or `sms`
    pub message_type: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// SMS segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<i64>,
    /// When it would go out, if not now (contact hours, closed days, `scheduledAt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// Documents it would carry.
    pub attachments: Vec<String>,
    /// The send policy's decision, as the send would record it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyEvidence>,
}

#[utoipa::path(post, path = "/api/cases/{caseId}/messages/preview", tag = "messages", params(("caseId" = uuid::Uuid, Path)),
    request_body = SendMessageRequest,
    responses((status = 200, body = MessagePreview), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody, description = "the refusals of a send")),
    security(("bearer" = [])))]
pub async fn preview_message(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<MessagePreview>> {
    let case = case_id(&raw)?;
    let req: SendMessageRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(Code::InvalidBody, e.to_string()))?;
    let command = req.command()?;
    let new = state.app.messaging.preview(&actor, &case, command).await?;
    Ok(axum::Json(MessagePreview {
        message_type: new.channel.map_or("system", |c| c.as_str()).to_string(),
        to: new.envelope.to,
        cc: new.envelope.cc,
        subject: new.subject,
        body: new.body,
        html_body: new.html,
        template_id: new.template_id,
        language: new.language,
        segments: new.segments,
        scheduled_for: new.scheduled_for.map(rfc3339),
        attachments: new
            .attachments
            .into_iter()
            .map(|a| a.document_id.into())
            .collect(),
        policy: new.evidence.map(|e| PolicyEvidence {
            decision: e.decision,
            rule: e.rule,
            checked_at: rfc3339(to_micros(e.checked_at)),
        }),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageList {
    pub messages: Vec<MessageResponse>,
    pub total_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct MessageQuery {
    /// `email`, `sms` or `system`
    #[serde(rename = "type")]
    #[param(schema_with = super::openapi::message_type)]
    pub kind: Option<String>,
    /// `outbound` or `inbound`
    #[param(schema_with = super::openapi::direction)]
    pub direction: Option<String>,
    #[param(schema_with = super::openapi::message_status)]
    pub status: Option<String>,
    /// Date or RFC 3339 date-time, inclusive.
    #[param(schema_with = super::openapi::instant)]
    pub date_from: Option<String>,
    /// Date (the whole day) or RFC 3339 date-time, inclusive.
    #[param(schema_with = super::openapi::instant)]
    pub date_to: Option<String>,
    /// Page size, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

pub(super) fn query_time(
    name: &str,
    v: Option<&str>,
    end_of_day: bool,
) -> ApiResult<Option<Micros>> {
    let Some(v) = v else { return Ok(None) };
    let t = parse_instant(v).ok_or_else(|| {
        ApiError::bad_request(
            Code::InvalidQuery,
            format!("{name} must be a date or an RFC 3339 date-time"),
        )
    })?;
    let date_only = v.len() == 10;
    Ok(Some(
        to_micros(t)
            + if end_of_day && date_only {
                86_400_000_000 - 1
            } else {
                0
            },
    ))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/messages", tag = "messages", params(("caseId" = uuid::Uuid, Path), MessageQuery),
    responses((status = 200, body = MessageList), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn list_messages(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Query(q): Query<MessageQuery>,
) -> ApiResult<axum::Json<MessageList>> {
    let id = case_id(&raw)?;
    let bad = |e: crate::domain::Invalid| ApiError::bad_request(Code::InvalidQuery, e.0);
    let filter = MessageFilter {
        message_type: q
            .kind
            .as_deref()
            .map(MessageType::parse)
            .transpose()
            .map_err(bad)?,
        direction: q
            .direction
            .as_deref()
            .map(Direction::parse)
            .transpose()
            .map_err(bad)?,
        status: q
            .status
            .as_deref()
            .map(MessageStatus::parse)
            .transpose()
            .map_err(bad)?,
        date_from: query_time("dateFrom", q.date_from.as_deref(), false)?,
        date_to: query_time("dateTo", q.date_to.as_deref(), true)?,
        cursor: super::extract::page_cursor(q.cursor)?,
        limit: page_limit(q.limit)?,
    };
    let (page, total_count) = state.app.messaging.messages(&actor, &id, filter).await?;
    Ok(axum::Json(MessageList {
        messages: page.items.into_iter().map(Into::into).collect(),
        total_count,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/messages/{messageId}", tag = "messages", params(("messageId" = String, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn get_message(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MessageResponse>> {
    let id = message_id(&id)?;
    let m = state.app.messaging.message(&actor, &id).await?;
    Ok(axum::Json(m.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryEvent {
    pub event: String,
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    pub message_id: String,
    pub status: MessageStatus,
    pub events: Vec<DeliveryEvent>,
    /// The last send-policy decision on the message; absent on inbound messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyEvidence>,
}

/// A send-policy decision kept as evidence.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEvidence {
    pub decision: Decision,
    /// The rule that decided: `contact_permitted`, `opt_out_exception`, `scheduled`,
    /// `contact_hours`, `closed_day`, or the code of a refusal.
    pub rule: String,
    pub checked_at: String,
}

#[utoipa::path(get, path = "/api/messages/{messageId}/delivery-report", tag = "messages", params(("messageId" = String, Path)),
    responses((status = 200, body = DeliveryReport), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn delivery_report(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryReport>> {
    let message = message_id(&id)?;
    let report = state
        .app
        .messaging
        .delivery_report(&actor, &message)
        .await?;
    Ok(axum::Json(DeliveryReport {
        message_id: id,
        status: report.status,
        events: report
            .events
            .into_iter()
            .map(|e| DeliveryEvent {
                event: e.event,
                timestamp: rfc3339(e.at),
            })
            .collect(),
        policy: report.evidence.map(|e| PolicyEvidence {
            decision: e.decision,
            rule: e.rule,
            checked_at: rfc3339(to_micros(e.checked_at)),
        }),
    }))
}
