//! The SMTP client of outbound mail: lettre's protocol implementation on connections this
//! module opens and keeps.
//!
//! Two things lettre's own transport does not do are needed here. Its connections keep
//! Nagle's algorithm on, and it writes a message's body and the closing `CRLF.CRLF` as two
//! writes: the second waits for the server's delayed acknowledgement of the first (40 ms on
//! Linux), which caps one connection at some 25 messages a second. Connections opened here
//! set `TCP_NODELAY`. And its timeout covers the connect only; here each send as a whole is
//! bounded (RFC 5321 §4.5.3.2: up to 10 minutes for the reply to the end of DATA alone).
//!
//! Connections are kept for reuse, at most `keep` of them, and never more than `keep` are open
//! at once (a transaction waits for one). A connection idle for
//! a while is checked with NOOP before it is used again; one used a moment ago is not.
//!
//! Where the server offers PIPELINING (RFC 2920; lettre does not read the keyword, so the
//! EHLO reply is asked again once a connection is open, before AUTH; a server that refuses
//! a second EHLO is simply not pipelined to), MAIL, every RCPT and DATA go in
//! one write and their replies are read after it, and the dot-stuffed message with its
//! closing `CRLF.CRLF` in a second: two round trips a message instead of four or more.
//! Any refusal in the group ends the connection (the server never gets the message's end,
//! so it takes nothing); the send fails as it would have without pipelining.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one message may take, all commands together: the reply to the end of DATA
/// alone may take 10 minutes (RFC 5321 §4.5.3.2), MAIL and RCPT 5 each.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// A connection idle longer than this is checked with NOOP before it is used again.
const CHECK_AFTER: Duration = Duration::from_secs(5);
/// Idle connections are dropped after this (servers close theirs after about 5 minutes).
const IDLE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// STARTTLS when the server offers it (`smtp://`, the default).
    Opportunistic,
    /// STARTTLS or nothing (`smtp://…?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`).
    Wrapper,
}

/// Why a send failed: a reply of the server (permanent for 5xx), or anything else.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("connection: {0}")]
    Network(#[from] std::io::Error),
    #[error("the SMTP server does not offer STARTTLS (tls=required)")]
    NoStartTls,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The spool broke while its content was being sent: the server may hold a cut copy, so
    /// the message is not sent again.
    #[error(
        "reading the spooled message failed after DATA began ({0}); the server may have a truncated copy"
    )]
    SpoolUnreadable(std::io::Error),
}

impl SmtpError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Smtp(e) if e.is_permanent())
            || matches!(self, Self::SpoolUnreadable(_))
    }
}

/// A ready connection, and whether its server takes commands pipelined.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

