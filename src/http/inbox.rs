//! `/api/inbox`: the replies on the caller's cases that await an answer or a review, and
//! what a case worker does with them (correct a reading, mark a reply done).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Auth, Json, Path, Query};
use super::messages::{MessageResponse, message_id};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::code::Code;
use crate::domain::time::{duration_micros, parse_duration};
use crate::domain::understanding::Intent;
use crate::store::{Awaiting, InboxFilter};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct InboxQuery {
    /// At most this many, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
    /// Only replies read as these intents, comma-separated (`dispute,wrong_person`).
    #[param(
        pattern = "^(dispute|payment_promise|payment_plan_request|paid_already|wrong_person|cease_contact|question|other)(,(dispute|payment_promise|payment_plan_request|paid_already|wrong_person|cease_contact|question|other))*$"
    )]
    pub intent: Option<String>,
    /// `review`: only replies that hold their case; `answer`: only those awaiting an answer.
    #[param(pattern = "^(review|answer)$")]
    pub awaiting: Option<String>,
    /// Only replies at least this old: `30m`, `12h`, `2d`.
    #[param(pattern = "^[0-9]{1,9}(s|m|h|d)$")]
    pub older_than: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxEntry {
    /// The reply, with its body and `understanding`.
    pub message: MessageResponse,
    pub case_number: String,
    /// `review`: it holds its case until a case worker confirms or corrects it; `answer`:
    /// nobody has answered on the case since.
    pub awaiting: String,
    /// Seconds since it was received.
    pub age_seconds: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxList {
    /// Oldest first.
    pub messages: Vec<InboxEntry>,
    /// How many replies the filter takes in all.
    pub total_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorrectionRequest {
    /// What the reply means, in a case worker's reading: `dispute`, `payment_promise`,
    /// `payment_plan_request`, `paid_already`, `wrong_person`, `cease_contact`, `question`
    /// or `other`.
    #[schema(value_type = String, pattern = "^(dispute|payment_promise|payment_plan_request|paid_already|wrong_person|cease_contact|question|other)$")]
    pub intent: String,
}

fn filter(q: InboxQuery, now: i64) -> ApiResult<InboxFilter> {
    let invalid = |detail: String| ApiError::bad_request(Code::InvalidQuery, detail);
    let limit = super::extract::page_limit(q.limit)?;
    let mut intents = Vec::new();
    for i in q
        .intent
        .as_deref()
        .map(|s| s.split(','))
        .into_iter()
        .flatten()
    {
        let intent = Intent::parse(i).map_err(|e| invalid(format!("intent: {}", e.0)))?;
        if !intents.contains(&intent) {
            intents.push(intent);
        }
    }
    let awaiting = match q.awaiting.as_deref() {
        None => None,
        Some("review") => Some(Awaiting::Review),
        Some("answer") => Some(Awaiting::Answer),
        Some(other) => {
            return Err(invalid(format!(
                "awaiting must be review or answer, not {other:?}"
            )));
        }
    };
    let received_before = match q.older_than.as_deref() {
        None => None,
        Some(d) => {
            // As the schema says: 1 to 9 digits and one of s, m, h, d.
            let digits = d.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or_default();
            if !(1..=9).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "olderThan must be a number and s, m, h or d (e.g. 2d), not {d:?}"
                )));
            }
            let age = parse_duration(d).map_err(|e| invalid(format!("olderThan: {e}")))?;
            Some(now.saturating_sub(duration_micros(age)))
        }
    };
    // The last message id of the previous page, the keyset's bound (empty: the first page).
    let cursor = match q.cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(crate::store::decode_cursor(&c).map_err(|_| {
            ApiError::unprocessable(Code::InvalidCursor, "cursor is not one this API issued")
        })?),
    };
    Ok(InboxFilter {
        intents,
        awaiting,
        received_before,
        cursor,
        limit,
    })
}

/// The replies on the caller's cases that await an answer or a review, oldest first. A reply
/// leaves when someone answers on its case (an email or SMS sent there after it) or marks it
/// done; one that holds its case stays until a case worker confirms or corrects it.
#[utoipa::path(get, path = "/api/inbox", tag = "inbox", params(InboxQuery),
    responses((status = 200, body = InboxList), (status = 400, body = ProblemBody, description = "`invalid_query`"),
        (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn inbox(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<InboxQuery>,
) -> ApiResult<axum::Json<InboxList>> {
    let now = state.app.clock.now();
    let f = filter(q, now)?;
    let page = state.app.inbound.inbox(&actor, &f).await?;
    let messages = page
        .items
        .into_iter()
        .map(|item| {
            let received = item.message.received_at.unwrap_or(item.message.created_at);
            InboxEntry {
                age_seconds: (now - received).max(0) / 1_000_000,
                awaiting: match item.awaiting {
                    Awaiting::Review => "review",
                    Awaiting::Answer => "answer",
                }
                .to_string(),
                case_number: item.case_number,
                message: item.message.into(),
            }
        })
        .collect();
    Ok(axum::Json(InboxList {
        messages,
        total_count: page.total,
        next_cursor: page
            .next_cursor
            .map(|id| crate::store::encode_cursor(id.as_str())),
    }))
}

/// Marks a reply done: it leaves the inbox (answered elsewhere, or nothing to answer).
/// Audited. A reply that holds its case is refused until it is reviewed.
#[utoipa::path(post, path = "/api/inbox/{messageId}/done", tag = "inbox", params(("messageId" = String, Path)),
    responses((status = 204, description = "out of the inbox"), (status = 404, body = ProblemBody),
        (status = 422, body = ProblemBody, description = "`awaiting_review`: confirm or correct it first")),
    security(("bearer" = [])))]
pub async fn done(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .app
        .inbound
        .mark_done(&actor, &message_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A case worker's correction of what a reply means, kept beside parley's reading
/// (`understanding.correction`) and audited. A reply that held its case and now means
/// something else is dismissed: the hold passes to the next reply awaiting review, or is
/// lifted and the held collection messages go. One now read as a dispute, a wrong person or
/// a request to stop holds the case.
#[utoipa::path(post, path = "/api/messages/{messageId}/understanding", tag = "inbox", params(("messageId" = String, Path)),
    request_body = CorrectionRequest,
    responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: a received message parley did not read"),
        (status = 422, body = ProblemBody, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn correct(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(body): Json<CorrectionRequest>,
) -> ApiResult<axum::Json<MessageResponse>> {
    let id = message_id(&id)?;
    let intent = Intent::parse(&body.intent)
        .map_err(|e| ApiError::unprocessable(Code::ValidationFailed, format!("intent: {}", e.0)))?;
    let message = state
        .app
        .inbound
        .correct_understanding(&actor, &id, intent)
        .await?;
    Ok(axum::Json(message.into()))
}
