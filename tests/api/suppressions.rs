//! The suppression list: what puts an address on it, who sees it, lifting an entry.

use parley::domain::PartyKind;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{assert_problem, spawn_app};
use crate::inbound::post_sms;

#[tokio::test]
async fn a_stop_is_listed_shown_with_the_preferences_and_can_be_lifted_by_an_admin() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    assert_eq!(
        post_sms(&app, "+4512345678", "STOP", "SM900")
            .await
            .status(),
        200
    );

    let list: Value = app
        .get(&app.admin.token, "/api/suppressions")
        .await
        .json()
        .await
        .unwrap();
    let entries = list["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    let entry = &entries[0];
    assert_eq!(entry["channel"], "sms");
    assert_eq!(entry["address"], "+4512345678");
    assert_eq!(entry["reason"], "stop word");
    let id = entry["suppressionId"].as_str().unwrap().to_string();
    for (address, n) in [("%2B4512345678", 1), ("other%40example.com", 0)] {
        let list: Value = app
            .get(
                &app.admin.token,
                &format!("/api/suppressions?address={address}"),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["suppressions"].as_array().unwrap().len(),
            n,
            "{address}"
        );
    }
    // A case worker sees why an SMS is refused with the debtor's preferences, not the list.
    let prefs: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        prefs["suppressions"][0]["suppressionId"],
        id.as_str(),
        "{prefs}"
    );
    assert_problem(
        app.get(&creditor.token, "/api/suppressions").await,
        403,
        "forbidden",
    )
    .await;
    let sms = json!({"messageType": "sms", "body": "Reminder"});
    let messages = format!("/api/cases/{case_id}/messages");
    assert_problem(
        app.post(&creditor.token, &messages, &sms).await,
        422,
        "recipient_suppressed",
    )
    .await;

    let lift = |token: String| {
        let url = format!("{}/api/suppressions/{id}", app.base);
        let client = app.client.clone();
        async move { client.delete(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(lift(creditor.token.clone()).await.status(), 403);
    assert_eq!(lift(app.admin.token.clone()).await.status(), 204);
    assert_problem(lift(app.admin.token.clone()).await, 404, "not_found").await;
    assert_eq!(
        app.post(&creditor.token, &messages, &sms).await.status(),
        201
    );

    // Lifting is audited, with who did it.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(app.config.storage.database_url.expose())
        .await
        .unwrap();
    let who: Vec<String> = sqlx::query_scalar(
        "SELECT actor_name FROM audit_log WHERE action = 'suppression.lifted' AND target_id = $1",
    )
    .bind(&id)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(who, ["Operations"]);
}
