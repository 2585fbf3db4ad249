//! Signed webhooks to a real HTTP receiver.

use base64::Engine;
use hmac::{Hmac, Mac};
use parley::domain::PartyKind;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};
use crate::peers::{HookReceiver, eventually};

/// Verifies a request the way a Standard Webhooks library does.
pub(crate) fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> bool {
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

#[tokio::test]
async fn events_of_visible_cases_arrive_signed_and_failures_are_retried() {
    let receiver = HookReceiver::start().await;
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let r = app.post(&creditor.token, "/api/webhooks", &json!({"url": receiver.url, "events": ["note.created", "case.status_changed", "message.received"]})).await;
    assert_eq!(r.status(), 201);
    let hook: Value = r.json().await.unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let hook_id = hook["webhookId"].as_str().unwrap();

    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let foreign = app.create_case(&other, None).await;
    receiver.fail_next(&[500]);
    app.post(
        &creditor.token,
        &format!("/api/cases/{case_id}/notes"),
        &json!({"note": "called"}),
    )
    .await;
    app.post(
        &other.token,
        &format!("/api/cases/{}/notes", foreign["caseId"].as_str().unwrap()),
        &json!({"note": "not yours"}),
    )
    .await;
    app.patch(
        &creditor.token,
        &format!("/api/cases/{case_id}"),
        &json!({"status": "disputed"}),
    )
    .await;
    let mail = format!(
        "From: debtor@example.com\r\nTo: case-{case_id}@localhost\r\nSubject: Re: Payment Reminder\r\n\r\nHello\r\n"
    );
    let r = app.post_mail(&app.admin.token, &mail).await;
    assert_eq!(r.status(), 201);

    app.dispatch_webhooks().await;
    let requests = receiver.requests();
    let bodies: Vec<Value> = requests
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    // One batch goes out concurrently, so its order is free; the retry comes after it.
    let mut first: Vec<&str> = events[..3].to_vec();
    first.sort();
    assert_eq!(
        first,
        ["case.status_changed", "message.received", "note.created"]
    );
    assert_eq!(events.len(), 4);
    assert_eq!(events[3], events[0], "the failed delivery again at the end");
    for (headers, body) in &requests {
        assert!(verify(&secret, headers, body), "signature of {body}");
    }
    assert_eq!(
        requests[0].0["webhook-id"], requests[3].0["webhook-id"],
        "a retry carries the same webhook-id"
    );
    assert!(
        bodies.iter().all(|b| b["caseId"] == case_id),
        "nothing of another creditor's case"
    );
    let of = |event: &str| bodies.iter().find(|b| b["event"] == event).unwrap();
    let received = of("message.received");
    for key in [
        "messageId",
        "caseId",
        "caseNumber",
        "messageType",
        "from",
        "subject",
        "hasAttachments",
        "timestamp",
    ] {
        assert!(
            received.get(key).is_some(),
            "message.received carries {key}: {received}"
        );
    }
    assert_eq!(received["from"], "debtor@example.com");
    assert_eq!(received["caseNumber"], case["caseNumber"]);
    assert_eq!(of("case.status_changed")["status"], "disputed");
    let retried = events[0].to_string();

    let deliveries: Value = app
        .get(
            &creditor.token,
            &format!("/api/webhooks/{hook_id}/deliveries"),
        )
        .await
        .json()
        .await
        .unwrap();
    let note = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event"] == retried.as_str())
        .unwrap();
    assert_eq!(note["status"], "delivered");
    assert_eq!(note["attempts"], 2);
    assert_problem(
        app.get(&other.token, &format!("/api/webhooks/{hook_id}/deliveries"))
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_ends_failed_and_deleted_hooks_stop() {
    let receiver = HookReceiver::start().await;
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
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
    let case = app.create_case(&creditor, None).await;
    receiver.fail_next(&[500, 502, 503]);
    app.post(
        &creditor.token,
        &format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap()),
        &json!({"note": "n"}),
    )
    .await;
    app.dispatch_webhooks().await;
    let deliveries: Value = app
        .get(
            &creditor.token,
            &format!("/api/webhooks/{hook_id}/deliveries"),
        )
        .await
        .json()
        .await
        .unwrap();
    let d = &deliveries["deliveries"][0];
    assert_eq!(d["status"], "failed");
    assert_eq!(
        d["attempts"], 3,
        "the first try and the two retries of the schedule"
    );
    assert_eq!(d["lastStatusCode"], 503);

    let list: Value = app
        .get(&creditor.token, "/api/webhooks")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["webhooks"][0]["webhookId"], hook_id);
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let r = app
        .request(
            reqwest::Method::DELETE,
            &creditor.token,
            &format!("/api/webhooks/{hook_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.post(
        &creditor.token,
        &format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap()),
        &json!({"note": "n2"}),
    )
    .await;
    assert_eq!(app.dispatch_webhooks().await, 0);
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn webhook_targets_and_events_are_checked() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = false).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    for (body, code) in [
        (
            json!({"url": "http://127.0.0.1:9/hook", "events": ["note.created"]}),
            "webhook_url_not_allowed",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["note.created"]}),
            "webhook_url_not_allowed",
        ),
        (
            json!({"url": "ftp://example.com/", "events": ["note.created"]}),
            "webhook_url_not_allowed",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["note.deleted"]}),
            "validation_failed",
        ),
        (
            json!({"url": "https://example.com/hook", "events": []}),
            "validation_failed",
        ),
    ] {
        assert_problem(
            app.post(&creditor.token, "/api/webhooks", &body).await,
            422,
            code,
        )
        .await;
    }
}

