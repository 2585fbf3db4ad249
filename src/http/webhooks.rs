//! `/api/webhooks`: subscriptions to events of the cases their owner can see.

use crate::domain::code::Code;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Json, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::WebhookId;
use crate::domain::event::{EventType, WebhookDeliveryStatus};
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
        webhook_id: w.id.into(),
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
        let waiting = matches!(
            d.status,
            WebhookDeliveryStatus::Pending | WebhookDeliveryStatus::Sending
        );
        Self {
            delivery_id: d.id.into(),
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
    if !web_url(&req.url) {
        return Err(ApiError::unprocessable(
            Code::WebhookUrlNotAllowed,
            "url must be http(s)://, optional user info, a host name or IPv4 address, an \
             optional port, path and query, and no fragment",
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
    let (hook, secret) = state.app.webhooks.create(&actor, &req.url, &events).await?;
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
    let hooks = state.app.webhooks.list(&actor).await?;
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
    let id = webhook_id(&id)?;
    state.app.webhooks.delete(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/webhooks/{webhookId}/deliveries", tag = "webhooks", params(("webhookId" = String, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryList>> {
    let list = state
        .app
        .webhooks
        .deliveries(&actor, &webhook_id(&id)?)
        .await?;
    Ok(axum::Json(DeliveryList {
        deliveries: list.into_iter().map(Into::into).collect(),
    }))
}

/// A webhook's id from a path; anything else is a webhook that does not exist.
pub(super) fn webhook_id(raw: &str) -> ApiResult<WebhookId> {
    WebhookId::parse(raw).ok_or_else(|| ApiError::not_found("webhook"))
}

/// The webhook URLs the document describes, and the only ones taken: `http(s)://`, optional
/// user info, a host name whose last label starts with a letter (labels of letters and digits,
/// single hyphens inside) or an IPv4 address, an optional port (1 to 65535), an optional path
/// and query of URL characters and `%XX` escapes, no fragment.
pub(super) fn web_url(url: &str) -> bool {
    fn escaped(s: &str, plain: impl Fn(u8) -> bool) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            } else if plain(b[i]) {
                i += 1;
            } else {
                return false;
            }
        }
        true
    }
    fn sub_delim(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:-".contains(&c)
    }
    fn label(l: &str) -> bool {
        !l.is_empty()
            && l.split('-')
                .all(|run| !run.is_empty() && run.bytes().all(|c| c.is_ascii_alphanumeric()))
    }
    fn octet(o: &str) -> bool {
        !o.is_empty()
            && o.len() <= 3
            && o.bytes().all(|c| c.is_ascii_digit())
            && (o == "0" || !o.starts_with('0'))
            && o.parse::<u16>().is_ok_and(|n| n <= 255)
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = match authority.split_once('@') {
        Some((user, host_port)) => {
            if !escaped(user, sub_delim) {
                return false;
            }
            host_port
        }
        None => authority,
    };
    let (host, port) = match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    if let Some(port) = port
        && !(port.bytes().all(|c| c.is_ascii_digit())
            && !port.starts_with('0')
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)))
    {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let dns = labels.iter().all(|l| label(l))
        && labels
            .last()
            .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()));
    let ipv4 = labels.len() == 4 && labels.iter().all(|o| octet(o));
    if !(dns || ipv4) {
        return false;
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let path_char = |c: u8| sub_delim(c) || c == b'@' || c == b'/';
    (path.is_empty() || (path.starts_with('/') && escaped(path, path_char)))
        && query.is_none_or(|q| escaped(q, |c| path_char(c) || c == b'?'))
}

#[cfg(test)]
mod tests {
    use super::web_url;

    #[test]
    fn webhook_urls_are_the_ones_the_document_describes() {
        for ok in [
            "https://hooks.example.com/parley",
            "http://a",
            "http://a-b.c-d.e/x?y=1&z=%2F",
            "http://u:p@h.io:8080/p",
            "http://@h.io",
            "http://1.2.3.4:65535",
            "http://0.0.0.0",
            "https://h.io?",
            "https://h.io/?a?b",
        ] {
            assert!(web_url(ok), "{ok}");
        }
        for bad in [
            "ftp://a",
            "HTTP://a",
            "http://",
            "http://a.1",
            "http://1.2.3",
            "http://01.2.3.4",
            "http://256.1.1.1",
            "http://xn--a.com",
            "http://-a.com",
            "http://a..b",
            "http://a.b.",
            "http://a/b#c",
            "http://[::1]/",
            "http://a:0",
            "http://a:65536",
            "http://a:/",
            "http://a/%zz",
            "http://a/%2",
            "http://a b",
            "http://u@v@h",
        ] {
            assert!(!web_url(bad), "{bad}");
        }
    }
}
