//! IMAP polling against Dovecot: progress by UID, removal of only what parley took, STARTTLS,
//! XOAUTH2 with an OAuth2 introspection server, and IDLE in a running parley.

use std::sync::{Arc, Mutex};

use parley::domain::PartyKind;
use parley::inbound::imap::{ImapTarget, TokenSource, poll_once};
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, spawn_app, spawn_app_with};
use crate::inbound::mail;
use crate::peers::{ImapPeer, ImapSetup, eventually};

async fn setup(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case["caseId"].as_str().unwrap().to_string())
}

fn to_case(case_id: &str, subject: &str, message_id: &str) -> String {
    mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", subject),
            ("Message-ID", message_id),
        ],
        "Hello from the mailbox\n",
    )
}

async fn inbound_subjects(app: &TestApp, token: &str, case_id: &str) -> Vec<String> {
    let list: Value = app
        .get(
            token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect()
}

/// The flags of each message left in the mailbox, in UID order.
async fn flags(imap: &ImapPeer) -> Vec<String> {
    let out = imap
        .python(
            "m.select('INBOX')\n\
             typ, data = m.uid('FETCH', '1:*', '(FLAGS)')\n\
             print('|'.join(d.decode() for d in data if d))",
            b"",
        )
        .await;
    out.split('|')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn polling_takes_mail_above_its_progress_read_or_not_and_removes_only_that() {
    let imap = ImapPeer::start().await;
    let app = spawn_app().await;
    let (creditor, case_id) = setup(&app).await;
    let target = ImapTarget::parse(&imap.plain_url()).unwrap();

    // A mail that was there before parley, flagged deleted by another client: below the
    // progress, so parley neither takes it nor expunges it.
    imap.append(&mail(&[("Subject", "Old")], "old\n")).await;
    imap.python(
        "m.select('INBOX')\nm.store('1', '+FLAGS', '\\\\Deleted')",
        b"",
    )
    .await;
    let validity: u32 = imap
        .python(
            "m.select('INBOX')\nprint(m.response('UIDVALIDITY')[1][0].decode())",
            b"",
        )
        .await
        .parse()
        .unwrap();
    app.inbound
        .record_mailbox_progress(
            &target.progress_key(),
            parley::store::MailboxProgress {
                uid_validity: validity,
                last_uid: 1,
            },
        )
        .await
        .unwrap();

    imap.append(&to_case(&case_id, "Via IMAP", "<imap-1@example.com>"))
        .await;
    // Someone read this one in a mail client: it is taken all the same.
    imap.python("m.select('INBOX')\nm.store('2', '+FLAGS', '\\\\Seen')", b"")
        .await;
    imap.append(&mail(
        &[
            ("From", "stranger@example.com"),
            ("To", "info@localhost"),
            ("Subject", "Unrelated"),
        ],
        "?\n",
    ))
    .await;
    assert_eq!(imap.count().await, 3);

    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!((report.fetched, report.stored), (2, 2));
    let left = flags(&imap).await;
    assert_eq!(left.len(), 1, "only what parley took is expunged: {left:?}");
    assert!(left[0].contains("UID 1 "), "{left:?}");
    assert_eq!(
        inbound_subjects(&app, &creditor.token, &case_id).await,
        ["Via IMAP"]
    );
    let unmatched: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unmatched["messages"][0]["source"], "imap");

    // Nothing new: nothing fetched.
    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!(report.fetched, 0);

    // The same mail again (say a crash lost the flags): fetched, not stored twice.
    imap.append(&to_case(&case_id, "Via IMAP", "<imap-1@example.com>"))
        .await;
    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!((report.fetched, report.stored), (1, 0));
    assert_eq!(
        inbound_subjects(&app, &creditor.token, &case_id)
            .await
            .len(),
        1
    );

    let wrong = ImapTarget::parse(&imap.plain_url().replace("secret", "wrong")).unwrap();
    let err = poll_once(&wrong, &app.inbound).await.unwrap_err();
    assert!(format!("{err:#}").contains("login"), "{err:#}");
}

#[tokio::test]
async fn without_uidplus_mail_stays_read_and_the_progress_keeps_it_from_coming_back() {
    let imap = ImapPeer::start_with(ImapSetup {
        capabilities: Some("IMAP4rev1 LITERAL+ IDLE"),
        ..ImapSetup::default()
    })
    .await;
    let app = spawn_app().await;
    let (creditor, case_id) = setup(&app).await;
    let target = ImapTarget::parse(&imap.plain_url()).unwrap();
    imap.append(&to_case(&case_id, "First", "<first@example.com>"))
        .await;

    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!((report.fetched, report.stored), (1, 1));
    let left = flags(&imap).await;
    assert_eq!(left.len(), 1, "no bare EXPUNGE in a mailbox others share");
    assert!(
        left[0].contains("\\Seen") && !left[0].contains("\\Deleted"),
        "{left:?}"
    );

    assert_eq!(poll_once(&target, &app.inbound).await.unwrap().fetched, 0);
    imap.append(&to_case(&case_id, "Second", "<second@example.com>"))
        .await;
    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!((report.fetched, report.stored), (1, 1));
    let mut subjects = inbound_subjects(&app, &creditor.token, &case_id).await;
    subjects.sort();
    assert_eq!(subjects, ["First", "Second"]);
}

#[tokio::test]
async fn imap_urls_use_starttls_and_refuse_a_server_without_it() {
    let tls = ImapPeer::start_with(ImapSetup {
        tls: true,
        ..ImapSetup::default()
    })
    .await;
    let app = spawn_app().await;
    let (creditor, case_id) = setup(&app).await;
    tls.append(&to_case(&case_id, "Over TLS", "<tls@example.com>"))
        .await;

    // The server's certificate is from a CA of its own: unknown to the public roots.
    let untrusted = ImapTarget::parse(&tls.url()).unwrap();
    let err = poll_once(&untrusted, &app.inbound).await.unwrap_err();
    assert!(format!("{err:#}").contains("TLS"), "{err:#}");

    let trusted = ImapTarget::parse(&format!("{}?ca={}", tls.url(), tls.ca().display())).unwrap();
    let report = poll_once(&trusted, &app.inbound).await.unwrap();
    assert_eq!((report.fetched, report.stored), (1, 1), "{}", tls.log());
    assert_eq!(
        inbound_subjects(&app, &creditor.token, &case_id).await,
        ["Over TLS"]
    );

    // A server that offers no STARTTLS gets no password.
    let plain = ImapPeer::start().await;
    let err = poll_once(&ImapTarget::parse(&plain.url()).unwrap(), &app.inbound)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("STARTTLS"), "{err:#}");
    assert!(
        !plain.log().contains("parley"),
        "no login was tried: {}",
        plain.log()
    );
}

