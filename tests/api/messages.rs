//! Sending email and SMS: the seed's examples, real SMTP delivery, tracking, retries.

use mail_parser::{MessageParser, MimeHeaders};
use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::peers::SmtpPeer;

async fn app_with_smtp(smtp: &SmtpPeer) -> TestApp {
    let url = smtp.url();
    spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(url))).await
}

async fn case_with_creditor(app: &TestApp) -> (Party, String) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let token = app.labelled_token(&creditor, "Collection Partner A").await;
    let case = app.create_case(&creditor, None).await;
    (
        Party {
            id: creditor.id,
            token,
        },
        case["caseId"].as_str().unwrap().to_string(),
    )
}

fn seed_email() -> Value {
    json!({
        "messageType": "email",
        "to": "debtor@example.com",
        "subject": "Payment Reminder - Invoice INV-2024-001",
        "body": "Dear customer,\n\nThis is a reminder... Pay online at https://pay.example.com/inv?id=1&ref=x",
        "cc": ["creditor@example.com"],
        "priority": "normal",
        "templateId": "payment-reminder-v1"
    })
}

async fn send(app: &TestApp, party: &Party, case_id: &str, body: &Value) -> reqwest::Response {
    app.post(
        &party.token,
        &format!("/api/cases/{case_id}/messages"),
        body,
    )
    .await
}

async fn report(app: &TestApp, party: &Party, message_id: &str) -> Value {
    app.get(
        &party.token,
        &format!("/api/messages/{message_id}/delivery-report"),
    )
    .await
    .json()
    .await
    .unwrap()
}

fn events(report: &Value) -> Vec<String> {
    report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// The `href`/`src` value after `marker` in the HTML part.
fn url_after(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in {html}"));
    html[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect::<String>()
        .replace("&amp;", "&")
}

#[tokio::test]
async fn seed_email_reaches_a_real_smtp_server_with_every_header() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;

    let r = send(&app, &party, &case_id, &seed_email()).await;
    assert_eq!(r.status(), 201);
    let sent: Value = r.json().await.unwrap();
    let id = sent["messageId"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    assert_eq!(sent["caseId"], case_id.as_str());
    assert_eq!(sent["messageType"], "email");
    assert_eq!(sent["to"], json!(["debtor@example.com"]));
    assert_eq!(sent["subject"], "Payment Reminder - Invoice INV-2024-001");
    assert_eq!(sent["status"], "queued");
    assert_eq!(sent["sentBy"], "Collection Partner A");

    assert_eq!(app.deliver_due().await, 1);
    // One copy per recipient, each with its own bounce address and links.
    let copies = smtp.wait_for(2).await;
    assert_eq!(copies.len(), 2);
    let texts: Vec<String> = copies
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).to_string())
        .collect();
    let copy_for = |rcpt: &str| {
        texts
            .iter()
            .position(|t| t.contains(&format!("\r\nX-Sink-Rcpt-To: {rcpt}\r\n")))
            .unwrap_or_else(|| panic!("a copy for {rcpt} alone"))
    };
    let (debtor, cc) = (
        copy_for("debtor@example.com"),
        copy_for("creditor@example.com"),
    );
    for (copy, n) in [(debtor, 0), (cc, 1)] {
        assert!(
            texts[copy].starts_with(&format!("X-Sink-Mail-From: bounce+{}.{n}-", &id[4..])),
            "the copy's own bounce address as the envelope sender"
        );
    }
    let link_of = |copy: usize| {
        let mail = MessageParser::default().parse(&copies[copy]).unwrap();
        mail.header_raw("List-Unsubscribe")
            .unwrap()
            .trim()
            .to_string()
    };
    assert_ne!(link_of(debtor), link_of(cc), "links of their own");
    let raw = copies[debtor].clone();
    let mail = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        mail.subject(),
        Some("Payment Reminder - Invoice INV-2024-001")
    );
    assert_eq!(mail.message_id(), Some(format!("{id}@localhost").as_str()));
    assert_eq!(
        mail.from().unwrap().first().unwrap().address(),
        Some("noreply@localhost")
    );
    assert_eq!(
        mail.to().unwrap().first().unwrap().address(),
        Some("debtor@example.com")
    );
    assert_eq!(
        mail.cc().unwrap().first().unwrap().address(),
        Some("creditor@example.com")
    );
    assert_eq!(
        mail.reply_to().unwrap().first().unwrap().address(),
        Some(format!("case-{case_id}@localhost").as_str())
    );
    let ct = mail.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let unsubscribe = mail
        .header_raw("List-Unsubscribe")
        .unwrap()
        .trim()
        .to_string();
    assert!(
        unsubscribe.starts_with(&format!("<{}/unsubscribe/", app.config.http.public_url)),
        "{unsubscribe}"
    );
    assert_eq!(
        mail.header_raw("List-Unsubscribe-Post").unwrap().trim(),
        "List-Unsubscribe=One-Click"
    );
    let plain = mail.body_text(0).unwrap();
    assert!(plain.contains("This is a reminder..."));
    assert!(
        plain.contains("unsubscribe: http"),
        "an unsubscribe line in the text"
    );
    let html = mail.body_html(0).unwrap();
    assert!(html.contains("/t/open/"), "open pixel");
    assert!(html.contains("/t/click/"), "tracked link");
    assert!(
        !html.contains("href=\"https://pay.example.com"),
        "the original link only behind the tracked one"
    );

    let r = report(&app, &party, id).await;
    assert_eq!(r["status"], "sent");
    assert_eq!(events(&r), ["queued", "sent"]);
    let m: Value = app
        .get(&party.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["body"], seed_email()["body"]);
    assert!(m["sentAt"].is_string());
}

