//! The attacks, each against the real binary in a process of its own (a release
//! build when `bench/attacks` runs them): what the contract's "Hostile input and hostile
//! peers" promises, seen from outside.

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::binary::{Installation, Server, b64};
use crate::helpers::case_body;
use crate::hostile::closed_within;
use crate::peers::{SmtpPeer, eventually};

async fn get(server: &Server, token: &str, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn post(server: &Server, token: &str, path: &str, body: &Value) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn code_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}

async fn create_case(server: &Server, token: &str, number: &str) -> String {
    let mut body = case_body();
    body["caseNumber"] = json!(number);
    let r = post(server, token, "/api/cases", &body).await;
    assert_eq!(r.status(), 201);
    let case: Value = r.json().await.unwrap();
    case["caseId"].as_str().unwrap().to_string()
}

/// An inbound SMS as Twilio posts it, authenticated with the admin token.
async fn inbound_sms(server: &Server, admin: &str, from: &str, body: &str, sid: &str) -> u16 {
    server
        .client
        .post(server.url("/api/inbound/sms"))
        .basic_auth("twilio", Some(admin))
        .form(&[
            ("From", from),
            ("To", "+4570000000"),
            ("Body", body),
            ("MessageSid", sid),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn unmatched(server: &Server, admin: &str) -> Vec<Value> {
    let list: Value = get(server, admin, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    list["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn smtp_smuggling_stores_nothing() {
    let install = Installation::new().await;
    let admin = install.party("admin", "Operations").await;
    let server = install.serve().await;
    let mut smtp = TcpStream::connect(("127.0.0.1", server.smtp_port))
        .await
        .unwrap();
    smtp.write_all(
        b"EHLO client.example.com\r\nMAIL FROM:<debtor@example.com>\r\n\
          RCPT TO:<info@localhost>\r\nDATA\r\nSubject: first\r\n\r\nbody\n.\n\
          MAIL FROM:<evil@spoof.com>\r\nRCPT TO:<info@localhost>\r\nDATA\r\n\
          Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n",
    )
    .await
    .unwrap();
    let replies = closed_within(&mut smtp, 30).await;
    assert_eq!(replies.matches("\r\n354 ").count(), 1, "{replies}");
    assert!(replies.contains("\r\n550 "), "{replies}");
    assert_eq!(unmatched(&server, &admin).await, Vec::<Value>::new());
}

#[tokio::test]
async fn slowloris_is_cut_off_and_others_are_served_meanwhile() {
    let mut install = Installation::new().await;
    install.set("PARLEY_HTTP_HEADER_TIMEOUT", "2s");
    let server = install.serve().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\nX-Slow: 1")
            .await
            .unwrap();
        slow.push(s);
    }
    let r = server.client.get(server.url("/healthz")).send().await;
    assert_eq!(r.unwrap().status(), 200, "served beside fifty slow clients");
    for s in &mut slow {
        closed_within(s, 15).await;
    }
}

#[tokio::test]
async fn a_number_two_creditors_share_goes_to_the_unmatched_list() {
    let install = Installation::new().await;
    let admin = install.party("admin", "Operations").await;
    let a = install.party("creditor", "Creditor A").await;
    let b = install.party("creditor", "Creditor B").await;
    let server = install.serve().await;
    let mut both = vec![
        create_case(&server, &a, "2024-0042").await,
        create_case(&server, &b, "2024-0043").await,
    ];
    both.sort();
    assert_eq!(
        inbound_sms(&server, &admin, "+4512345678", "Who is this?", "SM1").await,
        200
    );
    let list = unmatched(&server, &admin).await;
    assert_eq!(list.len(), 1);
    let mut candidates: Vec<String> =
        serde_json::from_value(list[0]["candidateCaseIds"].clone()).unwrap();
    candidates.sort();
    assert_eq!(candidates, both);
    for (token, case) in [(&a, &both[0]), (&b, &both[1])] {
        let path = format!("/api/cases/{case}/messages?direction=inbound");
        let page: Value = get(&server, token, &path).await.json().await.unwrap();
        assert_eq!(page["totalCount"], 0);
    }
}

#[tokio::test]
async fn oversize_uploads_get_413_however_they_are_sent() {
    let mut install = Installation::new().await;
    install.set("PARLEY_MAX_UPLOAD_BYTES", "1048576");
    let token = install.party("creditor", "Acme").await;
    let server = install.serve().await;
    let case = create_case(&server, &token, "2024-0042").await;
    let url = server.url(&format!("/api/cases/{case}/documents"));
    let file = install.dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    // curl sends `Expect: 100-continue` with a Content-Length; then again chunked, without one.
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-F", &format!("file=@{}", file.display())])
            .args(["-F", "documentType=invoice"]);
        if let Some(h) = extra {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(&url).output().await.expect("curl runs");
        let out = String::from_utf8_lossy(&out.stdout);
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "413", "curl with {extra:?}");
        let problem: Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "payload_too_large");
    }
    let list: Value = get(&server, &token, &format!("/api/cases/{case}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["documents"], json!([]), "nothing was kept");
}

#[tokio::test]
async fn guessing_tokens_is_slowed_down() {
    let mut install = Installation::new().await;
    install.set("PARLEY_AUTH_FAILURES_PER_MINUTE", "5");
    let server = install.serve().await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = get(&server, &format!("guess-{i}"), "/api/cases").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert_eq!(statuses[7], 429, "{statuses:?}");
}

#[tokio::test]
async fn amounts_past_the_bound_are_refused() {
    let install = Installation::new().await;
    let token = install.party("creditor", "Acme").await;
    let server = install.serve().await;
    let mut body = case_body();
    body["amount"] = json!({"value": "99999999999999999999.00", "currency": "DKK"});
    let (status, code) = code_of(post(&server, &token, "/api/cases", &body).await).await;
    assert_eq!((status, code.as_str()), (422, "validation_failed"));
    // Payments up to the bound, then one more: refused, never a wrapped sum.
    let case = create_case(&server, &token, "2024-0042").await;
    let path = format!("/api/cases/{case}/payments");
    let big = json!({"amount": "999999999999.99", "paidAt": "2024-02-01"});
    assert_eq!(post(&server, &token, &path, &big).await.status(), 201);
    let (status, code) = code_of(post(&server, &token, &path, &big).await).await;
    assert_eq!((status, code.as_str()), (422, "amount_out_of_range"));
    assert_eq!(get(&server, &token, "/api/cases").await.status(), 200);
}

#[tokio::test]
async fn a_rotation_and_a_rekey_keep_an_opt_out() {
    let mut install = Installation::new().await;
    let admin = install.party("admin", "Operations").await;
    let token = install.party("creditor", "Acme").await;
    let server = install.serve().await;
    let case = create_case(&server, &token, "2024-0042").await;
    assert_eq!(
        inbound_sms(&server, &admin, "+4512345678", "STOP", "SM1").await,
        200
    );
    server.stop().await;
    let messages = format!("/api/cases/{case}/messages");
    let sms = json!({"messageType": "sms", "body": "Reminder"});

    // The new key, the old one kept for reading.
    install.set("PARLEY_MASTER_KEY", &b64(&[7; 32]));
    install.set("PARLEY_OLD_MASTER_KEYS", &b64(&[42; 32]));
    let server = install.serve().await;
    let (status, code) = code_of(post(&server, &token, &messages, &sms).await).await;
    assert_eq!((status, code.as_str()), (422, "recipient_suppressed"));
    server.stop().await;

    // Re-sealed, then the new key alone.
    install.json(&["rekey"]).await;
    install.unset("PARLEY_OLD_MASTER_KEYS");
    let server = install.serve().await;
    let (status, code) = code_of(post(&server, &token, &messages, &sms).await).await;
    assert_eq!((status, code.as_str()), (422, "recipient_suppressed"));
}

/// A mail server that answers the end of DATA after 45 s, two processes delivering with a
/// lease of 5 s: renewed while the attempt runs, so the message is sent once.
#[tokio::test]
async fn a_mail_server_slower_than_the_lease_gets_one_copy() {
    let smtp = SmtpPeer::start().await;
    let mut install = Installation::new().await;
    install.set("PARLEY_SMTP_URL", &smtp.url());
    install.set("PARLEY_DELIVERY_CONCURRENCY", "4");
    install.set("PARLEY_DELIVERY_LEASE", "5s");
    let token = install.party("creditor", "Acme").await;
    let one = install.serve().await;
    let two = install.serve().await;
    let case = create_case(&one, &token, "2024-0042").await;
    let r = post(
        &one,
        &token,
        &format!("/api/cases/{case}/messages"),
        &json!({"messageType": "email", "to": "slow-45@example.com", "subject": "Hello", "body": "Hello"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let sent: Value = r.json().await.unwrap();
    let id = sent["messageId"].as_str().unwrap().to_string();
    eventually(120, "the message to be sent", || {
        let (two, token, id) = (&two, &token, &id);
        async move {
            let m: Value = get(two, token, &format!("/api/messages/{id}"))
                .await
                .json()
                .await
                .ok()?;
            (m["status"] == "sent").then_some(())
        }
    })
    .await;
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(smtp.data_started(), 1, "one transaction, never a second");
}
