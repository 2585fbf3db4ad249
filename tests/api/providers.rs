//! SMS through a real HTTP peer playing the SMS API, and provider delivery events.

use parley::config::Secret;
use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::peers::{SmsPeer, SmsReply};

async fn app_with_sms(peer: &SmsPeer) -> TestApp {
    let base = peer.base.clone();
    spawn_app_with(move |c| {
        c.sms.url = Some(base);
        c.sms.account = Some("AC123".into());
        c.sms.token = Some(Secret::new("sms-secret"));
        c.sms.from = Some("+4570000000".into());
    })
    .await
}

async fn send_sms(app: &TestApp, party: &Party, body: &str) -> (String, String) {
    let case = app.create_case(party, None).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    let r = app
        .post(
            &party.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "sms", "to": "+4512345678", "body": body, "priority": "high"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    (
        case_id,
        r.json::<Value>().await.unwrap()["messageId"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn status_of(app: &TestApp, party: &Party, id: &str) -> Value {
    app.get(&party.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn sms_goes_to_the_sms_api_and_status_callbacks_move_it() {
    let peer = SmsPeer::start().await;
    let app = app_with_sms(&peer).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let text = "Payment reminder: Invoice INV-2024-001 due. Please contact us.";
    let (_, id) = send_sms(&app, &creditor, text).await;
    app.deliver_due().await;

    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.account, "AC123");
    assert_eq!(req.authorization, basic("AC123", "sms-secret"));
    assert_eq!(req.field("To"), Some("+4512345678"));
    assert_eq!(req.field("From"), Some("+4570000000"));
    assert_eq!(req.field("Body"), Some(text));
    assert_eq!(
        req.field("StatusCallback"),
        Some(format!("{}/api/providers/sms/status", app.config.http.public_url).as_str())
    );
    let m = status_of(&app, &creditor, &id).await;
    assert_eq!(m["status"], "sent");
    assert_eq!(m["segments"], 1);
    let sid = m["providerMessageId"].as_str().unwrap().to_string();
    assert_eq!(peer.sids(), std::slice::from_ref(&sid));
    assert_eq!(
        app.store
            .messages()
            .message_by_provider_id(&sid)
            .await
            .unwrap()
            .as_ref()
            .map(|m| m.as_str()),
        Some(id.as_str())
    );
    let callback = |status: &'static str, auth: String| {
        app.client
            .post(format!("{}/api/providers/sms/status", app.base))
            .header("authorization", auth)
            .form(&[
                ("MessageSid", sid.as_str()),
                ("MessageStatus", status),
                ("AccountSid", "AC123"),
            ])
            .send()
    };
    let r = callback("delivered", basic("twilio", &app.admin.token))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(status_of(&app, &creditor, &id).await["status"], "delivered");
    // A repeat is recorded once; a late `sent` does not move the status back.
    callback("delivered", basic("twilio", &app.admin.token))
        .await
        .unwrap();
    callback("sent", format!("Bearer {}", app.admin.token))
        .await
        .unwrap();
    let report: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "delivered");
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["queued", "sent", "delivered", "sent"]);

    assert_problem(
        callback("failed", basic("twilio", &creditor.token))
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        callback("failed", basic("twilio", "wrong")).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let r = app
        .client
        .post(format!("{}/api/providers/sms/status", app.base))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn sms_api_failures_are_retried_or_final() {
    let peer = SmsPeer::start().await;
    let app = app_with_sms(&peer).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;

    peer.reply_next(&[SmsReply::Status(503)]);
    let (_, retried) = send_sms(&app, &creditor, "first").await;
    app.deliver_due().await;
    assert_eq!(status_of(&app, &creditor, &retried).await["status"], "sent");
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(&retried).unwrap())
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_deref().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["retry", "sent"]
    );

    peer.reply_next(&[SmsReply::Status(400)]);
    let (_, refused) = send_sms(&app, &creditor, "second").await;
    app.deliver_due().await;
    let m = status_of(&app, &creditor, &refused).await;
    assert_eq!(m["status"], "failed");
    assert!(m["failureReason"].as_str().unwrap().contains("400"), "{m}");

    // 429 waits as long as the API asks, beyond the (zero) schedule of the tests.
    peer.reply_next(&[SmsReply::TooMany { retry_after: 120 }]);
    let (_, throttled) = send_sms(&app, &creditor, "third").await;
    assert_eq!(app.deliver_due().await, 1, "the retry is not due yet");
    assert_eq!(
        status_of(&app, &creditor, &throttled).await["status"],
        "queued"
    );
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(&throttled).unwrap())
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].error.as_deref().unwrap().contains("429"));
}

