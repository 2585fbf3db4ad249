//! Links in outbound email, reached without a token: the open pixel, tracked links and
//! one-click unsubscribe (RFC 8058). A token that is not ours answers 404 and redirects
//! nowhere; none of these pages says anything about the message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::extract::Path;
use super::problem::{ApiError, ApiResult};
use super::rate_limit::RateLimiter;
use crate::app::tracking::Link;
use crate::domain::message::MessageStatus;

/// A transparent 1×1 GIF.
const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What keeps the unauthenticated tracking links cheap: a limit per client address, and
/// memory of what was recorded lately, so a flood of opens or clicks costs no writes.
pub struct TrackingGuard {
    per_address: RateLimiter,
    recorded: Mutex<HashMap<(String, MessageStatus), Instant>>,
}

/// How long a recorded open or click of a message is not recorded again.
const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// Memory of recorded events is forgotten beyond this many entries.
const REMEMBERED: usize = 100_000;

impl TrackingGuard {
    /// `per_minute` tracked requests per client address are recorded; more are served but
    /// not recorded.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_address: RateLimiter::new(per_minute),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this event should be written: not over the address's limit, and not
    /// recorded for this message within the last ten minutes.
    fn admit(&self, peer: Option<SocketAddr>, message: &str, event: MessageStatus) -> bool {
        let address = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
        if self.per_address.check(&address).is_err() {
            return false;
        }
        let now = Instant::now();
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.len() >= REMEMBERED {
            recorded.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
            if recorded.len() >= REMEMBERED {
                recorded.clear();
            }
        }
        let key = (message.to_string(), event);
        match recorded.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => false,
            _ => {
                recorded.insert(key, now);
                true
            }
        }
    }
}

fn link(state: &AppState, token: &str) -> ApiResult<Link> {
    state
        .app
        .tracking
        .link(token)
        .ok_or_else(|| ApiError::not_found("link"))
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[utoipa::path(get, path = "/t/open/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "a 1x1 GIF; the open is recorded", content_type = "image/gif"), (status = 404)))]
pub async fn open(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let Link::Open { m, .. } = link(&state, &token)? else {
        return Err(ApiError::not_found("link"));
    };
    if state
        .tracking
        .admit(Some(peer), m.as_str(), MessageStatus::Opened)
    {
        state.app.tracking.record(&m, MessageStatus::Opened).await?;
    }
    Ok(no_store(
        ([(header::CONTENT_TYPE, "image/gif")], PIXEL).into_response(),
    ))
}

#[utoipa::path(get, path = "/t/click/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 302, description = "to the original link; the click is recorded"), (status = 404)))]
pub async fn click(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let Link::Click { m, u, .. } = link(&state, &token)? else {
        return Err(ApiError::not_found("link"));
    };
    if state
        .tracking
        .admit(Some(peer), m.as_str(), MessageStatus::Clicked)
    {
        state
            .app
            .tracking
            .record(&m, MessageStatus::Clicked)
            .await?;
    }
    let location = HeaderValue::from_str(&u).map_err(|_| ApiError::not_found("link"))?;
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    Ok(no_store(r))
}

fn page(title: &str, text: &str, form: bool) -> String {
    let button = if form {
        "<form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32rem;margin:3rem auto\">\
         <h1>{title}</h1><p>{text}</p>{button}</body></html>"
    )
}

/// The link in the body: asks before acting, since mail scanners follow links.
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "a page that asks before unsubscribing", content_type = "text/html"), (status = 404)))]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let Link::Unsubscribe { .. } = link(&state, &token)? else {
        return Err(ApiError::not_found("link"));
    };
    Ok(no_store(
        Html(page("Unsubscribe", "Stop receiving these emails?", true)).into_response(),
    ))
}

/// RFC 8058 one-click unsubscribe, and the form of the page above.
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "unsubscribed (RFC 8058 one-click)", content_type = "text/html"), (status = 404)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let Link::Unsubscribe { m, r } = link(&state, &token)? else {
        return Err(ApiError::not_found("link"));
    };
    if !state.app.tracking.unsubscribe(&m, r).await? {
        return Err(ApiError::not_found("link"));
    }
    Ok(no_store(
        Html(page(
            "Unsubscribed",
            "You will not receive these emails any more.",
            false,
        ))
        .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_floods_are_not_recorded() {
        let guard = TrackingGuard::new(3);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert!(guard.admit(Some(a), "msg_1", MessageStatus::Opened));
        assert!(
            !guard.admit(Some(a), "msg_1", MessageStatus::Opened),
            "a repeat"
        );
        assert!(guard.admit(Some(a), "msg_1", MessageStatus::Clicked));
        assert!(
            !guard.admit(Some(a), "msg_2", MessageStatus::Opened),
            "over the limit"
        );
        assert!(
            guard.admit(Some(b), "msg_2", MessageStatus::Opened),
            "another address"
        );
    }
}