#[tokio::test]
async fn opened_and_clicked_appear_after_the_pixel_and_link_are_fetched() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let sent: Value = send(&app, &party, &case_id, &seed_email())
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messageId"].as_str().unwrap();
    app.deliver_due().await;
    let raw = smtp.wait_for(1).await.remove(0);
    let mail = MessageParser::default().parse(&raw).unwrap();
    let html = mail.body_html(0).unwrap().to_string();
    let pixel = url_after(&html, &format!("{}/t/open/", app.config.http.public_url));
    let link = url_after(&html, &format!("{}/t/click/", app.config.http.public_url));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(pixel.replace(&app.config.http.public_url, &app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(report(&app, &party, id).await["status"], "opened");
    // A mail client that loads the pixel again and again: served, recorded once.
    for _ in 0..30 {
        let r = client
            .get(pixel.replace(&app.config.http.public_url, &app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let r = client
        .get(link.replace(&app.config.http.public_url, &app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://pay.example.com/inv?id=1&ref=x"
    );
    let rep = report(&app, &party, id).await;
    assert_eq!(rep["status"], "clicked");
    assert_eq!(events(&rep), ["queued", "sent", "opened", "clicked"]);

    // A tampered token: 404, no redirect, nothing recorded.
    let token_start = link.rfind('/').unwrap() + 1;
    let mut tampered = link.clone().into_bytes();
    let i = token_start + 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let r = client
        .get(
            String::from_utf8(tampered)
                .unwrap()
                .replace(&app.config.http.public_url, &app.base),
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("location").is_none());
    assert_problem(r, 404, "not_found").await;
    let r = client
        .get(format!("{}/t/open/bm90LWEtdG9rZW4", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(events(&report(&app, &party, id).await).len(), 4);
}

#[tokio::test]
async fn one_click_unsubscribe_suppresses_the_recipient() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let body = json!({"messageType": "email", "to": "leave-me@example.com", "subject": "Hello", "body": "Text"});
    assert_eq!(send(&app, &party, &case_id, &body).await.status(), 201);
    app.deliver_due().await;
    let mail_raw = smtp.wait_for(1).await.remove(0);
    let mail = MessageParser::default().parse(&mail_raw).unwrap();
    let header = mail.header_raw("List-Unsubscribe").unwrap().trim();
    let url = header
        .trim_start_matches('<')
        .trim_end_matches('>')
        .replace(&app.config.http.public_url, &app.base);

    // Following the link only asks; mail scanners do that.
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<form method=\"post\">")
    );
    assert_eq!(
        send(&app, &party, &case_id, &body).await.status(),
        201,
        "not unsubscribed by a GET"
    );

    // RFC 8058: a POST with List-Unsubscribe=One-Click.
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_problem(
        send(&app, &party, &case_id, &body).await,
        422,
        "recipient_suppressed",
    )
    .await;
    let other = json!({"messageType": "email", "to": "stay@example.com", "subject": "Hello", "body": "Text"});
    assert_eq!(send(&app, &party, &case_id, &other).await.status(), 201);
    let log: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "recipient.unsubscribed")
    );
}

/// Pipelined (the sink offers PIPELINING, as Postfix does), one command at a time (it does
/// not), and to a server that refuses the second EHLO that asks whether it pipelines (as
/// OpenSMTPD does): the same message arrives byte for byte (dots that begin a line, Danish
/// letters), a refused recipient fails the message with the server's reply, and the next
/// message goes on a fresh connection.
#[tokio::test]
async fn mail_goes_the_same_pipelined_or_not_and_a_refusal_in_a_pipelined_group_fails_only_its_message()
 {
    let mut delivered = Vec::new();
    for args in [
        &[][..],
        &["--no-pipelining"][..],
        &["--refuse-second-ehlo"][..],
    ] {
        let smtp = SmtpPeer::start_with(args).await;
        let app = app_with_smtp(&smtp).await;
        let (party, case_id) = case_with_creditor(&app).await;
        let text = ".a line that begins with a dot\n..and two\nÆblegrød på trappen.";
        let first = json!({"messageType": "email", "subject": "Hi", "body": text});
        let refused = json!({"messageType": "email", "to": "reject-me@example.com", "subject": "Hi", "body": "Text"});
        let mut ids = Vec::new();
        for body in [&first, &refused, &first] {
            let r = send(&app, &party, &case_id, body).await;
            ids.push(
                r.json::<Value>().await.unwrap()["messageId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            app.deliver_due().await;
        }
        let statuses = [
            report(&app, &party, &ids[0]).await["status"].clone(),
            report(&app, &party, &ids[1]).await["status"].clone(),
            report(&app, &party, &ids[2]).await["status"].clone(),
        ];
        assert_eq!(statuses, ["sent", "failed", "sent"], "{args:?}");
        let m: Value = app
            .get(&party.token, &format!("/api/messages/{}", ids[1]))
            .await
            .json()
            .await
            .unwrap();
        assert!(m["failureReason"].as_str().unwrap().contains("550"), "{m}");
        let mails = smtp.wait_for(2).await;
        assert_eq!(mails.len(), 2, "{args:?}");
        // Three transactions began; pipelined only where the server offers it.
        let pipelined = if args.is_empty() { 3 } else { 0 };
        assert_eq!(smtp.pipelined(), pipelined, "{args:?}");
        let parsed = MessageParser::default().parse(&mails[0]).unwrap();
        let body = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(body.starts_with(text), "{args:?}: {body:?}");
        // The same up to the footer (whose unsubscribe link is the message's own).
        delivered.push(body.split("\n--\n").next().unwrap().to_string());
    }
    assert_eq!(delivered[0], delivered[1]);
    assert_eq!(delivered[0], delivered[2]);
}

#[tokio::test]
async fn permanent_smtp_refusal_fails_at_once_with_the_reason() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let body = json!({"messageType": "email", "to": "reject-me@example.com", "subject": "Hi", "body": "Text"});
    let id = send(&app, &party, &case_id, &body)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;
    let m: Value = app
        .get(&party.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "failed");
    assert!(m["failureReason"].as_str().unwrap().contains("550"), "{m}");
    assert_eq!(
        events(&report(&app, &party, &id).await),
        ["queued", "failed"]
    );
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(&id).unwrap())
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1, "no retry after a 5xx");
    // The server's words are recorded as said, quotes and backslash and all.
    let said = r#"mailbox unavailable: "{a,b}" \ NULL"#;
    assert!(
        attempts[0].error.as_deref().unwrap().contains(said),
        "{:?}",
        attempts[0].error
    );
    assert!(m["failureReason"].as_str().unwrap().contains(said), "{m}");
}

#[tokio::test]
async fn transient_smtp_failures_are_retried_until_sent_or_given_up() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let once = json!({"messageType": "email", "to": "tempfail-1@example.com", "subject": "Hi", "body": "Text"});
    let always = json!({"messageType": "email", "to": "tempfail@example.com", "subject": "Hi", "body": "Text"});
    let once_id = send(&app, &party, &case_id, &once)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let always_id = send(&app, &party, &case_id, &always)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;

    assert_eq!(report(&app, &party, &once_id).await["status"], "sent");
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(&once_id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_deref().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["retry", "sent"]
    );
    assert!(attempts[0].error.as_deref().unwrap().contains("451"));

    let m: Value = app
        .get(&party.token, &format!("/api/messages/{always_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "failed");
    assert!(
        m["failureReason"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 3 attempts"),
        "{m}"
    );
    assert_eq!(
        app.store
            .queue()
            .delivery_attempts(&parley::domain::MessageId::parse(&always_id).unwrap())
            .await
            .unwrap()
            .len(),
        3,
        "the schedule has two retries"
    );

    let mails = smtp.wait_for(1).await;
    let ids: Vec<String> = mails
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m)
                .unwrap()
                .message_id()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [format!("{once_id}@localhost")],
        "one Message-ID across attempts"
    );
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_transient_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )))
    })
    .await;
    let (party, case_id) = case_with_creditor(&app).await;
    let body = json!({"messageType": "email", "to": "someone@example.com", "subject": "Hi", "body": "Text"});
    let id = send(&app, &party, &case_id, &body)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(&id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_deref().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["retry", "retry", "failed"]
    );
}

