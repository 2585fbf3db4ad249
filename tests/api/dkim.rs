//! DKIM: outbound email signed with the configured key, checked by a verifier parley does not
//! contain (dkimpy, Debian's python3-dkim), with the public key served by the test in place of
//! DNS. A message with a streamed attachment is signed as well; a changed body fails.

use std::process::Stdio;

use parley::domain::PartyKind;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::spawn_app_with;
use crate::peers::SmtpPeer;

/// A new RSA key: its PEM, and the public key as DNS would publish it (`p=`).
fn rsa_key(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("dkim.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    use base64::Engine;
    (
        std::fs::read_to_string(&key).unwrap(),
        base64::engine::general_purpose::STANDARD.encode(public.stdout),
    )
}

/// dkimpy's verdict on a message, the selector's record answered from `public`.
async fn verifies(raw: &[u8], public: &str) -> bool {
    let script = format!(
        "import sys, dkim\n\
         def txt(name, timeout=5):\n    \
             assert name == b'mail._domainkey.example.com.', name\n    \
             return b'v=DKIM1; k=rsa; p={public}'\n\
         print(dkim.verify(sys.stdin.buffer.read(), dnsfunc=txt))\n"
    );
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("Debian's python3 with python3-dkim (scripts/test installs it)");
    child.stdin.take().unwrap().write_all(raw).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "dkimpy ran");
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

#[tokio::test]
async fn outbound_mail_carries_a_dkim_signature_that_dkimpy_accepts() {
    let smtp = SmtpPeer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (pem, public) = rsa_key(keys.path());
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(url));
        c.mail.email_from = "collections@example.com".into();
        c.mail.dkim = Some(parley::config::DkimSettings {
            key_pem: parley::config::Secret::new(pem),
            selector: "mail".into(),
            domain: "example.com".into(),
        });
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let r = crate::documents::upload(
        &app,
        &creditor.token,
        case_id,
        crate::documents::seed_form(crate::documents::pdf_bytes(200_000)),
    )
    .await;
    let doc: serde_json::Value = r.json().await.unwrap();
    let path = format!("/api/cases/{case_id}/messages");
    // The seed's email, and one with the document attached (spooled and streamed).
    let seed = json!({"messageType": "email", "to": "debtor@example.com",
        "subject": "Payment Reminder - Invoice INV-2024-001", "body": "Dear customer,\n\nThis is a reminder...",
        "cc": ["creditor@example.com"], "priority": "normal"});
    assert_eq!(app.post(&creditor.token, &path, &seed).await.status(), 201);
    let attached = json!({"messageType": "email", "subject": "Invoice", "body": "Attached.  \n\n\n",
        "attachments": [doc["documentId"]]});
    assert_eq!(
        app.post(&creditor.token, &path, &attached).await.status(),
        201
    );
    app.deliver_due().await;
    let mails = smtp.wait_for(2).await;
    for raw in &mails {
        let text = String::from_utf8_lossy(raw);
        assert!(
            text.starts_with("DKIM-Signature: v=1; a=rsa-sha256;")
                || text.contains("\r\nDKIM-Signature: "),
            "{}",
            &text[..200]
        );
        assert!(text.contains("d=example.com;"), "{}", &text[..400]);
        assert!(
            verifies(raw, &public).await,
            "dkimpy rejects:\n{}",
            &text[..600]
        );
    }
    // A body changed on the way fails.
    let mut tampered = mails[0].clone();
    let at = tampered.windows(8).position(|w| w == b"reminder").unwrap();
    tampered[at] = b'R';
    assert!(!verifies(&tampered, &public).await);
    // So does a header added on the way (the signature names the absent Reply-To too).
    let mut added = b"Reply-To: attacker@example.net\r\n".to_vec();
    added.extend_from_slice(&mails[0]);
    assert!(!verifies(&added, &public).await);
}
