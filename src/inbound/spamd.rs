//! SpamAssassin's `spamd` (`PARLEY_INBOUND_SPAMD`), asked of each mail the SMTP server takes,
//! before it answers the end of DATA: `CHECK` in the SPAMC/1.5 protocol, over one TCP
//! connection per mail, bounded in time (`PARLEY_INBOUND_SPAM_TIMEOUT`) and in what is read
//! back (one reply head of at most 4 KiB). A filter that does not answer in time, answers
//! something else or cannot be reached leaves the mail unchecked (`checked: false`); so does
//! a mail above 1 MiB, which `spamc` would not send either.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::SpamConfig;
use crate::domain::authentication::SpamCheck;

/// Larger mail is taken unchecked (spamc's own default limit is 500 KB).
pub const MAX_CHECKED: usize = 1 << 20;
/// The most of spamd's reply that is read.
const MAX_REPLY: usize = 4096;

/// What the filter says of `raw`.
pub async fn check(config: &SpamConfig, raw: &[u8]) -> SpamCheck {
    let unchecked = SpamCheck {
        score: None,
        marked: false,
        checked: false,
    };
    if raw.len() > MAX_CHECKED {
        return unchecked;
    }
    match tokio::time::timeout(config.timeout, ask(&config.spamd, raw)).await {
        Ok(Ok(score)) => SpamCheck {
            score: Some(score),
            marked: score >= config.mark_score,
            checked: true,
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the spam filter did not answer; the mail is taken unchecked");
            unchecked
        }
        Err(_) => {
            tracing::warn!("the spam filter answered too late; the mail is taken unchecked");
            unchecked
        }
    }
}

/// One `CHECK`: the score.
async fn ask(addr: &str, raw: &[u8]) -> std::io::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let head = format!("CHECK SPAMC/1.5\r\nContent-length: {}\r\n\r\n", raw.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(raw).await?;
    stream.shutdown().await?;
    let mut reply = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while reply.len() < MAX_REPLY {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n.min(MAX_REPLY - reply.len())]);
        if reply.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    parse_reply(&reply).ok_or_else(|| std::io::Error::other("not a SPAMD/1.x CHECK reply"))
}

/// `SPAMD/1.1 0 EX_OK` and `Spam: True ; 15.3 / 5.0`: the score (what spamd itself
/// thinks of it, `True`, and its threshold are not used: parley's own thresholds decide).
fn parse_reply(reply: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?;
    let mut words = status.split_whitespace();
    if !words.next()?.starts_with("SPAMD/1.") || words.next()? != "0" {
        return None;
    }
    let value = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("spam").then_some(value)
    })?;
    let (_, scores) = value.split_once(';')?;
    let score: f64 = scores.split('/').next()?.trim().parse().ok()?;
    score.is_finite().then_some(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamd_replies_are_read_and_anything_else_is_not() {
        assert_eq!(
            parse_reply(
                b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: True ; 1004.2 / 5.0\r\n\r\n"
            ),
            Some(1004.2)
        );
        assert_eq!(
            parse_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.1 / 5.0\r\n\r\n"),
            Some(-0.1)
        );
        assert_eq!(parse_reply(b"SPAMD/1.0 76 Bad header line\r\n\r\n"), None);
        assert_eq!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(
            parse_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5\r\n\r\n"),
            None
        );
        assert_eq!(parse_reply(b"SPAMD/1.1 0 EX_OK\r\n\r\n"), None);
    }
}
