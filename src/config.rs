//! Configuration: documented defaults, then an optional `parley.toml`, then `PARLEY_*`
//! variables, merged by figment into [`Settings`] (the one list of keys). Each section then
//! parses its own values once, here, and a bad one is named in the error as the operator
//! wrote it (`PARLEY_HTTP_ADDR: …`, `parley.toml: http_addr: …`).

pub use crate::domain::time::parse_duration;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::domain::policy::{ContactWindow, FrequencyCap};

/// Every key parley reads, once: the `parley.toml` name is the field's, the environment name
/// is `PARLEY_` and the upper-cased field. Values are text as written (a TOML number or
/// boolean is taken as its text); each section parses and checks its own, naming the key as
/// the operator wrote it. What each means and its default: README, "Configuration".
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    // The HTTP API.
    #[serde(default, deserialize_with = "scalar")]
    http_addr: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    http_header_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    http_request_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    http_max_connections: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    public_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_upload_bytes: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_json_bytes: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    rate_limit_per_minute: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    auth_failures_per_minute: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    metrics_token: Option<String>,
    // Storage and keys.
    #[serde(default, deserialize_with = "scalar")]
    data_dir: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    database_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    database_max_connections: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    subject_keys_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    document_store: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    s3_access_key_id: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    s3_secret_access_key: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    master_key: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    old_master_keys: Option<String>,
    // Mail out and in.
    #[serde(default, deserialize_with = "scalar")]
    smtp_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    email_from: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_attachment_bytes: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    dkim_key: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    dkim_selector: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    dkim_domain: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_domain: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_smtp_addr: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_sessions_per_peer: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_relays: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    dns_resolver: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    dns_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_arc_sealers: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_journal_address: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_journal_domains: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_spamd: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_spam_reject: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_spam_mark: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_spam_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_tls_cert: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    inbound_tls_key: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    imap_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    imap_poll_interval: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    imap_oauth2_token_file: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    imap_oauth2_token_command: Option<String>,
    // SMS.
    #[serde(default, deserialize_with = "scalar")]
    sms_url: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    sms_account: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    sms_token: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    sms_from: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    sms_rate_per_second: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    sms_status_callback_url: Option<String>,
    // Delivery and webhooks.
    #[serde(default, deserialize_with = "scalar")]
    delivery_retry_schedule: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    delivery_concurrency: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    delivery_lease: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    crm_concurrency: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    webhook_retry_schedule: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    webhook_retention: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    webhook_allow_private: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    webhook_concurrency: Option<String>,
    // The rules of contact.
    #[serde(default, deserialize_with = "scalar")]
    frequency_cap: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    person_frequency_cap: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    default_contact_hours: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    closed_days: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    deadline_warning: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    promise_deadlines: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    retention: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    unmatched_retention: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    history_retention: Option<String>,
    // Logs and traces.
    #[serde(default, deserialize_with = "scalar")]
    log_format: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    log_level: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    otlp_endpoint: Option<String>,
}

/// A setting's text: a string as it is, a TOML number or boolean as its text.
fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, number or boolean")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text).map(Some)
}

/// The keys of [`Settings`], read from the struct itself.
fn setting_keys() -> Vec<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The name of the environment's source in figment's metadata.
const ENVIRONMENT: &str = "environment";

/// The `PARLEY_*` variables of an explicit list (the process's, or a test's), as a figment
/// source: only keys parley reads; others (`PARLEY_CONFIG`, a test's own) are not ours.
struct EnvList<'a>(&'a [(String, String)]);

impl figment::Provider for EnvList<'_> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(ENVIRONMENT)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let keys = setting_keys();
        let dict: figment::value::Dict = self
            .0
            .iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("PARLEY_")?.to_ascii_lowercase();
                keys.contains(&key)
                    .then(|| (key, figment::value::Value::from(value.clone())))
            })
            .collect();
        Ok(figment::Profile::Default.collect(dict))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A 32-byte key that never prints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyBytes(pub [u8; 32]);

impl KeyBytes {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration, in one section per subsystem; each subsystem is handed its own.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub mail: MailConfig,
    pub sms: SmsConfig,
    pub delivery: DeliveryConfig,
    pub policy: PolicyConfig,
    pub webhooks: WebhookConfig,
    pub log: LogConfig,
}

/// The HTTP API (`PARLEY_HTTP_ADDR`, `PARLEY_PUBLIC_URL`, limits).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// A client that has not sent its request headers by then is disconnected.
    pub header_timeout: Duration,
    /// The longest a request may take, reading its body included.
    pub request_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Base URL of tracking links and pixels.
    pub public_url: String,
    pub max_upload_bytes: u64,
    pub max_json_bytes: usize,
    pub rate_limit_per_minute: u32,
    /// Failed authentications a client address may make a minute before 429; `0` = no limit.
    pub auth_failures_per_minute: u32,
    /// `PARLEY_METRICS_TOKEN`: when set, `/metrics` answers only `Authorization: Bearer` it.
    pub metrics_token: Option<Secret>,
}

/// Where data lives: the database, the document store, the keys that seal it.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub database_max_connections: u32,
    /// `PARLEY_SUBJECT_KEYS_URL`: the key store of data subjects' keys. Kept apart from the
    /// database so a backup of the database holds no key; defaults to the file
    /// `<database file>.subject-keys` beside a SQLite database, and to the database itself
    /// on PostgreSQL (with a warning at start).
    pub subject_keys_url: Option<Secret>,
    pub document_store: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    /// Key of data at rest; generated into the data folder when unset.
    pub master_key: Option<KeyBytes>,
    /// Keys of earlier rotations, still read.
    pub old_master_keys: Vec<KeyBytes>,
}