#[tokio::test]
async fn high_priority_is_served_first_and_scheduled_messages_wait() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    for (to, priority) in [
        ("low@example.com", "low"),
        ("normal@example.com", "normal"),
        ("high@example.com", "high"),
    ] {
        let body = json!({"messageType": "email", "to": to, "subject": "Hi", "body": "Text", "priority": priority});
        assert_eq!(send(&app, &party, &case_id, &body).await.status(), 201);
    }
    let later = json!({"messageType": "email", "to": "later@example.com", "subject": "Hi", "body": "Text", "scheduledAt": "2099-01-01T08:00:00Z"});
    let r: Value = send(&app, &party, &case_id, &later)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["scheduledFor"], "2099-01-01T08:00:00Z");
    assert_eq!(r["status"], "queued");

    // The test worker claims one job per step.
    for _ in 0..3 {
        assert_eq!(app.delivery.run_once().await.unwrap(), 1);
    }
    assert_eq!(
        app.delivery.run_once().await.unwrap(),
        0,
        "the scheduled message is not due"
    );
    let order: Vec<String> = smtp
        .wait_for(3)
        .await
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m)
                .unwrap()
                .to()
                .unwrap()
                .first()
                .unwrap()
                .address()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        ["high@example.com", "normal@example.com", "low@example.com"]
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_sends_once() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let path = format!("/api/cases/{case_id}/messages");
    let post = |body: Value, key: &'static str| {
        app.request(reqwest::Method::POST, &party.token, &path)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(seed_email(), "order-42").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // The same body with its keys in another order is the same request.
    let mut reordered = serde_json::Map::new();
    for (k, v) in seed_email().as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let again = post(Value::Object(reordered), "order-42").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let mut changed = seed_email();
    changed["subject"] = json!("Another subject");
    assert_problem(
        post(changed, "order-42").await.unwrap(),
        422,
        "idempotency_conflict",
    )
    .await;

    app.deliver_due().await;
    // One message: one copy for the debtor and one for the cc.
    assert_eq!(smtp.wait_for(2).await.len(), 2);
    let list: Value = app.get(&party.token, &path).await.json().await.unwrap();
    assert_eq!(list["totalCount"], 1, "one message for the three requests");
    // Keys belong to the party that used them.
    let other = app.party(PartyKind::Creditor, "Other").await;
    let other_case = app.create_case(&other, None).await;
    let r = app
        .request(
            reqwest::Method::POST,
            &other.token,
            &format!(
                "/api/cases/{}/messages",
                other_case["caseId"].as_str().unwrap()
            ),
        )
        .header("Idempotency-Key", "order-42")
        .json(&seed_email())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_ne!(
        r.json::<Value>().await.unwrap()["messageId"],
        first["messageId"]
    );
}

