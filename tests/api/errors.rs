//! Bad input of every kind gets a problem response, never a 500.

use parley::domain::PartyKind;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(
        app.get(&app.admin.token, "/api/nothing-here").await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.client
            .get(format!("{}/", app.base))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.request(Method::DELETE, &app.admin.token, "/api/cases")
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_problem(
        app.request(Method::PUT, &app.admin.token, "/healthz")
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_wrong_type_and_wrong_shape_are_told_apart() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app
            .request(Method::POST, &creditor.token, "/api/cases")
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    assert_problem(
        post("{\"debtor\":", Some("application/json"))
            .await
            .unwrap(),
        400,
        "malformed_json",
    )
    .await;
    assert_problem(
        post("{}", Some("text/plain")).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_problem(
        post("{}", None).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let problem = assert_problem(
        post("{}", Some("application/json")).await.unwrap(),
        422,
        "invalid_body",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("debtor"),
        "{problem}"
    );
    assert_problem(
        post("[1,2]", Some("application/json")).await.unwrap(),
        422,
        "invalid_body",
    )
    .await;
    assert_problem(
        post("\u{0}", Some("application/json")).await.unwrap(),
        400,
        "malformed_json",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app_with(|c| c.http.max_json_bytes = 4096).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let body = json!({"debtor": {"name": "x".repeat(10_000)}, "amount": {"value": "1", "currency": "DKK"}});
    assert_problem(
        app.post(&creditor.token, "/api/cases", &body).await,
        413,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn injected_and_binary_values_are_refused_not_crashed_on() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = crate::helpers::case_body();
    body["debtor"]["email"] = json!("a@b.c\r\nBcc: victim@example.com");
    assert_problem(
        app.post(&creditor.token, "/api/cases", &body).await,
        422,
        "validation_failed",
    )
    .await;
    body = crate::helpers::case_body();
    body["caseNumber"] = json!("DEB\u{0}1");
    assert_problem(
        app.post(&creditor.token, "/api/cases", &body).await,
        422,
        "validation_failed",
    )
    .await;
    body = crate::helpers::case_body();
    body["amount"]["value"] = json!("99999999999999999999999");
    assert_problem(
        app.post(&creditor.token, "/api/cases", &body).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn text_of_control_characters_and_white_space_is_blank() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    for (body, subject, word) in [
        ("\u{9f}", "Payment reminder", "body"),
        ("\u{1}\u{85}\u{2028} \u{7f}", "Payment reminder", "body"),
        ("Please pay", "\u{9f}\u{a0}\u{1}", "subject"),
    ] {
        for path in ["messages", "messages/preview"] {
            let r = app
                .post(
                    &creditor.token,
                    &format!("/api/cases/{case_id}/{path}"),
                    &json!({"messageType": "email", "subject": subject, "body": body}),
                )
                .await;
            let problem = assert_problem(r, 422, "validation_failed").await;
            assert!(
                problem["detail"].as_str().unwrap().contains(word),
                "{path} {body:?} {subject:?}: {problem}"
            );
        }
    }
    let sent = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/messages"))
        .await;
    let sent: serde_json::Value = sent.json().await.unwrap();
    assert_eq!(sent["totalCount"], 0, "nothing was queued: {sent}");
}
