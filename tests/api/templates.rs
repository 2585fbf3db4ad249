//! Templates: the seed's two on a new install, strict rendering, languages, management.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, case_body, spawn_app};

#[tokio::test]
async fn a_new_install_lists_the_seed_templates() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let list: Value = app
        .get(&creditor.token, "/api/message-templates")
        .await
        .json()
        .await
        .unwrap();
    let t = list["templates"].as_array().unwrap();
    assert_eq!(t[0]["templateId"], "payment-reminder-v1");
    assert_eq!(t[0]["name"], "Standard Payment Reminder");
    assert_eq!(t[0]["type"], "email");
    assert_eq!(
        t[0]["subject"],
        "Payment Reminder - Invoice {{invoiceNumber}}"
    );
    assert_eq!(
        t[0]["variables"],
        json!(["invoiceNumber", "amount", "dueDate", "debtorName"])
    );
    assert_eq!(t[1]["templateId"], "first-notice");
    assert_eq!(t[1]["name"], "First Collection Notice");
    assert_eq!(t[1]["subject"], "Collection Notice - {{caseNumber}}");
    assert_eq!(
        t[1]["variables"],
        json!(["caseNumber", "amount", "deadline"])
    );
    for seed in &t[..2] {
        let langs: Vec<&str> = seed["languages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(langs.contains(&"da") && langs.contains(&"en"), "{seed}");
    }
}

#[tokio::test]
async fn the_seed_template_example_renders_in_the_debtors_language() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let vars = json!({"invoiceNumber": "INV-2024-001", "amount": "15,000 DKK", "dueDate": "January 15, 2024", "debtorName": "Example Company ApS"});

    // The case's debtor speaks Danish.
    let r = app.post(&creditor.token, &path, &json!({"messageType": "email", "templateId": "payment-reminder-v1", "variables": vars})).await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["subject"], "Betalingspåmindelse - Faktura INV-2024-001");
    assert_eq!(m["language"], "da");
    let full: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{}", m["messageId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    let body = full["body"].as_str().unwrap();
    assert!(
        body.contains("15,000 DKK")
            && body.contains("January 15, 2024")
            && body.contains("Kære Example Company ApS"),
        "{body}"
    );

    // The request's language wins.
    let r = app
        .post(&creditor.token, &path, &json!({"messageType": "email", "templateId": "payment-reminder-v1", "variables": vars, "language": "en-GB"}))
        .await;
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["subject"], "Payment Reminder - Invoice INV-2024-001");
    assert_eq!(m["language"], "en");

    // Explicit subject and body override the template's.
    let r = app
        .post(&creditor.token, &path, &json!({"messageType": "email", "templateId": "payment-reminder-v1", "subject": "Own subject", "body": "Own body"}))
        .await;
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["subject"], "Own subject");
    let full: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{}", m["messageId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["body"], "Own body");
    assert!(
        full.get("htmlBody").is_none(),
        "an explicit body replaces the template's HTML too"
    );
}

#[tokio::test]
async fn missing_variables_are_named_each() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = case_body();
    body["debtor"]["language"] = json!("en");
    body.as_object_mut().unwrap().remove("dueDate");
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    let case: Value = r.json().await.unwrap();
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());

    let problem = assert_problem(
        app.post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "templateId": "first-notice"}),
        )
        .await,
        422,
        "template_variables_missing",
    )
    .await;
    assert_eq!(problem["missingVariables"], json!(["deadline"]));
    assert!(problem["detail"].as_str().unwrap().contains("deadline"));

    // Case facts fill what they can (caseNumber, amount); the deadline comes from the request.
    let r = app
        .post(&creditor.token, &path, &json!({"messageType": "email", "templateId": "first-notice", "variables": {"deadline": "1 March 2030"}}))
        .await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["subject"],
        format!(
            "Collection Notice - {}",
            case["caseNumber"].as_str().unwrap()
        )
    );

    let problem = assert_problem(
        app.post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "templateId": "payment-reminder-v1"}),
        )
        .await,
        422,
        "template_variables_missing",
    )
    .await;
    assert_eq!(problem["missingVariables"], json!(["dueDate"]));

    assert_problem(
        app.post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "templateId": "nope"}),
        )
        .await,
        422,
        "template_not_found",
    )
    .await;
    assert_problem(
        app.post(
            &creditor.token,
            &path,
            &json!({"messageType": "sms", "templateId": "first-notice"}),
        )
        .await,
        422,
        "template_type_mismatch",
    )
    .await;
}

