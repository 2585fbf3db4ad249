//! What the console needs of the server: its own pages, the preview of a send, and the case
//! search. (The console itself is tested in a real browser by `tests/console/run.mjs`.)

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, case_body, spawn_app};

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/console", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    for (asset, kind) in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("style.css", "text/css"),
    ] {
        let r = client
            .get(format!("{}/console/{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("innerHTML"),
            "{asset} builds no HTML from text"
        );
    }
    let missing = client
        .get(format!("{}/console/../Cargo.toml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let missing = client
        .get(format!("{}/console/secret.js", app.base))
        .send()
        .await
        .unwrap();
    assert_problem(missing, 404, "not_found").await;
}

#[tokio::test]
async fn a_preview_renders_what_a_send_would_queue_and_queues_nothing() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let path = format!("/api/cases/{case_id}/messages/preview");

    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "templateId": "payment-reminder-v1",
                    "variables": {"invoiceNumber": "INV-9", "amount": "100 DKK", "dueDate": "2026-12-01"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["messageType"], "email");
    assert_eq!(p["to"], json!(["debtor@example.com"]));
    assert!(p["subject"].as_str().unwrap().contains("INV-9"), "{p}");
    assert!(p["body"].as_str().unwrap().contains("100 DKK"), "{p}");
    assert_eq!(p["language"], "da", "the debtor's language");
    assert_eq!(p["policy"]["decision"], "allow", "{p}");
    assert_eq!(p["policy"]["rule"], "contact_permitted", "{p}");

    // The same refusals as a send, beside nothing stored.
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "templateId": "first-notice"}),
        )
        .await;
    let problem = assert_problem(r, 422, "template_variables_missing").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("deadline"),
        "{problem}"
    );
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "to": "not an address", "subject": "S", "body": "B"}),
        )
        .await;
    assert_problem(r, 422, "invalid_recipient").await;
    crate::policy::put_prefs(&app, &creditor, case_id, &json!({"doNotContact": true})).await;
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "sms", "body": "Hi"}),
        )
        .await;
    assert_problem(r, 422, "do_not_contact").await;

    let list: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 0, "a preview queues nothing");
    let audit: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    // A refusal by the send policy leaves the trace a send's would.
    assert!(audit.to_string().contains("message.refused"), "{audit}");
    // Another tenant's case does not exist.
    let r = app
        .post(
            &other.token,
            &path,
            &json!({"messageType": "email", "subject": "S", "body": "B"}),
        )
        .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn cases_are_found_by_number_email_or_phone_within_the_tenant() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let mut body = case_body();
    body["caseNumber"] = json!("ACME-100");
    body["debtor"]["email"] = json!("Jens@Example.com");
    body["debtor"]["phone"] = json!("+4511111111");
    assert_eq!(
        app.post(&creditor.token, "/api/cases", &body)
            .await
            .status(),
        201
    );
    body["caseNumber"] = json!("ACME-200");
    body["debtor"]["email"] = json!("anna@example.com");
    body["debtor"]["phone"] = json!("+4522222222");
    assert_eq!(
        app.post(&creditor.token, "/api/cases", &body)
            .await
            .status(),
        201
    );
    // Another creditor's case of the same person: not theirs to find.
    body["caseNumber"] = json!("OTHER-1");
    body["debtor"]["email"] = json!("jens@example.com");
    assert_eq!(
        app.post(&other.token, "/api/cases", &body).await.status(),
        201
    );

    assert_eq!(found(&app, &creditor.token, "acme-1").await, ["ACME-100"]);
    assert_eq!(found(&app, &creditor.token, "ACME").await.len(), 2);
    assert_eq!(
        found(&app, &creditor.token, "jens@example.com").await,
        ["ACME-100"]
    );
    assert_eq!(
        found(&app, &creditor.token, "+4522222222").await,
        ["ACME-200"]
    );
    assert_eq!(
        found(&app, &creditor.token, "+45 22 22 22 22").await,
        ["ACME-200"],
        "written as people write it"
    );
    assert!(
        found(&app, &creditor.token, "%").await.is_empty(),
        "a wildcard is a character"
    );
    assert!(
        found(&app, &creditor.token, "ACME_").await.is_empty(),
        "a wildcard is a character"
    );
    assert!(
        found(&app, &creditor.token, "OTHER").await.is_empty(),
        "another tenant's case"
    );
    let r = app.get(&creditor.token, "/api/cases?q=%01").await;
    assert_problem(r, 400, "invalid_query").await;
}

/// The case numbers a search finds, checked against its `totalCount`.
async fn found(app: &crate::helpers::TestApp, token: &str, q: &str) -> Vec<String> {
    let path = format!("/api/cases?q={}", urlencode(q));
    let list: Value = app.get(token, &path).await.json().await.unwrap();
    let numbers: Vec<String> = list["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["caseNumber"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(list["totalCount"], numbers.len(), "{q}");
    numbers
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
