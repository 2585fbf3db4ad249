//! IMAP polling (`PARLEY_IMAP_URL`) on async-imap. One connection stays open: the mailbox is
//! selected, every message with a UID above the progress kept in the database is fetched
//! (seen or not; up to 500 a round), stored with `app::inbound::Inbound::receive_email`, and
//! only then flagged `\Seen \Deleted`; the progress moves on, and those UIDs, and no others,
//! are removed with `UID EXPUNGE`. A crash in between fetches the mail again; its Message-ID
//! makes the second copy a duplicate, not a second message. A mail over 64 MiB, or one that
//! is not mail at all, stays in the mailbox marked `\Seen`, and the progress moves past it.
//! Between rounds the connection waits in `IDLE` where the server offers it, so new mail is
//! taken at once; otherwise it sleeps the poll interval. Bytes from the server are bounded by
//! [`guard`], each step by a timeout.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::wire::imap::connect::{self, ImapSession, within};
use crate::wire::imap::guard;
pub use crate::wire::imap::{Auth, ImapTarget, Security, TokenSource};

use crate::app::AppError;
use crate::app::inbound::Inbound;
use crate::store::{Ingested, MailboxProgress};

/// How long a fetch of one mail may take in all.
const FETCH_LIMIT: Duration = Duration::from_secs(600);
/// The longest wait in `IDLE` before the connection checks in (RFC 9051 asks for < 30 min).
const IDLE_MAX: Duration = Duration::from_secs(5 * 60);

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Mails fetched from the mailbox.
    pub fetched: usize,
    /// Of those, new to parley (not duplicates).
    pub stored: usize,
    /// Mails left in the mailbox, marked read: over 64 MiB, or not mail at all.
    pub left: usize,
    /// More new mail is waiting than one round takes.
    pub more: bool,
}

/// Reads a command's answers to its end, where only the outcome matters.
async fn to_the_end<T>(
    answers: impl futures_util::Stream<Item = Result<T, async_imap::error::Error>>,
) -> anyhow::Result<()> {
    within(answers.fold(Ok(()), |acc, r| async move { acc.and(r.map(|_| ())) })).await
}

/// At most this many mails a round; the next round follows at once.
const ROUND: usize = 500;

/// What became of one mail of the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    New,
    Duplicate,
    /// Left in the mailbox, marked read.
    Left,
}

/// Sorted UIDs as IMAP sets of ranges (`1:5,7,9:12`), a few hundred ranges to a command.
fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &uid in uids {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => ranges.push((uid, uid)),
        }
    }
    ranges
        .chunks(200)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}:{b}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// A logged-in session with its mailbox selected.
struct Mailbox {
    session: ImapSession,
    uid_validity: u32,
    uidplus: bool,
    idle: bool,
}

impl Mailbox {
    async fn open(target: &ImapTarget) -> anyhow::Result<Self> {
        let mut session = connect::open(target).await?;
        let capabilities = within(session.capabilities()).await?;
        let selected = within(session.select(&target.mailbox))
            .await
            .context("selecting the mailbox")?;
        Ok(Self {
            uid_validity: selected.uid_validity.unwrap_or(0),
            uidplus: capabilities.has_str("UIDPLUS"),
            idle: capabilities.has_str("IDLE"),
            session,
        })
    }

    /// Untagged answers nobody asked for wait in a channel of the client: emptied after
    /// each step, so they never hold memory.
    fn forget_unsolicited(&mut self) {
        while self.session.unsolicited_responses.try_recv().is_ok() {}
    }

