//! Logging: human-readable or JSON lines on stderr. Spans carry ids, never personal data.
//! Tracing: with `PARLEY_OTLP_ENDPOINT`, the request and delivery spans are exported by
//! OpenTelemetry (OTLP over HTTP, JSON); a request's trace context (W3C `traceparent`, taken
//! from the client when it sends one) is kept with the delivery job its message queues, and
//! the delivery's span continues that trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};

/// Whether spans are exported: without it, a request carries no trace context worth keeping.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds the span exporter: dropping it sends what is left.
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            let _ = provider.shutdown();
        }
    }
}

pub fn init(config: &Config) -> Telemetry {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let traces =
        config
            .log
            .otlp_endpoint
            .as_deref()
            .and_then(|endpoint| match exporter(endpoint) {
                Ok(provider) => Some(provider),
                Err(e) => {
                    eprintln!("parley: OpenTelemetry export is off: {e}");
                    None
                }
            });
    // Spans are exported at `info` from parley itself, whatever the log level says.
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("parley"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("parley", tracing::Level::INFO),
            )
    });
    let exporting = otel.is_some();
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok()
    {
        EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
    }
    Telemetry { traces }
}

fn exporter(endpoint: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(std::time::Duration::from_secs(10))
        .build()?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("parley")
                .build(),
        )
        .build())
}

/// The W3C `traceparent` of the current span; none when tracing is off.
pub fn current_traceparent() -> Option<String> {
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` continue the trace a `traceparent` names (a client's, or a request's kept
/// with its job). An invalid value is ignored: the span starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Some(traceparent) = traceparent.filter(|t| t.len() <= 128) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Outcomes of delivery and webhook attempts since the process started, for `/metrics`:
/// `(queue, channel, outcome)` → count.
pub static OUTCOMES: Outcomes = Outcomes::new();

pub struct Outcomes {
    counts: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String, String), u64>>,
}

impl Outcomes {
    const fn new() -> Self {
        Self {
            counts: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn count(&self, queue: &'static str, channel: &str, outcome: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((queue, channel.to_string(), outcome.to_string()))
            .or_default() += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> Vec<((&'static str, String, String), u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Which work that runs once across processes this process holds, for `/metrics`.
pub static LEADS: Leads = Leads::new();

pub struct Leads {
    held: std::sync::Mutex<std::collections::BTreeMap<&'static str, bool>>,
}

impl Leads {
    const fn new() -> Self {
        Self {
            held: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Records whether this process holds `work`; returns `held`.
    pub fn record(&self, work: &'static str, held: bool) -> bool {
        let mut map = self.held.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(work, held);
        held
    }

    pub fn snapshot(&self) -> Vec<(&'static str, bool)> {
        let map = self.held.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
