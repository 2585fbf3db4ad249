//! Logging: human-readable or JSON lines on stderr. Spans carry ids, never personal data.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
