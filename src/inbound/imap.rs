//! IMAP polling (`PARLEY_IMAP_URL`): a small IMAP4rev1 client that logs in, takes every
//! unseen message of the mailbox, stores it with `app::inbound::Inbound::receive_email`, and only then flags
//! it `\Seen \Deleted` and expunges. A crash between storing and flagging fetches the mail
//! again; its Message-ID makes the second copy a duplicate, not a second message.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::app::AppError;
use crate::app::inbound::Inbound;
use crate::store::Ingested;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The server is outside: what it sends is bounded. A line (a long `SEARCH` answer fits)…
const MAX_LINE: usize = 1 << 20;
/// …a literal (one mail)…
const MAX_LITERAL: usize = 64 << 20;
/// …and what one command may take in all, lines, literals and time.
const MAX_REPLY: usize = 128 << 20;
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// Where to poll, from `imap[s]://user:pass@host:port/MAILBOX`.
#[derive(Clone)]
pub struct ImapTarget {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub mailbox: String,
}

impl std::fmt::Debug for ImapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}:{}/{}",
            if self.tls { "imaps" } else { "imap" },
            self.host,
            self.port,
            self.mailbox
        )
    }
}

impl ImapTarget {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).context("PARLEY_IMAP_URL is not a URL")?;
        let tls = match url.scheme() {
            "imap" => false,
            "imaps" => true,
            other => bail!("PARLEY_IMAP_URL: unsupported scheme {other:?}"),
        };
        let mailbox = percent_decode(url.path().trim_start_matches('/'));
        Ok(Self {
            tls,
            host: url
                .host_str()
                .context("PARLEY_IMAP_URL names no host")?
                .to_string(),
            port: url.port().unwrap_or(if tls { 993 } else { 143 }),
            user: percent_decode(url.username()),
            password: percent_decode(url.password().unwrap_or_default()),
            mailbox: if mailbox.is_empty() {
                "INBOX".into()
            } else {
                mailbox
            },
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Session {
    io: BufReader<Box<dyn Stream>>,
    next_tag: u32,
}

/// A tagged command's untagged lines and the literals that came with them.
#[derive(Debug)]
struct Reply {
    lines: Vec<String>,
    literals: Vec<Vec<u8>>,
}

impl Session {
    async fn connect(t: &ImapTarget) -> anyhow::Result<Self> {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .context("connecting to the IMAP server timed out")?
            .context("connecting to the IMAP server")?;
        let io: Box<dyn Stream> = if t.tls {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
                .context("IMAP host name")?;
            Box::new(
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .context("TLS with the IMAP server")?,
            )
        } else {
            Box::new(tcp)
        };
        let mut s = Self {
            io: BufReader::new(io),
            next_tag: 1,
        };
        let greeting = s.line().await?;
        if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
            bail!("IMAP server refused the connection");
        }
        Ok(s)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let n = tokio::time::timeout(
            TIMEOUT,
            (&mut self.io).take(limit).read_until(b'\n', &mut buf),
        )
        .await
        .context("IMAP server idle")??;
        if n == 0 {
            bail!("IMAP server closed the connection");
        }
        if !buf.ends_with(b"\n") {
            bail!("IMAP server sent a line longer than {MAX_LINE} bytes");
        }
        Ok(String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string())
    }

    /// Sends a command and reads up to its tagged answer, which must be OK, within
    /// [`COMMAND_LIMIT`] and [`MAX_REPLY`] bytes.
    async fn command(&mut self, command: &str) -> anyhow::Result<Reply> {
        tokio::time::timeout(COMMAND_LIMIT, self.command_unbounded(command))
            .await
            .context("IMAP command took too long")?
    }

    async fn command_unbounded(&mut self, command: &str) -> anyhow::Result<Reply> {
        let tag = format!("p{}", self.next_tag);
        self.next_tag += 1;
        self.io
            .get_mut()
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut reply = Reply {
            lines: Vec::new(),
            literals: Vec::new(),
        };
        let mut taken = 0usize;
        loop {
            let line = self.line().await?;
            taken += line.len();
            if taken > MAX_REPLY {
                bail!("IMAP server sent more than {MAX_REPLY} bytes for one command");
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                if rest.starts_with("OK") {
                    return Ok(reply);
                }
                // The verb alone: the rest of a failed LOGIN line may echo nothing secret, but
                // the command itself may, so it is never logged.
                bail!(
                    "IMAP server answered {}",
                    rest.split_whitespace().next().unwrap_or("?")
                );
            }
            if let Some(size) = literal_size(&line) {
                if size > MAX_LITERAL || taken + size > MAX_REPLY {
                    bail!(
                        "IMAP server announced a literal of {size} bytes (at most {MAX_LITERAL})"
                    );
                }
                taken += size;
                let mut literal = vec![0; size];
                tokio::time::timeout(TIMEOUT, self.io.read_exact(&mut literal))
                    .await
                    .context("IMAP server idle")??;
                reply.literals.push(literal);
                // The rest of the response line after the literal (e.g. ` UID 4)`).
                let tail = self.line().await?;
                reply.lines.push(format!("{line}{tail}"));
            } else {
                reply.lines.push(line);
            }
        }
    }
}

/// `{123}` at the end of a line announces a literal of 123 bytes.
fn literal_size(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    line.strip_suffix('}')?[open + 1..]
        .trim_end_matches('+')
        .parse()
        .ok()
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub fetched: usize,
    pub stored: usize,
}

/// One round: every unseen message of the mailbox is stored and then removed from it.
pub async fn poll_once(target: &ImapTarget, inbound: &Inbound) -> anyhow::Result<PollReport> {
    let mut s = Session::connect(target).await?;
    s.command(&format!(
        "LOGIN {} {}",
        quoted(&target.user),
        quoted(&target.password)
    ))
    .await
    .context("IMAP login")?;
    s.command(&format!("SELECT {}", quoted(&target.mailbox)))
        .await
        .context("selecting the mailbox")?;
    let search = s.command("UID SEARCH UNSEEN").await?;
    let uids: Vec<u32> = search
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|rest| rest.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    let mut report = PollReport::default();
    for uid in uids {
        let fetched = s.command(&format!("UID FETCH {uid} (BODY.PEEK[])")).await?;
        let Some(raw) = fetched.literals.into_iter().next() else {
            continue;
        };
        report.fetched += 1;
        let outcome = match inbound.receive_email("imap", &raw, &[]).await {
            Ok(outcome) => outcome,
            // Not mail at all: nothing to keep, and leaving it would fetch it forever.
            Err(AppError::Refused { .. }) => Ingested::Unmatched {
                inbound_id: String::new(),
            },
            Err(e) => return Err(e.into()),
        };
        if !matches!(outcome, Ingested::Duplicate { .. }) {
            report.stored += 1;
        }
        s.command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Seen \\Deleted)"))
            .await?;
    }
    s.command("EXPUNGE").await?;
    let _ = s.command("LOGOUT").await;
    Ok(report)
}

