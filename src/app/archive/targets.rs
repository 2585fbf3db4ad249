//! The archive's targets as the protocols speak them: an IMAP mailbox (APPEND after a
//! search for the Message-ID) and an SMTP journal address (a journal report with the
//! original attached). Each connector keeps a few connections for the jobs that follow
//! (mail servers limit a user's connections: Dovecot to 10 from one address, Gmail to 15),
//! at most [`SESSIONS`] at once, made again when its settings change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::ConnectorId;
use crate::domain::time::Micros;
use crate::store::{Connector, ToArchive};
use crate::wire::imap::ImapTarget;
use crate::wire::imap::connect::{self, ImapSession, within};
use crate::wire::smtp::SmtpClient;

/// Connections one archive connector uses at once.
pub const SESSIONS: usize = 4;
/// An IMAP session idle longer than this is logged out rather than used again.
const IDLE: Duration = Duration::from_secs(60);

/// The connections of one connector, as its settings were at `version`.
struct Target {
    version: Micros,
    permits: tokio::sync::Semaphore,
    /// Logged in, the archive mailbox selected.
    idle: Mutex<Vec<(ImapSession, Instant)>>,
    smtp: Option<SmtpClient>,
}

/// Every archive connector's connections.
#[derive(Default)]
pub struct Targets {
    by_connector: Mutex<HashMap<ConnectorId, Arc<Target>>>,
}

impl Targets {
    fn target(&self, c: &Connector) -> anyhow::Result<Arc<Target>> {
        let mut all = self.by_connector.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = all.get(&c.id)
            && t.version >= c.updated_at
        {
            return Ok(t.clone());
        }
        let url = c.settings.text("url");
        let smtp = match url.split("://").next() {
            Some("smtp" | "smtps") => Some(SmtpClient::from_url(url, SESSIONS)?),
            _ => None,
        };
        let t = Arc::new(Target {
            version: c.updated_at,
            permits: tokio::sync::Semaphore::new(SESSIONS),
            idle: Mutex::new(Vec::new()),
            smtp,
        });
        all.insert(c.id.clone(), t.clone());
        Ok(t)
    }

    /// APPENDs the message to the connector's mailbox, unless a message with its Message-ID
    /// is there already (an APPEND whose record a crash lost). The mailbox is created when
    /// missing. A kept session that fails is replaced by a new one, once.
    pub async fn append(&self, c: &Connector, m: &ToArchive, raw: &[u8]) -> anyhow::Result<()> {
        let target = self.target(c)?;
        let _permit = target.permits.acquire().await?;
        let kept = {
            let mut idle = target.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|(_, since)| since.elapsed() < IDLE);
            idle.pop()
        };
        let place = ImapTarget::parse(c.settings.text("url"))?;
        // A kept session that fails was closed by the server meanwhile, most likely: a new
        // session tries again, and its search finds the mail should the APPEND have gone
        // through.
        if let Some((mut session, _)) = kept
            && append_on(&mut session, &place, m, raw).await.is_ok()
        {
            target.keep(session);
            return Ok(());
        }
        let mut session = open(&place).await?;
        append_on(&mut session, &place, m, raw).await?;
        target.keep(session);
        Ok(())
    }

    /// Sends the journal report to the connector's journal address.
    pub async fn journal(
        &self,
        c: &Connector,
        m: &ToArchive,
        raw: &[u8],
        (from, domain): (&str, &str),
    ) -> anyhow::Result<()> {
        let target = self.target(c)?;
        let Some(smtp) = &target.smtp else {
            anyhow::bail!("settings.url is not an smtp:// or smtps:// URL");
        };
        let _permit = target.permits.acquire().await?;
        let report = journal_report(c, m, raw, (from, domain));
        let envelope = lettre::address::Envelope::new(
            Some(address(from).parse()?),
            vec![c.settings.text("journalAddress").parse()?],
        )?;
        smtp.send(&envelope, &report)
            .await
            .map_err(|e| anyhow::anyhow!("the journal's SMTP server: {e}"))
    }
}

impl Target {
    fn keep(&self, session: ImapSession) {
        // What the server told in passing (new mail, flags) is of no use here.
        while session.unsolicited_responses.try_recv().is_ok() {}
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < SESSIONS {
            idle.push((session, Instant::now()));
        }
    }
}

/// Logs in and selects the archive mailbox, made first when it is missing.
async fn open(place: &ImapTarget) -> anyhow::Result<ImapSession> {
    let mut session = connect::open(place).await?;
    if within(session.select(&place.mailbox)).await.is_err() {
        // Another client may have made it meanwhile: the SELECT after says.
        let _ = within(session.create(&place.mailbox)).await;
        within(session.select(&place.mailbox)).await?;
    }
    Ok(session)
}

