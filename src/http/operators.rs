//! What operators do to the queues: `GET /api/jobs`, retry and cancel of a message, resend
//! and recover of webhook deliveries. Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Auth, Json, Path, Query};
use super::messages::MessageResponse;
use super::messages::message_id;
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::code::Code;
use crate::domain::message::JobState;
use crate::domain::time::{parse_instant, rfc3339, to_micros};
use crate::domain::{CaseId, DeliveryId, WebhookId};
use crate::store::operators::JobView;

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptResponse {
    pub attempt: i32,
    /// `sent`, `retry`, `failed` (deferrals are not attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A message's delivery work.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResponse {
    pub job_id: String,
    pub message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub case_id: Option<CaseId>,
    /// `email`, `sms` or `system`.
    pub message_type: String,
    /// The message's status.
    pub status: String,
    pub state: JobState,
    pub attempts: i32,
    /// When it is (or was) due.
    pub run_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub attempt_log: Vec<AttemptResponse>,
}

impl From<JobView> for JobResponse {
    fn from(j: JobView) -> Self {
        Self {
            job_id: j.job_id,
            message_id: j.message_id.into(),
            case_id: j.case_id,
            message_type: j.message_type,
            status: j.message_status,
            state: j.state,
            attempts: j.attempts,
            run_at: rfc3339(j.run_at),
            last_error: j.last_error,
            attempt_log: j
                .attempt_log
                .into_iter()
                .map(|a| AttemptResponse {
                    attempt: a.attempt,
                    outcome: a.outcome,
                    error: a.error,
                    started_at: rfc3339(a.started_at),
                    finished_at: a.finished_at.map(rfc3339),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub jobs: Vec<JobResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct JobQuery {
    /// `queued` (default), `scheduled`, `retrying` or `failed`.
    #[param(schema_with = super::openapi::job_state)]
    pub state: Option<String>,
    /// Only the work of this case.
    pub case_id: Option<uuid::Uuid>,
    /// Page size, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs", tag = "operators", params(JobQuery),
    responses((status = 200, body = JobList), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<JobQuery>,
) -> ApiResult<axum::Json<JobList>> {
    super::extract::require_admin(&actor, "the queue is seen by admins")?;
    let limit = super::extract::page_limit(q.limit)?;
    let job_state = q
        .state
        .as_deref()
        .map(JobState::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(Code::InvalidQuery, e.0))?
        .unwrap_or(JobState::Queued);
    let case = q.case_id.and_then(|c| CaseId::parse(&c.to_string()));
    let page = state
        .app
        .operators
        .jobs(job_state, case.as_ref(), q.cursor.as_deref(), limit)
        .await?;
    Ok(axum::Json(JobList {
        jobs: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Queues a `failed` message again, with the same `Message-ID` (whoever may send on its case).
#[utoipa::path(post, path = "/api/messages/{messageId}/retry", tag = "operators", params(("messageId" = String, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: the message has not failed")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MessageResponse>> {
    let m = state.app.operators.retry(&actor, &message_id(&id)?).await?;
    Ok(axum::Json(m.into()))
}

/// Stops a `queued` message: it ends `cancelled` (whoever may send on its case).
#[utoipa::path(post, path = "/api/messages/{messageId}/cancel", tag = "operators", params(("messageId" = String, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: the message is not queued, or is being sent")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MessageResponse>> {
    let m = state
        .app
        .operators
        .cancel(&actor, &message_id(&id)?)
        .await?;
    Ok(axum::Json(m.into()))
}

/// Accepts a received mail held for review (whoever sees its case): its sender becomes a
/// participant of the thread, its attachments documents of the case, and `message.received`
/// goes out.
#[utoipa::path(post, path = "/api/messages/{messageId}/accept", tag = "inbound", params(("messageId" = String, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: the message is not held for review")),
    security(("bearer" = [])))]
pub async fn accept(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MessageResponse>> {
    let m = state.app.inbound.accept(&actor, &message_id(&id)?).await?;
    Ok(axum::Json(m.into()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The mail, back on the unmatched list (`GET /api/inbound/unmatched`).
    pub inbound_id: String,
    /// `unmatched`.
    pub outcome: String,
}

/// Rejects a received mail held for review (whoever sees its case): it leaves the case and
/// goes back to the unmatched list, naming the case as a candidate.
#[utoipa::path(post, path = "/api/messages/{messageId}/reject", tag = "inbound", params(("messageId" = String, Path)),
    responses((status = 200, body = Rejected), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: the message is not held for review")),
    security(("bearer" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Rejected>> {
    let inbound_id = state.app.inbound.reject(&actor, &message_id(&id)?).await?;
    Ok(axum::Json(Rejected {
        inbound_id,
        outcome: "unmatched".into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingReview {
    /// Received messages held for review on the caller's cases, oldest first.
    pub messages: Vec<MessageResponse>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// At most this many (default 100, at most 500).
    pub limit: Option<i64>,
}

/// The received mail held for review on the cases the caller sees.
#[utoipa::path(get, path = "/api/inbound/review", tag = "inbound", params(ReviewQuery),
    responses((status = 200, body = AwaitingReview)),
    security(("bearer" = [])))]
pub async fn awaiting_review(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<ReviewQuery>,
) -> ApiResult<axum::Json<AwaitingReview>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let held = state.app.inbound.awaiting_review(&actor, limit).await?;
    Ok(axum::Json(AwaitingReview {
        messages: held.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resent {
    pub delivery_id: String,
    /// `pending`: it goes out again shortly.
    pub status: String,
}

/// Sends a delivered or failed webhook delivery again (the webhook's owner, or an admin).
#[utoipa::path(post, path = "/api/webhooks/{webhookId}/deliveries/{deliveryId}/resend", tag = "webhooks",
    params(("webhookId" = String, Path), ("deliveryId" = String, Path)),
    responses((status = 202, body = Resent), (status = 404, body = ProblemBody),
        (status = 409, body = ProblemBody, description = "`invalid_state`: it is still pending")),
    security(("bearer" = [])))]
pub async fn resend(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, axum::Json<Resent>)> {
    let gone = || ApiError::not_found("webhook delivery");
    let webhook = WebhookId::parse(&webhook_id).ok_or_else(gone)?;
    let delivery = DeliveryId::parse(&delivery_id).ok_or_else(gone)?;
    state
        .app
        .webhooks
        .resend(&actor, &webhook, &delivery)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Resent {
            delivery_id,
            status: "pending".into(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverRequest {
    /// Date or RFC 3339 date-time: every failed delivery created since then is sent again.
    #[schema(schema_with = super::openapi::instant)]
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries are pending again.
    pub recovered: u64,
}

/// Sends every failed delivery of a webhook since a time again (its owner, or an admin).
#[utoipa::path(post, path = "/api/webhooks/{webhookId}/recover", tag = "webhooks",
    params(("webhookId" = String, Path)), request_body = RecoverRequest,
    responses((status = 202, body = Recovered), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn recover(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(webhook_id): Path<String>,
    Json(req): Json<RecoverRequest>,
) -> ApiResult<(StatusCode, axum::Json<Recovered>)> {
    let since = parse_instant(&req.since).map(to_micros).ok_or_else(|| {
        ApiError::unprocessable(
            Code::ValidationFailed,
            format!(
                "since {:?} is not a date or an RFC 3339 date-time",
                req.since
            ),
        )
    })?;
    let webhook = super::webhooks::webhook_id(&webhook_id)?;
    let recovered = state.app.webhooks.recover(&actor, &webhook, since).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Recovered { recovered })))
}
