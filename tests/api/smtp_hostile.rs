//! The built-in SMTP server against hostile clients: smuggling with bare line feeds, lines and
//! mail too long, too many sessions, idle and endless sessions, and STARTTLS. The clients
//! speak raw SMTP over TCP (or TLS) so that they can send what a real client never would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::binary::{Installation, free_port, resident};
use crate::helpers::{TestApp, spawn_app_with};
use crate::peers::eventually;
use parley::domain::PartyKind;

/// How long a test waits for any one reply before it fails.
const REPLY_DEADLINE: Duration = Duration::from_secs(20);

/// A raw SMTP client.
struct Smtp<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .get_mut()
            .write_all(bytes.as_ref())
            .await
            .expect("writing to the SMTP server");
        self.stream.get_mut().flush().await.unwrap();
    }

    /// The next reply, all its lines: `(code, text)`; `(0, "")` when the server closed the
    /// connection instead.
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_DEADLINE, self.stream.read_line(&mut line))
                .await
                .expect("a reply in time")
                .unwrap_or(0);
            if n == 0 {
                assert!(text.is_empty(), "closed inside a reply: {text:?}");
                return (0, String::new());
            }
            assert!(line.ends_with("\r\n"), "replies end with CRLF: {line:?}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("a reply code");
                return (code, text);
            }
        }
    }

    /// Sends one command and returns the reply.
    async fn command(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Asserts that the server closes the connection (after any replies still on the way),
    /// returning the codes of those replies.
    async fn closed(&mut self) -> Vec<u16> {
        let mut codes = Vec::new();
        loop {
            match self.reply().await {
                (0, _) => return codes,
                (code, _) => codes.push(code),
            }
        }
    }

    /// EHLO, MAIL, RCPT and DATA, each answered as expected; returns the EHLO reply.
    async fn start_mail(&mut self, rcpt: &str) -> String {
        let (code, ehlo) = self.command("EHLO client.example.com").await;
        assert_eq!(code, 250, "{ehlo}");
        assert_eq!(self.command("MAIL FROM:<debtor@example.com>").await.0, 250);
        assert_eq!(self.command(&format!("RCPT TO:<{rcpt}>")).await.0, 250);
        assert_eq!(self.command("DATA").await.0, 354);
        ehlo
    }

    fn into_inner(self) -> S {
        assert!(self.stream.buffer().is_empty(), "nothing unread");
        self.stream.into_inner()
    }
}

