//! The send policy: preferences and opt-outs, contact hours, frequency caps, checked when a
//! message is queued and again when it goes out.

use std::sync::Arc;

use parley::domain::PartyKind;
use parley::domain::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{
    Party, TestApp, assert_problem, spawn_app, spawn_app_with, spawn_app_with_clock,
};

async fn case_of(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case["caseId"].as_str().unwrap().to_string())
}

pub(crate) async fn put_prefs(
    app: &TestApp,
    party: &Party,
    case_id: &str,
    body: &Value,
) -> reqwest::Response {
    app.request(
        reqwest::Method::PUT,
        &party.token,
        &format!("/api/cases/{case_id}/communication-preferences"),
    )
    .json(body)
    .send()
    .await
    .unwrap()
}

async fn send(app: &TestApp, party: &Party, case_id: &str, body: Value) -> reqwest::Response {
    app.post(
        &party.token,
        &format!("/api/cases/{case_id}/messages"),
        &body,
    )
    .await
}

fn email(category: &str) -> Value {
    json!({"messageType": "email", "subject": "Hi", "body": "Text", "category": category})
}

#[tokio::test]
async fn preferences_round_trip_in_the_seed_shape() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let defaults: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(defaults["allowEmail"], true);
    assert_eq!(defaults["doNotContact"], false);

    let seed = json!({
        "preferredChannel": "email", "emailAddress": "debtor@example.com", "phoneNumber": "+4512345678",
        "allowSms": true, "allowEmail": true, "preferredLanguage": "da", "doNotContact": false,
        "contactHours": {"start": "09:00", "end": "17:00", "timezone": "Europe/Copenhagen"}
    });
    let r = put_prefs(&app, &creditor, &case_id, &seed).await;
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    for key in [
        "preferredChannel",
        "emailAddress",
        "phoneNumber",
        "allowSms",
        "allowEmail",
        "preferredLanguage",
        "doNotContact",
        "contactHours",
    ] {
        assert_eq!(got[key], seed[key], "{key}");
    }
    // The opt-out example changes only what it names.
    let optout = json!({"doNotContact": true, "reason": "Debtor requested no contact", "effectiveDate": "2024-01-15",
                        "exceptions": ["legal_notices", "payment_confirmations"]});
    let got: Value = put_prefs(&app, &creditor, &case_id, &optout)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["doNotContact"], true);
    assert_eq!(got["reason"], "Debtor requested no contact");
    assert_eq!(got["exceptions"], optout["exceptions"]);
    assert_eq!(got["preferredLanguage"], "da", "untouched");
    assert!(got["updatedAt"].is_string());

    for bad in [
        json!({"emailAddress": "nope"}),
        json!({"contactHours": {"start": "25:00", "end": "17:00"}}),
        json!({"contactHours": {"start": "09:00", "end": "17:00", "timezone": "Mars/Base"}}),
        json!({"exceptions": ["everything"]}),
        json!({"effectiveDate": "soon"}),
        json!({"preferredChannel": "fax"}),
    ] {
        assert_problem(
            put_prefs(&app, &creditor, &case_id, &bad).await,
            422,
            "validation_failed",
        )
        .await;
    }
    let outsider = app.party(PartyKind::Creditor, "Outsider").await;
    assert_problem(
        put_prefs(&app, &outsider, &case_id, &seed).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(
            &outsider.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let log: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "preferences.updated")
            .count(),
        2
    );
}

