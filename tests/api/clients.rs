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