/// A connection to the server on `port` that has been greeted with 220 (retried while the
/// server is still starting).
async fn connect(port: u16) -> Smtp<TcpStream> {
    let stream = eventually(10, "the SMTP server to accept", || async move {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    let mut smtp = Smtp::new(stream);
    let (code, text) = smtp.reply().await;
    assert_eq!(code, 220, "{text}");
    smtp
}

/// An app with the SMTP server on a port of its own.
async fn smtp_app(adjust: impl FnOnce(&mut parley::config::Config)) -> (TestApp, u16) {
    let port = free_port();
    let app = spawn_app_with(move |c| {
        c.mail.inbound_smtp_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        adjust(c);
    })
    .await;
    (app, port)
}

/// Subjects of the mail kept unmatched, sorted.
async fn unmatched(app: &TestApp) -> Vec<String> {
    let list: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    list["messages"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn smuggled_mail_behind_a_bare_newline_is_never_stored() {
    let (app, port) = smtp_app(|_| {}).await;
    // The CVE-2023-51764 payload and its relatives: every end of DATA that is not
    // <CRLF>.<CRLF>, with a second transaction behind it, all sent at once.
    for end in [
        "\n.\n",
        "\n.\r\n",
        "\r\n.\n",
        "\r.\r\n",
        "\r\n.\r",
        "\r\n\n.\r\n",
    ] {
        let mut smtp = connect(port).await;
        smtp.send(format!(
            "EHLO client.example.com\r\nMAIL FROM:<debtor@example.com>\r\n\
             RCPT TO:<info@localhost>\r\nDATA\r\nSubject: first\r\n\r\nbody{end}\
             MAIL FROM:<evil@spoof.com>\r\nRCPT TO:<info@localhost>\r\nDATA\r\n\
             Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n"
        ))
        .await;
        for expected in [250, 250, 250, 354] {
            assert_eq!(smtp.reply().await.0, expected, "{end:?}");
        }
        let (code, text) = smtp.reply().await;
        assert_eq!(code, 550, "{end:?}: {text}");
        assert!(text.contains("bare"), "{text}");
        assert_eq!(
            smtp.closed().await,
            Vec::<u16>::new(),
            "{end:?}: the session ends"
        );
    }
    assert_eq!(unmatched(&app).await, Vec::<String>::new());

    // A bare LF or CR in a command ends the session as well.
    for command in ["NOOP\n", "NOOP\rX\r\n", "EHLO a\n\r\n"] {
        let mut smtp = connect(port).await;
        smtp.send(command).await;
        assert_eq!(smtp.reply().await.0, 550, "{command:?}");
        assert_eq!(smtp.closed().await, Vec::<u16>::new());
    }

    // The same mail with CRLF throughout is stored, once.
    let mut smtp = connect(port).await;
    smtp.start_mail("info@localhost").await;
    smtp.send("Subject: first\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(smtp.reply().await.0, 250);
    assert_eq!(smtp.command("QUIT").await.0, 221);
    assert_eq!(unmatched(&app).await, ["first"]);
}

#[tokio::test]
async fn lines_longer_than_998_octets_are_refused() {
    let (app, port) = smtp_app(|_| {}).await;
    let mut smtp = connect(port).await;
    let (_, ehlo) = smtp.command("EHLO client.example.com").await;
    assert!(
        ehlo.contains("250-SIZE 26214400\r\n"),
        "the default: {ehlo}"
    );
    // 998 octets before the CRLF is the limit, and fine.
    let longest = format!("NOOP {}", "x".repeat(993));
    assert_eq!(smtp.command(&longest).await.0, 250);
    assert_eq!(smtp.command(&format!("{longest}x")).await.0, 500);
    // A command line of 10 MiB is read and dropped; the session goes on.
    smtp.send("NOOP ").await;
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..10 {
        smtp.send(&chunk).await;
    }
    assert_eq!(smtp.command("").await.0, 500);
    assert_eq!(smtp.command("NOOP").await.0, 250);

    // In DATA: refused after the final dot, nothing stored, and the session goes on.
    smtp.start_mail("info@localhost").await;
    smtp.send(format!(
        "Subject: long\r\n\r\n{}\r\nshort line\r\n.\r\n",
        "z".repeat(999)
    ))
    .await;
    let (code, text) = smtp.reply().await;
    assert_eq!(code, 500, "{text}");
    smtp.command("RSET").await;
    smtp.start_mail("info@localhost").await;
    smtp.send(format!("Subject: fits\r\n\r\n{}\r\n.\r\n", "z".repeat(998)))
        .await;
    assert_eq!(smtp.reply().await.0, 250);
    assert_eq!(unmatched(&app).await, ["fits"]);
}

#[tokio::test]
async fn fifty_mib_without_a_line_break_on_four_sessions_is_refused_and_not_stored() {
    let (app, port) = smtp_app(|_| {}).await;
    let sessions = (0..4).map(|_| {
        tokio::spawn(async move {
            let mut smtp = connect(port).await;
            smtp.start_mail("info@localhost").await;
            smtp.send("Subject: flood\r\n\r\n").await;
            let chunk = vec![b'a'; 1 << 20];
            for _ in 0..50 {
                smtp.send(&chunk).await;
            }
            smtp.send("\r\n.\r\n").await;
            smtp.reply().await
        })
    });
    for session in sessions.collect::<Vec<_>>() {
        let (code, text) = session.await.unwrap();
        assert!((500..600).contains(&code), "{code} {text}");
    }
    assert_eq!(unmatched(&app).await, Vec::<String>::new());
}

#[tokio::test]
async fn mail_over_the_advertised_size_is_refused() {
    let (app, port) = smtp_app(|c| c.mail.inbound_max_bytes = 64 * 1024).await;
    let mut smtp = connect(port).await;
    let (_, ehlo) = smtp.command("EHLO client.example.com").await;
    assert!(ehlo.contains("250-SIZE 65536\r\n"), "{ehlo}");
    let (code, text) = smtp
        .command("MAIL FROM:<debtor@example.com> SIZE=65537")
        .await;
    assert_eq!(code, 552, "{text}");
    assert_eq!(
        smtp.command("MAIL FROM:<debtor@example.com> SIZE=1000")
            .await
            .0,
        250
    );
    assert_eq!(smtp.command("RSET").await.0, 250);

    // Mail that says nothing of its size but is larger: 552 after the dot, nothing kept.
    smtp.start_mail("info@localhost").await;
    smtp.send("Subject: big\r\n\r\n").await;
    let line = format!("{}\r\n", "b".repeat(78));
    smtp.send(line.repeat(2000)).await;
    smtp.send(".\r\n").await;
    let (code, text) = smtp.reply().await;
    assert_eq!(code, 552, "{text}");
    smtp.start_mail("info@localhost").await;
    smtp.send(format!("Subject: small\r\n\r\n{}.\r\n", line.repeat(100)))
        .await;
    assert_eq!(smtp.reply().await.0, 250);
    assert_eq!(unmatched(&app).await, ["small"]);
}

#[tokio::test]
async fn one_address_gets_its_bound_of_sessions_and_a_closed_one_is_given_back_at_once() {
    let (_app, port) = smtp_app(|c| c.mail.inbound_sessions_per_peer = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(connect(port).await);
    }
    let mut fifth = Smtp::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let (code, text) = fifth.reply().await;
    assert_eq!(code, 421, "{text}");
    assert_eq!(fifth.closed().await, Vec::<u16>::new());

    // When one leaves, another may come at once: the place is given back when the session
    // ends, not after its connection lingers (the leaving client keeps it open here, so a
    // place held while it lingers would stay taken for seconds).
    let mut leaving = open.pop().unwrap();
    assert_eq!(leaving.command("QUIT").await.0, 221);
    eventually(
        1,
        "a free session while the last one lingers",
        || async move {
            let mut smtp = Smtp::new(TcpStream::connect(("127.0.0.1", port)).await.ok()?);
            (smtp.reply().await.0 == 220).then_some(())
        },
    )
    .await;
    drop(leaving);
    // The four still open were not disturbed.
    for smtp in &mut open {
        assert_eq!(smtp.command("NOOP").await.0, 250);
    }
}

#[tokio::test]
async fn a_trusted_relay_is_bounded_only_by_the_server_and_large_mail_is_spooled_intact() {
    let (app, port) = smtp_app(|c| {
        c.mail.inbound_sessions_per_peer = 2;
        c.mail.inbound_relays = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // Twenty sessions at once from one address of the relay network.
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(connect(port).await);
    }
    // A mail of 3 MiB, far past what a session keeps in memory, arrives whole.
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let line = format!("{}\r\n", "x".repeat(76));
    let body = format!("{}the end\r\n", line.repeat(3 * 1024 * 1024 / line.len()));
    let smtp = &mut open[7];
    smtp.start_mail(&format!("case-{case_id}@localhost")).await;
    smtp.send(format!("Subject: large\r\n\r\n{body}.\r\n"))
        .await;
    let (code, text) = smtp.reply().await;
    assert_eq!(code, 250, "{text}");
    let id = text.split_whitespace().last().unwrap().to_string();
    let message: Value = app
        .get(&app.admin.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let stored = message["body"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(stored.trim_end(), body.replace("\r\n", "\n").trim_end());
    // Nothing is left in the spool.
    let spool = app.config.storage.data_dir.join("spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("inbound-")),
        "{left:?}"
    );
    for smtp in &mut open {
        assert_eq!(smtp.command("QUIT").await.0, 221);
    }
}

/// The server alone on a port of its own, with `adjust`ed settings.
async fn serve_with(
    app: &TestApp,
    adjust: impl FnOnce(&mut parley::inbound::smtp::Settings),
) -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings =
        parley::inbound::smtp::Settings::new(&app.config.mail, &app.config.storage.data_dir);
    adjust(&mut settings);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(parley::inbound::smtp::serve(
        listener,
        app.inbound.clone(),
        settings,
        stopped,
    ));
    (port, stop)
}

#[tokio::test]
async fn idle_and_endless_sessions_are_closed() {
    let app = spawn_app_with(|_| {}).await;
    let (port, _stop) = serve_with(&app, |s| s.idle_limit = Duration::from_millis(300)).await;
    // A client that says nothing is told so and disconnected.
    let mut smtp = connect(port).await;
    let (code, text) = smtp.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("idle"), "{text}");
    assert_eq!(smtp.closed().await, Vec::<u16>::new());

    // A client that never stops talking is disconnected when the session's time is up.
    let (port, _stop) = serve_with(&app, |s| s.session_limit = Duration::from_millis(500)).await;
    let mut smtp = connect(port).await;
    let started = std::time::Instant::now();
    let text = loop {
        let (code, text) = smtp.command("NOOP").await;
        if code != 250 {
            assert_eq!(code, 421, "{text}");
            break text;
        }
        assert!(started.elapsed() < REPLY_DEADLINE, "the session goes on");
    };
    assert!(text.contains("time limit"), "{text}");
    assert_eq!(smtp.closed().await, Vec::<u16>::new());

    // Twenty refused commands end a session too.
    let (port, _stop) = serve_with(&app, |_| {}).await;
    let mut smtp = connect(port).await;
    for _ in 0..19 {
        assert_eq!(smtp.command("RCPT TO:<info@localhost>").await.0, 503);
    }
    assert_eq!(smtp.command("RCPT TO:<info@localhost>").await.0, 503);
    assert_eq!(smtp.closed().await, [421]);
}

/// A self-signed certificate for `localhost`, written as PEM files into `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    (cert, key, issued.cert.der().clone())
}

#[tokio::test]
async fn starttls_upgrades_the_session_and_mail_after_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let identity = parley::config::TlsIdentity::load(&cert, &key).unwrap();
    let (app, port) = smtp_app(move |c| c.mail.inbound_tls = Some(identity)).await;

    let mut smtp = connect(port).await;
    let (_, ehlo) = smtp.command("EHLO client.example.com").await;
    assert!(
        ehlo.contains("250-STARTTLS\r\n") || ehlo.ends_with("250 STARTTLS\r\n"),
        "{ehlo}"
    );
    assert_eq!(smtp.command("MAIL FROM:<debtor@example.com>").await.0, 250);
    // A command sent in the clear behind STARTTLS is dropped, not run inside TLS.
    smtp.send("STARTTLS\r\nRSET\r\n").await;
    assert_eq!(smtp.reply().await.0, 220);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            smtp.into_inner(),
        )
        .await
        .expect("the TLS handshake");
    let mut smtp = Smtp::new(tls);
    // Everything from before is forgotten: the greeting, and the MAIL of the first session.
    let (code, text) = smtp.command("RCPT TO:<info@localhost>").await;
    assert_eq!(code, 503, "{text}");
    let (code, text) = smtp.command("MAIL FROM:<debtor@example.com>").await;
    assert_eq!(code, 503, "EHLO again first: {text}");
    let (_, ehlo) = smtp.command("EHLO client.example.com").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(smtp.command("STARTTLS").await.0, 503);
    smtp.start_mail("info@localhost").await;
    smtp.send("Subject: over TLS\r\n\r\nsecret\r\n.\r\n").await;
    assert_eq!(smtp.reply().await.0, 250);
    assert_eq!(smtp.command("QUIT").await.0, 221);
    assert_eq!(unmatched(&app).await, ["over TLS"]);

    // lettre, requiring TLS, sends through the same server.
    use lettre::message::Mailbox;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let pem = std::fs::read(&cert).unwrap();
    let tls = TlsParameters::builder("localhost".to_string())
        .add_root_certificate(Certificate::from_pem(&pem).unwrap())
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .build();
    let mail = Message::builder()
        .from("Debtor <debtor@example.com>".parse::<Mailbox>().unwrap())
        .to("info@localhost".parse::<Mailbox>().unwrap())
        .subject("Sent by lettre")
        .body("Over STARTTLS.\r\n".to_string())
        .unwrap();
    let response = transport.send(mail).await.expect("sent over STARTTLS");
    assert_eq!(response.code().to_string(), "250");
    assert_eq!(unmatched(&app).await, ["Sent by lettre", "over TLS"]);

    // Without a certificate there is no STARTTLS.
    let (_plain, port) = smtp_app(|_| {}).await;
    let mut smtp = connect(port).await;
    let (_, ehlo) = smtp.command("EHLO client.example.com").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(smtp.command("STARTTLS").await.0, 502);
}

#[test]
fn tls_files_are_read_when_the_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let env = |pairs: &[(&str, &Path)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect()
    };
    let config = parley::config::Config::from_sources(
        None,
        &env(&[
            ("PARLEY_INBOUND_TLS_CERT", &cert),
            ("PARLEY_INBOUND_TLS_KEY", &key),
        ]),
    )
    .unwrap();
    assert_eq!(config.mail.inbound_tls.unwrap().cert_path, cert);
    assert_eq!(config.mail.inbound_max_bytes, 26_214_400);

    let err =
        parley::config::Config::from_sources(None, &env(&[("PARLEY_INBOUND_TLS_CERT", &cert)]))
            .unwrap_err()
            .to_string();
    assert!(err.contains("PARLEY_INBOUND_TLS_KEY"), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = parley::config::Config::from_sources(
        None,
        &env(&[
            ("PARLEY_INBOUND_TLS_CERT", &cert),
            ("PARLEY_INBOUND_TLS_KEY", &missing),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("PARLEY_INBOUND_TLS_KEY: "), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
    // A key that is not the certificate's.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_key, _) = certificate(&other);
    assert!(
        parley::config::Config::from_sources(
            None,
            &env(&[
                ("PARLEY_INBOUND_TLS_CERT", &cert),
                ("PARLEY_INBOUND_TLS_KEY", &other_key),
            ]),
        )
        .is_err()
    );
    let err = parley::config::Config::from_sources(
        None,
        &[("PARLEY_INBOUND_MAX_BYTES".into(), "lots".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("PARLEY_INBOUND_MAX_BYTES: "), "{err}");
}

#[tokio::test]
async fn the_real_server_stays_small_under_three_hundred_mib_of_unbroken_lines() {
    const MIB: usize = 1 << 20;
    const PER_SESSION: usize = 100;
    const LIMIT: u64 = 150_000_000;
    let server = Installation::new().await.serve().await;
    let (pid, smtp_port) = (server.pid(), server.smtp_port);
    let before = resident(pid).unwrap();

    // Watch the process's memory while three sessions send 100 MiB each: two without a single
    // line break, one in lines of 998 octets (too big for SIZE instead).
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => peak = peak.max(resident(pid).unwrap_or(0)),
                _ = finished.changed() => return peak.max(resident(pid).unwrap_or(0)),
            }
        }
    });
    let started = std::time::Instant::now();
    let sessions: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                let mut smtp = connect(smtp_port).await;
                smtp.start_mail("info@localhost").await;
                let chunk = if i == 0 {
                    let mut line = vec![b'l'; 998];
                    line.extend_from_slice(b"\r\n");
                    line.repeat(MIB / 1000)
                } else {
                    vec![b'a'; MIB]
                };
                let mut sent = 0;
                while sent < PER_SESSION * MIB {
                    smtp.send(&chunk).await;
                    sent += chunk.len();
                }
                smtp.send("\r\n.\r\n").await;
                smtp.reply().await
            })
        })
        .collect();
    for session in sessions {
        let (code, text) = session.await.unwrap();
        assert!((500..600).contains(&code), "{code} {text}");
    }
    let elapsed = started.elapsed();
    done.send(true).unwrap();
    let peak = peak.await.unwrap();
    eprintln!(
        "resident memory: {} MB before, {} MB at most while 3 x {PER_SESSION} MiB arrived in {elapsed:.1?}",
        before / 1_000_000,
        peak / 1_000_000
    );
    assert!(peak < LIMIT, "peak {peak} bytes");
    server.stop().await;
}

