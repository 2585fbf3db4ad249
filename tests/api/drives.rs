//! Document systems: a SharePoint library through Graph's drives and a Google shared drive
//! through the Drive API (stateful fakes behind prism, which validates every request and
//! answer against the vendor's own description; tests/api/drive_fake.rs and
//! tests/api/gdrive_fake.rs). Documents mirrored into a folder per case, byte-identical,
//! once; files a person puts there taken in once; uploads resumed after a break; throttling
//! waited out; wrong credentials shown; erasure reaching the copies.

use std::time::Duration;

use parley::domain::PartyKind;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::box_fake::BoxFake;
use crate::connectors::{connector, create};
use crate::documents::upload;
use crate::drive_fake::DriveFake;
use crate::gdrive_fake::GDriveFake;
use crate::helpers::{Party, TestApp, spawn_app, spawn_app_with, spawn_app_with_clock};

const ROOT: &str = "Parley/Cases";

fn bytes(n: usize, seed: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7 ".to_vec();
    v.extend((0..n).map(|i| ((i * 31 + seed * 7) % 251) as u8));
    v
}

fn form(name: &str, content: Vec<u8>, kind: &str, replaces: Option<&str>) -> Form {
    let mut form = Form::new()
        .part(
            "file",
            Part::bytes(content)
                .file_name(name.to_string())
                .mime_str("application/pdf")
                .unwrap(),
        )
        .text("documentType", kind.to_string());
    if let Some(before) = replaces {
        form = form.text("replacesDocumentId", before.to_string());
    }
    form
}