/// Email out (SMTP or outbox files) and in (the SMTP server, IMAP polling).
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub smtp_url: Option<Secret>,
    pub email_from: String,
    /// Domain of per-case reply addresses.
    pub inbound_domain: String,
    pub inbound_smtp_addr: Option<SocketAddr>,
    /// The largest mail the SMTP server takes (advertised as `SIZE`).
    pub inbound_max_bytes: u64,
    /// Sessions one address may hold at once (`PARLEY_INBOUND_SESSIONS_PER_PEER`).
    pub inbound_sessions_per_peer: usize,
    /// Networks of trusted relays (`PARLEY_INBOUND_RELAYS`), bounded only by the server's
    /// sessions in all.
    pub inbound_relays: Vec<ipnet::IpNet>,
    /// How received mail's senders are authenticated (`PARLEY_DNS_RESOLVER`, `_TIMEOUT`).
    pub sender_auth: SenderAuthConfig,
    /// The spam filter asked of mail the SMTP server takes (`PARLEY_INBOUND_SPAMD`); none:
    /// no filter.
    pub spam: Option<SpamConfig>,
    /// Certificate and key the SMTP server offers with STARTTLS; none: no STARTTLS.
    pub inbound_tls: Option<TlsIdentity>,
    pub imap_url: Option<Secret>,
    pub imap_poll_interval: Duration,
    /// Where IMAP polling takes an OAuth2 token for `AUTHENTICATE XOAUTH2`; none: the URL's
    /// password.
    pub imap_oauth2: Option<ImapToken>,
    /// The most an email's attachments may add up to (`PARLEY_MAX_ATTACHMENT_BYTES`).
    pub max_attachment_bytes: u64,
    /// DKIM signing of outbound mail (`PARLEY_DKIM_KEY`, `_SELECTOR`, `_DOMAIN`); none: unsigned.
    pub dkim: Option<DkimSettings>,
    /// Where the agency's mail server journals the mail its people send
    /// (`PARLEY_INBOUND_JOURNAL_ADDRESS`); none: no journal is taken.
    pub journal: Option<JournalConfig>,
}

/// Journal reports (Exchange Online) and compliance copies (Gmail) of mail sent around
/// parley, at an address of their own.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The journal address (lowercase).
    pub address: String,
    /// The agency's own mail domains (`PARLEY_INBOUND_JOURNAL_DOMAINS`; default the domain
    /// of `PARLEY_EMAIL_FROM`): a report is taken only from one of them, proven, about mail
    /// from one of them.
    pub domains: Vec<String>,
}

/// Where sender authentication asks DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundDns {
    /// Not checked: a `From:` address is believed as written (for an installation whose
    /// relay in front refuses mail that fails DMARC).
    Off,
    /// The resolvers of `/etc/resolv.conf`.
    System,
    /// These name servers (`ip` or `ip:port`), asked in turn.
    Servers(Vec<SocketAddr>),
}

/// Sender authentication of received mail (SPF, DKIM, DMARC, ARC).
#[derive(Debug, Clone)]
pub struct SenderAuthConfig {
    pub dns: InboundDns,
    /// The longest one mail's checks may take; what has not answered by then is `temperror`.
    pub timeout: Duration,
    /// Forwarders whose ARC seal is believed (`PARLEY_INBOUND_ARC_SEALERS`): the DMARC
    /// result they recorded when they took a mail counts (lowercase domains).
    pub arc_sealers: Vec<String>,
}

/// SpamAssassin's `spamd`, asked of each mail during DATA.
#[derive(Debug, Clone)]
pub struct SpamConfig {
    /// `host:port` of spamd.
    pub spamd: String,
    /// At or above this score the mail is refused with 550 and nothing is kept.
    pub reject_score: f64,
    /// At or above this score (and below the reject score) it is kept, marked, and held for
    /// review.
    pub mark_score: f64,
    /// The longest the filter is waited for; past it the mail is taken unchecked.
    pub timeout: Duration,
}

/// An OAuth2 access token for IMAP, read at each login: from a file that something else keeps
/// fresh (`PARLEY_IMAP_OAUTH2_TOKEN_FILE`), or printed by a command
/// (`PARLEY_IMAP_OAUTH2_TOKEN_COMMAND`, run with `/bin/sh -c`).
#[derive(Debug, Clone)]
pub enum ImapToken {
    File(PathBuf),
    Command(Secret),
}

/// The DKIM key (its PEM, read at start), selector and signing domain.
#[derive(Clone)]
pub struct DkimSettings {
    pub key_pem: Secret,
    pub selector: String,
    pub domain: String,
}

impl std::fmt::Debug for DkimSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSettings")
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// A certificate chain and its private key, read from PEM files when the configuration loads
/// (a file that is missing or does not parse stops the start). Prints its paths only.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    server: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TlsIdentity {
    /// Reads both files and checks that the key belongs to the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        Self::read(cert_path, key_path).map_err(|(_, message)| message)
    }

    /// `load`, saying which of the two keys (`inbound_tls_cert`, `inbound_tls_key`) is at fault.
    fn read(cert_path: &Path, key_path: &Path) -> Result<Self, (&'static str, String)> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                let message = format!("reading certificates from {}: {e}", cert_path.display());
                ("inbound_tls_cert", message)
            })?;
        if certs.is_empty() {
            let message = format!("no certificate in {}", cert_path.display());
            return Err(("inbound_tls_cert", message));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            let message = format!("reading a private key from {}: {e}", key_path.display());
            ("inbound_tls_key", message)
        })?;
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| {
                let message = format!(
                    "{} and {} do not make a TLS identity: {e}",
                    cert_path.display(),
                    key_path.display()
                );
                ("inbound_tls_key", message)
            })?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            server: std::sync::Arc::new(server),
        })
    }

    /// The TLS server settings offering this identity.
    pub fn server_config(&self) -> std::sync::Arc<tokio_rustls::rustls::ServerConfig> {
        self.server.clone()
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// SMS out through a Twilio-compatible API, or outbox files when `url` is unset.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub url: Option<String>,
    pub account: Option<String>,
    pub token: Option<Secret>,
    pub from: Option<String>,
    /// Messages a second per sender number.
    pub rate_per_second: f64,
    pub status_callback_url: String,
}