pub struct SmtpClient {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<Idle>>,
    keep: usize,
    /// One permit a transaction: never more connections open at once than are kept.
    sessions: tokio::sync::Semaphore,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl SmtpClient {
    /// From `smtp://[user:pass@]host[:port][/helo-name][?tls=opportunistic|required]` or
    /// `smtps://…`; port 587 by default (465 for `smtps`). Keeps up to `keep` connections.
    pub fn from_url(url: &str, keep: usize) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("PARLEY_SMTP_URL: {e}"))?;
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None | Some("opportunistic")) => Security::Opportunistic,
            ("smtp", Some("required")) => Security::Required,
            ("smtps", _) => Security::Wrapper,
            (scheme, tls) => anyhow::bail!(
                "PARLEY_SMTP_URL: unsupported scheme {scheme:?} with tls={tls:?} (expected smtp:// with tls=opportunistic or required, or smtps://)"
            ),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("PARLEY_SMTP_URL: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(match security {
            Security::Wrapper => 465,
            _ => 587,
        });
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|e| anyhow::anyhow!("PARLEY_SMTP_URL: {e}"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        let name = parsed.path().trim_matches('/');
        let hello = if name.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(name.to_string())
        };
        Ok(Self {
            host,
            port,
            security,
            credentials,
            hello,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            sessions: tokio::sync::Semaphore::new(keep.max(1)),
        })
    }

    /// Sends one message; the connection goes back for reuse unless the send broke it.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SmtpError> {
        // The wait for a connection of our own is not the server's time.
        let _session = self.sessions.acquire().await;
        let attempt = async {
            let mut connection = self.take().await?;
            let sent = if connection.pipelining {
                pipelined(&mut connection.smtp, envelope, message).await
            } else {
                connection
                    .smtp
                    .send(envelope, message)
                    .await
                    .map(|_| ())
                    .map_err(SmtpError::from)
            };
            if sent.is_ok() && !connection.smtp.has_broken() {
                self.put_back(connection);
            } else {
                connection.smtp.abort().await;
            }
            sent
        };
        tokio::time::timeout(SEND_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(SmtpError::Timeout(SEND_TIMEOUT)))
    }

    /// Sends the message spooled in `path` (one with attachments), read in pieces of 64 KiB:
    /// never whole in memory. The spool is ASCII (lettre encodes the text parts; the
    /// attachments are base64), so no 8BITMIME is asked for.
    pub async fn send_file(
        &self,
        envelope: &Envelope,
        prefix: &[u8],
        path: &Path,
    ) -> Result<(), SmtpError> {
        let file = std::fs::File::open(path)?;
        let _session = self.sessions.acquire().await;
        let attempt = async {
            let mut connection = self.take().await?;
            let sent = transaction(&mut connection, envelope, prefix, file).await;
            if sent.is_ok() && !connection.smtp.has_broken() {
                self.put_back(connection);
            } else {
                connection.smtp.abort().await;
            }
            sent
        };
        tokio::time::timeout(SEND_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(SmtpError::Timeout(SEND_TIMEOUT)))
    }

    fn put_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
        // Else dropped: the server sees the connection close.
    }

    /// A connection ready for a transaction: the most recently used idle one, else a new one.
    async fn take(&self) -> Result<Connection, SmtpError> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.retain(|i| i.since.elapsed() < IDLE_LIMIT);
                idle.pop()
            };
            let Some(Idle {
                mut connection,
                since,
            }) = idle
            else {
                return self.connect().await;
            };
            if since.elapsed() < CHECK_AFTER || connection.smtp.test_connected().await {
                return Ok(connection);
            }
            connection.smtp.abort().await;
        }
    }

    async fn connect(&self) -> Result<Connection, SmtpError> {
        let connecting = async {
            let tls = || TlsParameters::new(self.host.clone());
            let mut connection = match self.security {
                Security::Wrapper => {
                    AsyncSmtpConnection::connect_tokio1(
                        (self.host.as_str(), self.port),
                        Some(CONNECT_TIMEOUT),
                        &self.hello,
                        Some(tls()?),
                        None,
                    )
                    .await?
                }
                Security::Opportunistic | Security::Required => {
                    let stream = tcp(&self.host, self.port).await?;
                    let mut connection =
                        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                            .await?;
                    if connection.can_starttls() {
                        connection.starttls(tls()?, &self.hello).await?;
                    } else if self.security == Security::Required {
                        connection.abort().await;
                        return Err(SmtpError::NoStartTls);
                    }
                    connection
                }
            };
            let pipelining = offers_pipelining(&mut connection, &self.hello).await?;
            if let Some(credentials) = &self.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await?;
            }
            Ok(Connection {
                smtp: connection,
                pipelining,
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or(Err(SmtpError::Timeout(CONNECT_TIMEOUT)))
    }
}

/// MAIL, RCPT and DATA, then the file's content. The pieces are read from a local file
/// that was just written and synced (page cache). lettre ends DATA however the pieces end,
/// so a read error there cannot stop the server from taking what came before it: it is
/// reported as [`SmtpError::SpoolUnreadable`], a permanent failure, never retried into a
/// second copy.
async fn transaction(
    connection: &mut Connection,
    envelope: &Envelope,
    prefix: &[u8],
    file: std::fs::File,
) -> Result<(), SmtpError> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    if connection.pipelining {
        envelope_group(&mut connection.smtp, envelope, Vec::new()).await?;
    } else {
        let smtp = &mut connection.smtp;
        smtp.command(Mail::new(envelope.from().cloned(), Vec::new()))
            .await?;
        for to in envelope.to() {
            smtp.command(Rcpt::new(to.clone(), Vec::new())).await?;
        }
        smtp.command(Data).await?;
    }
    let connection = &mut connection.smtp;
    let failed = Mutex::new(None);
    let pieces = FilePieces {
        file,
        failed: &failed,
    };
    let first = (!prefix.is_empty()).then(|| prefix.to_vec());
    connection
        .message_iter(first.into_iter().chain(pieces))
        .await?;
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(SmtpError::SpoolUnreadable(e)),
        None => Ok(()),
    }
}