/// Keys past their 24 hours are forgotten by the retention sweeper (they answer no repeat
/// any more); younger ones stay and still replay.
#[tokio::test]
async fn idempotency_keys_are_forgotten_after_their_24_hours() {
    use std::time::Duration;
    let clock = parley::domain::clock::ManualClock::at(parley::domain::time::now_micros());
    let app = crate::helpers::spawn_app_with_clock(clock.clone(), |_| {}).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let path = format!("/api/cases/{case_id}/messages");
    let post = |key: &'static str| {
        app.request(reqwest::Method::POST, &party.token, &path)
            .header("Idempotency-Key", key)
            .json(&seed_email())
            .send()
    };
    let keys = || async {
        let pool = app.pool().await;
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first: Value = post("monday").await.unwrap().json().await.unwrap();
    clock.advance(Duration::from_secs(12 * 3600));
    let tuesday: Value = post("tuesday").await.unwrap().json().await.unwrap();
    assert_eq!(keys().await, 2);

    clock.advance(Duration::from_secs(11 * 3600));
    app.deliver_due().await;
    assert_eq!(keys().await, 2, "both within their 24 hours");
    let again = post("monday").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    clock.advance(Duration::from_secs(2 * 3600));
    app.deliver_due().await;
    assert_eq!(keys().await, 1, "the first key is past its 24 hours");
    let r: Value = post("tuesday").await.unwrap().json().await.unwrap();
    assert_eq!(
        r["messageId"], tuesday["messageId"],
        "the younger key still replays"
    );
    let fresh = post("monday").await.unwrap();
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    assert_ne!(
        fresh.json::<Value>().await.unwrap()["messageId"],
        first["messageId"],
        "a forgotten key queues anew"
    );
}

