//! The mail archive: every email in and out journaled once, the exact bytes, to a real IMAP
//! server (Dovecot), a real SMTP journal address, or the case's documents; durable across
//! a restart; never twice. And the export of a case's messages as MBOX or a ZIP of `.eml`
//! files, read back by Python's own `mailbox` and `zipfile`.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::connectors::{connector, create};
use crate::helpers::{Party, TestApp, assert_problem, case_body, spawn_app, spawn_app_with};
use crate::inbound::mail;
use crate::peers::{HookReceiver, ImapPeer, SmtpPeer};

/// Sends an email on the case; its message id.
async fn send(app: &TestApp, party: &Party, case: &Value, subject: &str) -> String {
    let case_id = case["caseId"].as_str().unwrap();
    let r = app
        .post(
            &party.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "to": "debtor@example.com",
                "subject": subject, "body": "Please pay.\nFrom now on, by bank transfer."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let sent: Value = r.json().await.unwrap();
    sent["messageId"].as_str().unwrap().to_string()
}

/// The debtor's reply to the case, as it arrives (CRLF line ends).
fn reply(case: &Value, n: usize) -> String {
    let case_id = case["caseId"].as_str().unwrap();
    mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "Re: Your invoice"),
            ("Message-ID", &format!("<r{n}.{case_id}@example.com>")),
            ("Date", "Sun, 6 Dec 2026 10:00:00 +0000"),
        ],
        "I paid yesterday.\nFrom my bank: see the receipt.\n",
    )
    .replace('\n', "\r\n")
}

/// Receives the reply; its message id.
async fn receive(app: &TestApp, raw: &str) -> String {
    let r = app.post_mail(&app.admin.token, raw).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["messageId"].as_str().unwrap().to_string()
}

/// The bytes a sent email left with (the outbox keeps each as `<id>.eml`).
fn sent_bytes(app: &TestApp, id: &str) -> Vec<u8> {
    std::fs::read(app.dir.path().join("outbox").join(format!("{id}.eml"))).unwrap()
}

/// Every message of the IMAP mailbox `folder`, oldest first, as stored.
async fn folder(imap: &ImapPeer, folder: &str) -> Vec<Vec<u8>> {
    let out = imap
        .python(
            &format!(
                "typ, _ = m.select('{folder}')\n\
                 if typ == 'OK':\n    \
                   for n in m.search(None, 'ALL')[1][0].split():\n        \
                     print(m.fetch(n, '(BODY.PEEK[])')[1][0][1].hex())"
            ),
            b"",
        )
        .await;
    out.lines().map(|l| hex::decode(l).unwrap()).collect()
}

async fn sql(app: &TestApp, statement: &str, bind: &str) {
    let pool = app.pool().await;
    sqlx::query(statement)
        .bind(bind)
        .execute(&pool)
        .await
        .unwrap();
}

async fn pending_archive_jobs(app: &TestApp) -> i64 {
    let pool = app.pool().await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'archive_message' AND status = 'pending'",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
}

/// Queues the archive job of a message again, as a crash's lost record would leave it.
async fn archive_again(app: &TestApp, message: &str) {
    sql(
        app,
        "INSERT INTO jobs (id, kind, ref_id, priority, status, run_at, attempts, created_at, updated_at) \
         VALUES ('job_again_' || $1, 'archive_message', $1, 1, 'pending', 0, 0, 0, 0)",
        message,
    )
    .await;
}