async fn add(app: &TestApp, party: &Party, case_id: &str, form: Form) -> String {
    let r = upload(app, &party.token, case_id, form).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["documentId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn sharepoint(app: &TestApp, fake: &DriveFake, creditor: Option<&Party>) -> String {
    let made = create(
        app,
        &json!({"type": "sharepoint", "name": "Case files",
            "creditorId": creditor.map(|c| c.id.clone()),
            "settings": fake.settings(ROOT)}),
    )
    .await;
    assert_eq!(made["settings"]["clientSecret"], "***", "{made}");
    made["connectorId"].as_str().unwrap().to_string()
}

/// A case of Quinta Marlowe, the person the erasure tests erase: its id and number.
async fn quinta_case(app: &TestApp, creditor: &Party) -> (String, String) {
    let case: Value = app
        .post(
            &creditor.token,
            "/api/cases",
            &json!({"debtor": {"name": "Quinta Marlowe", "email": "quinta@example.com"},
                    "amount": {"value": "100.00", "currency": "DKK"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    (
        case["caseId"].as_str().unwrap().to_string(),
        case["caseNumber"].as_str().unwrap().to_string(),
    )
}

/// Closes a case (with no retention, its data may then be erased).
async fn close(app: &TestApp, creditor: &Party, case_id: &str) {
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "closed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// Quinta Marlowe's erasure, asked for by the admin: its answer.
async fn erase_quinta(app: &TestApp) -> Value {
    let r = app
        .post(
            &app.admin.token,
            "/api/data-subjects/erase",
            &json!({"email": "quinta@example.com", "reason": "Art. 17 request"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Asks for a round of the connector through the API and runs it.
async fn resync(app: &TestApp, id: &str) {
    let r = app
        .post(
            &app.admin.token,
            &format!("/api/connectors/{id}/sync"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.sync_connectors().await;
}

async fn case(app: &TestApp, creditor: &Party) -> (String, String) {
    let case = app.create_case(creditor, None).await;
    (
        case["caseId"].as_str().unwrap().to_string(),
        case["caseNumber"].as_str().unwrap().to_string(),
    )
}

async fn documents(app: &TestApp, party: &Party, case_id: &str) -> Vec<Value> {
    let list: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    list["documents"]
        .as_array()
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_default()
}

async fn download(app: &TestApp, party: &Party, document_id: &str) -> Vec<u8> {
    let r = app
        .get(
            &party.token,
            &format!("/api/documents/{document_id}/download"),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn documents_are_mirrored_into_the_case_folder_byte_identical_and_once() {
    let app = spawn_app().await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    // A document from before the connector, mirrored by its first round.
    let early = bytes(20_000, 1);
    add(
        &app,
        &acme,
        &case_id,
        form("contract.pdf", early.clone(), "contract", None),
    )
    .await;
    let id = sharepoint(&app, &fake, None).await;
    app.sync_connectors().await;

    let small = bytes(50_000, 2);
    let large = bytes(12 * 1024 * 1024, 3);
    let first = add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", small.clone(), "invoice", None),
    )
    .await;
    add(
        &app,
        &acme,
        &case_id,
        form("statement.pdf", large.clone(), "other", None),
    )
    .await;
    // The same name again: the service's way, a number before the extension.
    let again = bytes(30_000, 4);
    add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", again.clone(), "invoice", None),
    )
    .await;
    app.deliver_due().await;

    let folder = format!("{ROOT}/{number}");
    let files = fake.files_in(&folder);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "contract.pdf",
            "invoice 1.pdf",
            "invoice.pdf",
            "statement.pdf"
        ]
    );
    let content = |name: &str| {
        files
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .content
            .clone()
    };
    assert!(content("contract.pdf") == early);
    assert!(content("invoice.pdf") == small);
    assert!(content("invoice 1.pdf") == again);
    assert!(content("statement.pdf") == large, "the 12 MiB file differs");
    {
        let s = fake.state.lock().unwrap();
        // Under 4 MiB in one PUT; the 12 MiB file in ranges of 10 MiB and 2 MiB.
        assert_eq!(s.small_puts, 3);
        assert_eq!(s.sessions_opened, 1);
        assert_eq!(s.ranges, 2);
        assert!(s.largest_body <= 10 * 1024 * 1024, "{}", s.largest_body);
    }
    let shown = connector(&app, &id).await;
    assert_eq!(shown["status"], "active", "{shown}");
    // The document says where it is mirrored, with the service's link.
    let doc: Value = app
        .get(&acme.token, &format!("/api/documents/{first}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["mirrors"][0]["connectorId"], id.as_str(), "{doc}");
    assert_eq!(doc["mirrors"][0]["type"], "sharepoint");
    assert!(
        doc["mirrors"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://agency.sharepoint.com/"),
        "{doc}"
    );

    // A new version becomes a new version of the same remote file.
    let newer = bytes(40_000, 5);
    add(
        &app,
        &acme,
        &case_id,
        form("invoice-v2.pdf", newer.clone(), "invoice", Some(&first)),
    )
    .await;
    app.deliver_due().await;
    let files = fake.files_in(&folder);
    assert_eq!(files.len(), 4, "a version is not a second file");
    let invoice = files.iter().find(|f| f.name == "invoice.pdf").unwrap();
    assert!(invoice.content == newer);
    assert_eq!(
        invoice.versions, 2,
        "the first content, then the new version"
    );

    // Its own files coming back through the delta are not taken in, and nothing is sent
    // twice.
    resync(&app, &id).await;
    app.deliver_due().await;
    assert_eq!(documents(&app, &acme, &case_id).await.len(), 4);
    assert_eq!(fake.files_in(&folder).len(), 4);
    assert_eq!(fake.state.lock().unwrap().small_puts, 4);

    // A second connector mirrors the latest versions of what was there before it.
    let second = create(
        &app,
        &json!({"type": "sharepoint", "name": "Second library", "settings": fake.settings("Second")}),
    )
    .await;
    resync(&app, second["connectorId"].as_str().unwrap()).await;
    app.deliver_due().await;
    let copied = fake.files_in(&format!("Second/{number}"));
    assert_eq!(copied.len(), 4, "{copied:?}");
    assert!(copied.iter().any(|f| f.content == newer));
    assert_eq!(fake.files_in(&folder).len(), 4, "nothing more in the first");
    fake.prism.assert_clean();
}

#[tokio::test]
async fn a_file_put_into_a_case_folder_is_taken_in_once_and_never_mirrored_back() {
    let app = spawn_app().await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let globex = app.party(PartyKind::Creditor, "Globex").await;
    let (case_id, number) = case(&app, &acme).await;
    let (other_id, other_number) = case(&app, &globex).await;
    let id = sharepoint(&app, &fake, Some(&acme)).await;
    app.sync_connectors().await;

    let receipt = bytes(70_000, 6);
    let proof = bytes(5 * 1024 * 1024, 7);
    fake.put(&format!("{ROOT}/{number}"), "receipt.pdf", &receipt);
    fake.put(
        &format!("{ROOT}/{number}/payment_proof"),
        "bank transfer.pdf",
        &proof,
    );
    // Another creditor's case: not this connector's to fill.
    fake.put(
        &format!("{ROOT}/{other_number}"),
        "foreign.pdf",
        b"%PDF-1.7 x",
    );
    // Not under the root: nothing of parley's.
    fake.put("Elsewhere", "private.pdf", b"%PDF-1.7 y");
    resync(&app, &id).await;

    let docs = documents(&app, &acme, &case_id).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    let by_name = |name: &str| docs.iter().find(|d| d["fileName"] == name).unwrap().clone();
    let taken = by_name("receipt.pdf");
    assert_eq!(taken["documentType"], "other");
    assert_eq!(taken["uploadedBy"], "Case files", "{taken}");
    let typed = by_name("bank transfer.pdf");
    assert_eq!(typed["documentType"], "payment_proof");
    let taken_id = taken["documentId"].as_str().unwrap();
    assert!(download(&app, &acme, taken_id).await == receipt);
    let typed_id = typed["documentId"].as_str().unwrap();
    assert!(download(&app, &acme, typed_id).await == proof);
    assert!(documents(&app, &globex, &other_id).await.is_empty());

    // Once: a second round, a forgotten delta state and the mirror jobs change nothing.
    resync(&app, &id).await;
    fake.forget_sync_state();
    resync(&app, &id).await;
    app.deliver_due().await;
    assert_eq!(documents(&app, &acme, &case_id).await.len(), 2);
    assert_eq!(fake.files_in(&format!("{ROOT}/{number}")).len(), 1);
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(s.small_puts + s.sessions_opened, 0, "nothing was sent back");
        assert_eq!(s.downloads, 2);
    }
    let shown = connector(&app, &id).await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert!(shown["lastSyncAt"].is_string());
    fake.prism.assert_clean();
}

#[tokio::test]
async fn an_upload_broken_mid_session_resumes_where_the_service_stopped() {
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = sharepoint(&app, &fake, None).await;
    app.sync_connectors().await;

    let large = bytes(25 * 1024 * 1024, 8);
    fake.state.lock().unwrap().break_ranges_after = Some(1);
    add(
        &app,
        &acme,
        &case_id,
        form("ledger.pdf", large.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    let shown = connector(&app, &id).await;
    assert_eq!(shown["status"], "failing", "{shown}");
    assert!(
        shown["lastError"].as_str().unwrap().contains("503"),
        "{shown}"
    );

    // The service is back; the job's retry comes round.
    fake.state.lock().unwrap().break_ranges_after = None;
    clock.advance(Duration::from_secs(2 * 3600));
    app.deliver_due().await;
    let files = fake.files_in(&format!("{ROOT}/{number}"));
    assert_eq!(files.len(), 1, "one file, not two");
    let at = files[0]
        .content
        .iter()
        .zip(&large)
        .position(|(a, b)| a != b);
    assert!(
        files[0].content == large,
        "the resumed file differs: {} bytes, first difference at {at:?}",
        files[0].content.len()
    );
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(
            s.sessions_opened, 1,
            "the session was resumed, not begun again"
        );
        // 10 MiB accepted, then (after the refused ones) the 10 MiB and 5 MiB left.
        assert!(s.refused >= 1);
        assert_eq!(s.ranges - s.refused, 3);
    }
    assert_eq!(connector(&app, &id).await["status"], "active");
    fake.prism.assert_clean();
}

#[tokio::test]
async fn a_process_that_dies_mid_upload_leaves_a_session_another_process_finishes() {
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    sharepoint(&app, &fake, None).await;
    app.sync_connectors().await;
    let large = bytes(25 * 1024 * 1024, 9);
    add(
        &app,
        &acme,
        &case_id,
        form("ledger.pdf", large.clone(), "other", None),
    )
    .await;

    // Graph takes the first two ranges; the process dies while the second is answered.
    let told = std::sync::Arc::new(tokio::sync::Notify::new());
    fake.state.lock().unwrap().hang_after_ranges = Some((1, told.clone()));
    tokio::select! {
        () = async { while app.delivery.run_once().await.unwrap() > 0 {} } => {
            panic!("the range was never answered, so the jobs cannot all end")
        }
        () = told.notified() => {}
    }
    assert!(fake.files_in(&format!("{ROOT}/{number}")).len() <= 1);

    // The job's lease runs out; another process on the same database takes it up and goes
    // on from the range Graph has, in the same session.
    clock.advance(Duration::from_secs(120));
    let again = parley::App::build_with_clock(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let delivery = again.delivery().unwrap();
    while delivery.run_once().await.unwrap() > 0 {}
    let files = fake.files_in(&format!("{ROOT}/{number}"));
    assert_eq!(files.len(), 1, "one file, not two");
    assert!(
        files[0].content == large,
        "the finished file is the document"
    );
    let s = fake.state.lock().unwrap();
    assert_eq!(
        s.sessions_opened, 1,
        "the session was resumed, not begun again"
    );
    assert_eq!(
        s.ranges, 3,
        "10 MiB, 10 MiB (taken as the process died), 5 MiB"
    );
}

#[tokio::test]
async fn throttling_is_waited_out_and_a_wrong_secret_shows_on_the_connector() {
    let app = spawn_app().await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = sharepoint(&app, &fake, None).await;
    app.sync_connectors().await;
    fake.state.lock().unwrap().throttle = 2;
    let small = bytes(10_000, 9);
    add(
        &app,
        &acme,
        &case_id,
        form("note.pdf", small.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    let files = fake.files_in(&format!("{ROOT}/{number}"));
    assert_eq!(files.len(), 1);
    assert!(files[0].content == small);
    assert_eq!(fake.state.lock().unwrap().throttled, 2);
    assert_eq!(connector(&app, &id).await["status"], "active");

    let mut settings = fake.settings("Elsewhere");
    settings["clientSecret"] = json!("not-the-secret");
    let wrong = create(
        &app,
        &json!({"type": "sharepoint", "name": "Wrong", "settings": settings}),
    )
    .await;
    let wrong_id = wrong["connectorId"].as_str().unwrap();
    resync(&app, wrong_id).await;
    let shown = connector(&app, wrong_id).await;
    assert_eq!(shown["status"], "failing", "{shown}");
    let error = shown["lastError"].as_str().unwrap();
    assert!(error.contains("invalid_client"), "{error}");
    assert!(!shown.to_string().contains("not-the-secret"));
    fake.prism.assert_clean();
}

#[tokio::test]
async fn settings_name_a_folder_the_services_take() {
    let app = spawn_app().await;
    let fake = DriveFake::start().await;
    for folder in ["", "a//b", "../x", "Cases.", " Cases", "a:b", "a\u{1}b"] {
        let r = app
            .post(
                &app.admin.token,
                "/api/connectors",
                &json!({"type": "sharepoint", "name": "Case files",
                    "settings": fake.settings(folder)}),
            )
            .await;
        assert_eq!(r.status(), 422, "{folder:?}");
    }
    let made = create(
        &app,
        &json!({"type": "sharepoint", "name": "Case files",
            "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "driveId": "d"}}),
    )
    .await;
    assert_eq!(made["settings"]["folder"], "parley");
    assert_eq!(made["settings"]["graphUrl"], "https://graph.microsoft.com");
}

#[tokio::test]
async fn an_erasure_deletes_the_case_folder_and_says_so() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = quinta_case(&app, &acme).await;
    let (kept_id, kept_number) = self::case(&app, &acme).await;
    let id = sharepoint(&app, &fake, None).await;
    add(
        &app,
        &acme,
        &case_id,
        form("quinta.pdf", bytes(1_000, 1), "other", None),
    )
    .await;
    add(
        &app,
        &acme,
        &kept_id,
        form("other.pdf", bytes(1_000, 2), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert!(fake.at(&format!("{ROOT}/{number}")).is_some());
    close(&app, &acme, &case_id).await;

    // The service refuses for a moment: the erasure says so and a later round deletes it.
    fake.state.lock().unwrap().throttle = 100;
    let answer = erase_quinta(&app).await;
    assert_eq!(answer["erased"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(
        answer["remoteCopies"],
        json!([{"connectorId": id, "type": "sharepoint", "caseId": case_id, "status": "failed"}])
    );
    assert!(fake.at(&format!("{ROOT}/{number}")).is_some());
    assert_eq!(connector(&app, &id).await["status"], "failing");

    fake.state.lock().unwrap().throttle = 0;
    resync(&app, &id).await;
    assert!(
        fake.at(&format!("{ROOT}/{number}")).is_none(),
        "the folder is gone"
    );
    assert!(
        fake.at(&format!("{ROOT}/{kept_number}")).is_some(),
        "the other case's stays"
    );
    assert_eq!(connector(&app, &id).await["status"], "active");
    // Asked again: nothing left to delete.
    let again = erase_quinta(&app).await;
    assert_eq!(again["remoteCopies"], json!([]));
    fake.prism.assert_clean();
}

// ------------------------------------------------------------------------------------------
// Google Drive (a shared drive's folder; tests/api/gdrive_fake.rs)

async fn google_drive(app: &TestApp, fake: &GDriveFake) -> String {
    let made = create(
        app,
        &json!({"type": "google_drive", "name": "Shared drive", "settings": fake.settings()}),
    )
    .await;
    assert_eq!(made["settings"]["serviceAccount"], "***", "{made}");
    made["connectorId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn google_drive_mirrors_small_and_large_files_once_and_keeps_versions() {
    let app = spawn_app().await;
    let fake = GDriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = google_drive(&app, &fake).await;
    app.sync_connectors().await;
    let small = bytes(60_000, 11);
    let large = bytes(12 * 1024 * 1024, 12);
    let first = add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", small.clone(), "invoice", None),
    )
    .await;
    add(
        &app,
        &acme,
        &case_id,
        form("statement.pdf", large.clone(), "other", None),
    )
    .await;
    add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", bytes(10, 13), "invoice", None),
    )
    .await;
    app.deliver_due().await;

    let files = fake.files_in(&number);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["invoice 1.pdf", "invoice.pdf", "statement.pdf"]);
    assert!(files[1].content == small);
    assert!(files[2].content == large, "the 12 MiB file differs");
    {
        let s = fake.state.lock().unwrap();
        assert_eq!((s.media_uploads, s.sessions_opened, s.chunks), (2, 1, 2));
        assert!(s.largest_body <= 10 * 1024 * 1024);
    }
    let doc: Value = app
        .get(&acme.token, &format!("/api/documents/{first}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["mirrors"][0]["type"], "google_drive", "{doc}");
    assert!(
        doc["mirrors"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://drive.google.com/")
    );

    let newer = bytes(70_000, 14);
    add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", newer.clone(), "invoice", Some(&first)),
    )
    .await;
    app.deliver_due().await;
    resync(&app, &id).await;
    app.deliver_due().await;
    let files = fake.files_in(&number);
    assert_eq!(files.len(), 3);
    assert!(files[1].content == newer);
    assert_eq!(files[1].revisions, 2, "a new revision of the same file");
    assert_eq!(documents(&app, &acme, &case_id).await.len(), 3);
    assert_eq!(connector(&app, &id).await["status"], "active");
    fake.prism.assert_clean();
}

#[tokio::test]
async fn google_drive_takes_in_a_persons_file_once_and_resumes_a_broken_upload() {
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = GDriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    // Files from before the connector: its first round lists them.
    fake.put(&number, "letter.pdf", &bytes(3_000, 15));
    let id = google_drive(&app, &fake).await;
    app.sync_connectors().await;
    let proof = bytes(90_000, 16);
    fake.put(&format!("{number}/payment_proof"), "transfer.pdf", &proof);
    resync(&app, &id).await;
    fake.forget_sync_state();
    resync(&app, &id).await;
    let docs = documents(&app, &acme, &case_id).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    let typed = docs
        .iter()
        .find(|d| d["fileName"] == "transfer.pdf")
        .unwrap();
    assert_eq!(typed["documentType"], "payment_proof");
    assert!(download(&app, &acme, typed["documentId"].as_str().unwrap()).await == proof);
    assert_eq!(fake.state.lock().unwrap().downloads, 2);

    let large = bytes(25 * 1024 * 1024, 17);
    fake.state.lock().unwrap().break_chunks_after = Some(1);
    add(
        &app,
        &acme,
        &case_id,
        form("ledger.pdf", large.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert_eq!(connector(&app, &id).await["status"], "failing");
    fake.state.lock().unwrap().break_chunks_after = None;
    clock.advance(Duration::from_secs(2 * 3600));
    app.deliver_due().await;
    let ledger: Vec<_> = fake
        .files_in(&number)
        .into_iter()
        .filter(|f| f.name.starts_with("ledger"))
        .collect();
    assert_eq!(ledger.len(), 1, "one file, not two");
    assert!(ledger[0].content == large, "the resumed file differs");
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(s.sessions_opened, 1, "resumed, not begun again");
        assert_eq!(s.chunks - s.refused, 3);
    }
    assert_eq!(connector(&app, &id).await["status"], "active");
    fake.prism.assert_clean();
}

#[tokio::test]
async fn google_drive_erasure_deletes_the_folder_and_a_foreign_key_is_refused() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let fake = GDriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = quinta_case(&app, &acme).await;
    let id = google_drive(&app, &fake).await;
    add(
        &app,
        &acme,
        &case_id,
        form("quinta.pdf", bytes(1_000, 18), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert!(fake.exists(&number));
    close(&app, &acme, &case_id).await;
    let answer = erase_quinta(&app).await;
    assert_eq!(
        answer["remoteCopies"],
        json!([{"connectorId": id, "type": "google_drive", "caseId": case_id, "status": "deleted"}])
    );
    assert!(!fake.exists(&number));

    // A key the token endpoint does not know.
    let other = GDriveFake::start().await;
    let mut settings = fake.settings();
    settings["serviceAccount"] = other.settings()["serviceAccount"].clone();
    settings["serviceAccount"]["token_uri"] =
        fake.settings()["serviceAccount"]["token_uri"].clone();
    let wrong = create(
        &app,
        &json!({"type": "google_drive", "name": "Wrong", "settings": settings}),
    )
    .await;
    let wrong_id = wrong["connectorId"].as_str().unwrap();
    resync(&app, wrong_id).await;
    let shown = connector(&app, wrong_id).await;
    assert_eq!(shown["status"], "reauthorization_required", "{shown}");
    assert!(
        shown["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{shown}"
    );
    fake.prism.assert_clean();
}

// ------------------------------------------------------------------------------------------
// Box (tests/api/box_fake.rs)

async fn box_connector(app: &TestApp, fake: &BoxFake) -> String {
    let folder = fake.folder("Collections");
    let made = create(
        app,
        &json!({"type": "box", "name": "Box", "settings": fake.settings(&folder)}),
    )
    .await;
    assert_eq!(made["settings"]["clientSecret"], "***", "{made}");
    made["connectorId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn box_mirrors_small_files_whole_and_large_ones_in_digested_parts_once() {
    let app = spawn_app().await;
    let fake = BoxFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = box_connector(&app, &fake).await;
    app.sync_connectors().await;
    let small = bytes(80_000, 21);
    let large = bytes(25 * 1024 * 1024, 22);
    let first = add(
        &app,
        &acme,
        &case_id,
        form("invoice.pdf", small.clone(), "invoice", None),
    )
    .await;
    add(
        &app,
        &acme,
        &case_id,
        form("ledger.pdf", large.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    let folder = format!("Collections/{number}");
    let files = fake.files_in(&folder);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["invoice.pdf", "ledger.pdf"]);
    assert!(files[0].content == small);
    assert!(files[1].content == large, "the 25 MiB file differs");
    {
        let s = fake.state.lock().unwrap();
        // 8 MiB parts: 4 of them; one commit (after a 202).
        assert_eq!(
            (s.uploads, s.sessions_opened, s.parts, s.commits),
            (1, 1, 4, 1)
        );
        assert!(s.largest_body <= 8 * 1024 * 1024);
    }
    let newer = bytes(90_000, 23);
    add(
        &app,
        &acme,
        &case_id,
        form("invoice-2.pdf", newer.clone(), "invoice", Some(&first)),
    )
    .await;
    app.deliver_due().await;
    resync(&app, &id).await;
    app.deliver_due().await;
    let files = fake.files_in(&folder);
    assert_eq!(files.len(), 2);
    assert!(files[0].content == newer);
    assert_eq!(files[0].versions, 2);
    assert_eq!(documents(&app, &acme, &case_id).await.len(), 2);
    let doc: Value = app
        .get(&acme.token, &format!("/api/documents/{first}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["mirrors"][0]["type"], "box", "{doc}");
    assert_eq!(connector(&app, &id).await["status"], "active");
    fake.prism.assert_clean();
}

#[tokio::test]
async fn box_takes_in_a_persons_file_once_and_resumes_a_session_from_its_parts() {
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = BoxFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = box_connector(&app, &fake).await;
    app.sync_connectors().await;
    let proof = bytes(40_000, 24);
    fake.put(
        &format!("Collections/{number}/payment_proof"),
        "receipt.pdf",
        &proof,
    );
    resync(&app, &id).await;
    resync(&app, &id).await;
    let docs = documents(&app, &acme, &case_id).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["documentType"], "payment_proof");
    assert!(download(&app, &acme, docs[0]["documentId"].as_str().unwrap()).await == proof);

    let large = bytes(21 * 1024 * 1024, 25);
    fake.state.lock().unwrap().break_parts_after = Some(1);
    add(
        &app,
        &acme,
        &case_id,
        form("big.pdf", large.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert_eq!(connector(&app, &id).await["status"], "failing");
    fake.state.lock().unwrap().break_parts_after = None;
    clock.advance(Duration::from_secs(2 * 3600));
    app.deliver_due().await;
    let big: Vec<_> = fake
        .files_in(&format!("Collections/{number}"))
        .into_iter()
        .filter(|f| f.name.starts_with("big"))
        .collect();
    assert_eq!(big.len(), 1);
    assert!(big[0].content == large, "the resumed file differs");
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(s.sessions_opened, 1, "resumed from its parts");
        assert_eq!(s.parts - s.refused, 3);
    }
    fake.prism.assert_clean();
}

#[tokio::test]
async fn box_erasure_deletes_the_folder_and_wrong_credentials_show() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let fake = BoxFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = quinta_case(&app, &acme).await;
    let id = box_connector(&app, &fake).await;
    add(
        &app,
        &acme,
        &case_id,
        form("quinta.pdf", bytes(1_000, 26), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert!(fake.at(&format!("Collections/{number}")).is_some());
    close(&app, &acme, &case_id).await;
    let answer = erase_quinta(&app).await;
    assert_eq!(
        answer["remoteCopies"],
        json!([{"connectorId": id, "type": "box", "caseId": case_id, "status": "deleted"}])
    );
    assert!(fake.at(&format!("Collections/{number}")).is_none());

    let mut settings = fake.settings("0");
    settings["clientSecret"] = json!("wrong");
    let wrong = create(
        &app,
        &json!({"type": "box", "name": "Wrong", "settings": settings}),
    )
    .await;
    let wrong_id = wrong["connectorId"].as_str().unwrap();
    resync(&app, wrong_id).await;
    let shown = connector(&app, wrong_id).await;
    assert_eq!(shown["status"], "failing", "{shown}");
    assert!(
        shown["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{shown}"
    );
    // Exactly one of enterpriseId and userId.
    let mut both = fake.settings("0");
    both["userId"] = json!("12345");
    let r = app
        .post(
            &app.admin.token,
            "/api/connectors",
            &json!({"type": "box", "name": "Both", "settings": both}),
        )
        .await;
    assert_eq!(r.status(), 422);
    fake.prism.assert_clean();
}

// ------------------------------------------------------------------------------------------
// Dropbox: a stateful fake in Python whose every argument and answer goes through the
// official SDK's stone validators (tests/peers/dropbox_fake.py).

struct DropboxFake {
    base: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

impl DropboxFake {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers/dropbox_fake.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the Dropbox fake (scripts/test installs the dropbox SDK)");
        let mut line = String::new();
        tokio::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!("the Dropbox fake did not start (is the dropbox SDK installed?): {line:?}")
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _child: child,
        }
    }

    fn settings(&self, folder: &str) -> Value {
        json!({"appKey": "k3yq0x6k1bqzg1a", "appSecret": "s3cr3tqz1m0v7k2",
            "refreshToken": "rQ8dzCkVqYAAAAAAAAAAAfQ3Cq2cHnQ2zNFRyZkzE-lb6nGpXr6H9V2gmjnlp1wN",
            "folder": folder, "apiUrl": self.base, "contentUrl": self.base})
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_state", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn control(&self, body: Value) {
        let r = self
            .http
            .post(format!("{}/_control", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn put(&self, path: &str, content: &[u8]) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        let r = self
            .http
            .post(format!("{}/_put", self.base))
            .json(&json!({"path": path, "base64": b64}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// A file's SHA-256 and revisions, by its lowercased path.
    async fn file(&self, path: &str) -> Option<(String, u64)> {
        let state = self.state().await;
        let f = &state["files"][path.to_lowercase()];
        (f["tag"] == "file").then(|| {
            (
                f["sha256"].as_str().unwrap().to_string(),
                f["revs"].as_u64().unwrap(),
            )
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn dropbox_connector(app: &TestApp, fake: &DropboxFake, extra: Value) -> String {
    let mut settings = fake.settings("Parley/Cases");
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    let made = create(
        app,
        &json!({"type": "dropbox", "name": "Dropbox", "settings": settings}),
    )
    .await;
    assert_eq!(made["settings"]["refreshToken"], "***", "{made}");
    made["connectorId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn dropbox_mirrors_through_uploads_and_sessions_for_a_team_member_once() {
    let app = spawn_app().await;
    let fake = DropboxFake::start().await;
    fake.control(json!({"team": true})).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = dropbox_connector(
        &app,
        &fake,
        json!({"teamMemberId": "dbmid:AAHhy7WsR0x-u4ZCqiDl5Fz5zvuL3kmspwU"}),
    )
    .await;
    app.sync_connectors().await;
    let small = bytes(70_000, 31);
    let large = bytes(20 * 1024 * 1024 + 5, 32);
    let first = add(
        &app,
        &acme,
        &case_id,
        form("faktura æøå.pdf", small.clone(), "invoice", None),
    )
    .await;
    add(
        &app,
        &acme,
        &case_id,
        form("ledger.pdf", large.clone(), "other", None),
    )
    .await;
    fake.control(json!({"throttle": 1})).await;
    app.deliver_due().await;
    let folder = format!("/parley/cases/{number}");
    assert_eq!(
        fake.file(&format!("{folder}/faktura æøå.pdf")).await,
        Some((sha256_hex(&small), 1))
    );
    assert_eq!(
        fake.file(&format!("{folder}/ledger.pdf")).await,
        Some((sha256_hex(&large), 1))
    );
    let state = fake.state().await;
    assert_eq!(state["counts"]["upload"], 1);
    assert_eq!(
        (
            &state["counts"]["start"],
            &state["counts"]["append"],
            &state["counts"]["finish"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{state}"
    );
    assert_eq!(state["throttled"], 1);
    assert!(state["largest_body"].as_u64().unwrap() <= 8 * 1024 * 1024);

    let newer = bytes(50_000, 33);
    add(
        &app,
        &acme,
        &case_id,
        form("faktura æøå.pdf", newer.clone(), "invoice", Some(&first)),
    )
    .await;
    app.deliver_due().await;
    resync(&app, &id).await;
    app.deliver_due().await;
    assert_eq!(
        fake.file(&format!("{folder}/faktura æøå.pdf")).await,
        Some((sha256_hex(&newer), 2)),
        "a new revision of the same file"
    );
    assert_eq!(documents(&app, &acme, &case_id).await.len(), 2);
    assert_eq!(connector(&app, &id).await["status"], "active");
}

#[tokio::test]
async fn dropbox_takes_in_a_persons_file_once_and_resumes_at_the_offset_it_has() {
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = DropboxFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = dropbox_connector(&app, &fake, json!({})).await;
    app.sync_connectors().await;
    let proof = bytes(30_000, 34);
    fake.put(
        &format!("/Parley/Cases/{number}/payment_proof/receipt.pdf"),
        &proof,
    )
    .await;
    resync(&app, &id).await;
    fake.control(json!({"forget_cursors": true})).await;
    resync(&app, &id).await;
    let docs = documents(&app, &acme, &case_id).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["documentType"], "payment_proof");
    assert!(download(&app, &acme, docs[0]["documentId"].as_str().unwrap()).await == proof);

    let large = bytes(30 * 1024 * 1024, 35);
    fake.control(json!({"break_appends_after": 1})).await;
    add(
        &app,
        &acme,
        &case_id,
        form("big.pdf", large.clone(), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert_eq!(connector(&app, &id).await["status"], "failing");
    fake.control(json!({"break_appends_after": null})).await;
    clock.advance(Duration::from_secs(2 * 3600));
    app.deliver_due().await;
    assert_eq!(
        fake.file(&format!("/parley/cases/{number}/big.pdf")).await,
        Some((sha256_hex(&large), 1))
    );
    let state = fake.state().await;
    assert_eq!(
        state["counts"]["start"], 1,
        "resumed, not begun again: {state}"
    );
    assert_eq!(connector(&app, &id).await["status"], "active");
}

#[tokio::test]
async fn dropbox_erasure_deletes_the_folder_and_a_revoked_token_asks_for_reauthorization() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let fake = DropboxFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = quinta_case(&app, &acme).await;
    let id = dropbox_connector(&app, &fake, json!({})).await;
    add(
        &app,
        &acme,
        &case_id,
        form("quinta.pdf", bytes(1_000, 36), "other", None),
    )
    .await;
    app.deliver_due().await;
    assert!(
        fake.file(&format!("/parley/cases/{number}/quinta.pdf"))
            .await
            .is_some()
    );
    close(&app, &acme, &case_id).await;
    let answer = erase_quinta(&app).await;
    assert_eq!(
        answer["remoteCopies"],
        json!([{"connectorId": id, "type": "dropbox", "caseId": case_id, "status": "deleted"}])
    );
    assert!(
        fake.file(&format!("/parley/cases/{number}/quinta.pdf"))
            .await
            .is_none()
    );

    let wrong = dropbox_connector(&app, &fake, json!({"refreshToken": "revoked"})).await;
    resync(&app, &wrong).await;
    let shown = connector(&app, &wrong).await;
    assert_eq!(shown["status"], "reauthorization_required", "{shown}");
    assert!(
        shown["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{shown}"
    );
}

/// A file larger than documents may be (`PARLEY_MAX_UPLOAD_BYTES`) put into a case folder
/// is left where it is, its bytes never read; the round goes on with the others.
#[tokio::test]
async fn a_file_larger_than_a_document_may_be_is_left_on_the_service() {
    let app = spawn_app_with(|c| c.http.max_upload_bytes = 100_000).await;
    let fake = DriveFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme).await;
    let id = sharepoint(&app, &fake, None).await;
    app.sync_connectors().await;
    fake.put(&format!("{ROOT}/{number}"), "huge.pdf", &bytes(300_000, 41));
    let fine = bytes(20_000, 42);
    fake.put(&format!("{ROOT}/{number}"), "fine.pdf", &fine);
    resync(&app, &id).await;
    let docs = documents(&app, &acme, &case_id).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["fileName"], "fine.pdf");
    assert_eq!(
        fake.state.lock().unwrap().downloads,
        1,
        "the huge one is not read"
    );
    assert_eq!(connector(&app, &id).await["status"], "active");
    fake.prism.assert_clean();
}
