//! Sender authentication of received mail against a real DNS server (Debian's dnsmasq)
//! holding the test domains' SPF, DKIM and DMARC records: a debtor's address counts only
//! when its domain proves it, a forged one is held for review however it found its case,
//! and a name server that does not answer costs a bounded time (`temperror`).

use lettre::address::Envelope;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use parley::config::InboundDns;
use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::binary::free_port;
use crate::helpers::{Party, TestApp, case_body, spawn_app_with};
use crate::peers::Dns;

/// An Ed25519 DKIM key: its signer's PKCS#8 and the `p=` of its public record.
fn dkim_key() -> (Vec<u8>, String) {
    use base64::Engine;
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    (pkcs8.as_ref().to_vec(), public)
}

fn sign(raw: &str, pkcs8: &[u8], domain: &str) -> String {
    let key = Ed25519Key::from_pkcs8_der(pkcs8).unwrap();
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(raw.as_bytes())
        .unwrap();
    format!("{}{raw}", signature.to_header())
}

fn raw_mail(from: &str, to: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@sender.test>\r\n\
         Date: Sun, 6 Dec 2026 10:00:00 +0000\r\n{extra}\r\nI will pay on Friday.\r\n",
        uuid::Uuid::new_v4()
    )
}

/// The test domains' records: SPF, DMARC and one DKIM key.
async fn dns(dkim_public: &str) -> Dns {
    let dkim = format!("v=DKIM1; k=ed25519; p={dkim_public}");
    Dns::start(&[
        ("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.pass.test", "v=DMARC1; p=reject"),
        ("forged.test", "v=spf1 ip4:192.0.2.1 -all"),
        ("_dmarc.forged.test", "v=DMARC1; p=reject"),
        ("nodmarc.test", "v=spf1 ip4:127.0.0.1 -all"),
        ("sel._domainkey.signed.test", &dkim),
        ("_dmarc.signed.test", "v=DMARC1; p=quarantine"),
        ("sel._domainkey.relay.test", &dkim),
    ])
    .await
}

async fn app_with_dns(dns: &Dns, relays: bool) -> (TestApp, u16) {
    app_trusting(dns, relays, &[]).await
}

async fn app_trusting(dns: &Dns, relays: bool, sealers: &[&str]) -> (TestApp, u16) {
    let port = free_port();
    let addr = dns.addr;
    let sealers: Vec<String> = sealers.iter().map(|s| s.to_string()).collect();
    let app = spawn_app_with(move |c| {
        c.mail.sender_auth.arc_sealers = sealers;
        c.mail.inbound_smtp_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        c.mail.sender_auth.dns = InboundDns::Servers(vec![addr]);
        c.mail.sender_auth.timeout = std::time::Duration::from_secs(1);
        if relays {
            c.mail.inbound_relays = vec!["127.0.0.0/8".parse().unwrap()];
        }
    })
    .await;
    (app, port)
}

/// A case whose debtor writes from `email`.
async fn case_of(app: &TestApp, creditor: &Party, email: &str) -> (String, String) {
    let mut body = case_body();
    body["debtor"]["email"] = json!(email);
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    assert_eq!(r.status(), 201);
    let case: Value = r.json().await.unwrap();
    (
        case["caseId"].as_str().unwrap().to_string(),
        case["caseNumber"].as_str().unwrap().to_string(),
    )
}

