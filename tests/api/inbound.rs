//! Inbound mail: matching to cases, threads, unmatched mail, bounces.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app, spawn_app_with};

async fn post_mail(app: &TestApp, token: &str, raw: &str) -> reqwest::Response {
    app.post_mail(token, raw).await
}

pub(crate) fn mail(headers: &[(&str, &str)], body: &str) -> String {
    let mut s: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    s.push('\n');
    s.push_str(body);
    s
}

async fn setup(app: &TestApp) -> (Party, Value) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    (creditor, case)
}

/// How many inbound messages a case has, as `party` sees it.
async fn inbound_total(app: &TestApp, token: &str, case_id: &str) -> i64 {
    let list: Value = app
        .get(
            token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    list["totalCount"].as_i64().unwrap()
}

/// The unmatched inbox, as an admin sees it.
async fn unmatched_list(app: &TestApp) -> Vec<Value> {
    let v: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    v["messages"].as_array().unwrap().clone()
}

async fn send_email(app: &TestApp, party: &Party, case_id: &str, subject: &str) -> Value {
    let r = app
        .post(
            &party.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "subject": subject, "body": "Please pay."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn reply_joins_thread_by_in_reply_to() {
    let app = spawn_app().await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let sent = send_email(&app, &creditor, case_id, "Payment Reminder").await;
    let parent = format!("<{}@localhost>", sent["messageId"].as_str().unwrap());
    app.deliver_due().await;

    let raw = mail(
        &[
            ("From", "Debtor <debtor@example.com>"),
            ("To", "noreply@localhost"),
            ("Subject", "Something else entirely"),
            ("Message-ID", "<reply-1@example.com>"),
            ("In-Reply-To", &parent),
            ("References", &parent),
        ],
        "Can we agree on a payment plan?\n",
    );
    let r = post_mail(&app, &app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["outcome"], "matched");
    assert_eq!(got["caseId"], case_id);
    assert_eq!(
        got["threadId"], sent["threadId"],
        "the reply joins the thread of the message it answers"
    );

    let list: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 1);
    let m = &list["messages"][0];
    assert_eq!(m["from"], "debtor@example.com");
    assert_eq!(m["status"], "received");
    assert!(m["receivedAt"].is_string());
    assert_eq!(m["hasAttachments"], false);

    let threads: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/threads"))
        .await
        .json()
        .await
        .unwrap();
    let t = &threads["threads"][0];
    assert_eq!(threads["threads"].as_array().unwrap().len(), 1);
    assert_eq!(t["subject"], "Payment Reminder");
    assert_eq!(t["messageCount"], 2);
    assert_eq!(t["status"], "active");
    assert!(
        t["participants"]
            .as_array()
            .unwrap()
            .contains(&json!("debtor@example.com"))
    );
    let messages: Value = app
        .get(
            &creditor.token,
            &format!("/api/threads/{}/messages", t["threadId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    let bodies: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().trim())
        .collect();
    assert_eq!(bodies, ["Please pay.", "Can we agree on a payment plan?"]);
    assert_eq!(messages["messages"][1]["from"], "debtor@example.com");

    // The same mail again is not stored twice.
    let again: Value = post_mail(&app, &app.admin.token, &raw)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(again["messageId"], got["messageId"]);
}

#[tokio::test]
async fn mail_to_the_case_address_or_with_the_case_number_finds_its_case() {
    let app = spawn_app().await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let number = case["caseNumber"].as_str().unwrap();

    let to_address = mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "Payment plan"),
        ],
        "Hello\n",
    );
    let first: Value = post_mail(&app, &app.admin.token, &to_address)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["caseId"], case_id);

    let by_number = mail(
        &[
            ("From", "lawyer@example.com"),
            ("To", "support@example.com"),
            ("Subject", &format!("Re: payment  PLAN ({number})")),
        ],
        "Hi\n",
    );
    let second: Value = post_mail(&app, &app.admin.token, &by_number)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["caseId"], case_id);
    // Only a case number links it, from an address the case does not know: it waits for a
    // case worker, and is announced once accepted.
    let second_id = second["messageId"].as_str().unwrap();
    let held: Value = app
        .get(&creditor.token, &format!("/api/messages/{second_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(held["senderVerified"], false, "{held}");
    let r = app
        .post(
            &creditor.token,
            &format!("/api/messages/{second_id}/accept"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_ne!(
        second["threadId"], first["threadId"],
        "another subject, another thread"
    );

    let same_subject = mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "RE: Payment plan"),
        ],
        "Again\n",
    );
    let third: Value = post_mail(&app, &app.admin.token, &same_subject)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        third["threadId"], first["threadId"],
        "replies join by normalised subject"
    );

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
            .filter(|e| e["action"] == "message.received")
            .count(),
        3
    );
}

