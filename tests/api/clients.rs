//! The seed's examples sent by the clients people use: Node.js `fetch` and Python.

use std::path::PathBuf;

use parley::domain::PartyKind;
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::spawn_app;

async fn run(program: &str, script: &str, base: &str, token: &str, case: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new(program)
        .arg(path)
        .env("PARLEY_BASE", base)
        .env("PARLEY_TOKEN", token)
        .env("PARLEY_CASE", case)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn seed_examples_work_from_node_fetch_and_python() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();

    let email = run(
        "node",
        "send_message.mjs",
        &app.base,
        &creditor.token,
        case_id,
    )
    .await;
    assert!(
        email["messageId"].as_str().unwrap().starts_with("msg_"),
        "{email}"
    );
    assert_eq!(email["caseId"], case_id);
    assert_eq!(email["status"], "queued");
    assert_eq!(email["subject"], "Payment Reminder - Invoice INV-2024-001");

    let sms = run(
        "python3",
        "send_message.py",
        &app.base,
        &creditor.token,
        case_id,
    )
    .await;
    assert_eq!(sms["status"], 201);
    assert_eq!(sms["body"]["messageType"], "sms");
    assert_eq!(sms["body"]["to"][0], "+4512345678");
    assert_eq!(app.deliver_due().await, 2);
}

/// The seed's flow through a client that openapi-python-client generates from the served
/// OpenAPI document: every answer parses into its typed model (a schema that did not fit
/// the answer would fail here), and the answers say what the server holds.
#[tokio::test]
async fn a_client_generated_from_the_openapi_document_runs_the_seed_flow() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let work = tempfile::tempdir().unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/generated_client.py");
    let out = Command::new("python3")
        .arg(path)
        .env("PARLEY_BASE", &app.base)
        .env("PARLEY_TOKEN", &creditor.token)
        .env("PARLEY_WORK", work.path())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the generated client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flow: Value = serde_json::from_slice(&out.stdout).unwrap();
    let parsed: Vec<(&str, &str)> = flow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["parsed"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parsed,
        [
            ("createCase", "CaseResponse"),
            ("getCase", "CaseResponse"),
            ("listTemplates", "TemplateList"),
            ("sendMessage email", "MessageResponse"),
            ("sendMessage sms", "MessageResponse"),
            ("listMessages", "MessageList"),
            ("getMessage", "MessageResponse"),
            ("getDeliveryReport", "DeliveryReport"),
            ("uploadDocument", "DocumentResponse"),
            ("listDocuments", "DocumentList"),
            ("downloadDocument", "bytes"),
            ("listThreads", "ThreadList"),
            ("listThreadMessages", "ThreadMessages"),
            ("putPreferences", "PreferencesResponse"),
        ]
    );

    // What the client read back is what the server holds.
    let case_id = flow["caseId"].as_str().unwrap();
    let case: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(case["caseNumber"], "DEB-2024-00042");
    assert_eq!(case["debtor"]["timezone"], "Europe/Copenhagen");
    let email = &flow["email"];
    assert_eq!(email["to"], serde_json::json!(["debtor@example.com"]));
    assert_eq!(email["cc"], serde_json::json!(["creditor@example.com"]));
    assert_eq!(flow["listed"]["totalCount"], 1);
    assert_eq!(flow["listed"]["ids"][0], email["messageId"]);
    assert_eq!(
        flow["message"]["body"],
        "Dear customer,\n\nThis is a reminder..."
    );
    assert_eq!(flow["report"]["events"][0], "queued");
    assert!(
        flow["templates"]
            .as_array()
            .unwrap()
            .contains(&"payment-reminder-v1".into())
    );
    let document = &flow["document"];
    assert_eq!(document["fileName"], "invoice.pdf");
    assert_eq!(document["listed"][0], document["documentId"]);
    assert_eq!(document["downloaded"], "%PDF-1.4 invoice");
    // The first thread is the email's or the SMS's, and holds that message only.
    let sent = [&email["messageId"], &flow["sms"]["messageId"]];
    let thread = flow["thread"]["messages"].as_array().unwrap();
    assert_eq!(thread.len(), 1, "{thread:?}");
    assert!(sent.contains(&&thread[0]), "{thread:?}");
    assert_eq!(flow["preferences"]["allowSms"], false);
    assert_eq!(flow["preferences"]["timezone"], "Europe/Copenhagen");
    let stored: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["allowSms"], false);
    assert_eq!(stored["contactHours"]["start"], "09:00");
    // The email, the SMS, and the case's own notice of the uploaded document.
    assert_eq!(app.deliver_due().await, 3);
}