/// The message delivery queue.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry_schedule: Vec<Duration>,
    /// Messages attempted at once; 0 runs no delivery worker.
    pub concurrency: usize,
    /// How long a claim holds before another worker may take the job.
    pub lease: Duration,
    /// `PARLEY_CRM_CONCURRENCY`: CRM activities claimed (and sent to the CRMs in batches)
    /// at once, where the delivery worker runs; 0 runs no CRM worker in this process.
    pub crm_concurrency: usize,
}

/// The send policy's defaults.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// `PARLEY_FREQUENCY_CAP`: one creditor's messages to one debtor.
    pub frequency_cap: Option<FrequencyCap>,
    /// `PARLEY_PERSON_FREQUENCY_CAP`: every creditor's messages to one person; off by default.
    pub person_frequency_cap: Option<FrequencyCap>,
    pub default_contact_hours: Option<ContactWindow>,
    /// `PARLEY_CLOSED_DAYS`: days on which nothing goes out.
    pub closed_days: crate::domain::calendar::ClosedDays,
    /// `PARLEY_DEADLINE_WARNING`: how long before a deadline its system message comes.
    pub deadline_warning: Duration,
    /// `PARLEY_PROMISE_DEADLINES`: a reply's promise to pay by a date becomes a deadline of
    /// its case; off by default.
    pub promise_deadlines: bool,
    /// `PARLEY_RETENTION`: how long a closed case's personal data is kept before an
    /// erasure request is carried out.
    pub retention: Duration,
    /// `PARLEY_UNMATCHED_RETENTION`: how long dismissed unmatched mail is kept.
    pub unmatched_retention: Duration,
    /// `PARLEY_HISTORY_RETENTION`: on PostgreSQL, a month of the delivery history (message
    /// events, delivery attempts, the audit log) is dropped whole once it ended longer ago
    /// than this; `None` (`off`, the default) keeps it.
    pub history_retention: Option<Duration>,
}

/// Webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub retry_schedule: Vec<Duration>,
    /// Allow targets on loopback and private addresses.
    pub allow_private: bool,
    /// `PARLEY_WEBHOOK_CONCURRENCY`: deliveries attempted at once; 0 runs no webhook worker
    /// in this process (another process of the same database sends them).
    pub concurrency: usize,
    /// `PARLEY_WEBHOOK_RETENTION`: how long finished deliveries and their outbox events are
    /// kept.
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// Where spans go by OTLP/HTTP (`PARLEY_OTLP_ENDPOINT`, e.g. `http://collector:4318`);
    /// none: no export.
    pub otlp_endpoint: Option<String>,
}

/// Where a raw value came from, so an error can name it the way the operator wrote it.
#[derive(Clone)]
struct Raw {
    value: String,
    name: String,
}

impl Config {
    /// Defaults, then `parley.toml` (or the file named by `PARLEY_CONFIG`), then the process
    /// environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("PARLEY_CONFIG").ok().map(PathBuf::from);
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_sources(file.as_deref(), &env)
    }

    /// The same layering with explicit sources; used by tests and by `load`. figment merges
    /// the file under the environment; a key that is not parley's, in the file, is refused.
    pub fn from_sources(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        use figment::providers::{Format, Toml};
        let (path, required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("parley.toml"), false),
        };
        let mut figment = figment::Figment::new();
        if required || path.exists() {
            std::fs::metadata(&path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            figment = figment.merge(Toml::file_exact(&path));
        }
        let figment = figment.merge(EnvList(env));
        let settings: Settings = figment.extract().map_err(|e| from_figment(&e, &path))?;
        let values = match serde_json::to_value(&settings) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
        for (key, value) in values {
            if let serde_json::Value::String(value) = value {
                let name = match figment.find_metadata(&key) {
                    Some(m) if m.name == ENVIRONMENT => {
                        format!("PARLEY_{}", key.to_ascii_uppercase())
                    }
                    _ => format!("{}: {key}", path.display()),
                };
                raw.insert(key, Raw { value, name });
            }
        }
        Self::parse(&raw)
    }

    /// Defaults only, rooted at `data_dir`; tests build on this.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        let mut raw = BTreeMap::new();
        raw.insert(
            "data_dir".to_string(),
            Raw {
                value: data_dir.display().to_string(),
                name: "data_dir".into(),
            },
        );
        Self::parse(&raw).expect("defaults are valid")
    }

    /// Every section from the same raw values; each names a bad value's key.
    fn parse(raw: &BTreeMap<String, Raw>) -> Result<Self, ConfigError> {
        let http = http_section(raw)?;
        let sms = sms_section(raw, &http.public_url)?;
        Ok(Self {
            storage: storage_section(raw)?,
            mail: mail_section(raw)?,
            delivery: delivery_section(raw)?,
            policy: policy_section(raw)?,
            webhooks: webhook_section(raw)?,
            log: log_section(raw)?,
            http,
            sms,
        })
    }
}