#[tokio::test]
async fn unmatched_mail_is_kept_and_listed_for_admins() {
    let app = spawn_app().await;
    let (creditor, _) = setup(&app).await;
    let raw = mail(
        &[
            ("From", "stranger@example.com"),
            ("To", "info@example.com"),
            ("Subject", "Who are you?"),
            ("Message-ID", "<s-1@example.com>"),
        ],
        "?\n",
    );
    let r = post_mail(&app, &app.admin.token, &raw).await;
    assert_eq!(r.status(), 202);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["outcome"], "unmatched");
    let list: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    let item = &list["messages"][0];
    assert_eq!(item["inboundId"], got["inboundId"]);
    assert_eq!(item["from"], "stranger@example.com");
    assert_eq!(item["subject"], "Who are you?");
    assert_eq!(item["messageId"], "<s-1@example.com>");

    assert_problem(
        app.get(&creditor.token, "/api/inbound/unmatched").await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        post_mail(&app, &creditor.token, &raw).await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .client
        .post(format!("{}/api/inbound/email", app.base))
        .bearer_auth(&app.admin.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported_media_type").await;
    assert_problem(
        post_mail(&app, &app.admin.token, "").await,
        422,
        "invalid_mail",
    )
    .await;
}

#[tokio::test]
async fn a_delivery_status_notification_bounces_the_original() {
    let smtp = crate::peers::SmtpPeer::start().await;
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(url));
    })
    .await;
    let (creditor, case) = setup(&app).await;
    let sent = send_email(&app, &creditor, case["caseId"].as_str().unwrap(), "Hi").await;
    let id = sent["messageId"].as_str().unwrap();
    app.deliver_due().await;
    // The mail went out with its own bounce address as the envelope sender (VERP).
    let raw = String::from_utf8(smtp.wait_for(1).await.remove(0)).unwrap();
    let bounce_to = raw
        .lines()
        .find_map(|l| l.strip_prefix("X-Sink-Mail-From: "))
        .unwrap()
        .to_string();
    assert!(
        bounce_to.starts_with("bounce+") && bounce_to.ends_with("@localhost"),
        "{bounce_to}"
    );
    let report_to = |to: &str, dsn_id: &str| {
        format!(
            "From: MAILER-DAEMON@mx.example.com\nTo: {to}\nSubject: Undelivered Mail Returned to Sender\n\
Message-ID: <{dsn_id}@mx.example.com>\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n\
--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\
--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n\
Final-Recipient: rfc822; debtor@example.com\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n\n\
--B\nContent-Type: text/rfc822-headers\n\nFrom: noreply@localhost\nMessage-ID: <{id}@localhost>\nSubject: Hi\n\n--B--\n"
        )
    };
    // A forged notification names the message but not its bounce address: not believed.
    for forged_to in [
        "noreply@localhost",
        "bounce+00000000000000000000000000000000-0123456789abcdef@localhost",
    ] {
        let r = post_mail(&app, &app.admin.token, &report_to(forged_to, forged_to)).await;
        assert_eq!(r.status(), 202, "kept unmatched, not a bounce");
        let m: Value = app
            .get(&creditor.token, &format!("/api/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(m["status"], "sent", "a forged bounce changes nothing");
    }
    // The forgeries suppressed nothing: the address still takes mail.
    let case_id = case["caseId"].as_str().unwrap();
    send_email(&app, &creditor, case_id, "Still reachable").await;
    let dsn = report_to(&bounce_to, "dsn-1");
    let r = post_mail(&app, &app.admin.token, &dsn).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"outcome": "bounce", "messageId": id})
    );
    let m: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "bounced");
    assert!(
        m["failureReason"].as_str().unwrap().contains("5.1.1"),
        "{m}"
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
    assert_eq!(events, ["queued", "sent", "bounced"]);
    // The hard bounce put the address on the suppression list.
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "subject": "Hi again", "body": "Please pay."}),
        )
        .await;
    assert_problem(r, 422, "recipient_suppressed").await;
    // The notification is not a message of the case.
    let list: Value = app
        .get(
            &creditor.token,
            &format!(
                "/api/cases/{}/messages?direction=inbound",
                case["caseId"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 0);
}

#[tokio::test]
async fn other_tenants_cannot_see_threads() {
    let app = spawn_app().await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let sent = send_email(&app, &creditor, case_id, "Hi").await;
    let outsider = app.party(PartyKind::Partner, "Outsider").await;
    assert_problem(
        app.get(&outsider.token, &format!("/api/cases/{case_id}/threads"))
            .await,
        404,
        "not_found",
    )
    .await;
    let thread = sent["threadId"].as_str().unwrap();
    assert_problem(
        app.get(&outsider.token, &format!("/api/threads/{thread}/messages"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&creditor.token, "/api/threads/thread_nope/messages")
            .await,
        404,
        "not_found",
    )
    .await;
    let ok: Value = app
        .get(&creditor.token, &format!("/api/threads/{thread}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["messages"].as_array().unwrap().len(), 1);
}

pub(crate) async fn post_sms(
    app: &TestApp,
    from: &str,
    body: &str,
    sid: &str,
) -> reqwest::Response {
    use base64::Engine;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("twilio:{}", app.admin.token));
    app.client
        .post(format!("{}/api/inbound/sms", app.base))
        .header("authorization", format!("Basic {auth}"))
        .form(&[
            ("From", from),
            ("To", "+4570000000"),
            ("Body", body),
            ("MessageSid", sid),
            ("AccountSid", "AC1"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn inbound_sms_joins_the_debtors_case_and_stop_suppresses() {
    let app = spawn_app().await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let r = post_sms(&app, "+4512345678", "I will pay on Friday", "SM100").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<Response>"));
    post_sms(&app, "+4512345678", "I will pay on Friday", "SM100").await;
    let list: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound&type=sms"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 1, "a provider retry is stored once");
    assert_eq!(list["messages"][0]["from"], "+4512345678");

    // Outbound SMS share the case's SMS thread.
    let sent: Value = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "sms", "body": "Thank you, noted."}),
        )
        .await
        .json()
        .await
        .unwrap();
    let thread: Value = app
        .get(
            &creditor.token,
            &format!(
                "/api/threads/{}/messages",
                sent["threadId"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    let bodies: Vec<&str> = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["I will pay on Friday", "Thank you, noted."]);

    assert_eq!(
        post_sms(&app, "+4512345678", "STOP", "SM101")
            .await
            .status(),
        200
    );
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "sms", "body": "Reminder"}),
        )
        .await;
    assert_problem(r, 422, "recipient_suppressed").await;

    assert_eq!(
        post_sms(&app, "+4599999999", "Who is this?", "SM102")
            .await
            .status(),
        200
    );
    let unmatched: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unmatched["messages"][0]["source"], "sms");
    assert_eq!(unmatched["messages"][0]["from"], "+4599999999");
    let r = app
        .client
        .post(format!("{}/api/inbound/sms", app.base))
        .form(&[("From", "+4512345678")])
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn replies_arrive_over_the_built_in_smtp_server() {
    use lettre::message::Mailbox;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = crate::helpers::spawn_app_with(move |c| {
        c.mail.inbound_smtp_addr = Some(format!("127.0.0.1:{port}").parse().unwrap())
    })
    .await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let sent = send_email(&app, &creditor, case_id, "Payment Reminder").await;
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build();

    // A reply to the per-case Reply-To address, threaded by In-Reply-To.
    let reply = Message::builder()
        .from("Debtor <debtor@example.com>".parse::<Mailbox>().unwrap())
        .to(format!("case-{case_id}@localhost")
            .parse::<Mailbox>()
            .unwrap())
        .subject("Re: Payment Reminder")
        .in_reply_to(format!(
            "<{}@localhost>",
            sent["messageId"].as_str().unwrap()
        ))
        .body("Paid today.\r\n".to_string())
        .unwrap();
    let response = smtp
        .send(reply)
        .await
        .expect("the SMTP server accepts the reply");
    assert_eq!(response.code().to_string(), "250");

    // Stored before the 250: no waiting needed.
    let list: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 1);
    assert_eq!(list["messages"][0]["threadId"], sent["threadId"]);
    assert_eq!(list["messages"][0]["subject"], "Re: Payment Reminder");

    // Mail for other domains is refused: no open relay.
    let relay = Message::builder()
        .from("x@example.com".parse::<Mailbox>().unwrap())
        .to("victim@example.org".parse::<Mailbox>().unwrap())
        .subject("spam")
        .body("spam".to_string())
        .unwrap();
    let err = smtp.send(relay).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
}

#[tokio::test]
async fn after_a_key_rotation_opt_outs_and_matching_hold() {
    let first = spawn_app().await;
    let (creditor, case) = setup(&first).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    assert_eq!(
        post_sms(&first, "+4512345678", "STOP", "SM200")
            .await
            .status(),
        200
    );
    let before = inbound_total(&first, &creditor.token, &case_id).await;

    // The same database under a new master key, the old one kept for reading.
    let storage = first.config.storage.clone();
    let old = storage.master_key.expect("tests set a key");
    let rotated = spawn_app_with(move |c| {
        c.storage = storage;
        c.storage.master_key = Some(parley::config::KeyBytes([7; 32]));
        c.storage.old_master_keys = vec![old];
    })
    .await;
    let r = rotated
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "sms", "body": "Reminder"}),
        )
        .await;
    assert_problem(r, 422, "recipient_suppressed").await;
    // A reply from the debtor still finds the case by its number.
    assert_eq!(
        post_sms(&rotated, "+4512345678", "Sorry, I will pay", "SM201")
            .await
            .status(),
        200
    );
    assert_eq!(
        inbound_total(&rotated, &creditor.token, &case_id).await,
        before + 1
    );

    // A master key that opens nothing of this database is refused at start.
    let mut stranger = first.config.clone();
    stranger.storage.master_key = Some(parley::config::KeyBytes([9; 32]));
    stranger.storage.old_master_keys = Vec::new();
    let err = parley::App::build(stranger).await.err().expect("refused");
    assert!(format!("{err:#}").contains("does not open"), "{err:#}");
}