#[tokio::test]
async fn a_name_that_resolves_inside_is_refused_when_connecting() {
    let receiver = HookReceiver::start().await;
    let app = spawn_app_with(|c| c.webhooks.allow_private = false).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    // The name passed the check when it was registered; now it resolves to loopback (as a
    // name whose DNS changed would).
    let url = receiver.url.replace("127.0.0.1", "localhost");
    let actor = app.actor(&creditor).await;
    app.store
        .webhooks()
        .create_webhook(
            &actor,
            &url,
            &[parley::domain::event::EventType::NoteCreated],
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .await
        .unwrap();
    let case = app.create_case(&creditor, None).await;
    app.post(
        &creditor.token,
        &format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap()),
        &json!({"note": "called"}),
    )
    .await;
    app.dispatch_webhooks().await;
    assert!(receiver.requests().is_empty(), "no request reached it");
    let hooks: Value = app
        .get(&creditor.token, "/api/webhooks")
        .await
        .json()
        .await
        .unwrap();
    let id = hooks["webhooks"][0]["webhookId"].as_str().unwrap();
    let deliveries: Value = app
        .get(&creditor.token, &format!("/api/webhooks/{id}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let error = deliveries["deliveries"][0]["lastError"].as_str().unwrap();
    assert!(
        error.contains("does not resolve to public addresses"),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_another_tenants_webhooks() {
    let slow = HookReceiver::start().await;
    let fast = HookReceiver::start().await;
    let app = spawn_app().await;
    let a = app.party(PartyKind::Creditor, "Slow Ltd").await;
    let b = app.party(PartyKind::Creditor, "Fast Ltd").await;
    for (party, receiver) in [(&a, &slow), (&b, &fast)] {
        let r = app
            .post(
                &party.token,
                "/api/webhooks",
                &json!({"url": receiver.url, "events": ["note.created"]}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    slow.hold();
    let case_a = app.create_case(&a, None).await;
    let many = parley::webhooks::PER_ENDPOINT + 3;
    for i in 0..many {
        app.post(
            &a.token,
            &format!("/api/cases/{}/notes", case_a["caseId"].as_str().unwrap()),
            &json!({"note": format!("note {i}")}),
        )
        .await;
    }
    let case_b = app.create_case(&b, None).await;
    app.post(
        &b.token,
        &format!("/api/cases/{}/notes", case_b["caseId"].as_str().unwrap()),
        &json!({"note": "hello"}),
    )
    .await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(app.webhooks.clone().run(stopped));
    let fast_seen = fast.clone();
    eventually(10, "the other tenant's delivery", || {
        let fast = fast_seen.clone();
        async move { (fast.requests().len() == 1).then_some(()) }
    })
    .await;
    assert!(
        slow.requests().len() <= parley::webhooks::PER_ENDPOINT,
        "at most {} requests wait at the slow endpoint, not {}",
        parley::webhooks::PER_ENDPOINT,
        slow.requests().len()
    );
    slow.release();
    let slow_seen = slow.clone();
    eventually(20, "the slow tenant's deliveries", || {
        let slow = slow_seen.clone();
        async move { (slow.requests().len() >= many).then_some(()) }
    })
    .await;
    stop.send_replace(true);
    worker.await.unwrap();
    assert_eq!(slow.requests().len(), many, "each once");
}

#[tokio::test]
async fn the_webhook_worker_runs_on_its_own_setting_without_a_delivery_worker() {
    let receiver = HookReceiver::start().await;
    let mut installation = crate::binary::Installation::new().await;
    // No delivery worker in this process (PARLEY_DELIVERY_CONCURRENCY=0), webhooks on.
    installation.set("PARLEY_WEBHOOK_CONCURRENCY", "2");
    installation.set("PARLEY_WEBHOOK_ALLOW_PRIVATE", "true");
    let creditor = installation.party("creditor", "Acme").await;
    let server = installation.serve().await;
    let post = |path: &str, body: Value| {
        server
            .client
            .post(server.url(path))
            .bearer_auth(&creditor)
            .json(&body)
            .send()
    };
    let r = post(
        "/api/webhooks",
        json!({"url": receiver.url, "events": ["note.created"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let case: Value = post("/api/cases", crate::helpers::case_body())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = post(
        &format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap()),
        json!({"note": "called"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    crate::peers::eventually(30, "the note's webhook", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    server.stop().await;
}

/// How many outbox events of a type the database holds.
async fn events_of(app: &crate::helpers::TestApp, event_type: &str) -> i64 {
    let pool = app.pool().await;
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// One round of the retention sweeper alone (no delivery step after it).
async fn sweep(app: &crate::helpers::TestApp) {
    app.periodic
        .iter()
        .find(|p| p.work() == parley::store::singleton::Work::RetentionSweeper)
        .expect("the retention sweeper")
        .run_once()
        .await
        .unwrap()
        .expect("this process holds the sweeper");
}

/// Deliveries that are over (delivered, failed) and their outbox events are forgotten
/// `PARLEY_WEBHOOK_RETENTION` after they were made; a delivery still being retried, however
/// old, stays with its event and goes out; an event whose system message is still to be
/// written stays until it is; recent ones stay.
#[tokio::test]
async fn finished_webhook_work_is_forgotten_after_its_retention_and_unfinished_work_is_not() {
    use std::time::Duration;
    let (receiver, failing) = (HookReceiver::start().await, HookReceiver::start().await);
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = crate::helpers::spawn_app_with_clock(clock.clone(), |c| {
        c.webhooks.retention = Duration::from_secs(30 * 86_400);
        // A failed attempt is tried once more, an hour later (by the store's clock).
        c.webhooks.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let hook = |url: String, event: &'static str| {
        let (app, token) = (&app, creditor.token.clone());
        async move {
            let r = app
                .post(
                    &token,
                    "/api/webhooks",
                    &json!({"url": url, "events": [event]}),
                )
                .await;
            assert_eq!(r.status(), 201);
            let id = r.json::<Value>().await.unwrap()["webhookId"].clone();
            format!("/api/webhooks/{}/deliveries", id.as_str().unwrap())
        }
    };
    let notes_hook = hook(receiver.url.clone(), "note.created").await;
    let status_hook = hook(failing.url.clone(), "case.status_changed").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    let note = |text: &'static str| {
        let (app, token) = (&app, creditor.token.clone());
        let path = format!("/api/cases/{case_id}/notes");
        async move {
            let r = app.post(&token, &path, &json!({"note": text})).await;
            assert_eq!(r.status(), 201);
        }
    };
    let listed = |path: String| {
        let (app, token) = (&app, creditor.token.clone());
        async move {
            let list: Value = app.get(&token, &path).await.json().await.unwrap();
            let mut statuses: Vec<String> = list["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["status"].as_str().unwrap().to_string())
                .collect();
            statuses.sort();
            statuses
        }
    };

    note("first").await;
    note("second").await;
    // A status change: a webhook that fails twice (so its delivery ends failed), and a
    // system message queued, not yet written (no delivery step runs until later).
    failing.fail_next(&[500, 500]);
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "disputed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.dispatch_webhooks().await;
    clock.advance(Duration::from_secs(2 * 3600));
    app.dispatch_webhooks().await;
    assert_eq!(listed(status_hook.clone()).await, ["failed"]);
    receiver.fail_next(&[500]);
    note("still retrying").await;
    app.dispatch_webhooks().await;
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(
        listed(notes_hook.clone()).await,
        ["delivered", "delivered", "pending"]
    );

    // Within the retention the sweeper keeps everything.
    clock.advance(Duration::from_secs(29 * 86_400));
    sweep(&app).await;
    assert_eq!(events_of(&app, "note.created").await, 3);
    assert_eq!(listed(status_hook.clone()).await, ["failed"]);

    // Past it, what is over goes; the delivery still owed stays with its event, and so does
    // the event whose system message is not written yet (the newest note's event waits to be
    // dispatched).
    clock.advance(Duration::from_secs(2 * 86_400));
    note("recent").await;
    sweep(&app).await;
    assert_eq!(listed(notes_hook.clone()).await, ["pending"]);
    assert!(listed(status_hook.clone()).await.is_empty());
    assert_eq!(events_of(&app, "note.created").await, 2);
    assert_eq!(events_of(&app, "case.status_changed").await, 1);
    assert_eq!(
        events_of(&app, "case.created").await,
        0,
        "an event no webhook asked for goes too"
    );
    // The system message is written from its event; then the event goes.
    app.deliver_due().await;
    sweep(&app).await;
    assert_eq!(events_of(&app, "case.status_changed").await, 0);

    // The old delivery still goes out, and the webhook lives on.
    app.dispatch_webhooks().await;
    assert_eq!(listed(notes_hook.clone()).await, ["delivered", "delivered"]);
    assert_eq!(receiver.requests().len(), 5);
    clock.advance(Duration::from_secs(31 * 86_400));
    sweep(&app).await;
    assert!(listed(notes_hook).await.is_empty());
    assert_eq!(events_of(&app, "note.created").await, 0);
}
