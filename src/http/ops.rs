//! Operability: health, readiness, metrics, the OpenAPI document and the API page.

use crate::domain::code::Code;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::problem::problem_response;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.app.health.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "database not reachable");
            problem_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::NotReady,
                "the database is not reachable",
                Default::default(),
            )
        }
    }
}

/// Requests, and the queues: read from the database on each scrape (a database that does not
/// answer leaves the queue figures out, not the scrape).
/// With `PARLEY_METRICS_TOKEN` set, only a scrape that presents it as a bearer token.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.config.http.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !crate::crypto::same_bytes(given.as_bytes(), expected.expose().as_bytes()) {
            return super::problem::ApiError::unauthorized("/metrics needs its bearer token")
                .into_response();
        }
    }
    let mut text = state.metrics.render();
    if let Ok(figures) = state.app.health.figures().await {
        text.push_str(&super::metrics::render_queues(
            &figures.queues,
            figures.now,
            figures.pool,
            &crate::telemetry::OUTCOMES.snapshot(),
        ));
    }
    if let Ok(connectors) = state.app.connectors.all().await {
        text.push_str(&super::metrics::render_connectors(
            &connectors,
            state.app.clock.now(),
        ));
    }
    text.push_str(
        "# HELP parley_singleton_held Work that runs in one process at a time: 1 where this process holds it.\n\
         # TYPE parley_singleton_held gauge\n",
    );
    for (work, held) in crate::telemetry::LEADS.snapshot() {
        text.push_str(&format!(
            "parley_singleton_held{{work=\"{work}\"}} {}\n",
            u8::from(held)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>parley API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="api"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#api", persistAuthorization: true });
</script>
</body>
</html>
"##;

pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

pub async fn docs_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    )
}

pub async fn docs_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/swagger-ui/swagger-ui.css"),
    )
}