/// `PARLEY_HTTP_*`, `PARLEY_PUBLIC_URL` and the request limits.
fn http_section(raw: &BTreeMap<String, Raw>) -> Result<HttpConfig, ConfigError> {
    let http_addr: SocketAddr = opt(raw, "http_addr", |v| {
        v.parse()
            .map_err(|_| format!("not a socket address: {v:?}"))
    })?
    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let http_header_timeout =
        opt(raw, "http_header_timeout", parse_interval)?.unwrap_or(Duration::from_secs(30));
    let http_request_timeout =
        opt(raw, "http_request_timeout", parse_interval)?.unwrap_or(Duration::from_secs(300));
    let http_max_connections = opt(raw, "http_max_connections", |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| format!("expected a number from 1 to 100000, got {v:?}"))
    })?
    .unwrap_or(1024);
    let public_url = opt(raw, "public_url", |v| {
        parse_http_url(v).map(|()| v.trim_end_matches('/').to_string())
    })?
    .unwrap_or_else(|| format!("http://{http_addr}"));
    let max_upload_bytes = opt(raw, "max_upload_bytes", |v| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("expected a positive number of bytes, got {v:?}"))
    })?
    .unwrap_or(52_428_800);
    let max_json_bytes = opt(raw, "max_json_bytes", |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n >= 1024)
            .ok_or_else(|| format!("expected a number of bytes of at least 1024, got {v:?}"))
    })?
    .unwrap_or(1_048_576);
    let rate_limit_per_minute = opt(raw, "rate_limit_per_minute", |v| {
        v.parse::<u32>()
            .map_err(|_| format!("expected a number of requests (0 = no limit), got {v:?}"))
    })?
    .unwrap_or(2000);
    let auth_failures_per_minute = opt(raw, "auth_failures_per_minute", |v| {
        v.parse::<u32>()
            .map_err(|_| format!("expected a number of failures (0 = no limit), got {v:?}"))
    })?
    .unwrap_or(30);
    let metrics_token = opt(raw, "metrics_token", |v| {
        if v.len() < 16 {
            Err("expected a token of at least 16 characters".to_string())
        } else {
            Ok(Secret::new(v))
        }
    })?;
    Ok(HttpConfig {
        addr: http_addr,
        header_timeout: http_header_timeout,
        request_timeout: http_request_timeout,
        max_connections: http_max_connections,
        public_url,
        max_upload_bytes,
        max_json_bytes,
        rate_limit_per_minute,
        auth_failures_per_minute,
        metrics_token,
    })
}

/// The data folder, the database, the document store and the keys.
fn storage_section(raw: &BTreeMap<String, Raw>) -> Result<StorageConfig, ConfigError> {
    let data_dir = opt(raw, "data_dir", |v| Ok(PathBuf::from(v)))?
        .unwrap_or_else(|| PathBuf::from("./parley-data"));
    let database_url = opt(raw, "database_url", |v| {
        parse_database_url(v).map(|()| v.to_string())
    })?
    .unwrap_or_else(|| format!("sqlite://{}/parley.db", data_dir.display()));
    let database_max_connections = opt(raw, "database_max_connections", |v| {
        match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(format!("expected a number from 1 to 1000, got {v:?}")),
        }
    })?
    .unwrap_or_else(default_database_connections);
    let subject_keys_url = opt(raw, "subject_keys_url", |v| {
        parse_database_url(v).map(|()| Secret::new(v))
    })?;
    let document_store = opt(raw, "document_store", |v| {
        if v.starts_with("file://") || v.starts_with("s3://") {
            Ok(v.to_string())
        } else {
            Err(format!(
                "unsupported scheme {:?}: expected file:// or s3://",
                scheme(v)
            ))
        }
    })?
    .unwrap_or_else(|| format!("file://{}/documents", data_dir.display()));
    let s3_access_key_id = opt(raw, "s3_access_key_id", |v| Ok(v.to_string()))?;
    let s3_secret_access_key = opt(raw, "s3_secret_access_key", |v| Ok(Secret::new(v)))?;
    let master_key = opt(raw, "master_key", parse_key)?;
    let old_master_keys: Vec<[u8; 32]> = opt(raw, "old_master_keys", |v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_key)
            .collect()
    })?
    .unwrap_or_default();
    Ok(StorageConfig {
        data_dir,
        database_url: Secret::new(database_url),
        database_max_connections,
        subject_keys_url,
        document_store,
        s3_access_key_id,
        s3_secret_access_key,
        master_key: master_key.map(KeyBytes),
        old_master_keys: old_master_keys.into_iter().map(KeyBytes).collect(),
    })
}

/// What outgoing mail needs: the SMTP server, the sender, its DKIM key, the attachments' bound.
struct Outgoing {
    smtp_url: Option<Secret>,
    email_from: String,
    dkim: Option<DkimSettings>,
    max_attachment_bytes: u64,
}

fn outgoing_mail(raw: &BTreeMap<String, Raw>) -> Result<Outgoing, ConfigError> {
    let smtp_url = opt(raw, "smtp_url", |v| match scheme(v) {
        "smtp" | "smtps" => Ok(Secret::new(v)),
        other => Err(format!(
            "unsupported scheme {other:?}: expected smtp:// or smtps://"
        )),
    })?;
    let email_from = opt(raw, "email_from", |v| {
        crate::domain::EmailAddress::parse(v)
            .map(|_| v.to_string())
            .map_err(|e| e.to_string())
    })?
    .unwrap_or_else(|| "noreply@localhost".into());
    let dkim_selector = opt(raw, "dkim_selector", |v| {
        let ok = !v.is_empty()
            && v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if ok {
            Ok(v.to_string())
        } else {
            Err(format!("not a DKIM selector: {v:?}"))
        }
    })?
    .unwrap_or_else(|| "parley".into());
    let dkim_domain = opt(raw, "dkim_domain", |v| {
        let ok = !v.is_empty()
            && v.len() <= 253
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if ok {
            Ok(v.to_ascii_lowercase())
        } else {
            Err(format!("not a domain: {v:?}"))
        }
    })?
    .unwrap_or_else(|| {
        email_from
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d)
            .to_ascii_lowercase()
    });
    let dkim = opt(raw, "dkim_key", |v| {
        let pem = std::fs::read_to_string(v).map_err(|e| format!("reading {v}: {e}"))?;
        if pem.contains("PRIVATE KEY-----") {
            Ok(Secret::new(pem))
        } else {
            Err(format!("{v} holds no PEM private key"))
        }
    })?
    .map(|key_pem| DkimSettings {
        key_pem,
        selector: dkim_selector,
        domain: dkim_domain,
    });
    let max_attachment_bytes = opt(raw, "max_attachment_bytes", |v| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("expected a positive number of bytes, got {v:?}"))
    })?
    .unwrap_or(10 * 1024 * 1024);
    Ok(Outgoing {
        smtp_url,
        email_from,
        dkim,
        max_attachment_bytes,
    })
}