#[tokio::test]
async fn replies_never_cross_tenants_on_a_guess() {
    let app = spawn_app().await;
    let a = app.party(PartyKind::Creditor, "Creditor A").await;
    let b = app.party(PartyKind::Creditor, "Creditor B").await;
    // Both creditors have a case for a debtor with the same number.
    let mut cases = Vec::new();
    for (party, number) in [(&a, "2024-0042"), (&b, "2024-0043")] {
        let mut body = crate::helpers::case_body();
        body["caseNumber"] = json!(number);
        let r = app.post(&party.token, "/api/cases", &body).await;
        assert_eq!(r.status(), 201);
        let case: Value = r.json().await.unwrap();
        cases.push(case["caseId"].as_str().unwrap().to_string());
    }
    let mut both = cases.clone();
    both.sort();

    // Neither has written to the number: the reply is not given to either.
    assert_eq!(
        post_sms(&app, "+4512345678", "Who is this?", "SM300")
            .await
            .status(),
        200
    );
    let list = unmatched_list(&app).await;
    assert_eq!(list.len(), 1);
    let mut candidates: Vec<String> =
        serde_json::from_value(list[0]["candidateCaseIds"].clone()).unwrap();
    candidates.sort();
    assert_eq!(candidates, both, "an admin chooses between the two");

    // A subject naming a case of each: no guess either.
    let mail = "From: debtor@example.com\r\nTo: inbox@localhost\r\nSubject: Re: 2024-0042 and 2024-0043\r\n\r\nPaid.\r\n";
    let r = app.post_mail(&app.admin.token, mail).await;
    assert_eq!(r.status(), 202, "kept unmatched");
    let list = unmatched_list(&app).await;
    assert_eq!(list.len(), 2);
    let mut candidates: Vec<String> =
        serde_json::from_value(list[1]["candidateCaseIds"].clone()).unwrap();
    candidates.sort();
    assert_eq!(candidates, both);

    // Once creditor B writes to the number, replies go to B's case.
    let r = app
        .post(
            &b.token,
            &format!("/api/cases/{}/messages", cases[1]),
            &json!({"messageType": "sms", "body": "Please call us."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    post_sms(&app, "+4512345678", "Calling now", "SM301").await;
    assert_eq!(inbound_total(&app, &b.token, &cases[1]).await, 1);
    assert_eq!(
        inbound_total(&app, &a.token, &cases[0]).await,
        0,
        "nothing of it reaches creditor A"
    );
}

/// Twilio's request signature, computed here independently of parley's code.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn twilio_callbacks_are_accepted_by_their_signature_without_an_admin_token() {
    let app = spawn_app_with(|c| {
        c.sms.token = Some(parley::config::Secret::new("twilio-auth-token"));
    })
    .await;
    let (creditor, case) = setup(&app).await;
    let params = [
        ("From", "+4512345678"),
        ("To", "+4570000000"),
        ("Body", "Signed and sealed"),
        ("MessageSid", "SM900"),
        ("AccountSid", "AC1"),
    ];
    let url = format!("{}/api/inbound/sms", app.config.http.public_url);
    let post = |signature: Option<String>| {
        let mut r = app
            .client
            .post(format!("{}/api/inbound/sms", app.base))
            .form(&params);
        if let Some(s) = signature {
            r = r.header("x-twilio-signature", s);
        }
        r.send()
    };
    let r = post(Some(twilio_signature("twilio-auth-token", &url, &params)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a valid signature is enough");
    let r = post(Some(twilio_signature("another-token", &url, &params)))
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = post(None).await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let list: Value = app
        .get(
            &creditor.token,
            &format!(
                "/api/cases/{}/messages?direction=inbound",
                case["caseId"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 1, "only the signed one was stored");
}

/// Threads from before participants were kept (`participants_kept = 0`, no rows in
/// `thread_participants`) still list everyone, read from their messages.
#[tokio::test]
async fn threads_from_before_kept_participants_still_name_them() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let (creditor, case) = setup(&app).await;
    let case_id = case["caseId"].as_str().unwrap();
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "to": "debtor@example.com", "cc": ["boss@example.com"],
                    "subject": "Old thread", "body": "B"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let path = format!("/api/cases/{case_id}/threads");
    let kept: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    // As a database from before the migration holds it.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(app.config.storage.database_url.expose())
        .await
        .unwrap();
    sqlx::query("DELETE FROM thread_participants")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE threads SET participants_kept = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let old: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    let names = |v: &Value| {
        let mut p: Vec<String> = v["threads"][0]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        names(&kept),
        [
            "boss@example.com",
            "debtor@example.com",
            "noreply@localhost"
        ]
    );
    assert_eq!(names(&old), names(&kept));
}

/// A page of the unmatched inbox, as the admin asks for it.
async fn unmatched_page(app: &TestApp, query: &str) -> Value {
    let r = app
        .get(&app.admin.token, &format!("/api/inbound/unmatched{query}"))
        .await;
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

fn subjects(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_unmatched_inbox_pages_filters_and_dismisses_one_or_many_audited() {
    let app = spawn_app_with(|c| c.policy.unmatched_retention = std::time::Duration::ZERO).await;
    for (i, from) in [
        "spam@junk.example",
        "Spam@Junk.example",
        "debtor@example.com",
        "spam@junk.example",
        "lawyer@example.com",
    ]
    .iter()
    .enumerate()
    {
        let raw = mail(
            &[
                ("From", from),
                ("To", "info@localhost"),
                ("Subject", &format!("mail {i}")),
            ],
            "Hi\n",
        );
        assert_eq!(post_mail(&app, &app.admin.token, &raw).await.status(), 202);
    }

    // Oldest first, a page at a time, with the count of all.
    let first = unmatched_page(&app, "?limit=2").await;
    assert_eq!(first["totalCount"], 5);
    assert_eq!(subjects(&first), ["mail 0", "mail 1"]);
    let cursor = first["nextCursor"].as_str().unwrap();
    let second = unmatched_page(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(subjects(&second), ["mail 2", "mail 3"]);
    let cursor = second["nextCursor"].as_str().unwrap();
    let last = unmatched_page(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(subjects(&last), ["mail 4"]);
    assert!(last.get("nextCursor").is_none(), "{last}");

    // Filters: the sender (case ignored), how it came, since when.
    let spam = unmatched_page(&app, "?from=SPAM@junk.example").await;
    assert_eq!(spam["totalCount"], 3);
    assert_eq!(subjects(&spam), ["mail 0", "mail 1", "mail 3"]);
    assert_eq!(unmatched_page(&app, "?source=http").await["totalCount"], 5);
    assert_eq!(unmatched_page(&app, "?source=smtp").await["totalCount"], 0);
    assert_eq!(
        unmatched_page(&app, "?receivedSince=2999-01-01").await["totalCount"],
        0
    );
    assert_eq!(
        unmatched_page(&app, "?receivedSince=2000-01-01T00:00:00Z").await["totalCount"],
        5
    );
    let bad = app
        .get(
            &app.admin.token,
            "/api/inbound/unmatched?receivedSince=yesterday",
        )
        .await;
    assert_eq!(bad.status(), 400);

    // One dismissed: out of the list, audited; again: nothing changes; unknown: 404.
    let lawyer = last["messages"][0]["inboundId"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/inbound/unmatched/{lawyer}/dismiss");
    assert_eq!(
        app.post(&app.admin.token, &path, &json!({})).await.status(),
        204
    );
    assert_eq!(
        app.post(&app.admin.token, &path, &json!({})).await.status(),
        204
    );
    assert_eq!(unmatched_page(&app, "").await["totalCount"], 4);
    let who = app
        .store
        .subjects()
        .text_of_row(
            "SELECT actor_name FROM audit_log WHERE action = 'inbound.dismissed' AND target_id = $1",
            &lawyer,
        )
        .await
        .unwrap();
    assert_eq!(who, "Operations");
    let unknown = app
        .post(
            &app.admin.token,
            "/api/inbound/unmatched/inb_nothing/dismiss",
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    assert_eq!(
        app.post(&creditor.token, &path, &json!({})).await.status(),
        403
    );

    // Many at once, by the filter: the spam wave goes, the debtor's mail stays.
    let r = app
        .post(
            &app.admin.token,
            "/api/inbound/unmatched/dismiss",
            &json!({"from": "spam@junk.example"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["dismissed"], 3);
    // Everything at once is not a filter: at least one must be named.
    for nothing in [json!({}), json!({"from": " "})] {
        let r = app
            .post(&app.admin.token, "/api/inbound/unmatched/dismiss", &nothing)
            .await;
        assert_problem(r, 400, "invalid_body").await;
    }
    // Received before a time long past: nothing.
    let r = app
        .post(
            &app.admin.token,
            "/api/inbound/unmatched/dismiss",
            &json!({"receivedBefore": "2000-01-01"}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["dismissed"], 0);
    let left = unmatched_page(&app, "").await;
    assert_eq!(subjects(&left), ["mail 2"]);
    let refused = app
        .post(
            &app.admin.token,
            "/api/inbound/unmatched/dismiss",
            &json!({"senders": "x"}),
        )
        .await;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let nul = app
        .post(
            &app.admin.token,
            "/api/inbound/unmatched/dismiss",
            &json!({"sender": "a\u{0}b"}),
        )
        .await;
    assert_eq!(nul.status(), 400);

    // The retention sweeper removes what was dismissed once its time is over (here at once).
    app.deliver_due().await;
    let kept = app
        .store
        .subjects()
        .text_of_row(
            "SELECT CAST(COUNT(*) AS TEXT) FROM inbound_raw WHERE id <> $1",
            "",
        )
        .await
        .unwrap();
    assert_eq!(kept, "1", "only the mail not dismissed is kept");
}