#[tokio::test]
async fn an_opt_out_refuses_all_but_its_exceptions() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    put_prefs(
        &app,
        &creditor,
        &case_id,
        &json!({"doNotContact": true, "exceptions": ["legal_notices"]}),
    )
    .await;
    assert_problem(
        send(&app, &creditor, &case_id, email("payment_reminders")).await,
        422,
        "do_not_contact",
    )
    .await;
    // The refusal is evidence in the case's audit log: the rule, not the message.
    let log: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    let refused = entries
        .iter()
        .find(|e| e["action"] == "message.refused")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(refused["targetId"], "do_not_contact", "{refused}");
    let r = send(&app, &creditor, &case_id, email("legal_notices")).await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        evidence(&app, &creditor, m["messageId"].as_str().unwrap()).await["rule"],
        "opt_out_exception"
    );
    put_prefs(
        &app,
        &creditor,
        &case_id,
        &json!({"doNotContact": false, "allowSms": false}),
    )
    .await;
    let sms = json!({"messageType": "sms", "body": "Reminder"});
    assert_problem(
        send(&app, &creditor, &case_id, sms).await,
        422,
        "channel_not_allowed",
    )
    .await;
}

/// A clock standing at `at` (RFC 3339).
fn clock_at(at: &str) -> Arc<ManualClock> {
    ManualClock::at(
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_micros(),
    )
}

#[tokio::test]
async fn outside_contact_hours_a_message_waits_with_scheduled_for() {
    let clock = clock_at("2025-03-10T07:15:00Z");
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (creditor, case_id) = case_of(&app).await;
    let hours = json!({"start": "09:00", "end": "17:00", "timezone": "UTC"});
    put_prefs(&app, &creditor, &case_id, &json!({"contactHours": hours})).await;

    let r = send(&app, &creditor, &case_id, email("general")).await;
    assert_eq!(r.status(), 201, "accepted");
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["status"], "queued");
    assert_eq!(m["scheduledFor"], "2025-03-10T09:00:00Z");
    let id = m["messageId"].as_str().unwrap();
    let e = evidence(&app, &creditor, id).await;
    assert_eq!(
        (&e["decision"], &e["rule"]),
        (&json!("defer"), &json!("contact_hours"))
    );
    assert_eq!(e["checkedAt"], "2025-03-10T07:15:00Z");
    assert_eq!(
        app.deliver_due().await,
        0,
        "nothing goes out before the window opens"
    );
    clock.set(
        chrono::DateTime::parse_from_rfc3339("2025-03-10T08:59:59Z")
            .unwrap()
            .timestamp_micros(),
    );
    assert_eq!(app.deliver_due().await, 0, "not a second early");
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.deliver_due().await, 1, "out when the window opens");
    // The last check is the one kept: at sending, inside the window.
    let e = evidence(&app, &creditor, id).await;
    assert_eq!(
        (&e["decision"], &e["rule"]),
        (&json!("allow"), &json!("contact_permitted"))
    );
    assert_eq!(e["checkedAt"], "2025-03-10T09:00:00Z");
    let m: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "sent");
}

#[tokio::test]
async fn on_closed_days_a_message_waits_for_the_next_open_days_window() {
    for (now, opens) in [
        // 24 December at noon in Copenhagen: 24–26 December are closed.
        ("2027-12-24T11:00:00Z", "2027-12-27T07:00:00Z"),
        // Maundy Thursday 2027: Thursday and Good Friday closed, Saturday open.
        ("2027-03-25T09:00:00Z", "2027-03-27T07:00:00Z"),
    ] {
        let clock = clock_at(now);
        let app = spawn_app_with_clock(clock.clone(), |c| {
            c.policy.closed_days = parley::domain::calendar::ClosedDays::parse("dk").unwrap();
            c.policy.default_contact_hours =
                parley::domain::policy::ContactWindow::parse("08:00-21:00").ok();
        })
        .await;
        let (creditor, case_id) = case_of(&app).await;
        let r = send(&app, &creditor, &case_id, email("payment_reminders")).await;
        assert_eq!(r.status(), 201, "accepted on a closed day");
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["status"], "queued");
        assert_eq!(m["scheduledFor"], opens, "{now}");
        let e = evidence(&app, &creditor, m["messageId"].as_str().unwrap()).await;
        assert_eq!(e["rule"], "closed_day", "{now}");
        assert_eq!(app.deliver_due().await, 0, "nothing goes out on {now}");
        clock.set(
            chrono::DateTime::parse_from_rfc3339(opens)
                .unwrap()
                .timestamp_micros(),
        );
        assert_eq!(app.deliver_due().await, 1, "out when {opens} comes");
    }
}