/// An OAuth2 token introspection endpoint (RFC 7662) that knows one token.
async fn introspection(valid: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::routing::post;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let router = axum::Router::new().route(
        "/introspect",
        post(move |body: String| {
            let seen = seen.clone();
            async move {
                let token = url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                seen.lock().unwrap().push(token.clone());
                axum::Json(if token == valid {
                    json!({"active": true, "username": "parley"})
                } else {
                    json!({"active": false})
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, asked)
}

#[tokio::test]
async fn xoauth2_logs_in_with_a_token_from_a_command_or_a_file() {
    let (introspection_url, asked) = introspection("ya29.good-token").await;
    let imap = ImapPeer::start_with(ImapSetup {
        tls: true,
        oauth2_introspection: Some(introspection_url),
        ..ImapSetup::default()
    })
    .await;
    let app = spawn_app().await;
    let (creditor, case_id) = setup(&app).await;
    // No password in the URL: the token is the credential.
    let url = format!(
        "imap://parley@127.0.0.1:{}/INBOX?ca={}",
        imap.port,
        imap.ca().display()
    );
    imap.append(&to_case(&case_id, "Via OAuth2", "<oauth@example.com>"))
        .await;

    let by_command = ImapTarget::parse(&url)
        .unwrap()
        .with_oauth2(TokenSource::Command("printf 'ya29.good-token\\n'".into()));
    let report = poll_once(&by_command, &app.inbound).await;
    let report = report.unwrap_or_else(|e| panic!("{e:#}\n{}", imap.log()));
    assert_eq!((report.fetched, report.stored), (1, 1));
    assert_eq!(
        inbound_subjects(&app, &creditor.token, &case_id).await,
        ["Via OAuth2"]
    );
    assert!(
        asked
            .lock()
            .unwrap()
            .contains(&"ya29.good-token".to_string())
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "ya29.good-token").unwrap();
    let by_file = ImapTarget::parse(&url)
        .unwrap()
        .with_oauth2(TokenSource::File(file.clone()));
    assert_eq!(poll_once(&by_file, &app.inbound).await.unwrap().fetched, 0);

    std::fs::write(&file, "ya29.expired").unwrap();
    let err = poll_once(&by_file, &app.inbound).await.unwrap_err();
    assert!(format!("{err:#}").contains("XOAUTH2"), "{err:#}");
    assert!(asked.lock().unwrap().contains(&"ya29.expired".to_string()));
}

#[tokio::test]
async fn a_running_parley_waits_in_idle_and_takes_new_mail_at_once() {
    let imap = ImapPeer::start().await;
    let url = imap.plain_url();
    // An hour between polls: only IDLE brings the second mail in time.
    let app = spawn_app_with(move |c| {
        c.mail.imap_url = Some(parley::config::Secret::new(url));
        c.mail.imap_poll_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let (creditor, case_id) = setup(&app).await;
    imap.append(&to_case(&case_id, "First", "<first@example.com>"))
        .await;
    // The first round may run before or after the mail arrives: either way it is taken.
    eventually(30, "the first mail", || async {
        (inbound_subjects(&app, &creditor.token, &case_id)
            .await
            .len()
            == 1)
            .then_some(())
    })
    .await;
    imap.append(&to_case(&case_id, "Second", "<second@example.com>"))
        .await;
    eventually(30, "the second mail, announced in IDLE", || async {
        (inbound_subjects(&app, &creditor.token, &case_id)
            .await
            .len()
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(imap.count().await, 0);
}

#[tokio::test]
async fn what_is_not_mail_stays_in_the_mailbox_marked_read_and_is_not_fetched_again() {
    let imap = ImapPeer::start().await;
    let app = spawn_app().await;
    let (creditor, case_id) = setup(&app).await;
    let target = ImapTarget::parse(&imap.plain_url()).unwrap();
    imap.append("not a mail at all, no headers\n").await;
    imap.append(&to_case(&case_id, "After it", "<after@example.com>"))
        .await;

    let report = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!(
        (report.fetched, report.stored, report.left),
        (1, 1, 1),
        "{report:?}"
    );
    let left = flags(&imap).await;
    assert_eq!(left.len(), 1, "the only copy is kept: {left:?}");
    assert!(
        left[0].contains("\\Seen") && !left[0].contains("\\Deleted"),
        "{left:?}"
    );
    assert_eq!(
        inbound_subjects(&app, &creditor.token, &case_id).await,
        ["After it"]
    );
    let again = poll_once(&target, &app.inbound).await.unwrap();
    assert_eq!((again.fetched, again.left), (0, 0), "{again:?}");
}

/// A mail taken from a mailbox is stored with the progress its UID makes, in one
/// transaction: a process killed right after storing it leaves nothing for the process that
/// takes the mailbox over to fetch and store again (a mail without a Message-ID would be
/// stored twice).
#[tokio::test]
async fn a_taken_mail_is_stored_with_the_progress_it_makes() {
    let app = spawn_app().await;
    let (_, case_id) = setup(&app).await;
    let progress = parley::store::MailboxProgress {
        uid_validity: 7,
        last_uid: 42,
    };
    assert_eq!(app.inbound.mailbox_progress("box").await.unwrap(), None);
    let raw = mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "No Message-ID"),
        ],
        "Answer",
    );
    app.inbound
        .receive_email(
            parley::domain::mail::Source::Imap,
            raw.as_bytes(),
            parley::app::inbound::Arrival {
                progress: Some(("box".to_string(), progress)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Recorded by the mail's own transaction, before the round would record it.
    assert_eq!(
        app.inbound.mailbox_progress("box").await.unwrap(),
        Some(progress)
    );
}