/// Polls every `interval` until `stop` turns true.
/// Polls the mailbox every `interval` in the one process that holds the polling (`lead`);
/// the others ask every 10 s at most, so one of them takes over soon after the holder dies.
pub async fn run(
    target: ImapTarget,
    interval: Duration,
    inbound: Inbound,
    lead: crate::store::singleton::Singleton,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(mailbox = ?target, "IMAP polling started");
    loop {
        let holds = lead.held().await;
        let pause = if crate::telemetry::LEADS.record(lead.work().name(), holds) {
            match poll_once(&target, &inbound).await {
                Ok(r) if r.fetched > 0 => {
                    tracing::info!(fetched = r.fetched, stored = r.stored, "IMAP poll")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "IMAP poll failed"),
            }
            interval
        } else {
            interval.min(Duration::from_secs(10))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {},
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile IMAP server: greets, then answers the first command with `reply`.
    async fn hostile(reply: Vec<u8>) -> ImapTarget {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(b"* OK ready\r\n").await;
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&reply).await;
            // Keep the connection open as a stalling server would.
            let _ = s.read(&mut buf).await;
        });
        ImapTarget::parse(&format!("imap://u:p@127.0.0.1:{port}/INBOX")).unwrap()
    }

    #[tokio::test]
    async fn a_huge_literal_is_refused_before_it_is_allocated() {
        let target = hostile(b"* 1 FETCH (UID 1 BODY[] {99999999999}\r\n".to_vec()).await;
        let mut s = Session::connect(&target).await.unwrap();
        let err = s.command("UID FETCH 1 (BODY.PEEK[])").await.unwrap_err();
        assert!(format!("{err:#}").contains("literal"), "{err:#}");
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_at_its_bound() {
        let target = hostile(vec![b'x'; MAX_LINE + 10]).await;
        let mut s = Session::connect(&target).await.unwrap();
        let err = s.command("NOOP").await.unwrap_err();
        assert!(format!("{err:#}").contains("longer than"), "{err:#}");
    }

    #[test]
    fn urls_name_every_part() {
        let t =
            ImapTarget::parse("imap://parley%40example.com:p%3Ass@127.0.0.1:1143/Support%20Mail")
                .unwrap();
        assert_eq!(
            (
                t.user.as_str(),
                t.password.as_str(),
                t.port,
                t.mailbox.as_str()
            ),
            ("parley@example.com", "p:ss", 1143, "Support Mail")
        );
        assert!(!t.tls);
        let t = ImapTarget::parse("imaps://u:p@mail.example.com").unwrap();
        assert_eq!((t.port, t.mailbox.as_str(), t.tls), (993, "INBOX", true));
        assert_eq!(
            format!("{t:?}"),
            "imaps://mail.example.com:993/INBOX",
            "no credentials in debug output"
        );
    }

    #[test]
    fn literals_are_recognised() {
        assert_eq!(literal_size("* 1 FETCH (UID 4 BODY[] {1234}"), Some(1234));
        assert_eq!(literal_size("* 1 FETCH (FLAGS (\\Seen))"), None);
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
