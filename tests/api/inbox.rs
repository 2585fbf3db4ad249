//! What a reply asks of a person: a dispute, a wrong person or a request to stop holds the
//! case's collection messages (at queueing and at sending) until a case worker confirms or
//! corrects it; the inbox lists what awaits an answer or a review, per tenant.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::inbound::mail;

async fn send(app: &TestApp, party: &Party, case_id: &str, category: &str) -> reqwest::Response {
    app.post(
        &party.token,
        &format!("/api/cases/{case_id}/messages"),
        &json!({"messageType": "email", "subject": "Your invoice", "body": "Text", "category": category}),
    )
    .await
}

async fn queued(app: &TestApp, party: &Party, case_id: &str, category: &str) -> String {
    let r = send(app, party, case_id, category).await;
    assert_eq!(r.status(), 201, "queueing {category}");
    let m: Value = r.json().await.unwrap();
    m["messageId"].as_str().unwrap().to_string()
}

/// A mail from the case's debtor to the case's reply address; its message id.
async fn reply(app: &TestApp, case_id: &str, n: u32, body: &str) -> String {
    let raw = mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "Re: Your invoice"),
            ("Message-ID", &format!("<reply{n}.{case_id}@example.com>")),
        ],
        body,
    );
    let r = app.post_mail(&app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn json_of(app: &TestApp, token: &str, path: &str) -> Value {
    let r = app.get(token, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

async fn actions(app: &TestApp, party: &Party, case_id: &str) -> Vec<String> {
    let log = json_of(
        app,
        &party.token,
        &format!("/api/cases/{case_id}/audit-log"),
    )
    .await;
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_dispute_holds_collection_until_a_case_worker_confirms_it() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let beta = app.party(PartyKind::Creditor, "Beta").await;
    let case = app.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let other = app.create_case(&beta, None).await;
    let other_id = other["caseId"].as_str().unwrap();
    let reminder = queued(&app, &acme, case_id, "payment_reminders").await;
    let update = queued(&app, &acme, case_id, "case_updates").await;

    let dispute = reply(
        &app,
        case_id,
        1,
        "I never ordered this and I dispute the claim.",
    )
    .await;
    let held = json_of(&app, &acme.token, &format!("/api/cases/{case_id}")).await;
    assert_eq!(held["hold"]["reason"], "awaiting_review", "{held}");
    assert_eq!(held["hold"]["messageId"], dispute.as_str());
    assert_eq!(held["hold"]["intent"], "dispute");
    // Another tenant's case is not held by it.
    let free = json_of(&app, &beta.token, &format!("/api/cases/{other_id}")).await;
    assert!(free.get("hold").is_none(), "{free}");
    assert_eq!(
        send(&app, &beta, other_id, "payment_reminders")
            .await
            .status(),
        201
    );

    for category in ["payment_reminders", "settlement_offers", "deadline_alerts"] {
        assert_problem(
            send(&app, &acme, case_id, category).await,
            422,
            "awaiting_review",
        )
        .await;
    }
    app.deliver_due().await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{reminder}")).await;
    assert_eq!(m["status"], "queued", "held at sending: {m}");
    let m = json_of(&app, &acme.token, &format!("/api/messages/{update}")).await;
    assert_ne!(m["status"], "queued", "not a collection message: {m}");

    // The inbox shows it to its tenant only; it cannot be marked done before review.
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(inbox["totalCount"], 1, "{inbox}");
    let entry = &inbox["messages"][0];
    assert_eq!(entry["awaiting"], "review");
    assert_eq!(entry["caseNumber"], case["caseNumber"]);
    assert_eq!(entry["message"]["understanding"]["review"], "pending");
    assert!(
        entry["message"]["body"]
            .as_str()
            .unwrap()
            .contains("dispute")
    );
    let theirs = json_of(&app, &beta.token, "/api/inbox").await;
    assert_eq!(theirs["totalCount"], 0, "{theirs}");
    for path in [
        format!("/api/inbox/{dispute}/done"),
        format!("/api/messages/{dispute}/understanding"),
    ] {
        let r = app
            .post(&beta.token, &path, &json!({"intent": "other"}))
            .await;
        assert_problem(r, 404, "not_found").await;
    }
    let r = app
        .post(
            &acme.token,
            &format!("/api/inbox/{dispute}/done"),
            &json!({}),
        )
        .await;
    assert_problem(r, 422, "awaiting_review").await;
    // A stranger's mail naming the case number waits for its sender's review: it is no one's
    // reply to read, hold or mark until it is accepted.
    let raw = mail(
        &[
            ("From", "someone@elsewhere.example"),
            ("To", "info@localhost"),
            (
                "Subject",
                &format!("Receipt {}", case["caseNumber"].as_str().unwrap()),
            ),
            ("Message-ID", "<stranger.1@elsewhere.example>"),
        ],
        "I dispute everything.",
    );
    let r = app.post_mail(&app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    let stranger = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/api/messages/{stranger}/understanding"),
        format!("/api/inbox/{stranger}/done"),
    ] {
        let r = app
            .post(&acme.token, &path, &json!({"intent": "wrong_person"}))
            .await;
        assert_problem(r, 404, "not_found").await;
    }
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(inbox["totalCount"], 1, "{inbox}");

    // The case worker confirms: the case is disputed, the hold is the status's now.
    let r = app
        .patch(
            &acme.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "disputed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let confirmed: Value = r.json().await.unwrap();
    assert!(confirmed.get("hold").is_none(), "{confirmed}");
    let m = json_of(&app, &acme.token, &format!("/api/messages/{dispute}")).await;
    assert_eq!(m["understanding"]["review"], "confirmed", "{m}");
    assert_problem(
        send(&app, &acme, case_id, "payment_reminders").await,
        422,
        "case_not_contactable",
    )
    .await;
    app.deliver_due().await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{reminder}")).await;
    assert_eq!(m["status"], "failed", "{m}");
    let done = actions(&app, &acme, case_id).await;
    for action in ["case.held", "message.review_confirmed"] {
        assert!(done.iter().any(|a| a == action), "{action}: {done:?}");
    }
    // Reviewed, it awaits an answer still; marked done, it leaves.
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(inbox["messages"][0]["awaiting"], "answer", "{inbox}");
    let r = app
        .post(
            &acme.token,
            &format!("/api/inbox/{dispute}/done"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(inbox["totalCount"], 0, "{inbox}");
    assert!(
        actions(&app, &acme, case_id)
            .await
            .iter()
            .any(|a| a == "message.done")
    );
}

#[tokio::test]
async fn a_correction_dismisses_the_hold_and_the_held_reminder_goes() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let reminder = queued(&app, &acme, case_id, "payment_reminders").await;
    let stop = reply(
        &app,
        case_id,
        1,
        "Stop contacting me. Do not write to me again.",
    )
    .await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{stop}")).await;
    assert_eq!(m["understanding"]["intent"], "cease_contact", "{m}");
    app.deliver_due().await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{reminder}")).await;
    assert_eq!(m["status"], "queued", "{m}");

    // Wrong input first: an unknown intent, an outbound message, an unknown id.
    let path = format!("/api/messages/{stop}/understanding");
    let r = app
        .post(&acme.token, &path, &json!({"intent": "angry"}))
        .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = app
        .post(
            &acme.token,
            &format!("/api/messages/{reminder}/understanding"),
            &json!({"intent": "other"}),
        )
        .await;
    assert_problem(r, 404, "not_found").await;

    // A person reads it otherwise: the hold is dismissed and the reminder goes at once.
    let r = app
        .post(&acme.token, &path, &json!({"intent": "question"}))
        .await;
    assert_eq!(r.status(), 200);
    let corrected: Value = r.json().await.unwrap();
    let u = &corrected["understanding"];
    assert_eq!(u["intent"], "question", "{u}");
    assert_eq!(u["correction"]["from"], "cease_contact");
    assert_eq!(u["correction"]["by"], "Acme");
    assert_eq!(u["review"], "dismissed");
    assert!(!u["evidence"].as_array().unwrap().is_empty(), "kept: {u}");
    let c = json_of(&app, &acme.token, &format!("/api/cases/{case_id}")).await;
    assert!(c.get("hold").is_none(), "{c}");
    app.deliver_due().await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{reminder}")).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert!(
        actions(&app, &acme, case_id)
            .await
            .iter()
            .any(|a| a == "message.understanding_corrected")
    );

    // Read as a dispute again by a person: the case is held again.
    let r = app
        .post(&acme.token, &path, &json!({"intent": "dispute"}))
        .await;
    assert_eq!(r.status(), 200);
    let c = json_of(&app, &acme.token, &format!("/api/cases/{case_id}")).await;
    assert_eq!(c["hold"]["intent"], "dispute", "{c}");
    assert_eq!(c["hold"]["messageId"], stop.as_str());
    // An opt-out that is not in force yet confirms nothing; one in force does.
    let r = app
        .request(
            reqwest::Method::PUT,
            &acme.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .json(&json!({"doNotContact": true, "effectiveDate": "2099-01-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let c = json_of(&app, &acme.token, &format!("/api/cases/{case_id}")).await;
    assert_eq!(c["hold"]["messageId"], stop.as_str(), "{c}");
    let r = app
        .request(
            reqwest::Method::PUT,
            &acme.token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .json(&json!({"doNotContact": true, "reason": "asked in writing", "effectiveDate": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let c = json_of(&app, &acme.token, &format!("/api/cases/{case_id}")).await;
    assert!(c.get("hold").is_none(), "{c}");
    let m = json_of(&app, &acme.token, &format!("/api/messages/{stop}")).await;
    assert_eq!(m["understanding"]["review"], "confirmed", "{m}");
}

#[tokio::test]
async fn the_inbox_lists_replies_oldest_first_until_answered_or_done() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let partner = app.party(PartyKind::Partner, "Collect").await;
    let first = app.create_case(&acme, Some(&partner)).await;
    let first_id = first["caseId"].as_str().unwrap();
    let second = app.create_case(&acme, None).await;
    let second_id = second["caseId"].as_str().unwrap();
    let question = reply(&app, first_id, 1, "Can you send me a copy of the invoice?").await;
    let promise = reply(&app, second_id, 2, "I will pay 500 kr on Friday.").await;

    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    let ids: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"]["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [question.as_str(), promise.as_str()], "{inbox}");
    assert_eq!(inbox["messages"][0]["awaiting"], "answer");
    assert!(inbox["messages"][0]["ageSeconds"].as_i64().unwrap() >= 0);
    // The partner sees the case assigned to it only.
    let theirs = json_of(&app, &partner.token, "/api/inbox").await;
    assert_eq!(theirs["totalCount"], 1, "{theirs}");
    assert_eq!(
        theirs["messages"][0]["message"]["messageId"],
        question.as_str()
    );

    // Filters and pages.
    let only = json_of(
        &app,
        &acme.token,
        "/api/inbox?intent=payment_promise,paid_already",
    )
    .await;
    assert_eq!(only["totalCount"], 1, "{only}");
    assert_eq!(
        only["messages"][0]["message"]["messageId"],
        promise.as_str()
    );
    let review = json_of(&app, &acme.token, "/api/inbox?awaiting=review").await;
    assert_eq!(review["totalCount"], 0, "{review}");
    let old = json_of(&app, &acme.token, "/api/inbox?olderThan=1h").await;
    assert_eq!(old["totalCount"], 0, "{old}");
    let page = json_of(&app, &acme.token, "/api/inbox?limit=1").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let cursor = page["nextCursor"].as_str().unwrap();
    let next = json_of(
        &app,
        &acme.token,
        &format!("/api/inbox?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        next["messages"][0]["message"]["messageId"],
        promise.as_str()
    );
    assert!(next.get("nextCursor").is_none(), "{next}");
    for bad in [
        "intent=angry",
        "intent=",
        "intent=question,%20other",
        "awaiting=soon",
        "olderThan=5y",
        "olderThan=9999999999d",
        "olderThan=1%C3%A9",
        "olderThan=yesterday",
        "limit=0",
    ] {
        let r = app.get(&acme.token, &format!("/api/inbox?{bad}")).await;
        assert_problem(r, 400, "invalid_query").await;
    }
    let r = app.get(&acme.token, "/api/inbox?cursor=not*base64").await;
    assert_problem(r, 422, "invalid_cursor").await;

    // An answer on the case takes its reply out; a system of record's `done` the other.
    queued(&app, &acme, first_id, "general").await;
    let r = app
        .post(
            &partner.token,
            &format!("/api/inbox/{promise}/done"),
            &json!({}),
        )
        .await;
    assert_problem(r, 404, "not_found").await;
    let r = app
        .post(
            &acme.token,
            &format!("/api/inbox/{promise}/done"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 204);
    // The sweeper's round keeps the list as it is.
    app.deliver_due().await;
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(inbox["totalCount"], 0, "{inbox}");
    assert!(inbox["messages"].as_array().unwrap().is_empty());
    // A new reply after the answer waits again.
    let again = reply(&app, first_id, 3, "Thanks, but which invoice is this?").await;
    let inbox = json_of(&app, &acme.token, "/api/inbox").await;
    assert_eq!(
        inbox["messages"][0]["message"]["messageId"],
        again.as_str(),
        "{inbox}"
    );
}

#[tokio::test]
async fn a_dated_promise_becomes_a_deadline_when_asked() {
    let app = spawn_app_with(|c| c.policy.promise_deadlines = true).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let id = reply(
        &app,
        case_id,
        1,
        "I will pay 1.500,00 kr. on 15 January 2027.",
    )
    .await;
    let m = json_of(&app, &acme.token, &format!("/api/messages/{id}")).await;
    assert_eq!(m["understanding"]["intent"], "payment_promise", "{m}");
    assert_eq!(m["understanding"]["promisedDate"], "2027-01-15", "{m}");
    let list = json_of(
        &app,
        &acme.token,
        &format!("/api/cases/{case_id}/deadlines"),
    )
    .await;
    let deadlines = list["deadlines"].as_array().unwrap();
    assert_eq!(deadlines.len(), 1, "{list}");
    assert!(
        deadlines[0]["dueAt"]
            .as_str()
            .unwrap()
            .starts_with("2027-01-15"),
        "{list}"
    );

    // Off by default.
    let plain = spawn_app().await;
    let acme = plain.party(PartyKind::Creditor, "Acme").await;
    let case = plain.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    reply(
        &plain,
        case_id,
        1,
        "I will pay 1.500,00 kr. on 15 January 2027.",
    )
    .await;
    let list = json_of(
        &plain,
        &acme.token,
        &format!("/api/cases/{case_id}/deadlines"),
    )
    .await;
    assert!(list["deadlines"].as_array().unwrap().is_empty(), "{list}");
}

#[tokio::test]
async fn a_deadline_alert_on_a_held_case_waits_for_the_review() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let due = chrono::Utc::now() + chrono::Duration::hours(30);
    let r = app
        .post(
            &acme.token,
            &format!("/api/cases/{case_id}/deadlines"),
            &json!({"title": "First instalment", "dueAt": due.to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let dispute = reply(&app, case_id, 1, "I dispute this claim entirely.").await;
    // The scanner's alert is queued, not refused, and waits at sending.
    app.deliver_due().await;
    let alerts = || async {
        let list = json_of(
            &app,
            &acme.token,
            &format!("/api/cases/{case_id}/messages?type=system"),
        )
        .await;
        list["messages"].as_array().unwrap().clone()
    };
    let list = alerts().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["category"], "deadline_alerts");
    assert_eq!(list[0]["status"], "queued", "{list:?}");
    // Read otherwise, the hold goes, and so does the alert.
    let r = app
        .post(
            &acme.token,
            &format!("/api/messages/{dispute}/understanding"),
            &json!({"intent": "other"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.deliver_due().await;
    let list = alerts().await;
    assert_eq!(list[0]["status"], "sent", "{list:?}");
}
