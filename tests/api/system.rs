//! System messages: the four events, their templates, their delivery to the debtor through
//! the queue and the policy, one message per event, and the deadline scanner across
//! processes.

use std::time::Duration;

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, spawn_app, spawn_app_with};
use crate::peers::SmtpPeer;
use crate::policy::put_prefs;

async fn case_of(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case["caseId"].as_str().unwrap().to_string())
}

/// The case's system messages, newest first.
async fn system_messages(app: &TestApp, party: &Party, case_id: &str) -> Vec<Value> {
    let list: Value = app
        .get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?type=system"),
        )
        .await
        .json()
        .await
        .unwrap();
    list["messages"].as_array().unwrap().clone()
}

async fn one(app: &TestApp, party: &Party, id: &str) -> Value {
    app.get(&party.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payment_confirmation_reaches_the_debtor_by_email_in_their_language() {
    let smtp = SmtpPeer::start().await;
    let url = smtp.url();
    let app =
        spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(url))).await;
    let (creditor, case_id) = case_of(&app).await;
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/payments"),
            &json!({"amount": "2500.50", "reference": "bank-123"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    // The job that writes it and the delivery it queues.
    assert_eq!(app.deliver_due().await, 2);
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let m = &list[0];
    assert_eq!(m["messageType"], "system");
    assert_eq!(m["event"], "payment.received");
    assert_eq!(m["channel"], "email");
    assert_eq!(m["direction"], "outbound");
    assert_eq!(m["sentBy"], "system");
    assert_eq!(m["category"], "payment_confirmations");
    assert_eq!(m["status"], "sent");
    assert_eq!(m["to"], json!(["debtor@example.com"]));
    // The debtor's language is Danish: the Danish text, with the amounts filled in.
    let full = one(&app, &creditor, m["messageId"].as_str().unwrap()).await;
    assert_eq!(full["language"], "da");
    let body = full["body"].as_str().unwrap();
    assert!(body.contains("2500.50 DKK"), "{body}");
    assert!(
        body.contains("12499.50 DKK"),
        "the rest outstanding: {body}"
    );
    let mails = smtp.wait_for(1).await;
    let mail = String::from_utf8_lossy(&mails[0]);
    assert!(mail.contains("Betaling modtaget"), "{mail}");
    // Evidence of the decision that let it go.
    let report: Value = app
        .get(
            &creditor.token,
            &format!(
                "/api/messages/{}/delivery-report",
                m["messageId"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["policy"]["decision"], "allow", "{report}");
    assert_eq!(report["policy"]["rule"], "contact_permitted");
    // Listed with the case's messages, and not among the emails.
    let emails: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages?type=email"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(emails["totalCount"], 0);
}

#[tokio::test]
async fn status_changes_inform_the_parties_and_tell_the_debtor_only_what_concerns_them() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let path = format!("/api/cases/{case_id}");
    assert_eq!(
        app.patch(&creditor.token, &path, &json!({"status": "disputed"}))
            .await
            .status(),
        200
    );
    // The same status again is no change, and makes no message.
    app.patch(&creditor.token, &path, &json!({"status": "disputed"}))
        .await;
    app.deliver_due().await;
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["event"], "case.status_changed");
    assert_eq!(
        list[0]["channel"],
        Value::Null,
        "a dispute is not news to the debtor"
    );
    assert_eq!(list[0]["status"], "sent");
    assert_eq!(list[0]["to"], json!([]));

    app.patch(&creditor.token, &path, &json!({"status": "payment_plan"}))
        .await;
    app.deliver_due().await;
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["channel"], "email");
    assert_eq!(list[0]["status"], "sent");
    let full = one(&app, &creditor, list[0]["messageId"].as_str().unwrap()).await;
    assert!(
        full["body"]
            .as_str()
            .unwrap()
            .contains("disputed til payment_plan"),
        "{full}"
    );
    // The audit log names them as the case's own.
    let log: Value = app
        .get(&creditor.token, &format!("{path}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    let made = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "system_message.created" && e["actor"] == "system")
        .count();
    assert_eq!(made, 2, "{log}");
    // Nothing for the debtor went into the outbox for the dispute: one email only.
    let outbox = app.dir.path().join("outbox");
    let emails = std::fs::read_dir(outbox).unwrap().count();
    assert_eq!(emails, 1);
}

#[tokio::test]
async fn a_refusal_leaves_the_system_message_refused_with_its_rule() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let optout = json!({"doNotContact": true, "reason": "Asked us to stop"});
    assert_eq!(
        put_prefs(&app, &creditor, &case_id, &optout).await.status(),
        200
    );
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/payments"),
            &json!({"amount": "100.00"}),
        )
        .await;
    assert_eq!(r.status(), 201, "a refusal never makes the event an error");
    assert_eq!(app.deliver_due().await, 1, "the job; nothing to deliver");
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list[0]["status"], "refused");
    assert_eq!(list[0]["channel"], "email");
    let report: Value = app
        .get(
            &creditor.token,
            &format!(
                "/api/messages/{}/delivery-report",
                list[0]["messageId"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["policy"]["decision"], "refuse");
    assert_eq!(report["policy"]["rule"], "do_not_contact");
    assert!(report["policy"]["checkedAt"].is_string());
}

#[tokio::test]
async fn an_upload_makes_one_notice_and_a_retried_job_no_second() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let r = crate::documents::upload(
        &app,
        &creditor.token,
        &case_id,
        crate::documents::seed_form(crate::documents::pdf_bytes(1000)),
    )
    .await;
    assert_eq!(r.status(), 201);
    app.deliver_due().await;
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["event"], "document.uploaded");
    assert_eq!(list[0]["channel"], Value::Null);
    let full = one(&app, &creditor, list[0]["messageId"].as_str().unwrap()).await;
    assert!(
        full["body"].as_str().unwrap().contains("invoice.pdf"),
        "{full}"
    );
    // The job's work done again, for every event there is (a crash after the message was
    // written, before its job was marked done; a second process): nothing new is written.
    let other = parley::App::build(app.config.clone()).await.unwrap();
    for event_id in 1..=10 {
        other
            .services()
            .messaging
            .make_system_message(&event_id.to_string())
            .await
            .unwrap();
    }
    assert_eq!(system_messages(&app, &creditor, &case_id).await.len(), 1);
}

