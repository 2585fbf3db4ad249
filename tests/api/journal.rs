//! Mail sent around parley: Exchange Online's journal reports and Gmail's compliance copies
//! at the journal address of parley's SMTP server, filed on their cases as sent mail.

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use parley::config::{InboundDns, JournalConfig};
use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::binary::free_port;
use crate::helpers::{Party, TestApp, spawn_app_with};
use crate::peers::Dns;

/// The agency's domain publishes SPF for this machine and DMARC: its journal reports prove
/// their sender.
async fn dns() -> Dns {
    Dns::start(&[
        ("agency.test", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.agency.test", "v=DMARC1; p=reject"),
    ])
    .await
}

async fn app_with_journal(dns: Option<&Dns>) -> (TestApp, u16) {
    let port = free_port();
    let resolver = dns.map(|d| d.addr);
    let app = spawn_app_with(move |c| {
        c.mail.inbound_smtp_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        c.mail.journal = Some(JournalConfig {
            address: "journal@localhost".into(),
            domains: vec!["agency.test".into()],
        });
        if let Some(addr) = resolver {
            c.mail.sender_auth.dns = InboundDns::Servers(vec![addr]);
            c.mail.sender_auth.timeout = std::time::Duration::from_secs(1);
        }
    })
    .await;
    (app, port)
}

/// Sends `raw` to the journal address; the SMTP reply or the error's text.
async fn journal(port: u16, raw: &str) -> Result<String, String> {
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build();
    let envelope = Envelope::new(
        Some("journal-sender@agency.test".parse().unwrap()),
        vec!["journal@localhost".parse().unwrap()],
    )
    .unwrap();
    crate::peers::eventually(10, "the SMTP server to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    match smtp
        .send_raw(&envelope, raw.replace('\n', "\r\n").as_bytes())
        .await
    {
        Ok(r) => Ok(r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => Err(e.to_string()),
    }
}

/// An agent's answer to the debtor, sent from Outlook.
fn answer(from: &str, message_id: &str, in_reply_to: &str) -> String {
    format!(
        "X-MS-Exchange-Organization-AuthAs: Internal\n\
         From: Agent <{from}>\nTo: debtor@debtor.test\nSubject: Re: My invoice\n\
         Message-ID: {message_id}\nIn-Reply-To: {in_reply_to}\nDate: Sun, 6 Dec 2026 11:00:00 +0000\n\
         Content-Type: text/plain; charset=utf-8\n\nWe have paused the reminders.\n"
    )
}

/// Exchange Online's journal report: the envelope as text, the original as message/rfc822.
fn report(from: &str, original: &str) -> String {
    format!(
        "From: Microsoft Exchange <{from}>\nTo: journal@localhost\nSubject: Journal report\n\
         X-MS-Journal-Report:\nMessage-ID: <{}@agency.test>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"jr\"\n\n--jr\nContent-Type: text/plain\n\n\
         Sender: agent@agency.test\nSubject: Re: My invoice\nTo: debtor@debtor.test\n\n\
         --jr\nContent-Type: message/rfc822\n\n{original}\n--jr--\n",
        uuid::Uuid::new_v4()
    )
}

async fn sent(app: &TestApp, party: &Party, case_id: &str) -> Vec<Value> {
    let list: Value = app
        .get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?direction=outbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    list["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_journaled_answer_is_filed_on_its_case_once_as_sent_mail() {
    let dns = dns().await;
    let (app, port) = app_with_journal(Some(&dns)).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    // The debtor wrote to the case first.
    let r = app
        .post_mail(
            &app.admin.token,
            &format!(
                "From: debtor@debtor.test\nTo: case-{case_id}@localhost\nSubject: My invoice\n\
                 Message-ID: <debtor-1@debtor.test>\n\nI never got it.\n"
            ),
        )
        .await;
    assert_eq!(r.status(), 201);

    let original = answer(
        "agent@agency.test",
        "<agent-1@agency.test>",
        "<debtor-1@debtor.test>",
    );
    let reply = journal(port, &report("exchange@agency.test", &original)).await;
    assert!(reply.as_ref().is_ok_and(|r| r.contains("OK")), "{reply:?}");
    let filed = sent(&app, &creditor, case_id).await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0]["status"], "sent");
    assert_eq!(filed[0]["sentBy"], "agent@agency.test");
    assert_eq!(filed[0]["subject"], "Re: My invoice");
    let threads: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/threads"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        threads["threads"].as_array().unwrap().len(),
        1,
        "the answer joins the debtor's thread: {threads}"
    );

    // The same report again (a retry of the journaling server): stored once.
    journal(port, &report("exchange@agency.test", &original))
        .await
        .unwrap();
    // Gmail's compliance copy: the mail itself, to the journal address.
    let copy = answer(
        "agent@agency.test",
        "<agent-2@agency.test>",
        "<debtor-1@debtor.test>",
    );
    journal(port, &copy).await.unwrap();
    assert_eq!(sent(&app, &creditor, case_id).await.len(), 2);

    let audit: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert!(audit.to_string().contains("message.journaled"), "{audit}");
}

#[tokio::test]
async fn journal_reports_from_outside_the_agency_or_about_others_mail_are_refused() {
    let dns = dns().await;
    let (app, port) = app_with_journal(Some(&dns)).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let to_case = format!(
        "From: Agent <agent@agency.test>\nTo: case-{case_id}@localhost\nSubject: Note\n\
         Message-ID: <agent-9@agency.test>\n\nhello\n"
    );
    // A report that does not come from the agency's domains.
    let forged = journal(port, &report("someone@evil.test", &to_case)).await;
    assert!(
        forged.as_ref().is_err_and(|e| e.contains("550")),
        "{forged:?}"
    );
    // A report about mail the agency did not send (the debtor's own, dressed up).
    let debtors = to_case.replace("agent@agency.test", "debtor@debtor.test");
    let foreign = journal(port, &report("exchange@agency.test", &debtors)).await;
    assert!(
        foreign.as_ref().is_err_and(|e| e.contains("550")),
        "{foreign:?}"
    );
    // Mail that came in from outside, journaled as well: Exchange does not mark it internal.
    let inbound = answer(
        "agent@agency.test",
        "<spoof@agency.test>",
        "<x@debtor.test>",
    )
    .replace("X-MS-Exchange-Organization-AuthAs: Internal\n", "");
    let outside = journal(port, &report("exchange@agency.test", &inbound)).await;
    assert!(
        outside.as_ref().is_err_and(|e| e.contains("550")),
        "{outside:?}"
    );
    assert!(sent(&app, &creditor, case_id).await.is_empty());

    // The agency's mail to someone no case knows: taken, and not kept.
    let elsewhere = answer(
        "agent@agency.test",
        "<agent-3@agency.test>",
        "<nothing@elsewhere.test>",
    );
    let taken = journal(port, &report("exchange@agency.test", &elsewhere)).await;
    assert!(
        taken.as_ref().is_ok_and(|r| r.contains("no case")),
        "{taken:?}"
    );
    let page: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["totalCount"], json!(0));
}

#[tokio::test]
async fn without_sender_checks_no_journal_report_is_believed() {
    let (app, port) = app_with_journal(None).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let to_case = format!(
        "X-MS-Exchange-Organization-AuthAs: Internal\nFrom: Agent <agent@agency.test>\n\
         To: case-{case_id}@localhost\nSubject: Note\nMessage-ID: <agent-8@agency.test>\n\nhello\n"
    );
    let refused = journal(port, &report("exchange@agency.test", &to_case)).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("550")),
        "{refused:?}"
    );
    assert!(sent(&app, &creditor, case_id).await.is_empty());
}