/// Email out ([`outgoing_mail`]) and in: the SMTP server's address, size bound and
/// certificate, IMAP polling and its token.
fn mail_section(raw: &BTreeMap<String, Raw>) -> Result<MailConfig, ConfigError> {
    let Outgoing {
        smtp_url,
        email_from,
        dkim,
        max_attachment_bytes,
    } = outgoing_mail(raw)?;
    let inbound_domain = opt(raw, "inbound_domain", |v| {
        if crate::domain::recipient::is_domain(v) {
            Ok(v.to_ascii_lowercase())
        } else {
            Err(format!("not a domain name: {v:?}"))
        }
    })?
    .unwrap_or_else(|| "localhost".into());
    let inbound_smtp_addr = opt(raw, "inbound_smtp_addr", |v| {
        v.parse()
            .map_err(|_| format!("not a socket address: {v:?}"))
    })?;
    let inbound_max_bytes = opt(raw, "inbound_max_bytes", |v| {
        v.parse::<u64>()
            .ok()
            .filter(|n| (1024..=4 << 30).contains(n))
            .ok_or_else(|| format!("expected a number of bytes from 1024 to 4 GiB, got {v:?}"))
    })?
    .unwrap_or(26_214_400);
    let inbound_sessions_per_peer = opt(raw, "inbound_sessions_per_peer", |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| format!("expected a number from 1 to 256, got {v:?}"))
    })?
    .unwrap_or(50);
    let inbound_relays = opt(raw, "inbound_relays", parse_networks)?.unwrap_or_default();
    let (sender_auth, spam) = inbound_checks(raw)?;
    let journal = journal(raw, &email_from, &inbound_domain)?;
    let inbound_tls = match (
        opt(raw, "inbound_tls_cert", |v| Ok(PathBuf::from(v)))?,
        opt(raw, "inbound_tls_key", |v| Ok(PathBuf::from(v)))?,
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some(TlsIdentity::read(&cert, &key).map_err(|(key, m)| invalid(&raw[key].name, m))?)
        }
        (Some(_), None) => {
            return Err(invalid(
                &raw["inbound_tls_cert"].name,
                "STARTTLS also needs PARLEY_INBOUND_TLS_KEY",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                &raw["inbound_tls_key"].name,
                "STARTTLS also needs PARLEY_INBOUND_TLS_CERT",
            ));
        }
    };
    let imap_url = opt(raw, "imap_url", |v| match scheme(v) {
        "imap" | "imaps" => Ok(Secret::new(v)),
        other => Err(format!(
            "unsupported scheme {other:?}: expected imap:// or imaps://"
        )),
    })?;
    let imap_poll_interval =
        opt(raw, "imap_poll_interval", parse_interval)?.unwrap_or(Duration::from_secs(30));
    let imap_token_file = opt(raw, "imap_oauth2_token_file", |v| Ok(PathBuf::from(v)))?;
    let imap_token_command = opt(raw, "imap_oauth2_token_command", |v| Ok(Secret::new(v)))?;
    let imap_oauth2 = match (imap_token_file, imap_token_command) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "PARLEY_IMAP_OAUTH2_TOKEN_COMMAND",
                "set either it or PARLEY_IMAP_OAUTH2_TOKEN_FILE, not both",
            ));
        }
        (Some(file), None) => Some(ImapToken::File(file)),
        (None, Some(command)) => Some(ImapToken::Command(command)),
        (None, None) => None,
    };
    Ok(MailConfig {
        smtp_url,
        email_from,
        inbound_domain,
        inbound_smtp_addr,
        inbound_max_bytes,
        inbound_sessions_per_peer,
        inbound_relays,
        sender_auth,
        spam,
        inbound_tls,
        imap_url,
        imap_poll_interval,
        imap_oauth2,
        max_attachment_bytes,
        dkim,
        journal,
    })
}

/// Comma-separated domain names, lowercase.
fn domain_list(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            if crate::domain::recipient::is_domain(d) {
                Ok(d.to_ascii_lowercase())
            } else {
                Err(format!("not a domain name: {d:?}"))
            }
        })
        .collect()
}

/// `PARLEY_INBOUND_JOURNAL_ADDRESS` and `_DOMAINS`.
fn journal(
    raw: &BTreeMap<String, Raw>,
    email_from: &str,
    inbound_domain: &str,
) -> Result<Option<JournalConfig>, ConfigError> {
    let address = opt(raw, "inbound_journal_address", |v| {
        let v = v.trim().to_ascii_lowercase();
        match v.split_once('@') {
            Some((local, domain)) if !local.is_empty() && domain == inbound_domain => Ok(v),
            _ => Err(format!(
                "expected an address at PARLEY_INBOUND_DOMAIN ({inbound_domain}), the domain \
                 the SMTP server takes mail for; got {v:?}"
            )),
        }
    })?;
    let domains = opt(raw, "inbound_journal_domains", domain_list)?;
    let Some(address) = address else {
        return Ok(None);
    };
    let domains = match domains {
        Some(d) if !d.is_empty() => d,
        _ => crate::domain::mail::domain_of(email_from)
            .into_iter()
            .collect(),
    };
    Ok(Some(JournalConfig { address, domains }))
}