#[tokio::test]
async fn email_provider_events_map_onto_statuses_once_each() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let m: Value = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "subject": "Hi", "body": "Text"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = m["messageId"].as_str().unwrap().to_string();
    app.deliver_due().await;
    let smtp_id = format!("<{id}@localhost>");
    let post = |events: Value| {
        app.client
            .post(format!("{}/api/providers/email/events", app.base))
            .bearer_auth(&app.admin.token)
            .json(&events)
            .send()
    };
    let t0 = chrono::Utc::now().timestamp() + 10;
    let ev = |kind: &str, sg: &str, ts: i64| json!({"email": "debtor@example.com", "event": kind, "sg_event_id": sg, "smtp-id": smtp_id, "timestamp": t0 + ts});
    let r: Value = post(json!([
        ev("open", "e1", 100),
        ev("delivered", "e2", 50),
        ev("processed", "e0", 0)
    ]))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(r, json!({"recorded": 2, "ignored": 1}));
    let report: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        report["status"], "opened",
        "a late delivered after opened keeps opened"
    );
    let r: Value = post(json!([ev("open", "e1", 100)]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"recorded": 0, "ignored": 1}),
        "de-duplicated by the provider's event id"
    );

    // Until the bounce, the address takes mail.
    let again = json!({"messageType": "email", "subject": "Again", "body": "Text"});
    assert_eq!(app.post(&creditor.token, &path, &again).await.status(), 201);
    let r: Value = post(json!([ev("bounce", "e3", 200), ev("click", "e4", 300)]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["recorded"], 2);
    let report: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "bounced", "bounced is final");
    // A hard bounce puts the address on the suppression list.
    let r = app.post(&creditor.token, &path, &again).await;
    assert_problem(r, 422, "recipient_suppressed").await;
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "queued",
            "sent",
            "delivered",
            "opened",
            "bounced",
            "clicked"
        ],
        "every event, in the provider's time order"
    );
    let delivered_at = chrono::DateTime::from_timestamp(t0 + 50, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(report["events"][2]["timestamp"], delivered_at.as_str());
    // A deferral is kept in the history once, without moving the status: the same event id
    // again is ignored.
    for expected in [1, 0] {
        let r: Value = post(json!([ev("deferred", "e5", 400)]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["recorded"], expected, "{r}");
    }

    let r = app
        .client
        .post(format!("{}/api/providers/email/events", app.base))
        .bearer_auth(&creditor.token)
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn a_busy_sender_number_puts_sms_back_without_using_an_attempt() {
    let peer = SmsPeer::start().await;
    let base = peer.base.clone();
    let app = spawn_app_with(move |c| {
        c.sms.url = Some(base);
        c.sms.account = Some("AC123".into());
        c.sms.token = Some(Secret::new("sms-secret"));
        c.sms.from = Some("+4570000000".into());
        c.sms.rate_per_second = 0.1;
        c.delivery.lease = std::time::Duration::from_secs(2);
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let (_, first) = send_sms(&app, &creditor, "one").await;
    let (_, second) = send_sms(&app, &creditor, "two").await;
    assert_eq!(app.deliver_due().await, 2, "both claimed once");
    assert_eq!(status_of(&app, &creditor, &first).await["status"], "sent");
    assert_eq!(
        status_of(&app, &creditor, &second).await["status"],
        "queued",
        "the sender's next slot is 10 s away"
    );
    assert!(
        app.store
            .queue()
            .delivery_attempts(&parley::domain::MessageId::parse(&second).unwrap())
            .await
            .unwrap()
            .is_empty(),
        "waiting for a slot is no attempt"
    );
    assert_eq!(peer.requests().len(), 1);
}
