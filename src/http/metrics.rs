//! Request metrics in the Prometheus text format, and the middleware that records them and
//! logs one line per request (ids and route templates only: never bodies or query strings).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner
            .requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        let h = inner
            .latency
            .entry((method.to_string(), route.to_string()))
            .or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP parley_http_requests_total HTTP requests by method, route template and status.\n");
        out.push_str("# TYPE parley_http_requests_total counter\n");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "parley_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP parley_http_request_duration_seconds HTTP request latency by method and route template.\n");
        out.push_str("# TYPE parley_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &inner.latency {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "parley_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "parley_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "parley_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "parley_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

/// The queue's figures in the exposition format: jobs and webhook deliveries by state, the
/// age of the oldest due job, attempt outcomes by queue and channel, the pool's connections.
pub fn render_queues(
    f: &crate::store::operators::QueueFigures,
    now: i64,
    (open, idle): (u32, usize),
    outcomes: &[((&'static str, String, String), u64)],
) -> String {
    let mut out = String::new();
    out.push_str("# HELP parley_jobs Jobs by kind and state (done ones are not counted).\n");
    out.push_str("# TYPE parley_jobs gauge\n");
    for (kind, status, n) in &f.jobs {
        let _ = writeln!(out, "parley_jobs{{kind=\"{kind}\",state=\"{status}\"}} {n}");
    }
    out.push_str("# HELP parley_oldest_due_job_age_seconds How long the oldest due job has waited (0: none).\n");
    out.push_str("# TYPE parley_oldest_due_job_age_seconds gauge\n");
    let age = f.oldest_due.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
    let _ = writeln!(out, "parley_oldest_due_job_age_seconds {age}");
    out.push_str("# HELP parley_webhook_deliveries Webhook deliveries by state (delivered ones are not counted).\n");
    out.push_str("# TYPE parley_webhook_deliveries gauge\n");
    for (status, n) in &f.webhook_deliveries {
        let _ = writeln!(out, "parley_webhook_deliveries{{state=\"{status}\"}} {n}");
    }
    out.push_str("# HELP parley_attempts_total Delivery and webhook attempts by queue, channel and outcome, since start.\n");
    out.push_str("# TYPE parley_attempts_total counter\n");
    for ((queue, channel, outcome), n) in outcomes {
        let _ = writeln!(
            out,
            "parley_attempts_total{{queue=\"{queue}\",channel=\"{channel}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    out.push_str("# HELP parley_db_connections Connections of the database pool.\n");
    out.push_str("# TYPE parley_db_connections gauge\n");
    let _ = writeln!(out, "parley_db_connections{{state=\"open\"}} {open}");
    let _ = writeln!(out, "parley_db_connections{{state=\"idle\"}} {idle}");
    out
}

/// A method name as a metric label: one of the methods the API knows, else `other`, so that
/// made-up method names cannot add labels.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Gives each request an id (the client's `X-Request-Id` when it is sane), a span carrying
/// it, a log line and its metrics.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    // A route template is one of the router's own; a path that matched none is `other`.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    // Named and described for OpenTelemetry as its HTTP conventions ask; a client's
    // `traceparent` makes the request part of the client's trace.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    span.in_scope(|| tracing::info!(status, latency_ms = seconds * 1000.0, "handled"));
    state.metrics.record(method, &route, status, seconds);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// A connector's series: name, type, help, and its value at a time.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::store::Connector, i64) -> f64,
);

/// Each connector's counters and lag, by its id and type (its name stays out: an admin's
/// words).
pub fn render_connectors(connectors: &[crate::store::Connector], now: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let series: [Series; 5] = [
        (
            "parley_connector_syncs_total",
            "counter",
            "Syncs of a connector that worked.",
            |c, _| c.syncs as f64,
        ),
        (
            "parley_connector_items_total",
            "counter",
            "Items a connector took in.",
            |c, _| c.items as f64,
        ),
        (
            "parley_connector_failures_total",
            "counter",
            "Syncs of a connector that failed.",
            |c, _| c.failures as f64,
        ),
        (
            "parley_connector_up",
            "gauge",
            "1 while a connector works (status active).",
            |c, _| {
                f64::from(u8::from(
                    c.status == crate::domain::connector::ConnectorStatus::Active,
                ))
            },
        ),
        (
            "parley_connector_lag_seconds",
            "gauge",
            "Seconds since a connector's last sync that worked (since its creation before one did).",
            |c, now| (now - c.last_sync_at.unwrap_or(c.created_at)).max(0) as f64 / 1e6,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in connectors {
            let _ = writeln!(
                out,
                "{name}{{connector=\"{}\",type=\"{}\"}} {}",
                c.id,
                c.kind,
                value(c, now)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_by_route() {
        let m = Metrics::default();
        m.record("GET", "/api/cases/{caseId}", 200, 0.003);
        m.record("GET", "/api/cases/{caseId}", 404, 0.2);
        let text = m.render();
        assert!(text.contains("parley_http_requests_total{method=\"GET\",route=\"/api/cases/{caseId}\",status=\"404\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("parley_http_request_duration_seconds_count{method=\"GET\",route=\"/api/cases/{caseId}\"} 2"));
    }

    #[test]
    fn made_up_methods_are_one_label() {
        for name in ["FOO", "BREW", "X-A-VERY-LONG-METHOD"] {
            let m = axum::http::Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other");
        }
        assert_eq!(method_label(&axum::http::Method::PATCH), "PATCH");
    }
}
