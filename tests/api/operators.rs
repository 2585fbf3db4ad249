//! Operators: the queue by state, retry and cancel of messages, resend and recover of
//! webhook deliveries, and the queue's figures on `/metrics`.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app};
use crate::peers::HookReceiver;

async fn case_of(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case["caseId"].as_str().unwrap().to_string())
}

async fn send(app: &TestApp, party: &Party, case_id: &str, body: Value) -> Value {
    let r = app
        .post(
            &party.token,
            &format!("/api/cases/{case_id}/messages"),
            &body,
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn jobs(app: &TestApp, query: &str) -> Value {
    let r = app
        .get(&app.admin.token, &format!("/api/jobs?{query}"))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn audit_actions(app: &TestApp, party: &Party, case_id: &str) -> Vec<String> {
    let log: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_failed_message_is_listed_with_its_attempts_and_retried_with_the_same_message_id() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    // The outbox cannot be written (a file stands where its folder should be): every attempt
    // fails, and after the schedule's two retries the message is failed.
    let outbox = app.dir.path().join("outbox");
    std::fs::write(&outbox, b"not a folder").unwrap();
    let m = send(
        &app,
        &creditor,
        &case_id,
        json!({"messageType": "email", "subject": "Reminder", "body": "Please pay"}),
    )
    .await;
    let id = m["messageId"].as_str().unwrap();
    app.deliver_due().await;
    let failed = jobs(&app, "state=failed").await;
    let job = &failed["jobs"][0];
    assert_eq!(job["messageId"], id, "{failed}");
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 3);
    let log = job["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["outcome"], "retry");
    assert_eq!(log[2]["outcome"], "failed");
    assert!(
        log[0]["error"].as_str().unwrap().contains("outbox"),
        "{job}"
    );
    // Filtered by another case: none.
    let other = app.create_case(&creditor, None).await;
    let none = jobs(
        &app,
        &format!("state=failed&caseId={}", other["caseId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(none["jobs"], json!([]));

    // The way is clear again; the creditor retries.
    std::fs::remove_file(&outbox).unwrap();
    let r = app
        .post(
            &creditor.token,
            &format!("/api/messages/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["status"], "queued");
    assert!(again.get("failureReason").is_none(), "{again}");
    assert_eq!(jobs(&app, "state=queued").await["jobs"][0]["messageId"], id);
    assert_eq!(app.deliver_due().await, 1);
    let eml = std::fs::read_to_string(outbox.join(format!("{id}.eml"))).unwrap();
    assert!(
        eml.contains(&format!("Message-ID: <{id}@localhost>")),
        "{eml}"
    );
    let sent: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sent["status"], "sent");
    assert!(
        audit_actions(&app, &creditor, &case_id)
            .await
            .contains(&"message.retried".into())
    );

    // Only a failed message is retried; another tenant does not see it at all.
    assert_problem(
        app.post(
            &creditor.token,
            &format!("/api/messages/{id}/retry"),
            &json!({}),
        )
        .await,
        409,
        "invalid_state",
    )
    .await;
    let outsider = app.party(PartyKind::Creditor, "Outsider").await;
    assert_problem(
        app.post(
            &outsider.token,
            &format!("/api/messages/{id}/retry"),
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // The queue is for admins.
    assert_problem(
        app.get(&creditor.token, "/api/jobs").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.get(&app.admin.token, "/api/jobs?state=lost").await,
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn a_scheduled_message_is_cancelled_and_never_sent() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let m = send(
        &app,
        &creditor,
        &case_id,
        json!({"messageType": "email", "subject": "Later", "body": "B", "scheduledAt": later}),
    )
    .await;
    let id = m["messageId"].as_str().unwrap();
    let scheduled = jobs(&app, "state=scheduled").await;
    assert_eq!(scheduled["jobs"][0]["messageId"], id, "{scheduled}");
    assert_eq!(jobs(&app, "state=queued").await["jobs"], json!([]));

    let r = app
        .post(
            &creditor.token,
            &format!("/api/messages/{id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["status"], "cancelled");
    assert_eq!(jobs(&app, "state=scheduled").await["jobs"], json!([]));
    assert_problem(
        app.post(
            &creditor.token,
            &format!("/api/messages/{id}/cancel"),
            &json!({}),
        )
        .await,
        409,
        "invalid_state",
    )
    .await;
    assert_problem(
        app.post(
            &creditor.token,
            &format!("/api/messages/{id}/retry"),
            &json!({}),
        )
        .await,
        409,
        "invalid_state",
    )
    .await;
    assert!(
        audit_actions(&app, &creditor, &case_id)
            .await
            .contains(&"message.cancelled".into())
    );
    let report: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["queued", "cancelled"]);
    assert!(
        !app.dir
            .path()
            .join("outbox")
            .join(format!("{id}.eml"))
            .exists()
    );
}

#[tokio::test]
async fn failed_webhook_deliveries_are_resent_and_recovered() {
    let receiver = HookReceiver::start().await;
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let hook: Value = app
        .post(
            &creditor.token,
            "/api/webhooks",
            &json!({"url": receiver.url, "events": ["note.created"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let hook_id = hook["webhookId"].as_str().unwrap();
    receiver.fail_next(&[500; 6]);
    for note in ["one", "two"] {
        app.post(
            &creditor.token,
            &format!("/api/cases/{case_id}/notes"),
            &json!({"note": note}),
        )
        .await;
    }
    app.dispatch_webhooks().await;
    let list = format!("/api/webhooks/{hook_id}/deliveries");
    let deliveries: Value = app.get(&creditor.token, &list).await.json().await.unwrap();
    let all = deliveries["deliveries"].as_array().unwrap();
    assert!(all.iter().all(|d| d["status"] == "failed"), "{deliveries}");
    let first = all[1]["deliveryId"].as_str().unwrap().to_string();

    let r = app
        .post(
            &creditor.token,
            &format!("{list}/{first}/resend"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.dispatch_webhooks().await;
    let deliveries: Value = app.get(&creditor.token, &list).await.json().await.unwrap();
    assert_eq!(deliveries["deliveries"][1]["status"], "delivered");
    assert_eq!(deliveries["deliveries"][0]["status"], "failed");
    // A pending or delivered one: delivered may be sent again, pending not.
    let r = app
        .post(
            &app.admin.token,
            &format!("/api/webhooks/{hook_id}/recover"),
            &json!({"since": "2020-01-01"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["recovered"], 1);
    app.dispatch_webhooks().await;
    let deliveries: Value = app.get(&creditor.token, &list).await.json().await.unwrap();
    assert!(
        deliveries["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered"),
        "{deliveries}"
    );
    let outsider = app.party(PartyKind::Creditor, "Outsider").await;
    assert_problem(
        app.post(
            &outsider.token,
            &format!("/api/webhooks/{hook_id}/recover"),
            &json!({"since": "2020-01-01"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.post(
            &creditor.token,
            &format!("/api/webhooks/{hook_id}/recover"),
            &json!({"since": "last week"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn metrics_show_the_queue() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    send(
        &app,
        &creditor,
        &case_id,
        json!({"messageType": "email", "subject": "S", "body": "B"}),
    )
    .await;
    let text = |app: &TestApp| {
        let url = format!("{}/metrics", app.base);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let before = text(&app).await;
    assert!(
        before.contains("parley_jobs{kind=\"deliver_message\",state=\"pending\"} 1"),
        "{before}"
    );
    assert!(before.contains("parley_oldest_due_job_age_seconds "));
    assert!(before.contains("parley_db_connections{state=\"open\"}"));
    app.deliver_due().await;
    let after = text(&app).await;
    assert!(
        !after.contains("parley_jobs{kind=\"deliver_message\",state=\"pending\"}"),
        "{after}"
    );
    assert!(
        after.contains(
            "parley_attempts_total{queue=\"delivery\",channel=\"email\",outcome=\"sent\"}"
        ),
        "{after}"
    );
    assert!(
        after.contains("parley_oldest_due_job_age_seconds 0"),
        "{after}"
    );
}