async fn append_on(
    session: &mut ImapSession,
    place: &ImapTarget,
    m: &ToArchive,
    raw: &[u8],
) -> anyhow::Result<()> {
    let searchable = m.rfc_message_id.as_deref().filter(|id| {
        !id.is_empty()
            && id.len() <= 900
            && id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    });
    if let Some(id) = searchable
        && archived_before(session, id).await?
    {
        return Ok(());
    }
    let date = chrono::DateTime::from_timestamp_micros(m.at)
        .unwrap_or_default()
        .format("\"%d-%b-%Y %H:%M:%S +0000\"")
        .to_string();
    // A large mail takes its time: a minute, and a second more for every 256 KiB.
    let time = Duration::from_secs(60 + raw.len() as u64 / (256 << 10));
    let appended = tokio::time::timeout(
        time,
        session.append(&place.mailbox, Some("(\\Seen)"), Some(&date), raw),
    )
    .await;
    match appended {
        Ok(done) => done.map_err(|e| anyhow::anyhow!(connect::describe(&e)))?,
        Err(_) => anyhow::bail!("the IMAP server did not take the mail within {time:?}"),
    }
    Ok(())
}

/// Whether the mailbox holds a mail with this very Message-ID. RFC 3501's `HEADER` search is
/// a substring match (Dovecot compares Message-IDs whole; others need not), so the few it
/// finds are read back and compared.
async fn archived_before(session: &mut ImapSession, id: &str) -> anyhow::Result<bool> {
    use futures_util::StreamExt;
    let found = within(session.uid_search(format!("HEADER Message-ID \"{id}\""))).await?;
    let uids: Vec<String> = found.iter().take(5).map(u32::to_string).collect();
    if uids.is_empty() {
        return Ok(false);
    }
    let headers: Vec<Vec<u8>> = {
        let fetches = within(session.uid_fetch(uids.join(","), "RFC822.HEADER")).await?;
        let all: Vec<_> = within(async { Ok(fetches.collect::<Vec<_>>().await) }).await?;
        all.into_iter()
            .filter_map(|f| Some(f.ok()?.header()?.to_vec()))
            .collect()
    };
    Ok(headers.iter().any(|h| {
        crate::domain::mail::parse(h)
            .and_then(|m| m.message_id)
            .is_some_and(|kept| kept == id)
    }))
}

/// The address of `Name <address>`, or the text itself.
fn address(from: &str) -> &str {
    match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => &from[a + 1..b],
        _ => from.trim(),
    }
}

/// The journal report of a message for an SMTP journal address: a short text part and the
/// original, unchanged, as a `message/rfc822` part. Its Message-ID is the connector's and the
/// message's, so a report sent again is known for the same one.
fn journal_report(
    c: &Connector,
    m: &ToArchive,
    raw: &[u8],
    (from, domain): (&str, &str),
) -> Vec<u8> {
    let boundary = format!("journal-{}", uuid::Uuid::new_v4().simple());
    let eight_bit = raw.iter().any(|b| *b >= 0x80);
    let date = chrono::DateTime::from_timestamp_micros(m.at)
        .unwrap_or_default()
        .to_rfc2822();
    let original = m
        .rfc_message_id
        .as_deref()
        .filter(|id| id.bytes().all(|b| b.is_ascii_graphic()) && id.len() <= 900)
        .map(|id| format!("Original Message-ID: <{id}>\r\n"))
        .unwrap_or_default();
    let mut out = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: Journal report: {direction} message {id} (case {case})\r\n\
         Date: {now}\r\nMessage-ID: <journal.{connector}.{id}@{domain}>\r\nMIME-Version: 1.0\r\n\
         X-Parley-Message-Id: {id}\r\nX-Parley-Direction: {direction}\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Journal report\r\nMessage: {id}\r\nDirection: {direction}\r\nCase: {case}\r\nDate: {date}\r\n{original}\r\n\
         --{boundary}\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\
         Content-Disposition: attachment; filename=\"{id}.eml\"\r\n\r\n",
        from = address(from),
        to = c.settings.text("journalAddress"),
        direction = m.direction,
        id = m.id,
        case = m
            .case_number
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect::<String>(),
        now = chrono::Utc::now().to_rfc2822(),
        connector = c.id,
        cte = if eight_bit { "8bit" } else { "7bit" },
    )
    .into_bytes();
    // Line ends as SMTP has them: a bare CR or LF (hostile mail's trick to end DATA early
    // at a lenient server, and refused by strict ones) becomes CRLF.
    out.extend_from_slice(&crlf(raw));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Every line end as CRLF.
fn crlf(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = raw.iter().enumerate().any(|(i, b)| {
        (*b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
            || (*b == b'\r' && raw.get(i + 1) != Some(&b'\n'))
    });
    if !bare {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50);
    for (i, b) in raw.iter().enumerate() {
        match b {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => out.push(b'\r'),
            b'\r' => out.extend_from_slice(b"\r\n"),
            b'\n' if i > 0 && raw[i - 1] == b'\r' => out.push(b'\n'),
            b'\n' => out.extend_from_slice(b"\r\n"),
            other => out.push(*other),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(super::crlf(b"a\r\nb").as_ref(), b"a\r\nb");
        assert_eq!(super::crlf(b"a\n.\nb\rc").as_ref(), b"a\r\n.\r\nb\r\nc");
    }
}