/// Sender authentication and the spam filter of received mail.
fn inbound_checks(
    raw: &BTreeMap<String, Raw>,
) -> Result<(SenderAuthConfig, Option<SpamConfig>), ConfigError> {
    let dns = opt(raw, "dns_resolver", parse_dns)?.unwrap_or(InboundDns::System);
    let bounded = |v: &str| {
        parse_duration(v).and_then(|d| {
            if (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
                Ok(d)
            } else {
                Err(format!("expected a duration from 100ms to 60s, got {v:?}"))
            }
        })
    };
    let timeout = opt(raw, "dns_timeout", bounded)?.unwrap_or(Duration::from_secs(5));
    let arc_sealers = opt(raw, "inbound_arc_sealers", domain_list)?.unwrap_or_default();
    let spamd = opt(raw, "inbound_spamd", |v| match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(v.to_string())
        }
        _ => Err(format!("expected host:port of spamd, got {v:?}")),
    })?;
    let score = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or_else(|| format!("expected a score such as 15 or 7.5, got {v:?}"))
    };
    let reject_score = opt(raw, "inbound_spam_reject", score)?.unwrap_or(15.0);
    let mark_score = opt(raw, "inbound_spam_mark", score)?.unwrap_or(5.0);
    let spam_timeout =
        opt(raw, "inbound_spam_timeout", bounded)?.unwrap_or(Duration::from_secs(10));
    Ok((
        SenderAuthConfig {
            dns,
            timeout,
            arc_sealers,
        },
        spamd.map(|spamd| SpamConfig {
            spamd,
            reject_score,
            mark_score,
            timeout: spam_timeout,
        }),
    ))
}

/// `system`, `off`, or name servers `ip` / `ip:port` / `[v6]:port`, comma-separated.
fn parse_dns(v: &str) -> Result<InboundDns, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "system" => return Ok(InboundDns::System),
        "off" => return Ok(InboundDns::Off),
        _ => {}
    }
    let servers = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| format!("expected system, off or name server addresses, got {s:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("expected system, off or name server addresses".into());
    }
    Ok(InboundDns::Servers(servers))
}

/// The SMS API; its status callbacks come to `public_url` unless named.
fn sms_section(raw: &BTreeMap<String, Raw>, public_url: &str) -> Result<SmsConfig, ConfigError> {
    let sms_url = opt(raw, "sms_url", |v| {
        parse_http_url(v).map(|()| v.trim_end_matches('/').to_string())
    })?;
    let sms_account = opt(raw, "sms_account", |v| Ok(v.to_string()))?;
    let sms_token = opt(raw, "sms_token", |v| Ok(Secret::new(v)))?;
    let sms_from = opt(raw, "sms_from", |v| {
        // An E.164 number, or an alphanumeric sender id (up to 11 characters, a letter in it).
        let alphanumeric = v.len() <= 11
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
            && v.chars().any(|c| c.is_ascii_alphabetic());
        if alphanumeric {
            return Ok(v.to_string());
        }
        crate::domain::PhoneNumber::parse(v)
            .map(|n| n.to_string())
            .map_err(|_| format!("expected an E.164 number or an alphanumeric sender id of up to 11 characters, got {v:?}"))
    })?;
    if let Some(r) = raw.get("sms_url").filter(|r| !r.value.trim().is_empty()) {
        let missing: Vec<&str> = [
            ("PARLEY_SMS_ACCOUNT", sms_account.is_none()),
            ("PARLEY_SMS_TOKEN", sms_token.is_none()),
            ("PARLEY_SMS_FROM", sms_from.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(invalid(
                &r.name,
                format!("the SMS API also needs {}", missing.join(", ")),
            ));
        }
    }
    let sms_rate_per_second = opt(raw, "sms_rate_per_second", |v| {
        v.parse::<f64>()
            .ok()
            .filter(|n| *n > 0.0 && n.is_finite())
            .ok_or_else(|| format!("expected a positive number, got {v:?}"))
    })?
    .unwrap_or(1.0);
    let sms_status_callback_url = opt(raw, "sms_status_callback_url", |v| {
        parse_http_url(v).map(|()| v.to_string())
    })?
    .unwrap_or_else(|| format!("{public_url}/api/providers/sms/status"));
    Ok(SmsConfig {
        url: sms_url,
        account: sms_account,
        token: sms_token,
        from: sms_from,
        rate_per_second: sms_rate_per_second,
        status_callback_url: sms_status_callback_url,
    })
}

fn delivery_section(raw: &BTreeMap<String, Raw>) -> Result<DeliveryConfig, ConfigError> {
    let delivery_retry_schedule = opt(raw, "delivery_retry_schedule", parse_schedule)?
        .unwrap_or_else(|| parse_schedule("30s,2m,10m,30m,2h,6h").expect("valid default"));
    let delivery_concurrency = opt(raw, "delivery_concurrency", parse_workers)?.unwrap_or(256);
    let delivery_lease =
        opt(raw, "delivery_lease", parse_interval)?.unwrap_or(Duration::from_secs(30));
    Ok(DeliveryConfig {
        retry_schedule: delivery_retry_schedule,
        concurrency: delivery_concurrency,
        lease: delivery_lease,
        crm_concurrency: opt(raw, "crm_concurrency", parse_workers)?.unwrap_or(200),
    })
}

fn webhook_section(raw: &BTreeMap<String, Raw>) -> Result<WebhookConfig, ConfigError> {
    let webhook_concurrency = opt(raw, "webhook_concurrency", parse_workers)?.unwrap_or(64);
    let webhook_retry_schedule = opt(raw, "webhook_retry_schedule", parse_schedule)?
        .unwrap_or_else(|| parse_schedule("5s,5m,30m,2h,5h,10h,10h").expect("valid default"));
    let webhook_allow_private = opt(raw, "webhook_allow_private", parse_bool)?.unwrap_or(false);
    Ok(WebhookConfig {
        retry_schedule: webhook_retry_schedule,
        allow_private: webhook_allow_private,
        concurrency: webhook_concurrency,
        retention: opt(raw, "webhook_retention", parse_duration)?
            .unwrap_or(Duration::from_secs(30 * 86_400)),
    })
}

/// The rules of contact: caps, contact hours, closed days, deadlines' warning, retention.
fn policy_section(raw: &BTreeMap<String, Raw>) -> Result<PolicyConfig, ConfigError> {
    let frequency_cap =
        opt(raw, "frequency_cap", parse_cap)?.unwrap_or_else(|| FrequencyCap::parse("3/7d").ok());
    let person_frequency_cap = opt(raw, "person_frequency_cap", parse_cap)?.flatten();
    let default_contact_hours = opt(raw, "default_contact_hours", |v| {
        if v.eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            ContactWindow::parse(v).map(Some)
        }
    })?
    .unwrap_or_else(|| ContactWindow::parse("08:00-21:00").ok());
    let closed_days = opt(
        raw,
        "closed_days",
        crate::domain::calendar::ClosedDays::parse,
    )?
    .unwrap_or_default();
    let deadline_warning =
        opt(raw, "deadline_warning", parse_duration)?.unwrap_or(Duration::from_secs(3 * 86_400));
    let promise_deadlines = opt(raw, "promise_deadlines", parse_bool)?.unwrap_or(false);
    let retention =
        opt(raw, "retention", parse_duration)?.unwrap_or(Duration::from_secs(5 * 31_557_600));
    let unmatched_retention = opt(raw, "unmatched_retention", parse_duration)?
        .unwrap_or(Duration::from_secs(30 * 86_400));
    let history_retention = opt(raw, "history_retention", |v| {
        if v.eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            parse_duration(v).map(Some)
        }
    })?
    .flatten();
    Ok(PolicyConfig {
        frequency_cap,
        person_frequency_cap,
        default_contact_hours,
        closed_days,
        deadline_warning,
        promise_deadlines,
        retention,
        unmatched_retention,
        history_retention,
    })
}