#[tokio::test]
async fn the_default_contact_hours_apply_in_the_debtors_zone() {
    // 20:30 in Copenhagen (UTC+1 in winter): the default window 08:00-21:00 is open there,
    // and a window of 21:30-22:00 local opens in an hour.
    let clock = clock_at("2025-01-15T19:30:00Z");
    let app = spawn_app_with_clock(clock, move |c| {
        c.policy.default_contact_hours =
            parley::domain::policy::ContactWindow::parse("21:30-22:00").ok()
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = crate::helpers::case_body();
    body["debtor"]["timezone"] = json!("Europe/Copenhagen");
    let case: Value = app
        .post(&creditor.token, "/api/cases", &body)
        .await
        .json()
        .await
        .unwrap();
    let m: Value = send(
        &app,
        &creditor,
        case["caseId"].as_str().unwrap(),
        email("general"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(m["scheduledFor"], "2025-01-15T20:30:00Z");
}

#[tokio::test]
async fn the_frequency_cap_counts_per_channel() {
    let app = spawn_app_with(|c| {
        c.policy.frequency_cap = parley::domain::policy::FrequencyCap::parse("2/1d").ok()
    })
    .await;
    let (creditor, case_id) = case_of(&app).await;
    for _ in 0..2 {
        assert_eq!(
            send(&app, &creditor, &case_id, email("general"))
                .await
                .status(),
            201
        );
    }
    assert_problem(
        send(&app, &creditor, &case_id, email("general")).await,
        422,
        "frequency_cap_exceeded",
    )
    .await;
    let sms = json!({"messageType": "sms", "body": "Reminder"});
    assert_eq!(
        send(&app, &creditor, &case_id, sms).await.status(),
        201,
        "another channel, another count"
    );
}

#[tokio::test]
async fn the_policy_is_checked_again_when_a_message_goes_out() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let m: Value = send(&app, &creditor, &case_id, email("payment_reminders"))
        .await
        .json()
        .await
        .unwrap();
    let id = m["messageId"].as_str().unwrap();
    // The debtor opts out after the message was queued, before it was sent.
    put_prefs(&app, &creditor, &case_id, &json!({"doNotContact": true})).await;
    app.deliver_due().await;
    let m: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "failed");
    assert!(
        m["failureReason"]
            .as_str()
            .unwrap()
            .starts_with("do_not_contact"),
        "{m}"
    );
    let e = evidence(&app, &creditor, id).await;
    assert_eq!(
        (&e["decision"], &e["rule"]),
        (&json!("refuse"), &json!("do_not_contact"))
    );
}

/// A claim of several deliveries reads their messages, preferences and suppressions together;
/// each is still decided on its own facts.
#[tokio::test]
async fn deliveries_claimed_together_are_each_decided_on_their_own_case() {
    let app = spawn_app().await;
    let (creditor, opted_out) = case_of(&app).await;
    let other = app.create_case(&creditor, None).await;
    let other = other["caseId"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (case_id, body) in [
        (&opted_out, email("general")),
        (&other, email("general")),
        (
            &other,
            json!({"messageType": "email", "subject": "Hi", "body": "Text", "cc": ["blocked@example.com"]}),
        ),
        (&other, json!({"messageType": "sms", "body": "Reminder"})),
    ] {
        let m: Value = send(&app, &creditor, case_id, body)
            .await
            .json()
            .await
            .unwrap();
        ids.push(m["messageId"].as_str().unwrap().to_string());
    }
    // After queueing: one case opts out, an address and the debtor's number are suppressed.
    put_prefs(&app, &creditor, &opted_out, &json!({"doNotContact": true})).await;
    let store = &app.store;
    assert!(
        store
            .policy()
            .suppress(
                "email",
                "BLOCKED@example.com",
                "test",
                None,
                None,
                parley::store::SuppressionScope::Everyone
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .policy()
            .suppress(
                "sms",
                "+4512345678",
                "test",
                None,
                None,
                parley::store::SuppressionScope::Everyone
            )
            .await
            .unwrap()
    );
    // An address suppressed for the other channel stops nothing here.
    assert!(
        store
            .policy()
            .suppress(
                "sms",
                "debtor@example.com",
                "test",
                None,
                None,
                parley::store::SuppressionScope::Everyone
            )
            .await
            .unwrap()
    );

    // A worker that claims eight at a time.
    let mut config = app.config.clone();
    config.delivery.concurrency = 8;
    let wide = parley::App::build(config).await.unwrap();
    let wide = wide.delivery().unwrap();
    assert_eq!(wide.run_once().await.unwrap(), 4, "one claim");
    assert_eq!(wide.job().preloaded_attempts(), 4, "read together");
    let mut outcomes = Vec::new();
    for id in &ids {
        let m: Value = app
            .get(&creditor.token, &format!("/api/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let reason = m["failureReason"].as_str().unwrap_or_default();
        outcomes.push((
            m["status"].as_str().unwrap().to_string(),
            reason.split(':').next().unwrap_or_default().to_string(),
        ));
    }
    let outcome = |s: &str, r: &str| (s.to_string(), r.to_string());
    assert_eq!(
        outcomes,
        [
            outcome("failed", "do_not_contact"),
            outcome("sent", ""),
            outcome("failed", "recipient_suppressed"),
            outcome("failed", "recipient_suppressed"),
        ]
    );
}

/// The `policy` evidence of a message's delivery report.
async fn evidence(app: &TestApp, party: &Party, id: &str) -> Value {
    let report: Value = app
        .get(&party.token, &format!("/api/messages/{id}/delivery-report"))
        .await
        .json()
        .await
        .unwrap();
    report["policy"].clone()
}

#[tokio::test]
async fn a_disputed_case_holds_reminders_but_sends_a_legal_notice() {
    let smtp = crate::peers::SmtpPeer::start().await;
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(url));
    })
    .await;
    let (creditor, case_id) = case_of(&app).await;
    // A reminder queued while the case is open, then the debtor disputes the debt.
    let queued: Value = send(&app, &creditor, &case_id, email("payment_reminders"))
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "disputed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for category in ["payment_reminders", "settlement_offers", "deadline_alerts"] {
        let r = send(&app, &creditor, &case_id, email(category)).await;
        let problem = assert_problem(r, 422, "case_not_contactable").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("disputed"),
            "{problem}"
        );
    }
    let legal: Value = send(&app, &creditor, &case_id, email("legal_notices"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(legal["status"], "queued");
    app.deliver_due().await;
    let status = |id: String| {
        let app = &app;
        let token = creditor.token.clone();
        async move {
            let m: Value = app
                .get(&token, &format!("/api/messages/{id}"))
                .await
                .json()
                .await
                .unwrap();
            m
        }
    };
    let held = status(queued["messageId"].as_str().unwrap().to_string()).await;
    assert_eq!(held["status"], "failed", "{held}");
    assert!(
        held["failureReason"]
            .as_str()
            .unwrap()
            .starts_with("case_not_contactable"),
        "{held}"
    );
    let sent = status(legal["messageId"].as_str().unwrap().to_string()).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    let mails = smtp.wait_for(1).await;
    assert_eq!(
        mails.len(),
        1,
        "only the legal notice reached the mail server"
    );
}

#[tokio::test]
async fn the_preferred_address_is_the_default_recipient() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    put_prefs(
        &app,
        &creditor,
        &case_id,
        &json!({"emailAddress": "preferred@example.com"}),
    )
    .await;
    let m: Value = send(&app, &creditor, &case_id, email("general"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["to"], json!(["preferred@example.com"]));
}