#[tokio::test]
async fn header_injection_and_bad_recipients_are_refused() {
    let app = spawn_app().await;
    let (party, case_id) = case_with_creditor(&app).await;
    let cases = [
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi\r\nBcc: x@evil.example", "body": "b"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com\r\nBcc: x@evil.example", "subject": "Hi", "body": "b"}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "cc": ["x\n@y.z"], "subject": "Hi", "body": "b"}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi\u{0}", "body": "b"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "not an address", "subject": "Hi", "body": "b"}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "sms", "to": "12345", "body": "b"}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi", "body": "b",
                   "cc": (0..51).map(|i| format!("cc{i}@example.com")).collect::<Vec<_>>()}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "sms", "to": ["+4511111111", "+4522222222"], "body": "b"}),
            "invalid_recipient",
        ),
        (
            json!({"messageType": "fax", "to": "a@example.com", "body": "b"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi", "body": "b", "priority": "urgent"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi", "body": "b", "category": "spam"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "body": "b"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "subject": "Hi"}),
            "validation_failed",
        ),
        (
            json!({"messageType": "email", "to": "a@example.com", "templateId": "payment-reminder-v1",
                   "variables": {"invoiceNumber": "X\r\nBcc: x@evil.example", "dueDate": "d"}}),
            "validation_failed",
        ),
    ];
    for (body, code) in cases {
        let problem = assert_problem(send(&app, &party, &case_id, &body).await, 422, code).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{body}");
    }
    let list: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 0, "nothing queued");
}

#[tokio::test]
async fn messages_are_listed_filtered_and_paged() {
    let app = spawn_app().await;
    let (party, case_id) = case_with_creditor(&app).await;
    for i in 0..3 {
        let body = json!({"messageType": "email", "to": format!("d{i}@example.com"), "subject": "Hi", "body": "Text"});
        assert_eq!(send(&app, &party, &case_id, &body).await.status(), 201);
    }
    let sms = json!({"messageType": "sms", "body": "Payment reminder: Invoice INV-2024-001 due. Please contact us.", "priority": "high"});
    let sms: Value = send(&app, &party, &case_id, &sms)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sms["to"],
        json!(["+4512345678"]),
        "the debtor's number when `to` is absent"
    );
    assert_eq!(sms["segments"], 1);
    app.deliver_due().await;

    let get = |q: &'static str| {
        let (app, party, case_id) = (&app, &party, &case_id);
        async move {
            app.get(&party.token, &format!("/api/cases/{case_id}/messages{q}"))
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let all = get("").await;
    assert_eq!(all["totalCount"], 4);
    let first = &all["messages"][0];
    assert_eq!(first["messageType"], "sms");
    assert_eq!(first["direction"], "outbound");
    assert_eq!(first["status"], "sent");
    assert!(
        first.get("body").is_none(),
        "bodies only on the single message"
    );
    assert_eq!(get("?type=email").await["totalCount"], 3);
    assert_eq!(get("?type=email&direction=inbound").await["totalCount"], 0);
    assert_eq!(get("?status=sent").await["totalCount"], 4);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        app.get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?dateFrom={today}&dateTo={today}")
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["totalCount"],
        4
    );
    assert_eq!(get("?dateTo=2024-01-01").await["totalCount"], 0);
    assert_eq!(get("?dateFrom=2099-01-01T00:00:00Z").await["totalCount"], 0);
    assert_problem(
        app.get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?type=fax"),
        )
        .await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?dateFrom=soon"),
        )
        .await,
        400,
        "invalid_query",
    )
    .await;

    let page = get("?limit=3").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest: Value = app
        .get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?limit=3&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1);
    assert!(rest.get("nextCursor").is_none());
}