fn log_section(raw: &BTreeMap<String, Raw>) -> Result<LogConfig, ConfigError> {
    let log_format = opt(raw, "log_format", |v| {
        match v.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected \"text\" or \"json\", got {v:?}")),
        }
    })?
    .unwrap_or(LogFormat::Text);
    let log_level = opt(raw, "log_level", |v| {
        tracing_subscriber::EnvFilter::try_new(v)
            .map(|_| v.to_string())
            .map_err(|e| e.to_string())
    })?
    .unwrap_or_else(|| "info".into());
    let otlp_endpoint = opt(raw, "otlp_endpoint", |v| {
        parse_http_url(v).map(|()| v.trim_end_matches('/').to_string())
    })?;
    Ok(LogConfig {
        format: log_format,
        level: log_level,
        otlp_endpoint,
    })
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Attempts at once of a worker: 0 (none in this process) to 256.
fn parse_workers(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n <= 256)
        .ok_or_else(|| format!("expected a number from 0 to 256, got {v:?}"))
}

/// A frequency cap (`3/7d`), or `off`.
fn parse_cap(v: &str) -> Result<Option<FrequencyCap>, String> {
    if v.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        FrequencyCap::parse(v).map(Some)
    }
}

fn opt<T>(
    raw: &BTreeMap<String, Raw>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match raw.get(key) {
        Some(r) if !r.value.trim().is_empty() => parse(r.value.trim())
            .map(Some)
            .map_err(|m| invalid(&r.name, m)),
        _ => Ok(None),
    }
}

/// A figment error as parley names its errors: the variable or the file and key.
fn from_figment(e: &figment::Error, path: &Path) -> ConfigError {
    let key = e.path.last().cloned().unwrap_or_default();
    let from_env = e.metadata.as_ref().is_some_and(|m| m.name == ENVIRONMENT);
    let message = match &e.kind {
        // A file that does not parse: where, and why, without the snippet of the file the
        // parser quotes (it may hold a secret).
        figment::error::Kind::Message(m) if m.contains('\n') => {
            let mut lines = m.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or_default();
            match lines.next_back() {
                Some(last) => format!("{first}: {last}"),
                None => first.to_string(),
            }
        }
        figment::error::Kind::Message(m) => m.clone(),
        figment::error::Kind::UnknownField(k, _) => format!("unknown key {k:?}"),
        other => other.to_string(),
    };
    if from_env {
        invalid(&format!("PARLEY_{}", key.to_ascii_uppercase()), message)
    } else if key.is_empty() || matches!(e.kind, figment::error::Kind::UnknownField(..)) {
        ConfigError::File {
            path: path.display().to_string(),
            message,
        }
    } else {
        invalid(&format!("{}: {key}", path.display()), message)
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or(url)
}

fn parse_http_url(v: &str) -> Result<(), String> {
    match v.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        Some((s, _)) => Err(format!(
            "unsupported scheme {s:?}: expected http:// or https://"
        )),
        None => Err(format!("not a URL: {v:?}")),
    }
}

fn parse_database_url(v: &str) -> Result<(), String> {
    match scheme(v) {
        "sqlite" | "postgres" | "postgresql" if v.contains("://") => Ok(()),
        _ if !v.contains("://") => Err(format!(
            "not a URL: expected sqlite://PATH or postgres://..., got {v:?}"
        )),
        other => Err(format!(
            "unsupported scheme {other:?}: expected sqlite:// or postgres://"
        )),
    }
}

fn parse_key(v: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(v.trim())
        .map_err(|_| "not valid base64".to_string())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))
}

/// Networks in CIDR notation (`10.0.0.0/8`, `::1/128`), or single addresses, comma-separated.
fn parse_networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("not a network (CIDR) or address: {n:?}"))
        })
        .collect()
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {v:?}")),
    }
}

/// `30s`, `2m`, `1h`, `7d`, `250ms`.
/// A duration of at least a second.
fn parse_interval(v: &str) -> Result<Duration, String> {
    parse_duration(v).and_then(|d| {
        if d >= Duration::from_secs(1) {
            Ok(d)
        } else {
            Err("expected at least 1s".into())
        }
    })
}

