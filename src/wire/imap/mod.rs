//! The IMAP client parley speaks with: where a mailbox is (`imap[s]://user:pass@host/MAILBOX`),
//! and a guarded, bounded, logged-in session ([`connect::open`]). The poller of inbound mail
//! and the mail archive both use it.

pub mod connect;
pub mod guard;

use std::path::PathBuf;

use anyhow::{Context, bail};
use sha2::Digest;

pub use connect::TokenSource;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `imaps://`: TLS from the first byte.
    Tls,
    /// `imap://`: `STARTTLS` before anything else; a server without it is refused.
    StartTls,
    /// `imap://…?tls=none`: plain text, for a server on a network you trust.
    None,
}

/// How parley logs in.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    OAuth2(TokenSource),
}

/// Where to poll, from `imap[s]://user:pass@host:port/MAILBOX[?tls=none][&ca=/path.pem]`.
#[derive(Clone)]
pub struct ImapTarget {
    pub security: Security,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    pub mailbox: String,
    /// Certificates trusted besides the public roots (a private CA).
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for ImapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}:{}/{}",
            if self.security == Security::Tls {
                "imaps"
            } else {
                "imap"
            },
            self.host,
            self.port,
            self.mailbox
        )?;
        if self.security == Security::None {
            write!(f, "?tls=none")?;
        }
        Ok(())
    }
}

impl ImapTarget {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).context("PARLEY_IMAP_URL is not a URL")?;
        let mut security = match url.scheme() {
            "imap" => Security::StartTls,
            "imaps" => Security::Tls,
            other => bail!("PARLEY_IMAP_URL: unsupported scheme {other:?}"),
        };
        let mut ca = None;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") if security == Security::StartTls => security = Security::None,
                ("tls", "starttls") if security == Security::StartTls => {}
                ("tls", other) => bail!(
                    "PARLEY_IMAP_URL: tls={other:?} (imap:// takes tls=starttls, the default, or tls=none)"
                ),
                ("ca", path) if !path.is_empty() => ca = Some(PathBuf::from(path)),
                (other, _) => bail!("PARLEY_IMAP_URL: unknown parameter {other:?}"),
            }
        }
        let mailbox = percent_decode(url.path().trim_start_matches('/'));
        let tls = security == Security::Tls;
        Ok(Self {
            security,
            host: url
                .host_str()
                .context("PARLEY_IMAP_URL names no host")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port().unwrap_or(if tls { 993 } else { 143 }),
            user: percent_decode(url.username()),
            auth: Auth::Password(percent_decode(url.password().unwrap_or_default())),
            mailbox: if mailbox.is_empty() {
                "INBOX".into()
            } else {
                mailbox
            },
            ca,
        })
    }

    /// Logs in with `AUTHENTICATE XOAUTH2` and a token from `source` instead of a password.
    pub fn with_oauth2(mut self, source: TokenSource) -> Self {
        self.auth = Auth::OAuth2(source);
        self
    }

    /// The name under which this mailbox's progress is kept: a digest of server, user and
    /// mailbox, so the database names no account.
    pub fn progress_key(&self) -> String {
        let digest = sha2::Sha256::digest(
            format!(
                "{}\n{}\n{}\n{}",
                self.host, self.port, self.user, self.mailbox
            )
            .as_bytes(),
        );
        hex::encode(&digest[..16])
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