#[tokio::test]
async fn every_mail_in_and_out_is_appended_once_to_an_imap_archive_even_across_a_restart() {
    let imap = ImapPeer::start().await;
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let url = format!(
        "imap://parley:secret@127.0.0.1:{}/Archive?tls=none",
        imap.port
    );
    let made = create(
        &app,
        &json!({"type": "archive", "name": "Journal", "settings": {"target": "imap", "url": url}}),
    )
    .await;
    let id = made["connectorId"].as_str().unwrap().to_string();
    assert_eq!(made["settings"]["url"], "***", "the URL holds a password");
    assert!(!made.to_string().contains("secret@"));

    let out = send(&app, &acme, &case, "Your invoice").await;
    // One step: the mail is sent, and its archive job written with that record.
    app.delivery.run_once().await.unwrap();
    assert_eq!(pending_archive_jobs(&app).await, 1);
    assert!(folder(&imap, "Archive").await.is_empty());

    // The process goes away before journaling; another one on the same database does it.
    let again = parley::App::build_with_clock(app.config.clone(), parley::domain::clock::system())
        .await
        .unwrap();
    let worker = again.delivery().unwrap();
    while worker.run_once().await.unwrap() > 0 {}
    let archived = folder(&imap, "Archive").await;
    assert_eq!(archived.len(), 1, "{}", imap.log());
    assert_eq!(
        archived[0],
        sent_bytes(&app, &out),
        "the exact bytes that left"
    );

    let raw = reply(&case, 1);
    let inbound = receive(&app, &raw).await;
    app.deliver_due().await;
    let archived = folder(&imap, "Archive").await;
    assert_eq!(archived.len(), 2);
    assert_eq!(archived[1], raw.as_bytes(), "the exact bytes that came in");

    // A journaling whose record was lost (APPEND done, then a crash): found by its
    // Message-ID, not appended again.
    sql(
        &app,
        "DELETE FROM archive_items WHERE message_id = $1",
        &inbound,
    )
    .await;
    archive_again(&app, &inbound).await;
    app.deliver_due().await;
    assert_eq!(folder(&imap, "Archive").await.len(), 2, "never twice");

    let seen = connector(&app, &id).await;
    assert_eq!(seen["status"], "active", "{seen}");
    assert!(seen["counts"]["items"].as_i64().unwrap() >= 2, "{seen}");
    assert!(seen["lastSyncAt"].is_string(), "{seen}");
}

#[tokio::test]
async fn a_burst_is_journaled_through_a_few_kept_sessions_within_the_servers_limit() {
    let imap = ImapPeer::start().await;
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let url = format!(
        "imap://parley:secret@127.0.0.1:{}/Archive?tls=none",
        imap.port
    );
    create(
        &app,
        &json!({"type": "archive", "name": "Journal", "settings": {"target": "imap", "url": url}}),
    )
    .await;
    for n in 0..30 {
        receive(&app, &reply(&case, 100 + n)).await;
    }
    // Sixteen jobs at once against a server that takes ten connections from one address.
    let mut config = app.config.clone();
    config.delivery.concurrency = 16;
    let busy = parley::App::build_with_clock(config, parley::domain::clock::system())
        .await
        .unwrap();
    let worker = busy.delivery().unwrap();
    while worker.run_once().await.unwrap() > 0 {}
    assert_eq!(folder(&imap, "Archive").await.len(), 30, "{}", imap.log());
    let logins = imap
        .log()
        .lines()
        .filter(|l| l.contains("Login: user=<parley>"))
        .count();
    // The test's own look at the folder logs in once.
    assert!(
        (2..=1 + 4).contains(&logins),
        "{logins} logins:\n{}",
        imap.log()
    );
    assert!(!imap.log().contains("Maximum number of connections"));
}