/// Whether the server offers PIPELINING: its EHLO reply asked again (lettre keeps only the
/// keywords it knows). A server that refuses a second EHLO (OpenSMTPD: `503 Already
/// identified`) answered in step: it is not pipelined to, and the connection serves as it
/// is. Only a broken connection is an error.
async fn offers_pipelining(
    smtp: &mut AsyncSmtpConnection,
    hello: &ClientId,
) -> Result<bool, SmtpError> {
    match smtp
        .command(lettre::transport::smtp::commands::Ehlo::new(hello.clone()))
        .await
    {
        Ok(reply) => Ok(reply.message().any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
        })),
        Err(e) if e.is_permanent() || e.is_transient() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// MAIL, every RCPT and DATA in one write; their replies read in turn. The first refusal
/// is the error (the caller ends the connection, unread replies and all).
async fn envelope_group(
    smtp: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    options: Vec<lettre::transport::smtp::extension::MailParameter>,
) -> Result<(), SmtpError> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    let mut group = Mail::new(envelope.from().cloned(), options).to_string();
    for to in envelope.to() {
        group.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    group.push_str(&Data.to_string());
    smtp.command(group).await?;
    for _ in envelope.to() {
        smtp.read_response().await?;
    }
    smtp.read_response().await?;
    Ok(())
}

/// One message over a pipelining server: the envelope group, then the message dot-stuffed
/// with its end in one write. The options are lettre's own: SMTPUTF8 for a non-ASCII
/// address, 8BITMIME for a non-ASCII message; where the server lacks one, lettre's own
/// send answers as it always has (it refuses before writing anything).
async fn pipelined(
    smtp: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), SmtpError> {
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
    let mut options = Vec::new();
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let ascii_addresses = envelope.from().is_none_or(ascii) && envelope.to().iter().all(ascii);
    let offers = |e| smtp.server_info().supports_feature(e);
    if !ascii_addresses && !offers(Extension::SmtpUtfEight)
        || !message.is_ascii() && !offers(Extension::EightBitMime)
    {
        smtp.send(envelope, message).await?;
        return Ok(());
    }
    if !ascii_addresses {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    envelope_group(smtp, envelope, options).await?;
    match String::from_utf8(dot_stuffed(message)) {
        Ok(data) => smtp.command(data).await?,
        // Not UTF-8 (never built here, but possible): lettre writes it, in two writes.
        Err(_) => smtp.message(message).await?,
    };
    Ok(())
}

/// The message as DATA carries it: a `.` that begins a line doubled (RFC 5321 §4.5.2), and
/// the closing `CRLF.CRLF` (after the message's own last line, as lettre ends it).
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut line_start = true;
    let mut after_cr = false;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = after_cr && b == b'\n';
        after_cr = b == b'\r';
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

struct FilePieces<'a> {
    file: std::fs::File,
    failed: &'a Mutex<Option<std::io::Error>>,
}

impl Iterator for FilePieces<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut buf = vec![0; 64 * 1024];
        match self.file.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                None
            }
        }
    }
}

/// A TCP connection with Nagle's algorithm off, to the first address of `host` that answers.
async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, SmtpError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last = None;
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(SmtpError::Network(last.unwrap_or_else(|| {
        std::io::Error::other(format!("{host} resolves to no address"))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_that_begin_a_line_are_doubled() {
        assert_eq!(
            dot_stuffed(b".a\r\n.b\r\nc.d\r\n..e"),
            b"..a\r\n..b\r\nc.d\r\n...e\r\n.\r\n"
        );
        assert_eq!(dot_stuffed(b"a\n.b\r.c"), b"a\n.b\r.c\r\n.\r\n");
        assert_eq!(dot_stuffed(b""), b"\r\n.\r\n");
    }

    #[test]
    fn urls_name_server_security_and_credentials() {
        let c = SmtpClient::from_url("smtp://user%40x:p%3Ass@mail.example.com/helo.example", 4)
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("mail.example.com", 587));
        assert_eq!(c.security, Security::Opportunistic);
        assert!(c.credentials.is_some());
        assert_eq!(c.hello, ClientId::Domain("helo.example".into()));
        let c = SmtpClient::from_url("smtp://127.0.0.1:2525?tls=required", 4).unwrap();
        assert_eq!((c.port, c.security), (2525, Security::Required));
        assert!(c.credentials.is_none());
        let c = SmtpClient::from_url("smtps://[::1]", 4).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.security),
            ("::1", 465, Security::Wrapper)
        );
        assert!(SmtpClient::from_url("smtp://h?tls=sometimes", 4).is_err());
        assert!(SmtpClient::from_url("http://h", 4).is_err());
    }
}