#[tokio::test]
async fn admins_manage_templates_and_sms_templates_render() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let template = json!({
        "templateId": "settlement-offer",
        "name": "Settlement offer",
        "type": "sms",
        "defaultLanguage": "en",
        "body": "Hi {{debtorName}}, settle case {{caseNumber}} for {{offer}} by {{ until }}.",
        "translations": {"da": {"body": "Hej {{debtorName}}, afslut sag {{caseNumber}} for {{offer}} inden {{until}}."}}
    });
    assert_problem(
        app.post(&creditor.token, "/api/message-templates", &template)
            .await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .post(&app.admin.token, "/api/message-templates", &template)
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        created["variables"],
        json!(["debtorName", "caseNumber", "offer", "until"])
    );
    assert_eq!(
        created["translations"]["da"]["body"],
        template["translations"]["da"]["body"]
    );
    assert_problem(
        app.post(&app.admin.token, "/api/message-templates", &template)
            .await,
        409,
        "template_exists",
    )
    .await;

    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let problem = assert_problem(
        app.post(&creditor.token, &path, &json!({"messageType": "sms", "templateId": "settlement-offer", "variables": {"offer": "9.000 kr"}})).await,
        422,
        "template_variables_missing",
    )
    .await;
    assert_eq!(problem["missingVariables"], json!(["until"]));
    let r = app
        .post(&creditor.token, &path, &json!({"messageType": "sms", "templateId": "settlement-offer", "variables": {"offer": "9.000 kr", "until": "1/3"}}))
        .await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    let full: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{}", m["messageId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        full["body"],
        format!(
            "Hej Example Company ApS, afslut sag {} for 9.000 kr inden 1/3.",
            case["caseNumber"].as_str().unwrap()
        )
    );

    let mut changed = template.clone();
    changed["name"] = json!("Settlement offer v2");
    changed["body"] = json!("Settle {{caseNumber}} now.");
    let r = app
        .request(
            reqwest::Method::PUT,
            &app.admin.token,
            "/api/message-templates/settlement-offer",
        )
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = app
        .get(&creditor.token, "/api/message-templates/settlement-offer")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Settlement offer v2");
    assert_eq!(
        got["variables"],
        json!(["caseNumber", "debtorName", "offer", "until"])
    );

    let r = app
        .request(
            reqwest::Method::DELETE,
            &app.admin.token,
            "/api/message-templates/settlement-offer",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_problem(
        app.get(&creditor.token, "/api/message-templates/settlement-offer")
            .await,
        404,
        "not_found",
    )
    .await;
    let r = app
        .request(
            reqwest::Method::DELETE,
            &app.admin.token,
            "/api/message-templates/settlement-offer",
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn broken_templates_are_refused() {
    let app = spawn_app().await;
    for (t, word) in [
        (
            json!({"name": "x", "type": "email", "body": "b"}),
            "subject",
        ),
        (
            json!({"name": "x", "type": "sms", "subject": "s", "body": "b"}),
            "SMS",
        ),
        (
            json!({"name": "x", "type": "email", "subject": "Hi {{name", "body": "b"}),
            "{{",
        ),
        (
            json!({"name": "x", "type": "email", "subject": "s", "body": "Hi {{ two words }}"}),
            "variable",
        ),
        (
            json!({"name": "x", "type": "email", "subject": "a\r\nb", "body": "b"}),
            "CR",
        ),
        (
            json!({"templateId": "Bad Id", "name": "x", "type": "email", "subject": "s", "body": "b"}),
            "templateId",
        ),
        (
            json!({"name": "x", "type": "letter", "subject": "s", "body": "b"}),
            "messageType",
        ),
        // Control characters and white space show nothing: blank, as the schema says.
        (
            json!({"name": "x", "type": "email", "subject": "s", "body": "\u{85}\u{9f} \u{1}"}),
            "body",
        ),
        (
            json!({"name": "x", "type": "email", "subject": "\u{9f}\u{a0}", "body": "b"}),
            "subject",
        ),
    ] {
        let problem = assert_problem(
            app.post(&app.admin.token, "/api/message-templates", &t)
                .await,
            422,
            "validation_failed",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(word),
            "{t}: {problem}"
        );
    }
}