#[tokio::test]
async fn a_deadline_warning_is_sent_once_by_two_processes() {
    let app = spawn_app().await;
    let (creditor, case_id) = case_of(&app).await;
    let receiver = crate::peers::HookReceiver::start().await;
    let r = app
        .post(
            &creditor.token,
            "/api/webhooks",
            &json!({"url": receiver.url, "events": ["deadline.approaching"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let due = chrono::Utc::now() + chrono::Duration::hours(30);
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/deadlines"),
            &json!({"title": "Payment plan first instalment", "dueAt": due.to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let far = chrono::Utc::now() + chrono::Duration::days(30);
    app.post(
        &creditor.token,
        &format!("/api/cases/{case_id}/deadlines"),
        &json!({"title": "Later", "dueAt": far.to_rfc3339()}),
    )
    .await;

    // Two more processes on the same database: each its own pool, its own worker.
    let one_more = parley::App::build(app.config.clone()).await.unwrap();
    let other = parley::App::build(app.config.clone()).await.unwrap();
    let other_delivery = other.delivery().unwrap();
    let warning = Duration::from_secs(3 * 86_400);
    let mine = one_more.services().messaging.clone();
    let theirs = other.services().messaging.clone();
    let (a, b) = tokio::join!(
        mine.announce_deadlines(warning),
        theirs.announce_deadlines(warning)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "one deadline is due within 3 days"
    );
    // Again, from both: nothing new.
    let (a, b) = tokio::join!(
        mine.announce_deadlines(warning),
        theirs.announce_deadlines(warning)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 0);
    let (x, y) = tokio::join!(app.deliver_due(), async {
        let mut n = 0;
        while let Ok(k) = other_delivery.run_once().await {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    assert_eq!(x + y, 2, "the job and the email, each once");
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["event"], "deadline.approaching");
    assert_eq!(list[0]["category"], "deadline_alerts");
    assert_eq!(list[0]["status"], "sent");
    let full = one(&app, &creditor, list[0]["messageId"].as_str().unwrap()).await;
    assert!(
        full["body"]
            .as_str()
            .unwrap()
            .contains("Payment plan first instalment"),
        "{full}"
    );
    // The webhook names the deadline by its title, read from the deadline when it is sent
    // (the outbox keeps no text).
    app.dispatch_webhooks().await;
    let requests = receiver.requests();
    let (_, body) = requests.last().expect("the deadline's webhook");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["event"], "deadline.approaching");
    assert_eq!(body["title"], "Payment plan first instalment");
}

#[tokio::test]
async fn system_templates_are_editable_and_listed() {
    let app = spawn_app().await;
    let list: Value = app
        .get(&app.admin.token, "/api/message-templates")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["templateId"].as_str())
        .collect();
    for event in [
        "case.status_changed",
        "payment.received",
        "document.uploaded",
        "deadline.approaching",
    ] {
        assert!(ids.contains(&format!("system-{event}").as_str()), "{ids:?}");
    }
    let r = app
        .request(
            reqwest::Method::PUT,
            &app.admin.token,
            "/api/message-templates/system-payment.received",
        )
        .json(
            &json!({"name": "Payment", "type": "email", "subject": "Paid: {{paymentAmount}}",
                      "body": "Thanks, {{debtorName}}: {{paymentAmount}} received."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (creditor, case_id) = case_of(&app).await;
    app.post(
        &creditor.token,
        &format!("/api/cases/{case_id}/payments"),
        &json!({"amount": "10.00"}),
    )
    .await;
    app.deliver_due().await;
    let list = system_messages(&app, &creditor, &case_id).await;
    assert_eq!(list[0]["subject"], "Paid: 10.00 DKK");
}
