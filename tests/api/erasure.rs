//! Erasure of a data subject by crypto-shredding: the debtor's key is destroyed, and no copy
//! of their data opens again with the keys parley still holds, a backup taken before
//! included; where a retention rule holds, processing is restricted and the retention
//! sweeper erases the data when it ends.

use std::time::Duration;

use parley::config::Secret;
use parley::domain::PartyKind;
use parley::domain::clock::ManualClock;
use serde_json::{Value, json};

use crate::documents::{seed_form, upload};
use crate::helpers::{
    Party, TestApp, assert_problem, fresh_database, spawn_app_with, spawn_app_with_clock,
};
use crate::policy::put_prefs;
use crate::storage::{contains, database_contents};

const NAME: &str = "Zebulon Quixwright";
const EMAIL: &str = "zebulon.quixwright@example.com";
const PHONE: &str = "+4529876543";
/// Words that appear only in the person's data: none may be found in the clear, anywhere.
const MARKERS: &[&str] = &["Quixwright", "quixwright", "29876543", "Yellowhammer"];

async fn case_of(app: &TestApp, creditor: &Party, email: &str, phone: &str) -> String {
    let r = app
        .post(
            &creditor.token,
            "/api/cases",
            &json!({"debtor": {"name": NAME, "email": email, "phone": phone},
                    "amount": {"value": "100.00", "currency": "DKK"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["caseId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn erase(app: &TestApp, body: &Value) -> Value {
    let r = app
        .post(&app.admin.token, "/api/data-subjects/erase", body)
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Everything a case's API shows of its debtor's data, as one JSON value.
async fn shown(app: &TestApp, token: &str, case_id: &str) -> Value {
    let base = format!("/api/cases/{case_id}");
    let mut all = json!({});
    for (key, path) in [
        ("case", base.clone()),
        ("messages", format!("{base}/messages")),
        ("notes", format!("{base}/notes")),
        ("threads", format!("{base}/threads")),
        ("documents", format!("{base}/documents")),
        ("deadlines", format!("{base}/deadlines")),
        ("payments", format!("{base}/payments")),
        ("preferences", format!("{base}/communication-preferences")),
    ] {
        let r = app.get(token, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        all[key] = r.json().await.unwrap();
    }
    let mut bodies = Vec::new();
    for m in all["messages"]["messages"].as_array().unwrap().clone() {
        let id = m["messageId"].as_str().unwrap();
        let one: Value = app
            .get(token, &format!("/api/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        bodies.push(one);
    }
    all["bodies"] = json!(bodies);
    all
}

/// The key store's URL: the one configured, or the SQLite file beside the database's.
fn key_store_url(app: &TestApp) -> String {
    match &app.config.storage.subject_keys_url {
        Some(url) => url.expose().to_string(),
        None => format!(
            "sqlite://{}",
            app.dir.path().join("parley.db.subject-keys").display()
        ),
    }
}

/// The wrapped key of a case as the key store holds it.
async fn wrapped_key(app: &TestApp, case_id: &str) -> Option<Vec<u8>> {
    use sqlx::Connection;
    let url = key_store_url(app);
    let sql = "SELECT key_sealed FROM subject_keys WHERE case_id = $1";
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        return sqlx::query_scalar(sql)
            .bind(case_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(sql)
        .bind(case_id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Every byte of the key store: its SQLite files, or its PostgreSQL table's pages (dead row
/// versions included, read with `pageinspect`), as hex.
async fn key_store_contents(app: &TestApp) -> Vec<u8> {
    use sqlx::Connection;
    let url = key_store_url(app);
    if url.starts_with("sqlite") {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(app.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("subject-keys") {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
        return out;
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&mut conn)
        .await
        .unwrap();
    let pages: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(encode(get_raw_page('subject_keys', b), 'hex'), '') \
         FROM generate_series(0, (pg_relation_size('subject_keys') / 8192)::int - 1) b",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    pages.unwrap_or_default().into_bytes()
}

/// A copy of the database as a backup would hold it: the SQLite files, or a `pg_dump`.
async fn backup(app: &TestApp, to: &std::path::Path) {
    let url = app.config.storage.database_url.expose();
    if url.starts_with("sqlite") {
        for entry in std::fs::read_dir(app.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("parley.db") && !name.contains("subject-keys") {
                std::fs::copy(&path, to.join(&name)).unwrap();
            }
        }
        return;
    }
    let bindir = std::env::var("PARLEY_PG_BINDIR").expect("PostgreSQL's binaries");
    let out = tokio::process::Command::new(format!("{bindir}/pg_dump"))
        .args(["--format=plain", "--no-owner", "--file"])
        .arg(to.join("dump.sql"))
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The database URL of a restored backup: the SQLite files as copied, or the dump restored
/// into a new PostgreSQL database.
async fn restore(app: &TestApp, from: &std::path::Path) -> String {
    let url = app.config.storage.database_url.expose();
    if url.starts_with("sqlite") {
        return format!("sqlite://{}", from.join("parley.db").display());
    }
    let fresh = fresh_database().await.unwrap();
    let bindir = std::env::var("PARLEY_PG_BINDIR").unwrap();
    let out = tokio::process::Command::new(format!("{bindir}/psql"))
        .args([
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            &fresh,
            "--file",
        ])
        .arg(from.join("dump.sql"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fresh
}

/// One statement on the app's database, as an earlier version would have written.
async fn raw_sql(app: &TestApp, sql: &str, id: &str) {
    app.store.subjects().execute_on_row(sql, id).await.unwrap();
}

/// One text read from the app's database.
async fn raw_text(app: &TestApp, sql: &str, id: &str) -> String {
    app.store.subjects().text_of_row(sql, id).await.unwrap()
}

async fn set_status(app: &TestApp, party: &Party, case_id: &str, status: &str) {
    let r = app
        .patch(
            &party.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": status}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn debtor_name(app: &TestApp, party: &Party, case_id: &str) -> String {
    let case: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}"))
        .await
        .json()
        .await
        .unwrap();
    case["debtor"]["name"].as_str().unwrap().to_string()
}

/// The database as its file holds it (SQLite, after the erasure's checkpoint), or every
/// PostgreSQL row as text.
async fn database_file(app: &TestApp) -> Vec<u8> {
    if app
        .config
        .storage
        .database_url
        .expose()
        .starts_with("sqlite")
    {
        return std::fs::read(app.dir.path().join("parley.db")).unwrap();
    }
    database_contents(app).await
}

/// Whether `haystack` holds `bytes`, raw or as hex (PostgreSQL's text of a `bytea`).
fn holds(haystack: &[u8], bytes: &[u8]) -> bool {
    let hex = hex::encode(bytes);
    haystack.windows(bytes.len()).any(|w| w == bytes)
        || haystack.windows(hex.len()).any(|w| w == hex.as_bytes())
}

fn no_markers(what: &str, bytes: &[u8]) {
    for m in MARKERS {
        assert!(!contains(bytes, m), "{what} holds {m:?} in the clear");
    }
}

fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

#[tokio::test]
async fn after_an_erasure_no_copy_opens_again_a_backup_taken_before_included() {
    // On PostgreSQL the keys are kept in a database of their own, as the README asks (on
    // SQLite the key store is a file beside the database's).
    let key_store = fresh_database().await;
    let app = spawn_app_with(move |c| {
        c.policy.retention = Duration::ZERO;
        c.storage.subject_keys_url = key_store.map(Secret::new);
    })
    .await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case_id = case_of(&app, &acme, EMAIL, PHONE).await;
    // Someone else, whose data must survive the erasure (and the restored backup).
    let other = app.create_case(&acme, None).await;
    let other_id = other["caseId"].as_str().unwrap().to_string();
    let base = format!("/api/cases/{case_id}");
    assert_eq!(
        app.post(
            &acme.token,
            &format!("{base}/notes"),
            &json!({"note": "Quixwright called about the Yellowhammer invoice"}),
        )
        .await
        .status(),
        201
    );
    let prefs = json!({"preferredChannel": "email", "emailAddress": EMAIL, "phoneNumber": PHONE,
        "allowSms": true, "allowEmail": true, "doNotContact": false});
    assert_eq!(put_prefs(&app, &acme, &case_id, &prefs).await.status(), 200);
    let r = app
        .post(
            &acme.token,
            &format!("{base}/messages"),
            &json!({"messageType": "email", "subject": "Yellowhammer reminder",
                    "body": "Dear Zebulon Quixwright, please pay"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let mut document = b"%PDF-1.7 Yellowhammer statement for Quixwright ".to_vec();
    document.extend((0..200_000).map(|i| (i * 7 % 251) as u8));
    let r = upload(&app, &acme.token, &case_id, seed_form(document)).await;
    assert_eq!(r.status(), 201);
    let document_id = r.json::<Value>().await.unwrap()["documentId"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = format!(
        "From: {EMAIL}\r\nTo: case-{case_id}@localhost\r\nSubject: Re: Yellowhammer reminder\r\n\r\nQuixwright here: I pay Friday\r\n"
    );
    assert_eq!(app.post_mail(&app.admin.token, &reply).await.status(), 201);
    app.deliver_due().await;
    set_status(&app, &acme, &case_id, "closed").await;
    // A file's name, a deadline's title, a payment's reference may name the person: sealed
    // like the rest.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"%PDF-1.7 x".to_vec())
                .file_name("letter-to-quixwright.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        )
        .text("documentType", "correspondence");
    assert_eq!(
        upload(&app, &acme.token, &case_id, form).await.status(),
        201
    );
    let due = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    for (path, body) in [
        (
            "deadlines",
            json!({"title": "Quixwright instalment", "dueAt": due}),
        ),
        (
            "payments",
            json!({"amount": "5.00", "reference": "Quixwright 7781"}),
        ),
    ] {
        let r = app
            .post(&acme.token, &format!("{base}/{path}"), &body)
            .await;
        assert_eq!(r.status(), 201, "{path}");
    }
    app.deliver_due().await;
    let before = shown(&app, &acme.token, &case_id).await;
    assert_eq!(before["case"]["debtor"]["name"], NAME);
    let sealed_texts = |all: &Value| {
        json!([
            all["documents"]["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["fileName"].clone())
                .collect::<Vec<_>>(),
            all["deadlines"]["deadlines"][0]["title"],
            all["payments"]["payments"][0]["reference"],
        ])
    };
    assert_eq!(
        sealed_texts(&before),
        json!([
            ["letter-to-quixwright.pdf", "invoice.pdf"],
            "Quixwright instalment",
            "Quixwright 7781"
        ])
    );
    assert!(before.to_string().contains("I pay Friday"));

    // A backup, as an operator takes it every night.
    let saved = tempfile::tempdir().unwrap();
    backup(&app, saved.path()).await;
    no_markers("the backup", &files_under(saved.path()));
    no_markers(
        "the database before the erasure",
        &database_contents(&app).await,
    );
    // The debtor's key as the key store holds it.
    let key = wrapped_key(&app, &case_id).await.expect("the debtor's key");
    assert!(
        holds(&key_store_contents(&app).await, &key),
        "the scan finds the key"
    );
    no_markers(
        "the document store",
        &files_under(&app.dir.path().join("documents")),
    );

    // A note's tags are words kept in the clear (and so in that backup); the erasure clears
    // them too.
    let r = app
        .post(
            &acme.token,
            &format!("{base}/notes"),
            &json!({"note": "x", "tags": ["kestrel_plan"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.deliver_due().await;
    assert!(contains(&database_contents(&app).await, "kestrel"));

    let got = erase(
        &app,
        &json!({"email": "Zebulon.Quixwright@example.com", "reason": "Art. 17 request 2026-118"}),
    )
    .await;
    assert_eq!(got["erased"][0]["caseId"], case_id.as_str(), "{got}");
    assert_eq!(got["retained"], json!([]));
    assert_eq!(got["reason"], "Art. 17 request 2026-118");

    // The API shows `[erased]` where the person's data was.
    let after = shown(&app, &acme.token, &case_id).await;
    assert_eq!(after["case"]["debtor"]["name"], "[erased]");
    assert!(after["case"]["debtor"]["email"].is_null());
    assert_eq!(after["notes"]["notes"][0]["note"], "[erased]");
    for m in after["bodies"].as_array().unwrap() {
        assert_eq!(m["body"], "[erased]", "{m}");
    }
    assert_eq!(
        sealed_texts(&after),
        json!([["[erased]", "[erased]"], "[erased]", "[erased]"])
    );
    assert!(after["preferences"]["emailAddress"].is_null(), "{after}");
    for m in MARKERS {
        assert!(!after.to_string().contains(m), "{m} still shown: {after}");
    }
    let r = app
        .get(
            &acme.token,
            &format!("/api/documents/{document_id}/download"),
        )
        .await;
    assert_problem(r, 404, "not_found").await;
    assert!(
        files_under(&app.dir.path().join("documents")).is_empty(),
        "the document's file is removed"
    );
    // Nothing more goes to the erased case; a new request finds no one.
    let r = app
        .post(
            &acme.token,
            &format!("{base}/messages"),
            &json!({"messageType": "email", "to": ["someone@example.com"], "subject": "x", "body": "y"}),
        )
        .await;
    assert_problem(r, 422, "restricted").await;
    for (path, body) in [
        ("notes", json!({"note": "x"})),
        (
            "messages/preview",
            json!({"messageType": "sms", "body": "y"}),
        ),
    ] {
        let r = app
            .post(&acme.token, &format!("{base}/{path}"), &body)
            .await;
        assert_problem(r, 422, "restricted").await;
    }
    // A payment still books; its system message is not written for an erased debtor, and
    // its job ends without failing.
    let messages_before =
        shown(&app, &acme.token, &case_id).await["messages"]["totalCount"].clone();
    let r = app
        .post(
            &acme.token,
            &format!("{base}/payments"),
            &json!({"amount": "10.00"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(app.deliver_due().await, 1);
    let messages_after = shown(&app, &acme.token, &case_id).await["messages"]["totalCount"].clone();
    assert_eq!(messages_after, messages_before);
    let failed: Value = app
        .get(&app.admin.token, "/api/jobs?state=failed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(failed["jobs"], json!([]), "{failed}");
    let again = erase(&app, &json!({"email": EMAIL, "reason": "again"})).await;
    assert_eq!(again["erased"], json!([]), "the indexes are gone: {again}");
    let log: Value = app
        .get(&app.admin.token, &format!("{base}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "data_subject.erased"),
        "{log}"
    );
    no_markers(
        "the database after the erasure",
        &database_contents(&app).await,
    );
    // Cleared from the rows and, on SQLite, from the database file's pages (the write-ahead
    // log keeps earlier pages until it is reused).
    for word in ["kestrel", "Kestrel"] {
        assert!(
            !contains(&database_file(&app).await, word),
            "{word} is still in the database"
        );
    }
    // The key is gone from the key store, its bytes included.
    assert_eq!(wrapped_key(&app, &case_id).await, None);
    assert!(
        !holds(&key_store_contents(&app).await, &key),
        "the destroyed key's bytes are still in the key store"
    );
    // The other debtor is untouched.
    let kept = shown(&app, &acme.token, &other_id).await;
    assert_eq!(kept["case"]["debtor"], other["debtor"]);

    // The backup from before the erasure, restored beside the keys parley still holds:
    // the person's data does not open; everyone else's does.
    let restored = restore(&app, saved.path()).await;
    let storage = app.config.storage.clone();
    let key_store = match &storage.subject_keys_url {
        Some(url) => url.expose().to_string(),
        None => format!(
            "sqlite://{}",
            app.dir.path().join("parley.db.subject-keys").display()
        ),
    };
    let old = spawn_app_with(move |c| {
        c.storage.master_key = storage.master_key;
        c.storage.database_url = Secret::new(restored);
        c.storage.subject_keys_url = Some(Secret::new(key_store));
        c.storage.document_store = storage.document_store;
    })
    .await;
    let from_backup = shown(&old, &acme.token, &case_id).await;
    assert_eq!(
        sealed_texts(&from_backup),
        json!([["[erased]", "[erased]"], "[erased]", "[erased]"])
    );
    assert_eq!(from_backup["case"]["debtor"]["name"], "[erased]");
    assert_eq!(from_backup["notes"]["notes"][0]["note"], "[erased]");
    for m in from_backup["bodies"].as_array().unwrap() {
        assert_eq!(m["body"], "[erased]", "{m}");
    }
    for m in MARKERS {
        assert!(
            !from_backup.to_string().contains(m),
            "{m} readable from the backup: {from_backup}"
        );
    }
    let kept = shown(&old, &acme.token, &other_id).await;
    assert_eq!(kept["case"]["debtor"], other["debtor"]);
}

#[tokio::test]
async fn under_retention_an_erasure_restricts_and_the_sweeper_erases_when_it_ends() {
    let clock = ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.policy.retention = Duration::from_secs(30 * 86_400);
    })
    .await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let running = case_of(&app, &acme, EMAIL, PHONE).await;
    let ended = case_of(&app, &acme, EMAIL, "+4529876544").await;
    set_status(&app, &acme, &ended, "closed").await;

    let got = erase(
        &app,
        &json!({"phone": "+4529876544", "reason": "request 7"}),
    )
    .await;
    assert_eq!(got["erased"], json!([]), "{got}");
    let retained = got["retained"].as_array().unwrap();
    assert_eq!(retained.len(), 1, "{got}");
    assert_eq!(retained[0]["caseId"], ended.as_str());
    assert_eq!(retained[0]["rule"], "retention_period");
    let until =
        chrono::DateTime::parse_from_rfc3339(retained[0]["retainedUntil"].as_str().unwrap())
            .unwrap();
    let in_days = (until.timestamp() - chrono::Utc::now().timestamp()) / 86_400;
    assert!((29..=30).contains(&in_days), "{got}");

    let got = erase(&app, &json!({"email": EMAIL, "reason": "request 8"})).await;
    let rules: Vec<(&str, &str)> = got["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["caseId"].as_str().unwrap(), c["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [
            (running.as_str(), "case_open"),
            (ended.as_str(), "retention_period")
        ]
    );
    assert!(got["retained"][0]["retainedUntil"].is_null());

    // Restricted: nothing more is sent, the preview says so too; the data is still shown.
    for path in ["messages", "messages/preview"] {
        let r = app
            .post(
                &acme.token,
                &format!("/api/cases/{running}/{path}"),
                &json!({"messageType": "email", "subject": "Reminder", "body": "Please pay"}),
            )
            .await;
        assert_problem(r, 422, "restricted").await;
    }
    let case: Value = app
        .get(&acme.token, &format!("/api/cases/{running}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(case["debtor"]["name"], NAME);

    // The sweeper (run by the delivery worker in the one process holding it) erases the
    // ended case once its retention is over, and the running one only after it ends too.
    // (The one job due now is the system message of the case's closing.)
    assert_eq!(app.deliver_due().await, 1);
    assert_eq!(debtor_name(&app, &acme, &ended).await, NAME);
    clock.advance(Duration::from_secs(31 * 86_400));
    app.deliver_due().await;
    assert_eq!(debtor_name(&app, &acme, &ended).await, "[erased]");
    assert_eq!(debtor_name(&app, &acme, &running).await, NAME);

    set_status(&app, &acme, &running, "paid").await;
    clock.advance(Duration::from_secs(31 * 86_400));
    app.deliver_due().await;
    assert_eq!(debtor_name(&app, &acme, &running).await, "[erased]");
    let log: Value = app
        .get(&app.admin.token, &format!("/api/cases/{running}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"data_subject.restricted"), "{log}");
    assert!(actions.contains(&"data_subject.erased"), "{log}");
}

#[tokio::test]
async fn erasure_requests_are_checked_and_for_admins_only() {
    let app = spawn_app_with(|_| {}).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let r = app
        .post(
            &acme.token,
            "/api/data-subjects/erase",
            &json!({"email": EMAIL, "reason": "x"}),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
    for body in [
        json!({"reason": "x"}),
        json!({"email": EMAIL, "phone": PHONE, "reason": "x"}),
        json!({"email": "not-an-address", "reason": "x"}),
        json!({"email": EMAIL, "reason": ""}),
        json!({"email": EMAIL, "reason": "a\u{7}b"}),
    ] {
        let r = app
            .post(&app.admin.token, "/api/data-subjects/erase", &body)
            .await;
        assert_problem(r, 422, "validation_failed").await;
    }
    let r = app
        .post(
            &app.admin.token,
            "/api/data-subjects/erase",
            &json!({"email": EMAIL}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let nobody = erase(&app, &json!({"email": "nobody@example.com", "reason": "x"})).await;
    assert_eq!(nobody["erased"], json!([]));
    assert_eq!(nobody["retained"], json!([]));
}

/// An installation from before subject keys holds its debtors' data under the master key:
/// `parley migrate` moves it under their keys, after which an erasure reaches it too.
#[tokio::test]
async fn parley_migrate_moves_earlier_data_under_the_subjects_keys() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case_id = case_of(&app, &acme, EMAIL, PHONE).await;
    let notes = format!("/api/cases/{case_id}/notes");
    let r = app
        .post(
            &acme.token,
            &notes,
            &json!({"note": "Quixwright will call back"}),
        )
        .await;
    let note_id = r.json::<Value>().await.unwrap()["noteId"]
        .as_str()
        .unwrap()
        .to_string();
    // As an earlier version stored them.
    let master = app.config.storage.master_key.unwrap();
    let ring = parley::crypto::KeyRing::new(master.expose(), &[]);
    let debtor = parley::domain::case::Debtor {
        name: NAME.into(),
        email: Some(EMAIL.into()),
        phone: Some(PHONE.into()),
        language: None,
        timezone: None,
    };
    let legacy = [
        (
            "cases",
            "debtor_sealed",
            case_id.clone(),
            ring.seal(
                &format!("case:{case_id}:debtor"),
                &serde_json::to_vec(&debtor).unwrap(),
            ),
        ),
        (
            "notes",
            "note_sealed",
            note_id.clone(),
            ring.seal_str(&format!("note:{note_id}"), "Quixwright will call back"),
        ),
    ];
    for (table, column, id, sealed) in &legacy {
        app.store
            .subjects()
            .overwrite_stored_value(table, column, id, sealed)
            .await
            .unwrap();
    }
    // A deadline whose title an earlier version kept in the clear.
    let due = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let deadlines = format!("/api/cases/{case_id}/deadlines");
    let r = app
        .post(
            &acme.token,
            &deadlines,
            &json!({"title": "Call Quixwright", "dueAt": due}),
        )
        .await;
    let deadline_id = r.json::<Value>().await.unwrap()["deadlineId"]
        .as_str()
        .unwrap()
        .to_string();
    raw_sql(
        &app,
        "UPDATE deadlines SET title = 'Call Quixwright', title_sealed = NULL WHERE id = $1",
        &deadline_id,
    )
    .await;
    assert!(contains(&database_contents(&app).await, "Call Quixwright"));
    assert_eq!(debtor_name(&app, &acme, &case_id).await, NAME);

    let out = crate::binary::command_on(&app, "migrate", master.expose())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same data read by a process started after the migration (as after an upgrade).
    let storage = app.config.storage.clone();
    let app = spawn_app_with(move |c| {
        c.policy.retention = Duration::ZERO;
        c.storage = storage;
    })
    .await;
    assert_eq!(done["migrated"], true);
    assert_eq!(
        done["resealed"]["values"]["cases.debtor_sealed"], 1,
        "{done}"
    );
    assert_eq!(done["resealed"]["values"]["notes.note_sealed"], 1, "{done}");
    assert_eq!(done["resealed"]["values"]["deadlines.title"], 1, "{done}");
    assert_eq!(
        raw_text(
            &app,
            "SELECT title FROM deadlines WHERE id = $1",
            &deadline_id
        )
        .await,
        "",
        "the clear title is gone from its row"
    );
    let list: Value = app.get(&acme.token, &deadlines).await.json().await.unwrap();
    assert_eq!(list["deadlines"][0]["title"], "Call Quixwright");
    for (table, column, id, _) in &legacy {
        let stored = app
            .store
            .subjects()
            .stored_value(table, column, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored[0], 2, "{table}.{column} under the debtor's key");
    }
    assert_eq!(debtor_name(&app, &acme, &case_id).await, NAME);
    let list: Value = app.get(&acme.token, &notes).await.json().await.unwrap();
    assert_eq!(list["notes"][0]["note"], "Quixwright will call back");

    set_status(&app, &acme, &case_id, "closed").await;
    erase(&app, &json!({"phone": PHONE, "reason": "request 9"})).await;
    assert_eq!(debtor_name(&app, &acme, &case_id).await, "[erased]");
    let list: Value = app.get(&acme.token, &notes).await.json().await.unwrap();
    assert_eq!(list["notes"][0]["note"], "[erased]");

    // Erased before anyone ran `parley migrate`: its earlier values go under its key first,
    // so the erasure reaches them.
    let other = case_of(&app, &acme, "kept.back@example.com", "+4529876545").await;
    let other_notes = format!("/api/cases/{other}/notes");
    let r = app
        .post(
            &acme.token,
            &other_notes,
            &json!({"note": "Quixwright senior"}),
        )
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let other_note = body["noteId"].as_str().unwrap().to_string();
    app.store
        .subjects()
        .overwrite_stored_value(
            "notes",
            "note_sealed",
            &other_note,
            &ring.seal_str(&format!("note:{other_note}"), "Quixwright senior"),
        )
        .await
        .unwrap();
    set_status(&app, &acme, &other, "closed").await;
    let got = erase(
        &app,
        &json!({"phone": "+4529876545", "reason": "request 10"}),
    )
    .await;
    assert_eq!(got["erased"][0]["caseId"], other.as_str(), "{got}");
    let list: Value = app
        .get(&acme.token, &other_notes)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["notes"][0]["note"], "[erased]");
    let stored = app
        .store
        .subjects()
        .stored_value("notes", "note_sealed", &other_note)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored[0], 2, "moved under the erased key");
}

#[tokio::test]
async fn an_erasure_takes_the_persons_unmatched_mail_and_sms_too() {
    let app = crate::helpers::spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    // An open case: kept (restricted), but mail that matched no case is no case's record.
    case_of(&app, &acme, EMAIL, PHONE).await;
    let unplaced = |from: &str, subject: &str| {
        format!(
            "From: {from}\r\nTo: someone@elsewhere.example\r\nSubject: {subject}\r\n\r\nYellowhammer\r\n"
        )
    };
    for (from, subject) in [(EMAIL, "mine"), ("other@example.com", "theirs")] {
        let r = app
            .post_mail(&app.admin.token, &unplaced(from, subject))
            .await;
        assert_eq!(r.status(), 202, "kept unmatched");
    }
    // An SMS from a number no case has.
    let r = crate::inbound::post_sms(&app, "+4529876599", "Yellowhammer here", "SM1").await;
    assert!(r.status().is_success());
    let listed: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["totalCount"], 3, "{listed}");

    let got = erase(&app, &json!({"email": EMAIL.to_uppercase(), "reason": "r"})).await;
    assert_eq!(got["unmatchedErased"], 1, "{got}");
    assert_eq!(got["retained"].as_array().map(Vec::len), Some(1), "{got}");
    let got = erase(&app, &json!({"phone": "+4529876599", "reason": "r"})).await;
    assert_eq!(got["unmatchedErased"], 1, "{got}");
    let left: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(left["totalCount"], 1, "{left}");
    assert_eq!(left["messages"][0]["from"], "other@example.com");
}
