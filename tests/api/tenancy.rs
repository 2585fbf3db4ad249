//! Every case-scoped endpoint answers another tenant exactly as it answers a missing case.

use parley::domain::PartyKind;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

/// Each case-scoped endpoint with a valid body.
fn endpoints(case_id: &str) -> Vec<(Method, String, Option<Value>)> {
    let c = format!("/api/cases/{case_id}");
    vec![
        (Method::GET, c.clone(), None),
        (Method::PATCH, c.clone(), Some(json!({"status": "closed"}))),
        (Method::GET, format!("{c}/payments"), None),
        (
            Method::POST,
            format!("{c}/payments"),
            Some(json!({"amount": "10.00"})),
        ),
        (Method::GET, format!("{c}/deadlines"), None),
        (
            Method::POST,
            format!("{c}/deadlines"),
            Some(json!({"title": "t", "dueAt": "2030-01-01"})),
        ),
        (Method::GET, format!("{c}/notes"), None),
        (
            Method::POST,
            format!("{c}/notes"),
            Some(json!({"note": "n"})),
        ),
        (Method::GET, format!("{c}/audit-log"), None),
    ]
}

#[tokio::test]
async fn other_tenants_get_404_on_every_case_endpoint() {
    let app = spawn_app().await;
    let owner = app.party(PartyKind::Creditor, "Owner").await;
    let partner = app.party(PartyKind::Partner, "Assigned partner").await;
    let other_creditor = app.party(PartyKind::Creditor, "Other creditor").await;
    let other_partner = app.party(PartyKind::Partner, "Other partner").await;
    let case = app.create_case(&owner, Some(&partner)).await;
    let id = case["caseId"].as_str().unwrap();
    let missing = uuid::Uuid::now_v7().to_string();

    for (method, path, body) in endpoints(id) {
        for outsider in [&other_creditor, &other_partner] {
            let mut req = app.request(method.clone(), &outsider.token, &path);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let problem = assert_problem(req.send().await.unwrap(), 404, "not_found").await;
            let missing_path = path.replace(id, &missing);
            let mut req = app.request(method.clone(), &outsider.token, &missing_path);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let missing_problem = assert_problem(req.send().await.unwrap(), 404, "not_found").await;
            assert_eq!(
                problem, missing_problem,
                "{method} {path}: indistinguishable from a missing case"
            );
        }
    }
    // The outsiders' attempts changed nothing.
    let seen: Value = app
        .get(&owner.token, &format!("/api/cases/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "open");
    let notes: Value = app
        .get(&owner.token, &format!("/api/cases/{id}/notes"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(notes["notes"].as_array().unwrap().len(), 0);

    // The owner, the assigned partner and an admin reach every endpoint.
    for party in [&owner, &partner, &app.admin] {
        for (method, path, body) in endpoints(id) {
            let mut req = app.request(method.clone(), &party.token, &path);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let status = req.send().await.unwrap().status().as_u16();
            assert!(status == 200 || status == 201, "{method} {path}: {status}");
        }
    }
}

#[tokio::test]
async fn lists_show_only_the_callers_cases() {
    let app = spawn_app().await;
    let a = app.party(PartyKind::Creditor, "A").await;
    let b = app.party(PartyKind::Creditor, "B").await;
    let partner = app.party(PartyKind::Partner, "P").await;
    app.create_case(&a, Some(&partner)).await;
    app.create_case(&a, None).await;
    app.create_case(&b, None).await;
    let count = |token: String| {
        let app = &app;
        async move {
            app.get(&token, "/api/cases")
                .await
                .json::<Value>()
                .await
                .unwrap()["totalCount"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(count(a.token.clone()).await, 2);
    assert_eq!(count(b.token.clone()).await, 1);
    assert_eq!(count(partner.token.clone()).await, 1);
    assert_eq!(count(app.admin.token.clone()).await, 3);
}

#[tokio::test]
async fn a_case_id_that_is_not_a_uuid_is_not_found() {
    let app = spawn_app().await;
    let a = app.party(PartyKind::Creditor, "A").await;
    assert_problem(
        app.get(&a.token, "/api/cases/msg_123").await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&a.token, "/api/cases/'%20OR%201=1--/notes").await,
        404,
        "not_found",
    )
    .await;
}
