//! The built-in inbound SMTP server (`PARLEY_INBOUND_SMTP_ADDR`): accepts mail for the
//! inbound domain, hands each to `app::inbound::Inbound::receive_email` before answering the end of DATA, so a
//! 250 means stored. Plain SMTP (RFC 5321) without STARTTLS or AUTH: it is meant to sit behind
//! the organisation's MX, which relays the per-case domain to it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::AppError;
use crate::app::inbound::Inbound;
use crate::config::MailConfig;
use crate::domain::EmailAddress;
use crate::store::Ingested;

const MAX_LINE: usize = 4096;
const MAX_RECIPIENTS: usize = 100;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Sessions at once; more wait for a free one (each may hold a message of up to
/// `PARLEY_MAX_UPLOAD_BYTES` in memory).
const MAX_SESSIONS: usize = 32;

/// Accepts connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    inbound: Inbound,
    config: Arc<MailConfig>,
    max_size: u64,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(addr = ?listener.local_addr().ok(), "inbound SMTP server listening");
    let sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let (inbound, config) = (inbound.clone(), config.clone());
                    let Ok(permit) = sessions.clone().acquire_owned().await else { break };
                    tokio::spawn(async move {
                        if let Err(e) = session(socket, &inbound, &config, max_size).await {
                            tracing::debug!(error = %e, "inbound SMTP session ended");
                        }
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accepting an SMTP connection failed"),
            },
            _ = stop.changed() => break,
        }
    }
}

enum Line {
    Text(String),
    TooLong,
    Closed,
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        COMMAND_TIMEOUT,
        (&mut *r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "SMTP client idle"))??;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if !buf.ends_with(b"\n") {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string(),
    ))
}

/// The address inside `FROM:<...>` / `TO:<...>`.
fn path_argument(arg: &str) -> Option<&str> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].trim())
}

/// One SMTP conversation.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    inbound: &Inbound,
    config: &MailConfig,
    max_size: u64,
) -> std::io::Result<()> {
    let (read, mut write) = tokio::io::split(socket);
    let mut reader = BufReader::new(read);
    let host = &config.inbound_domain;
    write
        .write_all(format!("220 {host} parley ESMTP ready\r\n").as_bytes())
        .await?;
    let mut mail_from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    loop {
        let line = match read_line(&mut reader).await? {
            Line::Closed => return Ok(()),
            Line::TooLong => {
                write.write_all(b"500 5.5.2 line too long\r\n").await?;
                continue;
            }
            Line::Text(l) => l,
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => format!(
                "250-{host}\r\n250-SIZE {max_size}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
            ),
            "HELO" => format!("250 {host}\r\n"),
            "MAIL" => match path_argument(arg) {
                Some(from) if arg.to_ascii_uppercase().starts_with("FROM:") => {
                    mail_from = Some(from.to_string());
                    recipients.clear();
                    "250 2.1.0 OK\r\n".into()
                }
                _ => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => match (path_argument(arg), &mail_from) {
                (_, None) => "503 5.5.1 MAIL first\r\n".into(),
                (Some(to), Some(_)) if arg.to_ascii_uppercase().starts_with("TO:") => {
                    match EmailAddress::parse(to) {
                        Ok(a) if !a.domain().eq_ignore_ascii_case(host) => {
                            "550 5.7.1 relaying denied\r\n".into()
                        }
                        Ok(_) if recipients.len() >= MAX_RECIPIENTS => {
                            "452 4.5.3 too many recipients\r\n".into()
                        }
                        Ok(a) => {
                            recipients.push(a.to_string());
                            "250 2.1.5 OK\r\n".into()
                        }
                        Err(_) => "501 5.1.3 bad recipient address\r\n".into(),
                    }
                }
                _ => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" if recipients.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let reply = match read_data(&mut reader, max_size).await? {
                    None => "552 5.3.4 message too big\r\n".to_string(),
                    Some(raw) => deliver(inbound, &raw, &recipients).await,
                };
                mail_from = None;
                recipients.clear();
                reply
            }
            "RSET" => {
                mail_from = None;
                recipients.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.1 command not implemented\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Reads the message after DATA up to the lone dot, undoing dot-stuffing. `None` when it is
/// larger than `max` (the rest is read and dropped so the session can go on).
async fn read_data<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(COMMAND_TIMEOUT, r.read_until(b'\n', &mut line))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "SMTP client idle in DATA")
            })??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(if too_big { None } else { Some(data) });
        }
        let content = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if data.len() as u64 + content.len() as u64 > max {
            too_big = true;
            data.clear();
        } else if !too_big {
            data.extend_from_slice(content);
        }
    }
}

async fn deliver(inbound: &Inbound, raw: &[u8], recipients: &[String]) -> String {
    match inbound.receive_email("smtp", raw, recipients).await {
        Ok(Ingested::Matched { message_id, .. })
        | Ok(Ingested::Bounce { message_id })
        | Ok(Ingested::Duplicate { message_id }) => {
            format!("250 2.0.0 OK {message_id}\r\n")
        }
        Ok(Ingested::Unmatched { inbound_id }) => format!("250 2.0.0 OK {inbound_id}\r\n"),
        Err(AppError::Refused { .. }) => "554 5.6.0 not a mail message\r\n".into(),
        Err(e) => {
            tracing::error!(error = %e, "storing inbound mail failed");
            "451 4.3.0 temporary failure, try again later\r\n".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_argument;

    #[test]
    fn paths_are_read_from_angle_brackets() {
        assert_eq!(path_argument("FROM:<a@b.c> SIZE=10"), Some("a@b.c"));
        assert_eq!(path_argument("TO:<>"), Some(""));
        assert_eq!(path_argument("TO:a@b.c"), None);
    }
}
