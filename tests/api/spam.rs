//! The spam filter of the SMTP server against Debian's SpamAssassin (`spamd`), with the GTUBE
//! test string: refused with 550 above the reject score (nothing stored), kept, marked and
//! held for review between the mark score and it, taken unchecked (and said so) when
//! the filter cannot be reached or does not answer in time.

use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use parley::config::SpamConfig;
use parley::domain::PartyKind;
use serde_json::Value;

use crate::binary::free_port;
use crate::helpers::{TestApp, spawn_app_with};
use crate::peers::Spamd;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

async fn app_with_filter(spamd: String, reject_score: f64, timeout: Duration) -> (TestApp, u16) {
    let port = free_port();
    let app = spawn_app_with(move |c| {
        c.mail.inbound_smtp_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        c.mail.spam = Some(SpamConfig {
            spamd,
            reject_score,
            mark_score: 5.0,
            timeout,
        });
    })
    .await;
    (app, port)
}

/// A mail to the case's own address; the SMTP reply (code and text) or the error's text.
async fn send(port: u16, case_id: &str, body: &str) -> Result<String, String> {
    let to = format!("case-{case_id}@localhost");
    let raw = format!(
        "From: Debtor <debtor@example.com>\r\nTo: {to}\r\nSubject: About my case\r\n\
         Message-ID: <{}@example.com>\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n",
        uuid::Uuid::new_v4()
    );
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build();
    let envelope = Envelope::new(
        Some("debtor@example.com".parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    crate::peers::eventually(10, "the SMTP server to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    match smtp.send_raw(&envelope, raw.as_bytes()).await {
        Ok(r) => Ok(r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => Err(e.to_string()),
    }
}

async fn inbound(app: &TestApp, token: &str, case_id: &str) -> Vec<Value> {
    let list: Value = app
        .get(
            token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    list["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn spam_is_refused_above_the_reject_score_and_held_below_it() {
    let spamd = Spamd::start().await;
    let addr = format!("127.0.0.1:{}", spamd.port);

    // Rejecting at 10: GTUBE scores 1000 and is refused; nothing of it is kept.
    let (app, port) = app_with_filter(addr.clone(), 10.0, Duration::from_secs(30)).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let err = send(port, case_id, GTUBE).await.unwrap_err();
    assert!(err.contains("refused as spam"), "{err}");
    assert!(inbound(&app, &creditor.token, case_id).await.is_empty());
    let unmatched: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unmatched["totalCount"], 0);

    // An ordinary reply is checked, scored below the mark and acts on the case.
    send(
        port,
        case_id,
        "Hello, I paid the invoice yesterday. Regards",
    )
    .await
    .unwrap();
    let list = inbound(&app, &creditor.token, case_id).await;
    assert_eq!(list.len(), 1);
    let spam = &list[0]["spam"];
    assert_eq!(spam["checked"], true, "{spam}");
    assert_eq!(spam["marked"], false, "{spam}");
    assert!(spam["score"].as_f64().unwrap() < 5.0, "{spam}");
    assert_eq!(list[0]["senderVerified"], true);

    // Rejecting only at 2000: GTUBE is kept, marked, and held for review.
    let (app, port) = app_with_filter(addr, 2000.0, Duration::from_secs(30)).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    send(port, case_id, GTUBE).await.unwrap();
    let list = inbound(&app, &creditor.token, case_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["spam"]["marked"], true, "{}", list[0]);
    assert!(list[0]["spam"]["score"].as_f64().unwrap() >= 1000.0);
    assert_eq!(list[0]["senderVerified"], false, "held for review");
}

#[tokio::test]
async fn a_filter_that_is_down_or_silent_leaves_mail_taken_unchecked_within_the_bound() {
    // Nothing listens here.
    let (app, port) = app_with_filter(
        format!("127.0.0.1:{}", free_port()),
        10.0,
        Duration::from_secs(5),
    )
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    send(port, case_id, GTUBE).await.unwrap();
    let list = inbound(&app, &creditor.token, case_id).await;
    assert_eq!(list[0]["spam"]["checked"], false, "{}", list[0]);
    assert!(list[0]["spam"].get("score").is_none());

    // A filter that takes the connection and never answers costs the bound, then the mail
    // is taken unchecked.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let (app, port) = app_with_filter(silent_addr, 10.0, Duration::from_secs(1)).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let started = Instant::now();
    send(port, case_id, "Hello").await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let list = inbound(&app, &creditor.token, case_id).await;
    assert_eq!(list[0]["spam"]["checked"], false, "{}", list[0]);
    held.abort();
}
