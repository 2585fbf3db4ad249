//! Attachments both ways: case documents sent as MIME parts of an email (streamed from the
//! document store), and the attachments of received mail filed as documents of the case.

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::documents::{pdf_bytes, seed_form, upload};
use crate::helpers::{Party, TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::peers::SmtpPeer;

async fn case_of(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case["caseId"].as_str().unwrap().to_string())
}

async fn upload_pdf(app: &TestApp, party: &Party, case_id: &str, bytes: Vec<u8>) -> String {
    let r = upload(app, &party.token, case_id, seed_form(bytes)).await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    doc["documentId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_attachment_arrives_byte_identical() {
    let smtp = SmtpPeer::start().await;
    let url = smtp.url();
    let app =
        spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(url))).await;
    let (creditor, case_id) = case_of(&app).await;
    // Several of the document store's chunks, and a length that is no multiple of 3.
    let bytes = pdf_bytes(700_001);
    let doc = upload_pdf(&app, &creditor, &case_id, bytes.clone()).await;
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "subject": "Your invoice", "body": "Attached.",
                    "attachments": [doc]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let sent: Value = r.json().await.unwrap();
    assert_eq!(sent["hasAttachments"], true);
    assert_eq!(sent["attachments"][0]["documentId"], doc.as_str());
    assert_eq!(sent["attachments"][0]["fileName"], "invoice.pdf");
    assert_eq!(sent["attachments"][0]["size"], bytes.len());
    app.deliver_due().await;
    let mails = smtp.wait_for(1).await;
    let parsed = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(parsed.subject(), Some("Your invoice"));
    let part = parsed.attachments().next().expect("one attachment");
    assert_eq!(part.attachment_name(), Some("invoice.pdf"));
    assert_eq!(part.contents(), bytes.as_slice(), "byte-identical");
    assert!(
        parsed.body_text(0).unwrap().contains("Attached."),
        "the text part is still there"
    );
    let id = sent["messageId"].as_str().unwrap();
    let got: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "sent");
    assert_eq!(got["attachments"][0]["contentType"], "application/pdf");
    // Nothing is left in the spool.
    let spool = app.dir.path().join("spool");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0);
}

#[tokio::test]
async fn attachments_are_refused_for_sms_other_cases_and_over_the_limit() {
    let app = spawn_app_with(|c| c.mail.max_attachment_bytes = 50_000).await;
    let (creditor, case_id) = case_of(&app).await;
    let small = upload_pdf(&app, &creditor, &case_id, pdf_bytes(10_000)).await;
    let big = upload_pdf(&app, &creditor, &case_id, pdf_bytes(60_000)).await;
    let other_case = app.create_case(&creditor, None).await;
    let foreign = upload_pdf(
        &app,
        &creditor,
        other_case["caseId"].as_str().unwrap(),
        pdf_bytes(10),
    )
    .await;
    let path = format!("/api/cases/{case_id}/messages");
    let email = |attachments: Value| json!({"messageType": "email", "subject": "S", "body": "B", "attachments": attachments});
    for (body, what) in [
        (
            json!({"messageType": "sms", "body": "B", "attachments": [small]}),
            "email only",
        ),
        (email(json!([foreign])), "not a document of this case"),
        (email(json!(["doc_nope"])), "not a document of this case"),
        (email(json!([big])), "at most 50000"),
        (email(json!([small, small])), "twice"),
    ] {
        let p = assert_problem(
            app.post(&creditor.token, &path, &body).await,
            422,
            "invalid_attachment",
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains(what), "{p}");
    }
    // Nothing was queued by any of them.
    let list: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    assert_eq!(list["totalCount"], 0, "{list}");
    let r = app
        .post(&creditor.token, &path, &email(json!([small])))
        .await;
    assert_eq!(r.status(), 201);
}

/// A reply with a PDF attached, to the case's own address.
fn mail_with_pdf(case_id: &str, pdf: &[u8], name: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: Debtor <debtor@example.com>\r\nTo: case-{case_id}@localhost\r\nSubject: Payment proof\r\n\
         Message-ID: <proof-{name}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n\
         --XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere is my receipt.\r\n\
         --XYZ\r\nContent-Type: application/pdf; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--XYZ--\r\n",
        lines.join("\r\n")
    )
}

#[tokio::test]
async fn an_inbound_pdf_becomes_a_downloadable_correspondence_document() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let pdf = pdf_bytes(120_000);
    let r = app
        .post_mail(
            &app.admin.token,
            &mail_with_pdf(&case_id, &pdf, "kvittering.pdf"),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let got: Value = r.json().await.unwrap();
    let message_id = got["messageId"].as_str().unwrap().to_string();
    // Filed by the queue (and its upload makes the usual system message).
    app.deliver_due().await;
    let docs: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let list = docs["documents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{docs}");
    let doc = &list[0];
    assert_eq!(doc["documentType"], "correspondence");
    assert_eq!(doc["fileName"], "kvittering.pdf");
    assert_eq!(doc["uploadedBy"], "debtor@example.com");
    let doc_id = doc["documentId"].as_str().unwrap();
    let r = app
        .get(
            &creditor.token,
            &format!("/api/documents/{doc_id}/download"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
    let m: Value = app
        .get(&creditor.token, &format!("/api/messages/{message_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["hasAttachments"], true);
    assert_eq!(m["attachments"][0]["documentId"], doc_id);
    // Filing again (a retried job) stores nothing twice.
    let other = parley::App::build(app.config.clone()).await.unwrap();
    assert_eq!(
        other
            .services()
            .documents
            .file_received_attachments(&parley::domain::MessageId::parse(&message_id).unwrap())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_unmatched_mails_attachment_is_filed_when_it_is_assigned() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let pdf = pdf_bytes(5_000);
    let raw = mail_with_pdf(&case_id, &pdf, "proof.pdf")
        .replace(&format!("case-{case_id}@localhost"), "info@example.com");
    let r = app.post_mail(&app.admin.token, &raw).await;
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["outcome"], "unmatched");
    app.deliver_due().await;
    let docs = format!("/api/cases/{case_id}/documents");
    let before: Value = app.get(&creditor.token, &docs).await.json().await.unwrap();
    assert_eq!(before["documents"], json!([]));
    let r = app
        .post(
            &app.admin.token,
            &format!(
                "/api/inbound/unmatched/{}/assign",
                got["inboundId"].as_str().unwrap()
            ),
            &json!({"caseId": case_id}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.deliver_due().await;
    let after: Value = app.get(&creditor.token, &docs).await.json().await.unwrap();
    assert_eq!(after["documents"][0]["fileName"], "proof.pdf", "{after}");
    let id = after["documents"][0]["documentId"].as_str().unwrap();
    let r = app
        .get(&creditor.token, &format!("/api/documents/{id}/download"))
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
}