/// Sends `raw` over SMTP from 127.0.0.1 with this envelope sender; the id parley answered.
async fn smtp_send(port: u16, mail_from: &str, to: &str, raw: &str) -> String {
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain("mx.sender.test".into()))
        .build();
    let envelope =
        Envelope::new(Some(mail_from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    let response = crate::peers::eventually(10, "the SMTP server to take the mail", || {
        let (smtp, envelope) = (smtp.clone(), envelope.clone());
        async move { smtp.send_raw(&envelope, raw.as_bytes()).await.ok() }
    })
    .await;
    let text = response.message().collect::<Vec<_>>().join(" ");
    text.split_whitespace().last().unwrap().to_string()
}

async fn message(app: &TestApp, party: &Party, id: &str) -> Value {
    let r = app.get(&party.token, &format!("/api/messages/{id}")).await;
    assert_eq!(r.status(), 200, "{id}");
    r.json().await.unwrap()
}

/// SPF, DKIM, DMARC, and whether the `From:` domain is proven.
type Expected = (&'static str, &'static str, &'static str, bool);

fn verdicts(m: &Value) -> (String, String, String, bool) {
    let a = &m["authentication"];
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
    (
        s("spf"),
        s("dkim"),
        s("dmarc"),
        a["fromVerified"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn a_debtor_address_counts_only_when_its_domain_proves_it() {
    let (pkcs8, public) = dkim_key();
    let dns = dns(&public).await;
    let (app, port) = app_with_dns(&dns, false).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let elsewhere = "support@inbox.agency.test";

    // name, debtor's address, envelope sender, signed, expected verdicts, sender known
    let cases: Vec<(&str, &str, &str, bool, Expected)> = vec![
        (
            "spf and dmarc pass",
            "d@pass.test",
            "d@pass.test",
            false,
            ("pass", "none", "pass", true),
        ),
        (
            "forged",
            "d@forged.test",
            "d@forged.test",
            false,
            ("fail", "none", "fail", false),
        ),
        (
            "no dmarc, aligned spf",
            "d@nodmarc.test",
            "d@nodmarc.test",
            false,
            ("pass", "none", "none", true),
        ),
        (
            "no records",
            "d@none.test",
            "d@none.test",
            false,
            ("none", "none", "none", false),
        ),
        (
            "dkim aligned",
            "d@signed.test",
            "bounce@none.test",
            true,
            ("none", "pass", "pass", true),
        ),
        (
            "dns silent",
            "d@slow.test",
            "d@slow.test",
            false,
            ("temperror", "none", "temperror", false),
        ),
    ];
    for (name, debtor, mail_from, signed, expected) in cases {
        let (case_id, number) = case_of(&app, &creditor, debtor).await;
        // Only the case number in the subject links it: the sender must be the debtor.
        let mut raw = raw_mail(debtor, elsewhere, &format!("Re: case {number}"), "");
        if signed {
            raw = sign(&raw, &pkcs8, "signed.test");
        }
        let started = std::time::Instant::now();
        let id = smtp_send(port, mail_from, "x@localhost", &raw).await;
        // A name server that never answers costs the configured bound (1 s), not the
        // resolver's own timeouts and retries for each lookup: well under 10 s even on a
        // loaded machine (the other cases' time is not asserted: it is the machine's load).
        if expected.0 == "temperror" {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{name}: {:?}",
                started.elapsed()
            );
        }
        let m = message(&app, &creditor, &id).await;
        assert_eq!(m["caseId"], case_id.as_str(), "{name}: {m}");
        let (spf, dkim, dmarc, proven) = verdicts(&m);
        assert_eq!(
            (spf.as_str(), dkim.as_str(), dmarc.as_str(), proven),
            expected,
            "{name}: {m}"
        );
        assert_eq!(m["senderVerified"], expected.3, "{name}: {m}");
    }
    // Mail that finds no case shows what its checks found in the unmatched inbox too.
    let raw = raw_mail("d@forged.test", elsewhere, "no case named here", "");
    smtp_send(port, "d@forged.test", "x@localhost", &raw).await;
    let list: Value = app
        .get(
            &app.admin.token,
            "/api/inbound/unmatched?from=d@forged.test",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalCount"], 1, "{list}");
    assert_eq!(
        list["messages"][0]["authentication"]["dmarc"], "fail",
        "{list}"
    );
    drop(dns);
}

#[tokio::test]
async fn a_forged_debtor_files_no_document_and_raises_no_webhook_even_at_the_case_address() {
    let (_, public) = dkim_key();
    let dns = dns(&public).await;
    let (app, port) = app_with_dns(&dns, false).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let hooks = crate::peers::HookReceiver::start().await;
    let r = app
        .post(
            &creditor.token,
            "/api/webhooks",
            &json!({"url": hooks.url, "events": ["message.received"]}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (case_id, _) = case_of(&app, &creditor, "d@forged.test").await;
    let to = format!("case-{case_id}@localhost");
    let attachment = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n";
    let body = "--b\r\nContent-Type: text/plain\r\n\r\nPaid, see receipt.\r\n--b\r\n\
                Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=receipt.pdf\r\n\
                Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
    let raw = format!(
        "From: d@forged.test\r\nTo: {to}\r\nSubject: receipt\r\nMessage-ID: <{}@x.test>\r\n{attachment}\r\n{body}",
        uuid::Uuid::new_v4()
    );
    let id = smtp_send(port, "d@forged.test", &to, &raw).await;
    let m = message(&app, &creditor, &id).await;
    assert_eq!(m["caseId"], case_id.as_str());
    assert_eq!(m["authentication"]["dmarc"], "fail", "{m}");
    assert_eq!(m["senderVerified"], false, "{m}");
    app.deliver_due().await;
    app.dispatch_webhooks().await;
    let docs: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        docs["documents"].as_array().map(Vec::len),
        Some(0),
        "{docs}"
    );
    assert!(hooks.requests().is_empty(), "no webhook for a forged mail");

    // The same mail from a debtor whose domain proves it files its receipt and is announced.
    let (case_id, _) = case_of(&app, &creditor, "d@pass.test").await;
    let to = format!("case-{case_id}@localhost");
    let raw = format!(
        "From: d@pass.test\r\nTo: {to}\r\nSubject: receipt\r\nMessage-ID: <{}@x.test>\r\n{attachment}\r\n{body}",
        uuid::Uuid::new_v4()
    );
    let id = smtp_send(port, "d@pass.test", &to, &raw).await;
    let m = message(&app, &creditor, &id).await;
    assert_eq!(m["senderVerified"], true, "{m}");
    app.deliver_due().await;
    app.dispatch_webhooks().await;
    let docs: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        docs["documents"].as_array().map(Vec::len),
        Some(1),
        "{docs}"
    );
    crate::peers::eventually(10, "the message.received webhook", || async {
        (hooks.requests().len() == 1).then_some(())
    })
    .await;
    drop(dns);
}

#[tokio::test]
async fn mail_from_a_trusted_relay_is_checked_for_the_client_the_relay_names() {
    let (_, public) = dkim_key();
    let dns = dns(&public).await;
    let (app, port) = app_with_dns(&dns, true).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let (_, number) = case_of(&app, &creditor, "d@forged.test").await;
    // forged.test allows 192.0.2.1 only: the relay took the mail from there.
    let received = "Received: from mx.forged.test (mx.forged.test [192.0.2.1])\r\n\
                    \tby relay.agency.test (Postfix) with ESMTP id 4ABC\r\n\
                    \tfor <x@localhost>; Sun, 6 Dec 2026 10:00:00 +0000 (UTC)\r\n";
    let raw = format!(
        "{received}{}",
        raw_mail("d@forged.test", "x@localhost", &format!("Re: {number}"), "")
    );
    let id = smtp_send(port, "d@forged.test", "x@localhost", &raw).await;
    let m = message(&app, &creditor, &id).await;
    assert_eq!(
        verdicts(&m),
        ("pass".into(), "none".into(), "pass".into(), true),
        "{m}"
    );
    assert_eq!(m["senderVerified"], true);

    // Without the relay's word, the relay's own address is the client: SPF fails.
    let bare = raw_mail("d@forged.test", "x@localhost", &format!("Re: {number}"), "");
    let id = smtp_send(port, "d@forged.test", "x@localhost", &bare).await;
    let m = message(&app, &creditor, &id).await;
    assert_eq!(m["authentication"]["spf"], "none", "{m}");
    assert_eq!(m["senderVerified"], false);
}

#[tokio::test]
async fn mail_posted_to_the_api_is_checked_by_its_dkim_signature() {
    let (pkcs8, public) = dkim_key();
    let dns = dns(&public).await;
    let (app, _) = app_with_dns(&dns, false).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case_of(&app, &creditor, "d@signed.test").await;
    let raw = sign(
        &raw_mail("d@signed.test", "x@localhost", &format!("Re: {number}"), ""),
        &pkcs8,
        "signed.test",
    );
    let r = app.post_mail(&app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let m = message(&app, &creditor, &id).await;
    assert_eq!(m["caseId"], case_id.as_str());
    assert_eq!(
        verdicts(&m),
        ("none".into(), "pass".into(), "pass".into(), true),
        "{m}"
    );
    assert_eq!(m["senderVerified"], true);

    // A changed body breaks the signature: the sender is no longer proven.
    let tampered = raw.replace("Friday", "Monday");
    let tampered = tampered.replace("Message-ID: <", "Message-ID: <t-");
    let r = app.post_mail(&app.admin.token, &tampered).await;
    let id = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let m = message(&app, &creditor, &id).await;
    // A body hash that does not match is `neutral` or `fail` (RFC 6376 §6.3): not a pass.
    assert!(
        ["fail", "neutral"].contains(&m["authentication"]["dkim"].as_str().unwrap()),
        "{m}"
    );
    assert_eq!(m["authentication"]["dmarc"], "fail", "{m}");
    assert_eq!(m["senderVerified"], false);
}

/// `raw` as a forwarder (relay.test) seals it: its ARC set says DMARC passed when it took it.
fn arc_seal(raw: &str, pkcs8: &[u8]) -> String {
    use mail_auth::{
        ArcOutput, AuthenticatedMessage, AuthenticationResults, DmarcOutput, DmarcResult,
        arc::ArcSealer,
    };
    let message = AuthenticatedMessage::parse(raw.as_bytes()).unwrap();
    let dmarc = DmarcOutput::default()
        .with_domain("forged.test")
        .with_spf_result(DmarcResult::Pass);
    let results = AuthenticationResults::new("relay.test").with_dmarc_result(&dmarc);
    let set = ArcSealer::from_key(Ed25519Key::from_pkcs8_der(pkcs8).unwrap())
        .domain("relay.test")
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID"])
        .seal(&message, &results, &ArcOutput::default())
        .unwrap();
    format!("{}{raw}", set.to_header())
}

#[tokio::test]
async fn a_trusted_forwarders_arc_seal_vouches_for_mail_that_fails_dmarc_after_forwarding() {
    let (pkcs8, public) = dkim_key();
    let dns = dns(&public).await;
    // forged.test allows 192.0.2.1 only: forwarded from 127.0.0.1, SPF and DMARC fail here.
    for (trusted, proven) in [(&["relay.test"][..], true), (&[][..], false)] {
        let (app, port) = app_trusting(&dns, false, trusted).await;
        let creditor = app.party(PartyKind::Creditor, "Acme").await;
        let (_, number) = case_of(&app, &creditor, "d@forged.test").await;
        let raw = arc_seal(
            &raw_mail("d@forged.test", "x@localhost", &format!("Re: {number}"), ""),
            &pkcs8,
        );
        let id = smtp_send(port, "fwd@relay.test", "x@localhost", &raw).await;
        let m = message(&app, &creditor, &id).await;
        assert_eq!(m["authentication"]["arc"], "pass", "{m}");
        assert_eq!(m["authentication"]["dmarc"], "fail", "{m}");
        assert_eq!(
            m["authentication"]["fromVerified"], proven,
            "{trusted:?}: {m}"
        );
        assert_eq!(m["senderVerified"], proven, "{trusted:?}: {m}");
    }
}
