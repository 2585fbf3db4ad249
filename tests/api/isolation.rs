//! Tenant isolation of shared state: each attack of one creditor (or of someone with no token
//! at all) on what tenants share, against the real binary, and shown closed.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::{Installation, Server, resident};
use crate::helpers::case_body;
use crate::peers::eventually;

async fn send(
    server: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::Response {
    server
        .client
        .request(method, server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn get(server: &Server, token: &str, path: &str) -> Value {
    let r = send(server, token, reqwest::Method::GET, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

async fn post(server: &Server, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = server
        .client
        .post(server.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A case of the token's creditor for a debtor at `email`, with the case number `number`.
async fn case_for(server: &Server, token: &str, email: &str, number: &str) -> String {
    let mut body = case_body();
    body["debtor"]["email"] = json!(email);
    body["caseNumber"] = json!(number);
    let (status, case) = post(server, token, "/api/cases", &body).await;
    assert_eq!(status, 201, "{case}");
    case["caseId"].as_str().unwrap().to_string()
}

async fn email(server: &Server, token: &str, case: &str, to: &str, cc: &[&str]) -> (u16, Value) {
    post(
        server,
        token,
        &format!("/api/cases/{case}/messages"),
        &json!({"messageType": "email", "to": to, "cc": cc, "subject": "About your account", "body": "Hello."}),
    )
    .await
}

/// The one-click unsubscribe URL of a delivered email, from its `List-Unsubscribe` header.
fn unsubscribe_url(eml: &str) -> String {
    let unfolded = eml.replace("\r\n ", "").replace("\r\n\t", "");
    let start = unfolded
        .find("List-Unsubscribe: <")
        .expect("a List-Unsubscribe header")
        + "List-Unsubscribe: <".len();
    let end = unfolded[start..].find('>').unwrap() + start;
    unfolded[start..end].to_string()
}

#[tokio::test]
async fn a_creditors_unsubscribe_link_stops_only_its_own_sends_and_shows_only_to_it() {
    let mut installation = Installation::new().await;
    installation.set("PARLEY_DELIVERY_CONCURRENCY", "1");
    let admin = installation.party("admin", "Operations").await;
    let a = installation.party("creditor", "Creditor A").await;
    let b = installation.party("creditor", "Creditor B").await;
    let server = installation.serve().await;
    let debtor = "shared.debtor@example.com";
    let b_case = case_for(&server, &b, debtor, "B-1").await;
    let a_case = case_for(&server, &a, "someone@example.com", "A-1").await;

    // A mails B's debtor with a copy to its own mailbox. Each recipient gets a copy of its
    // own, with its own links: `<id>.eml` the debtor's, `<id>.1.eml` the cc reader's.
    let (status, sent) = email(&server, &a, &a_case, debtor, &["a-mailbox@example.com"]).await;
    assert_eq!(status, 201, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_string();
    let copy = |name: String| {
        let path = installation.dir.path().join("outbox").join(name);
        async move {
            eventually(30, "the copy in the outbox", || {
                let path = path.clone();
                async move { std::fs::read_to_string(path).ok() }
            })
            .await
        }
    };
    let debtors_copy = copy(format!("{id}.eml")).await;
    let cc_copy = copy(format!("{id}.1.eml")).await;
    assert_ne!(unsubscribe_url(&debtors_copy), unsubscribe_url(&cc_copy));
    let one_click = |link: String| {
        let client = server.client.clone();
        async move {
            let r = client
                .post(&link)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };

    // The link of the cc copy names the cc reader only.
    one_click(unsubscribe_url(&cc_copy)).await;
    let (status, body) = email(&server, &a, &a_case, debtor, &[]).await;
    assert_eq!(
        status, 201,
        "the cc reader's click does not stop mail to the debtor: {body}"
    );
    let (status, body) = email(&server, &a, &a_case, "a-mailbox@example.com", &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("recipient_suppressed"))
    );

    // Even the debtor's own link, which A holds as its sender, stops A's sends only.
    one_click(unsubscribe_url(&debtors_copy)).await;
    let (status, body) = post(
        &server,
        &b,
        &format!("/api/cases/{b_case}/messages/preview"),
        &json!({"messageType": "email", "to": debtor, "subject": "S", "body": "B"}),
    )
    .await;
    assert_eq!(status, 200, "B's preview says nothing of A's list: {body}");
    let (status, body) = email(&server, &b, &b_case, debtor, &[]).await;
    assert_eq!(status, 201, "B is not blocked by A's unsubscribe: {body}");
    let (status, body) = email(&server, &a, &a_case, debtor, &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("recipient_suppressed"))
    );

    // B's view of its debtor's preferences shows nothing of A's; A's shows its own entry.
    let prefs = get(
        &server,
        &b,
        &format!("/api/cases/{b_case}/communication-preferences"),
    )
    .await;
    assert_eq!(prefs["suppressions"], json!([]), "{prefs}");
    let mut body = case_body();
    body["debtor"]["email"] = json!(debtor);
    body["caseNumber"] = json!("A-2");
    let (_, a_second) = post(&server, &a, "/api/cases", &body).await;
    let a_second = a_second["caseId"].as_str().unwrap();
    let prefs = get(
        &server,
        &a,
        &format!("/api/cases/{a_second}/communication-preferences"),
    )
    .await;
    let entries = prefs["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{prefs}");
    assert_eq!(entries[0]["messageId"], id.as_str());

    // The admin's list says whose sends the entries stop.
    let list = get(&server, &admin, "/api/suppressions").await;
    let entries = list["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    let mut addresses: Vec<&str> = entries
        .iter()
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["a-mailbox@example.com", debtor]);
    assert!(
        entries
            .iter()
            .all(|e| e["reason"] == "unsubscribed" && e["creditorId"].is_string()),
        "{list}"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_creditors_sends_do_not_spend_anothers_frequency_cap() {
    let mut installation = Installation::new().await;
    installation.set("PARLEY_FREQUENCY_CAP", "2/7d");
    let a = installation.party("creditor", "Creditor A").await;
    let b = installation.party("creditor", "Creditor B").await;
    let server = installation.serve().await;
    let debtor = "capped@example.com";
    let a_case = case_for(&server, &a, debtor, "A-1").await;
    let b_case = case_for(&server, &b, debtor, "B-1").await;
    for _ in 0..2 {
        assert_eq!(email(&server, &a, &a_case, debtor, &[]).await.0, 201);
    }
    let (status, body) = email(&server, &a, &a_case, debtor, &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("frequency_cap_exceeded"))
    );
    let (status, body) = email(&server, &b, &b_case, debtor, &[]).await;
    assert_eq!(status, 201, "B's first message is B's own: {body}");
    server.stop().await;

    // With a cap per person as well, every tenant's messages to that person count.
    let mut installation = Installation::new().await;
    installation.set("PARLEY_FREQUENCY_CAP", "2/7d");
    installation.set("PARLEY_PERSON_FREQUENCY_CAP", "3/7d");
    let a = installation.party("creditor", "Creditor A").await;
    let b = installation.party("creditor", "Creditor B").await;
    let server = installation.serve().await;
    let a_case = case_for(&server, &a, debtor, "A-1").await;
    let b_case = case_for(&server, &b, debtor, "B-1").await;
    for _ in 0..2 {
        assert_eq!(email(&server, &a, &a_case, debtor, &[]).await.0, 201);
    }
    assert_eq!(email(&server, &b, &b_case, debtor, &[]).await.0, 201);
    let (status, body) = email(&server, &b, &b_case, debtor, &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("frequency_cap_exceeded"))
    );
    server.stop().await;
}

#[tokio::test]
async fn case_numbers_are_per_creditor_and_a_shared_one_matches_no_mail() {
    let installation = Installation::new().await;
    let admin = installation.party("admin", "Operations").await;
    let a = installation.party("creditor", "Creditor A").await;
    let b = installation.party("creditor", "Creditor B").await;
    let server = installation.serve().await;
    case_for(&server, &b, "b@example.com", "INV-4711").await;
    // Another creditor's number is no oracle: it is free for A.
    case_for(&server, &a, "a@example.com", "INV-4711").await;
    let mut body = case_body();
    body["caseNumber"] = json!("INV-4711");
    let (status, problem) = post(&server, &a, "/api/cases", &body).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("case_number_taken"))
    );

    let raw = "From: someone@example.com\r\nTo: inbox@localhost\r\nSubject: About INV-4711\r\nMessage-ID: <shared-number@example.com>\r\n\r\nHello\r\n";
    let r = server
        .client
        .post(server.url("/api/inbound/email"))
        .bearer_auth(&admin)
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "two cases carry the number: unmatched");
    let unmatched = get(&server, &admin, "/api/inbound/unmatched").await;
    assert_eq!(
        unmatched["messages"][0]["candidateCaseIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}

async fn documents(server: &Server, token: &str, case: &str) -> usize {
    get(server, token, &format!("/api/cases/{case}/documents")).await["documents"]
        .as_array()
        .unwrap()
        .len()
}

/// A mail with one attachment, as a stranger (or the debtor) would send it.
fn mail_naming(from: &str, number: &str, message_id: &str) -> String {
    format!(
        "From: {from}\r\nTo: inbox@localhost\r\nSubject: Payment for {number}\r\nMessage-ID: <{message_id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nSee the attached receipt.\r\n\
         --b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=\"receipt.html\"\r\n\r\n<script>alert(1)</script>\r\n\
         --b--\r\n"
    )
}

#[tokio::test]
async fn a_strangers_mail_naming_a_case_number_waits_for_review() {
    let mut installation = Installation::new().await;
    installation.set("PARLEY_DELIVERY_CONCURRENCY", "1");
    let admin = installation.party("admin", "Operations").await;
    let creditor = installation.party("creditor", "Creditor").await;
    let server = installation.serve().await;
    let case = case_for(&server, &creditor, "debtor@example.com", "DEB-2026-00007").await;
    let post_mail = |raw: String| {
        let server = &server;
        let admin = admin.clone();
        async move {
            let r = server
                .client
                .post(server.url("/api/inbound/email"))
                .bearer_auth(admin)
                .header("content-type", "message/rfc822")
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.unwrap();
            v["messageId"].as_str().unwrap().to_string()
        }
    };
    // parley's own sender is a participant of every thread it wrote in: no proof either.
    let (status, _) = email(&server, &creditor, &case, "debtor@example.com", &[]).await;
    assert_eq!(status, 201);
    let spoofed = post_mail(mail_naming(
        "noreply@localhost",
        "DEB-2026-00007",
        "p1@example.net",
    ))
    .await;
    let held = post_mail(mail_naming(
        "stranger@example.net",
        "DEB-2026-00007",
        "s1@example.net",
    ))
    .await;
    // A reply to held mail proves no more than the mail it answers.
    let reply = post_mail(
        mail_naming("stranger@example.net", "nothing", "s1-reply@example.net").replace(
            "Subject: Payment for nothing\r\n",
            "Subject: Re: receipt\r\nIn-Reply-To: <s1@example.net>\r\n",
        ),
    )
    .await;
    for id in [&spoofed, &reply] {
        let message = get(&server, &creditor, &format!("/api/messages/{id}")).await;
        assert_eq!(message["senderVerified"], false, "{message}");
    }
    for id in [&spoofed, &reply] {
        let (status, _) = post(
            &server,
            &creditor,
            &format!("/api/messages/{id}/reject"),
            &json!({}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let rejected = post_mail(mail_naming(
        "other@example.net",
        "DEB-2026-00007",
        "s2@example.net",
    ))
    .await;
    // The debtor's own address is known: its mail acts at once.
    let trusted = post_mail(mail_naming(
        "debtor@example.com",
        "DEB-2026-00007",
        "d1@example.com",
    ))
    .await;

    let message = get(&server, &creditor, &format!("/api/messages/{held}")).await;
    assert_eq!(message["senderVerified"], false, "{message}");
    let message = get(&server, &creditor, &format!("/api/messages/{trusted}")).await;
    assert_eq!(message["senderVerified"], true, "{message}");
    let review = get(&server, &creditor, "/api/inbound/review").await;
    let ids: Vec<&str> = review["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [held.as_str(), rejected.as_str()]);

    // Only the trusted mail's attachment becomes a document.
    eventually(30, "the trusted mail's attachment", || async {
        (documents(&server, &creditor, &case).await == 1).then_some(())
    })
    .await;
    let audit = get(&server, &creditor, &format!("/api/cases/{case}/audit-log")).await;
    let received = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "message.received")
        .count();
    assert_eq!(received, 1, "no message.received for held mail: {audit}");

    // Accepted: the attachment becomes a document and the mail is announced.
    let (status, accepted) = post(
        &server,
        &creditor,
        &format!("/api/messages/{held}/accept"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["senderVerified"], true);
    eventually(30, "the accepted mail's attachment", || async {
        (documents(&server, &creditor, &case).await == 2).then_some(())
    })
    .await;
    let (status, again) = post(
        &server,
        &creditor,
        &format!("/api/messages/{held}/accept"),
        &json!({}),
    )
    .await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("invalid_state"))
    );

    // Rejected: off the case, back on the unmatched list naming the case.
    let (status, body) = post(
        &server,
        &creditor,
        &format!("/api/messages/{rejected}/reject"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = send(
        &server,
        &creditor,
        reqwest::Method::GET,
        &format!("/api/messages/{rejected}"),
    )
    .await;
    assert_eq!(r.status(), 404);
    let unmatched = get(&server, &admin, "/api/inbound/unmatched").await;
    let back = unmatched["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["inboundId"] == body["inboundId"])
        .expect("the rejected mail on the unmatched list");
    assert_eq!(back["candidateCaseIds"], json!([case]));
    assert_eq!(
        get(&server, &creditor, "/api/inbound/review").await["messages"],
        json!([])
    );

    // Another creditor cannot act on it.
    let other = installation.party("creditor", "Other").await;
    let held2 = post_mail(mail_naming(
        "third@example.net",
        "DEB-2026-00007",
        "s3@example.net",
    ))
    .await;
    let (status, _) = post(
        &server,
        &other,
        &format!("/api/messages/{held2}/accept"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_memory_and_metrics_can_be_protected() {
    let mut installation = Installation::new().await;
    installation.set("PARLEY_METRICS_TOKEN", "scrape-token-0123456789");
    let server = installation.serve().await;
    let address = server.base.trim_start_matches("http://").to_string();
    let metrics = |token: Option<&'static str>| {
        let server = &server;
        async move {
            let mut r = server.client.get(server.url("/metrics"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(metrics(None).await.0, 401);
    assert_eq!(metrics(Some("wrong-token-0123456789")).await.0, 401);
    let (status, before) = metrics(Some("scrape-token-0123456789")).await;
    assert_eq!(status, 200);
    let rss_before = resident(server.pid()).unwrap();

    // 3,000 requests with made-up 4 KB method names and paths, on kept-alive connections.
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            for i in 0..750 {
                let method: String = format!("M{worker}X{i}").chars().cycle().take(4096).collect();
                let request = format!(
                    "{method} /nothing/{worker}/{i}/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                    "p".repeat(2048)
                );
                if stream.write_all(request.as_bytes()).await.is_err() {
                    stream = tokio::net::TcpStream::connect(&address).await.unwrap();
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => stream = tokio::net::TcpStream::connect(&address).await.unwrap(),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, after) = metrics(Some("scrape-token-0123456789")).await;
    let rss_after = resident(server.pid()).unwrap();
    assert!(
        after.len() < before.len() + 4096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(!after.contains("M0X"), "a made-up method became a label");
    assert!(
        after.contains("method=\"other\",route=\"other\""),
        "{after}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024 * 1024,
        "resident memory grew from {rss_before} to {rss_after}"
    );
    server.stop().await;
}

#[tokio::test]
async fn webhook_hosts_that_do_not_resolve_and_refused_ones_get_one_answer() {
    let installation = Installation::new().await;
    let creditor = installation.party("creditor", "Creditor").await;
    let server = installation.serve().await;
    let detail = |url: &'static str| {
        let (server, creditor) = (&server, creditor.clone());
        async move {
            let (status, problem) = post(
                server,
                &creditor,
                "/api/webhooks",
                &json!({"url": url, "events": ["message.received"]}),
            )
            .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (422, Some("webhook_url_not_allowed"))
            );
            problem["detail"].as_str().unwrap().to_string()
        }
    };
    let unknown = detail("http://no-such-host.invalid/hook").await;
    let internal = detail("http://localhost/hook").await;
    assert_eq!(
        unknown.replace("no-such-host.invalid", "HOST"),
        internal.replace("localhost", "HOST")
    );
    server.stop().await;
}

#[tokio::test]
async fn downloads_are_attachments_that_browsers_do_not_sniff() {
    let installation = Installation::new().await;
    let creditor = installation.party("creditor", "Creditor").await;
    let server = installation.serve().await;
    let case = case_for(&server, &creditor, "debtor@example.com", "C-1").await;
    let form = reqwest::multipart::Form::new()
        .text("documentType", "other")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"<script>alert(1)</script>".to_vec())
                .file_name("x\".html")
                .mime_str("text/html")
                .unwrap(),
        );
    let r = server
        .client
        .post(server.url(&format!("/api/cases/{case}/documents")))
        .bearer_auth(&creditor)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    let id = doc["documentId"].as_str().unwrap();
    let r = send(
        &server,
        &creditor,
        reqwest::Method::GET,
        &format!("/api/documents/{id}/download"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let disposition = r.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    server.stop().await;
}

#[tokio::test]
async fn webhooks_end_with_access_and_private_notes_stay_out_of_others_audit_logs() {
    use crate::helpers::spawn_app;
    use crate::peers::HookReceiver;
    use parley::domain::PartyKind;

    let receiver = HookReceiver::start().await;
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Creditor").await;
    let partner = app.party(PartyKind::Partner, "Partner").await;
    let case = app.create_case(&creditor, Some(&partner)).await;
    let case_id = case["caseId"].as_str().unwrap();
    let r = app
        .post(
            &partner.token,
            "/api/webhooks",
            &json!({"url": receiver.url, "events": ["message.received"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let hook: Value = r.json().await.unwrap();
    let hook_id = hook["webhookId"].as_str().unwrap();
    let mail = format!(
        "From: debtor@example.com\r\nTo: case-{case_id}@localhost\r\nSubject: Hello\r\n\r\nHello\r\n"
    );
    assert_eq!(app.post_mail(&app.admin.token, &mail).await.status(), 201);
    app.dispatch_webhooks().await;
    assert_eq!(receiver.requests().len(), 1);

    // The partner is taken off the case; its resend of the delivery sends nothing.
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"partnerId": null}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let list = format!("/api/webhooks/{hook_id}/deliveries");
    let deliveries: Value = app.get(&partner.token, &list).await.json().await.unwrap();
    let delivery = deliveries["deliveries"][0]["deliveryId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            &partner.token,
            &format!("{list}/{delivery}/resend"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .post(
            &partner.token,
            &format!("/api/webhooks/{hook_id}/recover"),
            &json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    app.dispatch_webhooks().await;
    assert_eq!(receiver.requests().len(), 1, "nothing after access ended");
    let deliveries: Value = app.get(&partner.token, &list).await.json().await.unwrap();
    assert_eq!(
        deliveries["deliveries"][0]["status"], "failed",
        "{deliveries}"
    );

    // A private note's audit entry is the author's, not the other party's.
    let other_partner = app.party(PartyKind::Partner, "Second partner").await;
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"partnerId": other_partner.id}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/notes"),
            &json!({"note": "our own view", "visibility": "private"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let note_entries = |token: String| {
        let app = &app;
        async move {
            let log: Value = app
                .get(&token, &format!("/api/cases/{case_id}/audit-log"))
                .await
                .json()
                .await
                .unwrap();
            log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "note.created")
                .count()
        }
    };
    assert_eq!(note_entries(creditor.token.clone()).await, 1);
    assert_eq!(note_entries(other_partner.token.clone()).await, 0);
}

/// Every file under `dir`, read whole.
fn every_file(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            every_file(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

#[tokio::test]
async fn an_erasure_reaches_the_outbox_idempotency_keys_and_every_suppression() {
    use crate::helpers::spawn_app_with;
    use crate::storage::{contains, database_contents};
    use parley::domain::PartyKind;

    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let address = "vandersloot.quimby@example.org";
    let mut body = case_body();
    body["debtor"] =
        json!({"name": "Quimby Vandersloot", "email": address, "phone": "+4523456789"});
    let case: Value = app
        .post(&creditor.token, "/api/cases", &body)
        .await
        .json()
        .await
        .unwrap();
    let case_id = case["caseId"].as_str().unwrap();
    let r = app
        .request(reqwest::Method::POST, &creditor.token, &format!("/api/cases/{case_id}/messages"))
        .header("Idempotency-Key", format!("reminder-for-{address}"))
        .json(&json!({"messageType": "email", "subject": "Reminder", "body": "Dear Quimby Vandersloot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sent: Value = r.json().await.unwrap();
    let id = sent["messageId"].as_str().unwrap();
    app.deliver_due().await;
    let outbox = app.dir.path().join("outbox").join(format!("{id}.eml"));
    assert!(std::fs::read_to_string(&outbox).unwrap().contains(address));
    // A provider's drop (every tenant's, kept with the case), and a STOP that matched no case
    // (kept under the master key, for the creditor).
    let r = app
        .client
        .post(format!("{}/api/providers/email/events", app.base))
        .bearer_auth(&app.admin.token)
        .json(&json!([{"email": address, "event": "dropped", "sg_event_id": "d1",
                       "smtp-id": format!("<{id}@localhost>"), "timestamp": chrono::Utc::now().timestamp()}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.store
        .policy()
        .suppress(
            "email",
            &address.to_uppercase(),
            "stop word",
            None,
            None,
            parley::store::SuppressionScope::Creditor(&creditor.id),
        )
        .await
        .unwrap();
    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "closed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            &app.admin.token,
            "/api/data-subjects/erase",
            &json!({"email": address, "reason": "asked"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let erased: Value = r.json().await.unwrap();
    assert_eq!(erased["erased"].as_array().unwrap().len(), 1, "{erased}");

    // No file under the data folder, and no row of the database, holds the person's words.
    let mut files = Vec::new();
    every_file(app.dir.path(), &mut files);
    assert!(
        files.iter().any(|(p, _)| p.contains("parley.db"))
            || !app
                .config
                .storage
                .database_url
                .expose()
                .starts_with("sqlite")
    );
    for (path, bytes) in &files {
        for word in [address, "Vandersloot", "VANDERSLOOT"] {
            assert!(!contains(bytes, word), "{path} holds {word:?}");
        }
    }
    let database = database_contents(&app).await;
    for word in [address, "Vandersloot", "VANDERSLOOT", "reminder-for-"] {
        assert!(!contains(&database, word), "the database holds {word:?}");
    }
    // The objections still hold, with nothing readable left of whom they are about.
    let list: Value = app
        .get(&app.admin.token, "/api/suppressions")
        .await
        .json()
        .await
        .unwrap();
    let entries = list["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    assert!(
        entries
            .iter()
            .all(|e| e["address"].is_null() || e["address"] == "[erased]"),
        "{list}"
    );
}

#[tokio::test]
async fn a_cc_readers_bounce_names_the_cc_reader_only() {
    use crate::helpers::spawn_app;
    use parley::domain::PartyKind;

    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Creditor").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let path = format!("/api/cases/{case_id}/messages");
    let mail = json!({"messageType": "email", "to": "debtor@example.com", "cc": ["gone@example.net"],
                      "subject": "Reminder", "body": "Hello."});
    let sent: Value = app
        .post(&creditor.token, &path, &mail)
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messageId"].as_str().unwrap();
    assert_eq!(app.deliver_due().await, 1);
    let outbox = app.dir.path().join("outbox");
    assert!(
        outbox.join(format!("{id}.eml")).exists() && outbox.join(format!("{id}.1.eml")).exists()
    );

    // The cc reader's mailbox does not exist: its server reports to that copy's address.
    let bounce_to = parley::app::tracking::bounce_address(
        app.store.keys(),
        &parley::domain::MessageId::parse(id).unwrap(),
        "localhost",
        Some(1),
    )
    .unwrap();
    let dsn = format!(
        "From: MAILER-DAEMON@mx.example.net\r\nTo: {bounce_to}\r\nSubject: Undelivered Mail\r\n\
Message-ID: <cc-dsn@mx.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
--B--\r\n"
    );
    let r = app.post_mail(&app.admin.token, &dsn).await;
    assert_eq!(r.status(), 200);
    let message: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        message["status"], "sent",
        "the debtor's copy went through: {message}"
    );
    let again = |to: &'static str| {
        let (app, token, path) = (&app, creditor.token.clone(), path.clone());
        async move {
            app.post(
                &token,
                &path,
                &json!({"messageType": "email", "to": to, "subject": "S", "body": "B"}),
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(again("debtor@example.com").await, 201);
    assert_eq!(again("gone@example.net").await, 422);

    // A refusal that is not about the mailbox (5.7.1: the receiving server's policy) says
    // something about this sender's mail, not the address: it stops this creditor only.
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"messageType": "email", "to": "picky@example.org", "subject": "S", "body": "B"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    let second = second["messageId"].as_str().unwrap();
    app.deliver_due().await;
    let to_second = parley::app::tracking::bounce_address(
        app.store.keys(),
        &parley::domain::MessageId::parse(second).unwrap(),
        "localhost",
        None,
    )
    .unwrap();
    let refused = dsn
        .replace(&bounce_to, &to_second)
        .replace("gone@example.net", "picky@example.org")
        .replace("5.1.1", "5.7.1")
        .replace("cc-dsn@", "policy-dsn@");
    assert_eq!(
        app.post_mail(&app.admin.token, &refused).await.status(),
        200
    );
    assert_eq!(again("picky@example.org").await, 422);
    let other = app.party(PartyKind::Creditor, "Other").await;
    let mut body = case_body();
    body["debtor"]["email"] = json!("picky@example.org");
    let other_case: Value = app
        .post(&other.token, "/api/cases", &body)
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .post(
            &other.token,
            &format!(
                "/api/cases/{}/messages",
                other_case["caseId"].as_str().unwrap()
            ),
            &json!({"messageType": "email", "subject": "S", "body": "B"}),
        )
        .await;
    assert_eq!(
        r.status(),
        201,
        "another creditor's mail is not refused for it"
    );
}

#[tokio::test]
async fn a_copy_that_fails_for_a_while_is_sent_again_alone() {
    use crate::helpers::spawn_app_with;
    use crate::peers::SmtpPeer;
    use parley::domain::PartyKind;

    let smtp = SmtpPeer::start().await;
    let url = smtp.url();
    let app =
        spawn_app_with(move |c| c.mail.smtp_url = Some(parley::config::Secret::new(url))).await;
    let creditor = app.party(PartyKind::Creditor, "Creditor").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let mail = json!({"messageType": "email", "to": "debtor@example.com", "cc": ["tempfail-1-cc@example.com"],
                      "subject": "Reminder", "body": "Hello."});
    let sent: Value = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &mail,
        )
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messageId"].as_str().unwrap();
    // The first attempt hands the debtor's copy over and the cc copy is refused for now;
    // the retry (due at once in the tests) sends the cc copy alone.
    app.deliver_due().await;
    let message: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(message["status"], "sent", "{message}");
    let copies: Vec<String> = smtp
        .messages()
        .iter()
        .map(|raw| {
            String::from_utf8_lossy(raw)
                .lines()
                .find_map(|l| l.strip_prefix("X-Sink-Rcpt-To: ").map(str::to_string))
                .unwrap()
        })
        .collect();
    assert_eq!(copies.len(), 2, "one copy each, none twice: {copies:?}");
    assert!(
        copies.contains(&"debtor@example.com".to_string()),
        "{copies:?}"
    );
    assert!(
        copies.contains(&"tempfail-1-cc@example.com".to_string()),
        "{copies:?}"
    );
}

#[tokio::test]
async fn idempotency_keys_kept_in_the_clear_before_are_hashed_once_and_still_recognised() {
    use crate::helpers::spawn_app;
    use crate::storage::{contains, database_contents};
    use parley::domain::PartyKind;

    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Creditor").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let send = |subject: &'static str| {
        app.request(reqwest::Method::POST, &creditor.token, &path)
            .header("Idempotency-Key", "reminder-for-jens@example.com")
            .json(&json!({"messageType": "email", "subject": subject, "body": "Hello."}))
            .send()
    };
    assert_eq!(send("First").await.unwrap().status(), 201);
    // As an earlier version kept it: the key as the client sent it.
    app.store
        .subjects()
        .execute_on_row(
            "UPDATE idempotency_keys SET idem_key = $1",
            "reminder-for-jens@example.com",
        )
        .await
        .unwrap();
    app.store
        .subjects()
        .execute_on_row(
            "INSERT INTO pending_work (name) VALUES ($1)",
            "hash-idempotency-keys",
        )
        .await
        .unwrap();
    assert!(contains(
        &database_contents(&app).await,
        "reminder-for-jens"
    ));
    let migrate = || async {
        let out = crate::binary::command_on(&app, "migrate", &[42; 32])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    migrate().await;
    assert!(!contains(
        &database_contents(&app).await,
        "reminder-for-jens"
    ));
    let hashed = app
        .store
        .subjects()
        .text_of_row("SELECT idem_key FROM idempotency_keys WHERE $1 = $1", "x")
        .await
        .unwrap();
    assert!(hashed.starts_with("h1:"), "{hashed}");
    // Once: a second start leaves the hashed key as it is.
    migrate().await;
    let again = app
        .store
        .subjects()
        .text_of_row("SELECT idem_key FROM idempotency_keys WHERE $1 = $1", "x")
        .await
        .unwrap();
    assert_eq!(again, hashed);
    // Still the same key: another body under it is a conflict, not a new message.
    let r = send("Another").await.unwrap();
    crate::helpers::assert_problem(r, 422, "idempotency_conflict").await;
}