#[tokio::test]
async fn other_tenants_cannot_send_or_read_messages() {
    let app = spawn_app().await;
    let (party, case_id) = case_with_creditor(&app).await;
    let outsider = app.party(PartyKind::Creditor, "Outsider").await;
    let sent: Value = send(
        &app,
        &party,
        &case_id,
        &json!({"messageType": "email", "subject": "Hi", "body": "Text"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = sent["messageId"].as_str().unwrap();
    assert_problem(
        send(&app, &outsider, &case_id, &seed_email()).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/cases/{case_id}/messages"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/messages/{id}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(
            &outsider.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&party.token, "/api/messages/msg_0000/delivery-report")
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn smtp_auth_credentials_from_the_url_are_used() {
    let smtp = SmtpPeer::start_with(&["--auth", "parley:s3cret"]).await;
    let good = format!("smtp://parley:s3cret@127.0.0.1:{}", smtp.port);
    let app =
        spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(good))).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let body = json!({"messageType": "email", "subject": "Hi", "body": "Text"});
    let id = send(&app, &party, &case_id, &body)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;
    assert_eq!(report(&app, &party, &id).await["status"], "sent");
    assert_eq!(smtp.wait_for(1).await.len(), 1);

    let bad = format!("smtp://parley:wrong@127.0.0.1:{}", smtp.port);
    let app =
        spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(bad))).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let id = send(&app, &party, &case_id, &body)
        .await
        .json::<Value>()
        .await
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;
    let m: Value = app
        .get(&party.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "failed", "a refused login is permanent: {m}");
    assert!(m["failureReason"].as_str().unwrap().contains("535"), "{m}");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_reply_carries_in_reply_to_and_references() {
    let smtp = SmtpPeer::start().await;
    let app = app_with_smtp(&smtp).await;
    let (party, case_id) = case_with_creditor(&app).await;
    let first: Value = send(
        &app,
        &party,
        &case_id,
        &json!({"messageType": "email", "subject": "Hi", "body": "One"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let parent = first["messageId"].as_str().unwrap();
    let reply =
        json!({"messageType": "email", "subject": "Re: Hi", "body": "Two", "inReplyTo": parent});
    assert_eq!(send(&app, &party, &case_id, &reply).await.status(), 201);
    app.deliver_due().await;
    let mails = smtp.wait_for(2).await;
    let second = mails
        .iter()
        .map(|m| MessageParser::default().parse(m).unwrap())
        .find(|m| m.subject() == Some("Re: Hi"))
        .unwrap();
    let expected = format!("{parent}@localhost");
    assert_eq!(second.in_reply_to().as_text(), Some(expected.as_str()));
    assert_eq!(second.references().as_text(), Some(expected.as_str()));

    let other = app.party(PartyKind::Creditor, "Other").await;
    let other_case = app.create_case(&other, None).await;
    let foreign =
        json!({"messageType": "email", "subject": "Re", "body": "x", "inReplyTo": parent});
    let r = app
        .post(
            &other.token,
            &format!(
                "/api/cases/{}/messages",
                other_case["caseId"].as_str().unwrap()
            ),
            &foreign,
        )
        .await;
    assert_problem(r, 422, "validation_failed").await;
}

/// Sends arriving together share the commit pipeline's batches: each is still decided on
/// its own. A key used by several at once queues one message and replays it to the others;
/// a subject new to its case opens one thread however many of its sends come together, and
/// never another case's; other tenants' cases stay 404 in the same batches.
#[tokio::test]
async fn sends_at_once_share_batches_and_each_is_decided_on_its_own() {
    let app = spawn_app().await;
    let (party, case_id) = case_with_creditor(&app).await;
    let second = app.create_case(&party, None).await["caseId"]
        .as_str()
        .unwrap()
        .to_string();
    let stranger = app.party(PartyKind::Creditor, "Stranger").await;
    let foreign = app.create_case(&stranger, None).await["caseId"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |case: &str| format!("/api/cases/{case}/messages");
    let email = |subject: String| json!({"messageType": "email", "to": "debtor@example.com", "subject": subject, "body": "b"});

    // (case, body, key): 8 with one key, 8 with keys of their own, 8 on one new subject of
    // each case, 8 on subjects of their own, 4 into another tenant's case.
    let mut requests: Vec<(String, Value, Option<String>)> = Vec::new();
    for i in 0..8 {
        requests.push((
            case_id.clone(),
            email("Keyed".into()),
            Some("one-key".into()),
        ));
        requests.push((
            case_id.clone(),
            email("Keyed".into()),
            Some(format!("key-{i}")),
        ));
        requests.push((case_id.clone(), email("Shared".into()), None));
        requests.push((second.clone(), email("Shared".into()), None));
        requests.push((case_id.clone(), email(format!("Own {i}")), None));
    }
    for _ in 0..4 {
        requests.push((foreign.clone(), email("Shared".into()), None));
    }
    // SMS among them: a batch of reads mixes the channels.
    for _ in 0..6 {
        requests.push((
            second.clone(),
            json!({"messageType": "sms", "to": "+4587654321", "body": "b"}),
            None,
        ));
    }
    let answers = futures_util::future::join_all(requests.iter().map(|(case, body, key)| {
        let mut r = app
            .request(reqwest::Method::POST, &party.token, &path(case))
            .json(body);
        if let Some(key) = key {
            r = r.header("Idempotency-Key", key.as_str());
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    }))
    .await;

    let mut one_key = std::collections::HashSet::new();
    let mut shared_threads = std::collections::HashMap::new();
    let mut own_threads = std::collections::HashSet::new();
    for ((case, body, key), (status, answer)) in requests.iter().zip(&answers) {
        if *case == foreign {
            assert_eq!(*status, 404, "{answer}");
            assert_eq!(answer["code"], "not_found");
            continue;
        }
        assert_eq!(*status, 201, "{answer}");
        let thread = answer["threadId"].as_str().unwrap().to_string();
        if key.as_deref() == Some("one-key") {
            one_key.insert(answer["messageId"].as_str().unwrap().to_string());
        } else if body["subject"] == "Shared" {
            shared_threads
                .entry(case.clone())
                .or_insert_with(std::collections::HashSet::new)
                .insert(thread);
        } else if body["messageType"] == "sms" {
            assert_eq!(answer["messageType"], "sms");
            assert_eq!(answer["caseId"], second.as_str());
        } else if body["subject"] != "Keyed" {
            own_threads.insert(thread);
        }
    }
    assert_eq!(one_key.len(), 1, "one message for the one key");
    assert_eq!(own_threads.len(), 8, "a thread for each subject of its own");
    assert_eq!(shared_threads.len(), 2);
    let first = &shared_threads[&case_id];
    let other = &shared_threads[&second];
    assert_eq!(first.len(), 1, "one thread for the subject in its case");
    assert_eq!(other.len(), 1, "one thread for the subject in its case");
    assert_ne!(first, other, "each case its own thread");
    // Later sends find their thread known to the process: still each case's own.
    for _ in 0..3 {
        for (case, threads) in [(&case_id, first), (&second, other)] {
            let r = send(&app, &party, case, &email("Shared".into())).await;
            assert_eq!(r.status(), 201);
            let thread = r.json::<Value>().await.unwrap()["threadId"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(threads.contains(&thread), "{thread} is its case's thread");
        }
    }

    // 1 + 8 keyed, 8 shared and 8 of their own in the first case, 3 more later; 8 shared,
    // 6 SMS and 3 later in the second.
    let total = |case: String| {
        let app = &app;
        let token = party.token.clone();
        async move {
            let list: Value = app.get(&token, &path(&case)).await.json().await.unwrap();
            list["totalCount"].as_i64().unwrap()
        }
    };
    assert_eq!(total(case_id.clone()).await, 28);
    assert_eq!(total(second.clone()).await, 17);
    let threads: Value = app
        .get(&party.token, &format!("/api/cases/{case_id}/threads"))
        .await
        .json()
        .await
        .unwrap();
    // "Keyed", "Shared" and the eight subjects of their own.
    assert_eq!(threads["threads"].as_array().unwrap().len(), 10);
    // Each accepted message is queued for delivery exactly once.
    assert_eq!(app.deliver_due().await, 45);
}
