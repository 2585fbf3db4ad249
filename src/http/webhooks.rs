//! `/api/webhooks`: subscriptions to events of the cases their owner can see.

use crate::domain::code::Code;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Json, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::webhook_target as target;
use crate::domain::event::{EventType, WebhookDeliveryStatus};
use crate::domain::signing;
use crate::domain::time::rfc3339;
use crate::store::{DeliveryView, Webhook};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWebhookRequest {
    /// http(s) URL that receives signed POSTs.
    #[schema(schema_with = super::openapi::web_url)]
    pub url: String,
    /// Events to receive, e.g. `message.received`; repeats count once.
    #[schema(schema_with = super::openapi::events)]
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<EventType>,
    /// `whsec_…`: shown once, at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

fn response(w: Webhook, secret: Option<String>) -> WebhookResponse {
    WebhookResponse {
        webhook_id: w.id,
        url: w.url,
        events: w.events,
        secret,
        created_at: rfc3339(w.created_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryResponse {
    pub delivery_id: String,
    pub event: EventType,
    /// The `webhook-id` header of the requests: `evt_<eventId>`.
    pub message_id: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

impl From<DeliveryView> for DeliveryResponse {
    fn from(d: DeliveryView) -> Self {
        let waiting = matches!(d.status.as_str(), "pending" | "sending");
        Self {
            delivery_id: d.id,
            event: d.event_type,
            message_id: format!("evt_{}", d.event_id),
            status: d.status,
            attempts: d.attempts.into(),
            last_status_code: d.last_status.map(Into::into),
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.filter(|_| waiting).map(rfc3339),
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryResponse>,
}

#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhookRequest,
    responses((status = 201, body = WebhookResponse), (status = 422, body = ProblemBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateWebhookRequest>,
) -> ApiResult<(StatusCode, axum::Json<WebhookResponse>)> {
    if req.url.len() > 2000 {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            "url is longer than 2000 characters",
        ));
    }
    if req.events.is_empty() {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            "events must name at least one event",
        ));
    }
    let mut events: Vec<EventType> = Vec::new();
    for e in &req.events {
        let e = EventType::parse(e)?;
        if !events.contains(&e) {
            events.push(e);
        }
    }
    target::check(&req.url, state.config.webhooks.allow_private)
        .await
        .map_err(|e| ApiError::unprocessable(Code::WebhookUrlNotAllowed, e))?;
    let secret = signing::new_secret();
    let hook = state
        .store
        .create_webhook(&actor, &req.url, &events, &secret)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(response(hook, Some(secret))),
    ))
}

#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<axum::Json<WebhookList>> {
    let hooks = state.store.list_webhooks(&actor).await?;
    Ok(axum::Json(WebhookList {
        webhooks: hooks.into_iter().map(|w| response(w, None)).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/webhooks/{webhookId}", tag = "webhooks", params(("webhookId" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_webhook(&actor, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

#[utoipa::path(get, path = "/api/webhooks/{webhookId}/deliveries", tag = "webhooks", params(("webhookId" = String, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryList>> {
    let list = state
        .store
        .webhook_deliveries(&actor, &id, 200)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(axum::Json(DeliveryList {
        deliveries: list.into_iter().map(Into::into).collect(),
    }))
}