fn parse_schedule(v: &str) -> Result<Vec<Duration>, String> {
    let steps: Vec<Duration> = v.split(',').map(parse_duration).collect::<Result<_, _>>()?;
    if steps.is_empty() {
        return Err("expected at least one delay".into());
    }
    Ok(steps)
}

/// The database pool's default size: twice this machine's cores, and one more. A database
/// works best with about as many busy connections as it has cores to run them; past that, on
/// a small machine, its processes mostly take turns (on 2 cores, 16 connections accepted a
/// third fewer messages a second than 5: docs/BENCHMARKS.md).
fn default_database_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    u32::try_from(2 * cores + 1)
        .unwrap_or(u32::MAX)
        .clamp(4, 64)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_sources(None, &[]).unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http.public_url, "http://127.0.0.1:8080");
        assert_eq!(
            c.storage.database_url.expose(),
            "sqlite://./parley-data/parley.db"
        );
        assert_eq!(c.http.rate_limit_per_minute, 2000);
        assert_eq!(c.delivery.retry_schedule.len(), 6);
        assert_eq!(c.webhooks.retry_schedule[1], Duration::from_secs(300));
    }

    #[test]
    fn unsupported_database_scheme_is_named() {
        let err = Config::from_sources(None, &env(&[("PARLEY_DATABASE_URL", "mysql://x/y")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PARLEY_DATABASE_URL: unsupported scheme \"mysql\": expected sqlite:// or postgres://"
        );
    }

    #[test]
    fn toml_is_overridden_by_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\nrate_limit_per_minute = 10\n",
        )
        .unwrap();
        let c = Config::from_sources(Some(&path), &env(&[("PARLEY_RATE_LIMIT_PER_MINUTE", "0")]))
            .unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:9000");
        assert_eq!(c.http.rate_limit_per_minute, 0);
    }

    #[test]
    fn bad_toml_value_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "master_key = \"c2hvcnQ=\"\n").unwrap();
        let err = Config::from_sources(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("parley.toml: master_key: expected 32 bytes, got 5"),
            "{err}"
        );
    }

    #[test]
    fn a_file_holds_only_parley_s_keys_and_scalar_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "http_adr = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::from_sources(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("parley.toml: unknown key \"http_adr\""),
            "{err}"
        );
        std::fs::write(&path, "closed_days = [\"dk\"]\n").unwrap();
        let err = Config::from_sources(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("parley.toml: closed_days: "), "{err}");
        std::fs::write(
            &path,
            "webhook_allow_private = true\nsms_rate_per_second = 2.5\n",
        )
        .unwrap();
        let c = Config::from_sources(Some(&path), &[]).unwrap();
        assert!(c.webhooks.allow_private);
        assert!((c.sms.rate_per_second - 2.5).abs() < f64::EPSILON);
        std::fs::write(&path, "master_key = \"sealed-secret\n").unwrap();
        let err = Config::from_sources(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("line 1"), "{err}");
        assert!(
            !err.contains("sealed-secret") && !err.contains('\n'),
            "{err}"
        );
        let missing = dir.path().join("missing.toml");
        assert!(Config::from_sources(Some(&missing), &[]).is_err());
    }

    #[test]
    fn variables_that_are_not_settings_are_left_alone() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("PARLEY_CONFIG", "/nowhere.toml"),
                ("PARLEY_TEST_POSTGRES_URL", "postgres://x"),
                ("PARLEY_HTTP_ADDR", "127.0.0.1:9001"),
                ("OTHER_HTTP_ADDR", "nonsense"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:9001");
        let err = Config::from_sources(None, &env(&[("PARLEY_HTTP_ADDR", "nonsense")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "PARLEY_HTTP_ADDR: not a socket address: \"nonsense\"");
    }

    #[test]
    fn an_sms_api_needs_its_credentials_and_sender() {
        let err = Config::from_sources(
            None,
            &env(&[
                ("PARLEY_SMS_URL", "https://api.example.com"),
                ("PARLEY_SMS_ACCOUNT", "AC1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "PARLEY_SMS_URL: the SMS API also needs PARLEY_SMS_TOKEN, PARLEY_SMS_FROM"
        );
        let ok = Config::from_sources(
            None,
            &env(&[
                ("PARLEY_SMS_URL", "https://api.example.com"),
                ("PARLEY_SMS_ACCOUNT", "AC1"),
                ("PARLEY_SMS_TOKEN", "t"),
                ("PARLEY_SMS_FROM", "Acme"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.sms.from.as_deref(), Some("Acme"));
        assert!(
            Config::from_sources(None, &env(&[("PARLEY_SMS_FROM", "Acme Collections Ltd")]))
                .is_err()
        );
    }

    #[test]
    fn relays_are_networks_and_sessions_per_peer_a_bound() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("PARLEY_INBOUND_RELAYS", "10.1.2.0/24, 127.0.0.1,::1/128"),
                ("PARLEY_INBOUND_SESSIONS_PER_PEER", "20"),
            ]),
        )
        .unwrap();
        let relays: Vec<String> = c
            .mail
            .inbound_relays
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(relays, ["10.1.2.0/24", "127.0.0.1/32", "::1/128"]);
        assert_eq!(c.mail.inbound_sessions_per_peer, 20);
        assert_eq!(
            Config::from_sources(None, &[])
                .unwrap()
                .mail
                .inbound_sessions_per_peer,
            50
        );
        let err = Config::from_sources(None, &env(&[("PARLEY_INBOUND_RELAYS", "10.0.0.0/33")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "PARLEY_INBOUND_RELAYS: not a network (CIDR) or address: \"10.0.0.0/33\""
        );
        assert!(
            Config::from_sources(None, &env(&[("PARLEY_INBOUND_SESSIONS_PER_PEER", "0")])).is_err()
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
    }
}