/// Mail kept unmatched, counted in the store.
async fn stored(app: &TestApp) -> usize {
    app.store
        .inbound()
        .unmatched_mail(100_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn postfix_relays_bursts_in_parallel_sessions_and_every_mail_is_stored_once() {
    // Default bounds: Postfix delivers to one destination with up to 20 sessions at once.
    let (app, port) = smtp_app(|_| {}).await;
    let relay = crate::peers::Postfix::start(port);
    for burst in 0..4 {
        crate::peers::smtp_source(relay.port, 10, 500, "info@localhost")
            .await
            .unwrap_or_else(|e| panic!("burst {burst} into the relay: {e}"));
    }
    eventually(120, "the relay to deliver 2,000 mails", || async {
        (relay.deliveries("sent") >= 2000).then_some(())
    })
    .await;
    assert_eq!(relay.deliveries("sent"), 2000);
    assert_eq!(relay.deliveries("deferred"), 0, "{}", relay.log());
    assert_eq!(relay.deliveries("bounced"), 0);
    assert_eq!(stored(&app).await, 2000);

    // And straight from one address, in 20 parallel sessions: not one 421.
    crate::peers::smtp_source(port, 20, 500, "info@localhost")
        .await
        .expect("20 sessions from one address");
    assert_eq!(stored(&app).await, 2500);
}
