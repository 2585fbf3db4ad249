//! What every connector's HTTP needs: one client with timeouts, answers read up to a limit,
//! `Retry-After` read, and failures sorted into what a sync or a send does about them.

use std::time::Duration;

use reqwest::StatusCode;

/// The longest a request may take, answer included (a 64 MiB message at a modest rate).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a JSON answer read (a page of a delta, a token).
pub const MAX_JSON: usize = 4 * 1024 * 1024;
/// The longest wait a `Retry-After` may ask for; longer is read as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a call to a service did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The credentials are wrong: an administrator must correct the settings.
    Credentials(String),
    /// Access was withdrawn or never granted (consent, permissions, delegation).
    Reauthorize(String),
    /// The service asks to wait (`429`, `503`).
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The kept cursor is no longer known to the service: start again from the beginning.
    Resync,
    /// Worth trying again later (the network, a `5xx`).
    Transient(String),
    /// Will not work however often it is tried (a `4xx` the service explains).
    Permanent(String),
}

impl Failure {
    /// The connector's status after this failure: withdrawn access asks an administrator
    /// to grant it again; anything else is failing (and tried again).
    pub fn status(&self) -> crate::domain::connector::ConnectorStatus {
        use crate::domain::connector::ConnectorStatus;
        match self {
            Self::Reauthorize(_) => ConnectorStatus::ReauthorizationRequired,
            _ => ConnectorStatus::Failing,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Credentials(s) | Self::Reauthorize(s) | Self::Transient(s) => s.clone(),
            Self::Permanent(s) => s.clone(),
            Self::Throttled { reason, .. } => reason.clone(),
            Self::Resync => "the service no longer knows the sync state".into(),
        }
    }
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A link from a service is followed only where parley checked it goes.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Seconds, or an HTTP date, as `Retry-After` says.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A throttled call waits as long as the service asks (up to half a minute, three times a
/// call) and is tried again: `true` once it waited. Longer or more often, the failure stands
/// and the next round (or the delivery's retry) comes back after `Retry-After`.
pub async fn wait_out(failure: &Failure, waited: &mut u32) -> bool {
    let Failure::Throttled { retry_after, .. } = failure else {
        return false;
    };
    let wait = retry_after.unwrap_or(Duration::from_secs(1));
    if *waited >= 3 || wait > Duration::from_secs(30) {
        return false;
    }
    *waited += 1;
    tokio::time::sleep(wait).await;
    true
}

/// Reads an answer's body, refusing one longer than `limit`.
pub async fn body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Failure> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Failure::Permanent(format!(
            "the answer is longer than {limit} bytes"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        if out.len() + chunk.len() > limit {
            return Err(Failure::Permanent(format!(
                "the answer is longer than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A JSON answer, read up to [`MAX_JSON`].
pub async fn json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, Failure> {
    let bytes = body(response, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Transient(format!(
            "{what}: an answer that is not the JSON expected ({e})"
        ))
    })
}

/// A request that did not get an answer.
pub fn network(e: reqwest::Error) -> Failure {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    // The error's text names the URL, which may carry a token in its query: not shown. Its
    // causes say what went wrong (`Connection refused`, a certificate, a name not found).
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::Transient(format!("{what}: {}", said(&text)))
}

/// The generic reading of an error status, for what a service's own reading leaves.
pub fn by_status(status: StatusCode, retry_after: Option<Duration>, what: String) -> Failure {
    match status.as_u16() {
        429 | 503 => Failure::Throttled {
            reason: format!("{what} (HTTP {status}: throttled)"),
            retry_after,
        },
        401 => Failure::Credentials(format!("{what} (HTTP 401: not authenticated)")),
        403 => Failure::Reauthorize(format!("{what} (HTTP 403: access not granted)")),
        408 | 500..=599 => Failure::Transient(format!("{what} (HTTP {status})")),
        _ => Failure::Permanent(format!("{what} (HTTP {status})")),
    }
}

/// A short, single-line piece of a service's own words, for `lastError`.
pub fn said(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    line.trim().to_string()
}
