//! Documents: the seed's upload, sealed storage, versions, downloads in the audit log.

use parley::domain::PartyKind;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

pub(crate) fn pdf_bytes(n: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7 invoice INV-2024-001 ".to_vec();
    v.extend((0..n).map(|i| (i * 31 % 251) as u8));
    v
}

pub(crate) async fn upload(
    app: &TestApp,
    token: &str,
    case_id: &str,
    form: Form,
) -> reqwest::Response {
    app.client
        .post(format!("{}/api/cases/{case_id}/documents", app.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub(crate) fn seed_form(bytes: Vec<u8>) -> Form {
    Form::new()
        .part(
            "file",
            Part::bytes(bytes)
                .file_name("invoice.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        )
        .text("documentType", "invoice")
        .text("description", "Original invoice INV-2024-001")
}

#[tokio::test]
async fn the_seed_upload_round_trips_sealed_and_audited() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let token = app.labelled_token(&creditor, "API User").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let bytes = pdf_bytes(245_760);

    let r = upload(&app, &token, case_id, seed_form(bytes.clone())).await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    let id = doc["documentId"].as_str().unwrap();
    assert!(id.starts_with("doc_"));
    assert_eq!(doc["caseId"], case_id);
    assert_eq!(doc["fileName"], "invoice.pdf");
    assert_eq!(doc["documentType"], "invoice");
    assert_eq!(doc["size"], bytes.len());
    assert_eq!(doc["uploadedBy"], "API User");
    assert_eq!(doc["version"], 1);

    let list: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["documents"][0]["documentId"], id);
    let meta: Value = app
        .get(&creditor.token, &format!("/api/documents/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["description"], "Original invoice INV-2024-001");

    let r = app
        .get(&creditor.token, &format!("/api/documents/{id}/download"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("invoice.pdf")
    );
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        bytes,
        "the same bytes come back"
    );

    // At rest: sealed, not the upload.
    let stored = std::fs::read(app.dir.path().join("documents").join(id)).unwrap();
    assert!(
        !stored.windows(20).any(|w| w == &bytes[..20]),
        "document bytes are not stored in the clear"
    );

    let log: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
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
    assert!(
        actions.ends_with(&["document.uploaded", "document.downloaded"]),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_tampered_file_does_not_download() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let doc: Value = upload(
        &app,
        &creditor.token,
        case["caseId"].as_str().unwrap(),
        seed_form(pdf_bytes(200_000)),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = doc["documentId"].as_str().unwrap();
    let path = app.dir.path().join("documents").join(id);
    let mut stored = std::fs::read(&path).unwrap();
    let len = stored.len();
    stored.truncate(len - 70_000);
    std::fs::write(&path, stored).unwrap();
    // The stream breaks off where the file was cut (sometimes before the headers are out):
    // the response never carries the whole document.
    let sent = app
        .request(
            reqwest::Method::GET,
            &creditor.token,
            &format!("/api/documents/{id}/download"),
        )
        .send()
        .await;
    let whole = match sent {
        Err(_) => false,
        Ok(r) => r.bytes().await.is_ok_and(|b| b.len() >= 200_000),
    };
    assert!(!whole, "a cut-short file never downloads whole");
}

#[tokio::test]
async fn new_versions_replace_the_listed_document() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let first: Value = upload(&app, &creditor.token, case_id, seed_form(pdf_bytes(10)))
        .await
        .json()
        .await
        .unwrap();
    let v2 = seed_form(pdf_bytes(20)).text(
        "replacesDocumentId",
        first["documentId"].as_str().unwrap().to_string(),
    );
    let r = upload(&app, &creditor.token, case_id, v2).await;
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["version"], 2);
    assert_eq!(second["replacesDocumentId"], first["documentId"]);
    let list: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["documentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["documentId"].as_str().unwrap()]);
    let old: Value = app
        .get(
            &creditor.token,
            &format!("/api/documents/{}", first["documentId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["latest"], false);
    let again = seed_form(pdf_bytes(5)).text(
        "replacesDocumentId",
        first["documentId"].as_str().unwrap().to_string(),
    );
    assert_problem(
        upload(&app, &creditor.token, case_id, again).await,
        422,
        "invalid_replaces",
    )
    .await;
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let app = spawn_app_with(|c| c.http.max_upload_bytes = 100_000).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();

    assert_problem(
        upload(
            &app,
            &creditor.token,
            case_id,
            seed_form(pdf_bytes(150_000)),
        )
        .await,
        413,
        "payload_too_large",
    )
    .await;
    let unknown = Form::new()
        .part("file", Part::bytes(pdf_bytes(10)).file_name("x.pdf"))
        .text("documentType", "receipt");
    assert_problem(
        upload(&app, &creditor.token, case_id, unknown).await,
        422,
        "invalid_document_type",
    )
    .await;
    let no_file = Form::new().text("documentType", "invoice");
    assert_problem(
        upload(&app, &creditor.token, case_id, no_file).await,
        422,
        "validation_failed",
    )
    .await;
    let r = app
        .client
        .post(format!("{}/api/cases/{case_id}/documents", app.base))
        .bearer_auth(&creditor.token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported_media_type").await;

    let stored: Vec<_> = std::fs::read_dir(app.dir.path().join("documents"))
        .unwrap()
        .collect();
    assert!(stored.is_empty(), "refused uploads leave no file");
    let list: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert!(list["documents"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn other_tenants_get_404_for_documents() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let outsider = app.party(PartyKind::Creditor, "Outsider").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let doc: Value = upload(&app, &creditor.token, case_id, seed_form(pdf_bytes(10)))
        .await
        .json()
        .await
        .unwrap();
    let id = doc["documentId"].as_str().unwrap();
    assert_problem(
        upload(&app, &outsider.token, case_id, seed_form(pdf_bytes(10))).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/cases/{case_id}/documents"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/documents/{id}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/documents/{id}/download"))
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn documents_can_live_sealed_in_an_s3_bucket() {
    let s3 = crate::peers::S3Peer::start().await;
    let url = s3.url();
    let (id_key, secret) = (s3.access_key.clone(), s3.secret_key.clone());
    let app = spawn_app_with(move |c| {
        c.storage.document_store = url;
        c.storage.s3_access_key_id = Some(id_key);
        c.storage.s3_secret_access_key = Some(parley::config::Secret::new(secret));
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    // More than two parts of the upload and two ranges of the download.
    let bytes = pdf_bytes(20 * 1024 * 1024 + 123);
    let r = upload(
        &app,
        &creditor.token,
        case["caseId"].as_str().unwrap(),
        seed_form(bytes.clone()),
    )
    .await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    let id = doc["documentId"].as_str().unwrap();
    let back = app
        .get(&creditor.token, &format!("/api/documents/{id}/download"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(back.as_ref() == bytes.as_slice(), "the same bytes back");

    let client = parley::documents::s3::S3::new(
        &s3.url(),
        Some(&s3.access_key),
        Some(&parley::config::Secret::new(s3.secret_key.clone())),
    )
    .unwrap();
    let stored = client.get(id).await.unwrap();
    assert!(
        stored.len() > bytes.len(),
        "sealed frames add their overhead"
    );
    assert!(
        !stored.windows(20).any(|w| w == &bytes[..20]),
        "sealed in the bucket too"
    );
    assert!(
        !app.dir.path().join("documents").join(id).exists(),
        "nothing kept locally"
    );
    // The server checks signatures: the right key id with a wrong secret is refused.
    let forged = parley::documents::s3::S3::new(
        &s3.url(),
        Some(&s3.access_key),
        Some(&parley::config::Secret::new("not-the-secret")),
    )
    .unwrap();
    let refused = forged.get(id).await.unwrap_err();
    assert!(format!("{refused:#}").contains("S3"), "{refused:#}");
}

#[tokio::test]
async fn curl_gets_413_for_a_file_over_the_limit_however_it_sends_it() {
    let app = spawn_app_with(|c| c.http.max_upload_bytes = 2 * 1024 * 1024).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let url = format!(
        "{}/api/cases/{}/documents",
        app.base,
        case["caseId"].as_str().unwrap()
    );
    let file = app.dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 3 * 1024 * 1024]).unwrap();
    // curl sends `Expect: 100-continue` with a Content-Length; then again chunked, without one.
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {}", creditor.token)])
            .args(["-F", &format!("file=@{}", file.display())])
            .args(["-F", "documentType=invoice"]);
        if let Some(h) = extra {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(&url).output().await.expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "413",
            "curl with {extra:?}"
        );
    }
    let list: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{}/documents", case["caseId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["documents"], json!([]), "nothing was kept");
}