    /// Takes the mail above the recorded progress, at most [`ROUND`] of it (the report says
    /// when more is waiting). `stop` ends the round between two mails.
    async fn take_new(
        &mut self,
        key: &str,
        inbound: &Inbound,
        stop: Option<&watch::Receiver<bool>>,
    ) -> anyhow::Result<PollReport> {
        let last = match inbound.mailbox_progress(key).await? {
            Some(p) if p.uid_validity == self.uid_validity => p.last_uid,
            _ => 0,
        };
        // The UIDs and sizes of what is new, a short line each (a SEARCH answer would be one
        // line for all of them). `n:*` always names the highest UID, even one below n.
        let mut found = tokio::time::timeout(FETCH_LIMIT, async {
            let mut fetches = within(
                self.session
                    .uid_fetch(format!("{}:*", last + 1), "RFC822.SIZE"),
            )
            .await?;
            let mut found = Vec::new();
            while let Some(fetch) = fetches.next().await {
                let fetch = fetch.map_err(|e| anyhow::anyhow!(connect::describe(&e)))?;
                if let Some(uid) = fetch.uid.filter(|uid| *uid > last) {
                    found.push((uid, fetch.size.unwrap_or(0)));
                }
            }
            anyhow::Ok(found)
        })
        .await
        .context("listing new mail took longer than 10 minutes")??;
        found.sort_unstable();
        self.forget_unsolicited();
        let mut report = PollReport {
            more: found.len() > ROUND,
            ..PollReport::default()
        };
        found.truncate(ROUND);
        let mut done = Vec::new();
        let mut removed = Vec::new();
        let mut failure = None;
        for (uid, size) in found {
            if stop.is_some_and(|s| *s.borrow()) {
                break;
            }
            match self.take_one(key, (uid, size), inbound).await {
                Ok(taken) => {
                    report.fetched += usize::from(taken != Taken::Left);
                    report.stored += usize::from(taken == Taken::New);
                    report.left += usize::from(taken == Taken::Left);
                    if taken != Taken::Left && self.uidplus {
                        removed.push(uid);
                    }
                    done.push(uid);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            self.forget_unsolicited();
        }
        if let Some(&highest) = done.last() {
            // What is stored is recorded first: removing it from the mailbox is tidying up.
            inbound
                .record_mailbox_progress(
                    key,
                    MailboxProgress {
                        uid_validity: self.uid_validity,
                        last_uid: highest,
                    },
                )
                .await?;
            for set in uid_sets(&removed) {
                let expunged = async {
                    let stream = within(self.session.uid_expunge(&set)).await?;
                    to_the_end(stream).await
                }
                .await;
                if let Err(e) = expunged {
                    // Flagged deleted and recorded: nothing is fetched twice for it.
                    tracing::warn!(error = format!("{e:#}"), "IMAP UID EXPUNGE failed");
                    break;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Fetches, stores and flags the mail `uid` of `size` bytes from the mailbox `key`:
    /// stored (with the progress it makes, in one transaction), or left where it is.
    async fn take_one(
        &mut self,
        key: &str,
        (uid, size): (u32, u32),
        inbound: &Inbound,
    ) -> anyhow::Result<Taken> {
        if u64::from(size) > guard::MAX_LITERAL {
            // The guard would cut the connection on it, round after round: it stays where it
            // is, marked read, for someone to look at.
            tracing::warn!(uid, size, "IMAP: a mail over 64 MiB is left in the mailbox");
            self.flag(uid, "+FLAGS.SILENT (\\Seen)").await?;
            return Ok(Taken::Left);
        }
        let raw = tokio::time::timeout(FETCH_LIMIT, async {
            let mut fetches =
                within(self.session.uid_fetch(uid.to_string(), "BODY.PEEK[]")).await?;
            let mut raw = None;
            while let Some(fetch) = fetches.next().await {
                let fetch = fetch.map_err(|e| anyhow::anyhow!(connect::describe(&e)))?;
                if fetch.uid == Some(uid) {
                    raw = fetch.body().map(<[u8]>::to_vec);
                }
            }
            anyhow::Ok(raw)
        })
        .await
        .context("fetching one mail took longer than 10 minutes")??;
        let taken = match raw {
            Some(raw) => match inbound
                .receive_email(
                    crate::domain::mail::Source::Imap,
                    &raw,
                    crate::app::inbound::Arrival {
                        progress: Some((
                            key.to_string(),
                            MailboxProgress {
                                uid_validity: self.uid_validity,
                                last_uid: uid,
                            },
                        )),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(Ingested::Duplicate { .. }) => Taken::Duplicate,
                Ok(_) => Taken::New,
                // Not mail at all: the only copy stays in the mailbox, marked read.
                Err(AppError::Refused { .. }) => Taken::Left,
                Err(e) => return Err(e.into()),
            },
            // Gone between the listing and the fetch.
            None => Taken::Left,
        };
        let flags = if taken != Taken::Left && self.uidplus {
            "+FLAGS.SILENT (\\Seen \\Deleted)"
        } else {
            // Without UID EXPUNGE, removing it would mean a bare EXPUNGE, which takes
            // whatever else is flagged deleted in a shared mailbox: it stays, marked read.
            "+FLAGS.SILENT (\\Seen)"
        };
        self.flag(uid, flags).await?;
        Ok(taken)
    }

    async fn flag(&mut self, uid: u32, flags: &str) -> anyhow::Result<()> {
        let flagged = within(self.session.uid_store(uid.to_string(), flags)).await?;
        to_the_end(flagged).await
    }

    /// Waits in `IDLE` until the server announces something, `wait` passes, or `stop`;
    /// `None` when stopped.
    async fn idle(
        self,
        wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Self>> {
        let Self {
            session,
            uid_validity,
            uidplus,
            idle,
        } = self;
        let mut handle = session.idle();
        within(handle.init()).await?;
        let stopped = {
            let (news, _interrupt) = handle.wait_with_timeout(wait);
            // A deadline of its own: the client's timeout starts again at every keepalive
            // (`* OK Still here`), so it would never pass on a server that sends them.
            tokio::select! {
                woke = tokio::time::timeout(wait, news) => {
                    if let Ok(woke) = woke {
                        woke.map_err(|e| anyhow::anyhow!(connect::describe(&e)))?;
                    }
                    false
                }
                _ = stop.changed() => true,
            }
        };
        if stopped {
            return Ok(None);
        }
        let session = within(handle.done()).await?;
        Ok(Some(Self {
            session,
            uid_validity,
            uidplus,
            idle,
        }))
    }
}

/// One round on a connection of its own: every mail above the progress is stored and
/// removed from the mailbox.
#[tracing::instrument(name = "imap.poll", skip_all)]
pub async fn poll_once(target: &ImapTarget, inbound: &Inbound) -> anyhow::Result<PollReport> {
    let mut mailbox = Mailbox::open(target).await?;
    let report = mailbox
        .take_new(&target.progress_key(), inbound, None)
        .await;
    let _ = within(mailbox.session.logout()).await;
    report
}

/// Takes new mail from the mailbox in the one process that holds the polling (`lead`), on
/// one connection that waits in `IDLE` between rounds (or sleeps `interval` where the server
/// has no `IDLE`); the other processes ask every 10 s at most, so one of them takes over soon
/// after the holder dies.
pub async fn run(
    target: ImapTarget,
    interval: Duration,
    inbound: Inbound,
    lead: crate::store::singleton::Singleton,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(mailbox = ?target, "IMAP polling started");
    let key = target.progress_key();
    let mut open: Option<Mailbox> = None;
    loop {
        let holds = lead.held().await;
        if !crate::telemetry::LEADS.record(lead.work().name(), holds) {
            open = None;
            tokio::select! {
                () = tokio::time::sleep(interval.min(Duration::from_secs(10))) => continue,
                _ = stop.changed() => break,
            }
        }
        let round = async {
            let mailbox = match &mut open {
                Some(m) => m,
                None => open.insert(Mailbox::open(&target).await?),
            };
            mailbox.take_new(&key, &inbound, Some(&stop)).await
        }
        .await;
        let mut more = false;
        match round {
            Ok(r) => {
                if r.fetched + r.left > 0 {
                    tracing::info!(
                        fetched = r.fetched,
                        stored = r.stored,
                        left = r.left,
                        "IMAP poll"
                    );
                }
                more = r.more;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "IMAP poll failed");
                open = None;
            }
        }
        if *stop.borrow() {
            break;
        }
        if more && open.is_some() {
            continue;
        }
        match open.take() {
            Some(mailbox) if mailbox.idle => {
                match mailbox.idle(interval.min(IDLE_MAX), &mut stop).await {
                    Ok(Some(mailbox)) => open = Some(mailbox),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "IMAP IDLE failed");
                        // Not straight back at a server that keeps dropping the connection.
                        tokio::select! {
                            () = tokio::time::sleep(interval.min(Duration::from_secs(10))) => {},
                            _ = stop.changed() => break,
                        }
                    }
                }
            }
            other => {
                open = other;
                tokio::select! {
                    () = tokio::time::sleep(interval) => {},
                    _ = stop.changed() => break,
                }
            }
        }
    }
    if let Some(mut mailbox) = open {
        let _ = tokio::time::timeout(Duration::from_secs(5), mailbox.session.logout()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A hostile IMAP server: sends `greeting`, then answers each command line with `reply`;
    /// hands back everything it received.
    async fn hostile(
        greeting: Vec<u8>,
        reply: &'static [u8],
    ) -> (u16, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(&greeting).await;
            let mut received = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
                let tag = received
                    .split(|b| *b == b' ')
                    .next()
                    .unwrap_or_default()
                    .to_vec();
                let _ = s.write_all(&[&tag[..], b" ", reply].concat()).await;
            }
            let _ = tx.send(received);
        });
        (port, rx)
    }

    /// A receiving service on a database of its own: never reached, since each of these
    /// servers fails the session before any mail.
    async fn inbound() -> (Inbound, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let keys = std::sync::Arc::new(crate::crypto::KeyRing::new(&[7; 32], &[]));
        let store = crate::store::Store::connect(&url, 2, keys).await.unwrap();
        (
            Inbound::new(
                &store,
                "localhost".to_string(),
                "noreply@localhost".to_string(),
                None,
                Default::default(),
            ),
            dir,
        )
    }

    #[tokio::test]
    async fn a_huge_literal_is_refused_before_it_is_allocated() {
        let (port, _) = hostile(b"* OK {99999999999}\r\n".to_vec(), b"OK\r\n").await;
        let target = ImapTarget::parse(&format!("imap://u:p@127.0.0.1:{port}/?tls=none")).unwrap();
        let err = poll_once(&target, &inbound().await.0).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("literal over 64 MiB"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_at_its_bound() {
        let (port, _) = hostile(vec![b'x'; guard::MAX_LINE + 10], b"OK\r\n").await;
        let target = ImapTarget::parse(&format!("imap://u:p@127.0.0.1:{port}/?tls=none")).unwrap();
        let err = poll_once(&target, &inbound().await.0).await.unwrap_err();
        assert!(format!("{err:#}").contains("longer than 1 MiB"), "{err:#}");
    }

    #[tokio::test]
    async fn no_password_goes_to_a_server_that_refuses_starttls() {
        let (port, received) = hostile(b"* OK ready\r\n".to_vec(), b"BAD unknown\r\n").await;
        let target =
            ImapTarget::parse(&format!("imap://u:hunter2@127.0.0.1:{port}/INBOX")).unwrap();
        let err = poll_once(&target, &inbound().await.0).await.unwrap_err();
        assert!(format!("{err:#}").contains("STARTTLS"), "{err:#}");
        let received = String::from_utf8(received.await.unwrap()).unwrap();
        assert!(received.contains("STARTTLS"), "{received}");
        assert!(
            !received.contains("hunter2") && !received.contains("LOGIN"),
            "{received}"
        );
    }

    #[test]
    fn urls_name_every_part() {
        let t =
            ImapTarget::parse("imap://parley%40example.com:p%3Ass@127.0.0.1:1143/Support%20Mail")
                .unwrap();
        let Auth::Password(password) = &t.auth else {
            panic!("a password")
        };
        assert_eq!(
            (
                t.user.as_str(),
                password.as_str(),
                t.port,
                t.mailbox.as_str(),
                t.security
            ),
            (
                "parley@example.com",
                "p:ss",
                1143,
                "Support Mail",
                Security::StartTls
            )
        );
        let t = ImapTarget::parse("imaps://u:p@mail.example.com").unwrap();
        assert_eq!(
            (t.port, t.mailbox.as_str(), t.security),
            (993, "INBOX", Security::Tls)
        );
        assert_eq!(
            format!("{t:?}"),
            "imaps://mail.example.com:993/INBOX",
            "no credentials in debug output"
        );
        let t =
            ImapTarget::parse("imap://u:p@127.0.0.1:143/INBOX?tls=none&ca=/etc/ca.pem").unwrap();
        assert_eq!(t.security, Security::None);
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(format!("{t:?}"), "imap://127.0.0.1:143/INBOX?tls=none");
        for bad in [
            "imaps://u:p@h/INBOX?tls=none",
            "imap://u:p@h/INBOX?tls=maybe",
            "imap://u:p@h/INBOX?tsl=none",
            "pop3://u:p@h/",
        ] {
            assert!(ImapTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uid_sets_are_ranges_in_pieces() {
        assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8]), ["1:3,5,7:8"]);
        assert!(uid_sets(&[]).is_empty());
        let many: Vec<u32> = (1..=1000).map(|n| n * 2).collect();
        let sets = uid_sets(&many);
        assert_eq!(sets.len(), 5);
        assert!(sets.iter().all(|s| s.split(',').count() <= 200));
        assert_eq!(
            uid_sets(&[u32::MAX - 1, u32::MAX]),
            ["4294967294:4294967295"]
        );
    }

    #[test]
    fn progress_keys_differ_by_mailbox_and_name_no_account() {
        let a = ImapTarget::parse("imap://parley:x@h/INBOX").unwrap();
        let b = ImapTarget::parse("imap://parley:y@h/Archive").unwrap();
        let c = ImapTarget::parse("imap://parley:z@h/INBOX?tls=none").unwrap();
        assert_ne!(a.progress_key(), b.progress_key());
        assert_eq!(
            a.progress_key(),
            c.progress_key(),
            "the password is not part of it"
        );
        assert!(!a.progress_key().contains("parley"));
    }
}