#[tokio::test]
async fn an_archive_that_fails_says_why_and_the_others_go_on() {
    let imap = ImapPeer::start().await;
    let hooks = HookReceiver::start().await;
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let r = app
        .post(
            &app.admin.token,
            "/api/webhooks",
            &json!({"url": hooks.url, "events": ["connector.failed"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let case = app.create_case(&acme, None).await;
    let good = format!(
        "imap://parley:secret@127.0.0.1:{}/Archive?tls=none",
        imap.port
    );
    // Nothing listens there.
    let closed = crate::binary::free_port();
    let wrong = format!("imap://parley:hunter2@127.0.0.1:{closed}/Archive?tls=none");
    create(
        &app,
        &json!({"type": "archive", "name": "Good", "settings": {"target": "imap", "url": good}}),
    )
    .await;
    let failing = create(
        &app,
        &json!({"type": "archive", "name": "Nowhere", "settings": {"target": "imap", "url": wrong}}),
    )
    .await;
    let failing = failing["connectorId"].as_str().unwrap().to_string();
    send(&app, &acme, &case, "Your invoice").await;
    app.deliver_due().await;
    assert_eq!(folder(&imap, "Archive").await.len(), 1, "{}", imap.log());
    let seen = connector(&app, &failing).await;
    assert_eq!(seen["status"], "failing", "{seen}");
    let error = seen["lastError"].as_str().unwrap();
    assert!(
        !error.contains("hunter2"),
        "no secret in the error: {error}"
    );
    assert!(error.contains("connect"), "{error}");
    app.dispatch_webhooks().await;
    let got = hooks.requests();
    assert_eq!(got.len(), 1, "one connector.failed");
    assert!(got[0].1.contains(&failing), "{}", got[0].1);

    // Put right, the next retry journals it there too, and only there.
    let fixed = format!(
        "imap://parley:secret@127.0.0.1:{}/Other?tls=none",
        imap.port
    );
    let r = app
        .patch(
            &app.admin.token,
            &format!("/api/connectors/{failing}"),
            &json!({"settings": {"url": fixed}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let message: String = {
        let list: Value = app
            .get(
                &acme.token,
                &format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap()),
            )
            .await
            .json()
            .await
            .unwrap();
        list["messages"][0]["messageId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    archive_again(&app, &message).await;
    app.deliver_due().await;
    assert_eq!(folder(&imap, "Other").await.len(), 1);
    assert_eq!(folder(&imap, "Archive").await.len(), 1);
    assert_eq!(connector(&app, &failing).await["status"], "active");
}

#[tokio::test]
async fn an_smtp_journal_gets_each_original_attached_unchanged() {
    let journal = SmtpPeer::start().await;
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let made = create(
        &app,
        &json!({"type": "archive", "name": "Journal", "settings": {
            "target": "smtp", "url": journal.url(), "journalAddress": "journal@archive.example"}}),
    )
    .await;
    let id = made["connectorId"].as_str().unwrap();
    let out = send(&app, &acme, &case, "Your invoice").await;
    let raw = reply(&case, 2);
    let inbound = receive(&app, &raw).await;
    app.deliver_due().await;
    let reports = journal.wait_for(2).await;
    assert_eq!(reports.len(), 2);
    for (message, original) in [
        (&out, sent_bytes(&app, &out)),
        (&inbound, raw.clone().into_bytes()),
    ] {
        let report = reports
            .iter()
            .find(|r| {
                String::from_utf8_lossy(r).contains(&format!("X-Parley-Message-Id: {message}"))
            })
            .expect("a report for each message");
        let text = String::from_utf8_lossy(report);
        assert!(
            text.contains(&format!("Message-ID: <journal.{id}.{message}@")),
            "the report names connector and message: {text}"
        );
        assert!(text.contains("Content-Type: message/rfc822"), "{text}");
        assert!(
            report
                .windows(original.len())
                .any(|w| w == original.as_slice()),
            "the original, unchanged, inside: {text}"
        );
    }
    assert!(journal.messages().len() == 2, "nothing journaled twice");
}

#[tokio::test]
async fn a_creditors_archive_files_its_cases_mail_as_documents_and_exports_read_back() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let ours = app.create_case(&acme, None).await;
    let theirs = app.create_case(&other, None).await;
    create(
        &app,
        &json!({"type": "archive", "name": "Files", "creditorId": acme.id,
            "settings": {"target": "documents"}}),
    )
    .await;
    let out = send(&app, &acme, &ours, "Your invoice").await;
    let raw = reply(&ours, 3);
    let inbound = receive(&app, &raw).await;
    let not_ours = send(&app, &other, &theirs, "Their invoice").await;
    app.deliver_due().await;

    let ours_id = ours["caseId"].as_str().unwrap();
    let docs: Value = app
        .get(&acme.token, &format!("/api/cases/{ours_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let docs = docs["documents"].as_array().unwrap().clone();
    assert_eq!(docs.len(), 2, "{docs:?}");
    for (message, original) in [
        (&out, sent_bytes(&app, &out)),
        (&inbound, raw.clone().into_bytes()),
    ] {
        let doc = docs
            .iter()
            .find(|d| d["fileName"] == format!("{message}.eml"))
            .expect("one .eml per message");
        let bytes = app
            .get(
                &acme.token,
                &format!(
                    "/api/documents/{}/download",
                    doc["documentId"].as_str().unwrap()
                ),
            )
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.as_ref(), original.as_slice());
    }
    let theirs_id = theirs["caseId"].as_str().unwrap();
    let docs: Value = app
        .get(&other.token, &format!("/api/cases/{theirs_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        docs["documents"].as_array().unwrap().len(),
        0,
        "not in scope"
    );

    // MBOX: the exact bytes of both, read back by Python's mailbox module.
    let export = |token: String, case: String, format: &'static str| {
        let app = &app;
        async move {
            app.get(
                &token,
                &format!("/api/cases/{case}/messages/export?format={format}"),
            )
            .await
        }
    };
    let r = export(acme.token.clone(), ours_id.into(), "mbox").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/mbox");
    let mbox = r.bytes().await.unwrap();
    let read = python(
        "import mailbox, sys\nbox = mailbox.mbox(sys.argv[1])\n\
         for m in box:\n    print(m['Message-ID'], m['X-Parley-Export'])",
        &mbox,
    );
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.len(), 2, "{read}");
    assert!(
        lines[1].starts_with(&format!("<r3.{ours_id}@example.com> None")),
        "{read}"
    );
    assert!(
        lines[0].ends_with(" None"),
        "sent with its bytes kept: {read}"
    );
    // The sent bytes as they left, a line that starts with "From " quoted (mboxrd).
    let sent = String::from_utf8(sent_bytes(&app, &out)).unwrap();
    assert!(sent.contains("\nFrom now on"), "{sent}");
    let quoted = sent.replace("\nFrom ", "\n>From ").into_bytes();
    assert!(
        mbox.windows(quoted.len()).any(|w| w == quoted.as_slice()),
        "{}",
        String::from_utf8_lossy(&mbox)
    );

    // ZIP of .eml files with its manifest, checked by Python's zipfile and hashlib.
    let r = export(acme.token.clone(), ours_id.into(), "eml").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let zip = r.bytes().await.unwrap();
    let read = python(
        "import zipfile, hashlib, sys\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n\
         names = z.namelist()\nprint(len(names), names[-1])\n\
         for line in z.read('manifest.sha256').decode().splitlines():\n    \
           digest, name = line.split('  ')\n    \
           assert hashlib.sha256(z.read(name)).hexdigest() == digest, name\n    print(name)",
        &zip,
    );
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines[0], "3 manifest.sha256", "{read}");
    assert_eq!(lines[1], format!("00001-{out}.eml"), "{read}");
    assert_eq!(lines[2], format!("00002-{inbound}.eml"), "{read}");

    // Another creditor's case: not found. Its own, without an archive: rebuilt renditions.
    let r = export(acme.token.clone(), theirs_id.into(), "mbox").await;
    assert_problem(r, 404, "not_found").await;
    let r = export(other.token.clone(), theirs_id.into(), "mbox").await;
    let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string();
    assert!(text.contains("X-Parley-Export: rebuilt"), "{text}");
    assert!(
        text.contains(&format!("X-Parley-Message-Id: {not_ours}")),
        "{text}"
    );
    let r = export(acme.token.clone(), ours_id.into(), "pst").await;
    assert_problem(r, 400, "invalid_query").await;

    let audit: Value = app
        .get(&acme.token, &format!("/api/cases/{ours_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert!(audit.to_string().contains("messages.exported"), "{audit}");
}

#[tokio::test]
async fn an_erasure_removes_the_sent_bytes_kept_for_the_archive() {
    let app = spawn_app_with(|c| c.policy.retention = std::time::Duration::ZERO).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    create(
        &app,
        &json!({"type": "archive", "name": "Files", "settings": {"target": "documents"}}),
    )
    .await;
    let out = send(&app, &acme, &case, "Your invoice").await;
    app.deliver_due().await;
    let kept = kept_files(&app, &out).await;
    assert_eq!(
        kept.len(),
        1,
        "the sent bytes are kept while an archive serves the case"
    );
    let file = app.dir.path().join("documents").join(&kept[0]);
    assert!(file.exists(), "{}", file.display());

    let case_id = case["caseId"].as_str().unwrap();
    let r = app
        .patch(
            &acme.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "closed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            &app.admin.token,
            "/api/data-subjects/erase",
            &json!({"email": case_body()["debtor"]["email"], "reason": "the debtor asked"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let erased: Value = r.json().await.unwrap();
    assert_eq!(erased["erased"][0]["caseId"], case_id, "{erased}");
    assert!(kept_files(&app, &out).await.is_empty());
    assert!(!file.exists(), "the file is gone");
}

/// The storage keys of a message's kept sent bytes.
async fn kept_files(app: &TestApp, message: &str) -> Vec<String> {
    let pool = app.pool().await;
    sqlx::query_scalar("SELECT storage_key FROM sent_copies WHERE message_id = $1")
        .bind(message)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn archive_settings_are_checked_per_target() {
    let app = spawn_app().await;
    for settings in [
        json!({"target": "imap"}),
        json!({"target": "imap", "url": "smtp://127.0.0.1:25"}),
        json!({"target": "smtp", "url": "smtp://127.0.0.1:25"}),
        json!({"target": "smtp", "url": "smtp://127.0.0.1:25", "journalAddress": "not an address"}),
        json!({"target": "documents", "url": "imap://u:p@127.0.0.1/Archive"}),
        json!({"target": "tape"}),
        json!({"target": "imap", "url": "http://example.com"}),
    ] {
        let r = app
            .post(
                &app.admin.token,
                "/api/connectors",
                &json!({"type": "archive", "name": "Archive", "settings": settings}),
            )
            .await;
        assert_problem(r, 422, "validation_failed").await;
    }
}

/// Runs a Python script on `input` (written to a file, its path the script's argument);
/// what it prints.
fn python(script: &str, input: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), input).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
