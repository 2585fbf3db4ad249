//! Bounded fuzzing of every parser that reads untrusted bytes through the API: raw MIME
//! mail, multipart uploads, Twilio's form callbacks and SendGrid's event batches. Each
//! endpoint gets random bytes and mutations of a valid example from a seeded generator; the
//! API must answer every one with a status below 500. (The SMTP command and DATA readers
//! have their own fuzz test in `src/inbound/smtp.rs`.)

use parley::domain::PartyKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::spawn_app;

const CASES: usize = 600;

/// A valid example, mutated: bytes flipped, inserted, deleted, duplicated or cut.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        if out.is_empty() {
            out.push(rng.r#gen());
            continue;
        }
        let at = rng.gen_range(0..out.len());
        match rng.gen_range(0..6) {
            0 => out[at] = rng.r#gen(),
            1 => out.insert(at, rng.r#gen()),
            2 => {
                out.remove(at);
            }
            3 => {
                let end = (at + rng.gen_range(1..64)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => out.truncate(at),
            _ => {
                let special = [
                    b'\r', b'\n', 0, b'"', b'=', b'&', b'%', b'-', b'{', b'}', 0xff,
                ];
                out.insert(at, special[rng.gen_range(0..special.len())]);
            }
        }
    }
    out
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..2048);
    (0..len).map(|_| rng.r#gen()).collect()
}

fn inputs(seed: u64, example: &[u8]) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..CASES)
        .map(|i| {
            if i % 4 == 0 {
                random_bytes(&mut rng)
            } else {
                mutate(&mut rng, example)
            }
        })
        .collect()
}

async fn fuzz(
    app: &crate::helpers::TestApp,
    path: &str,
    content_type: &str,
    token: &str,
    bodies: Vec<Vec<u8>>,
) {
    for body in bodies {
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().as_u16() < 500,
            "{path} answered {} to {:?}",
            r.status(),
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test]
async fn raw_mail_never_breaks_ingestion() {
    let app = spawn_app().await;
    let mail = b"From: Debtor <debtor@example.com>\r\nTo: case-0192f0c4-a1b2-7c3d-8e9f-0a1b2c3d4e5f@localhost\r\n\
Subject: Re: Payment\r\nMessage-ID: <a@b>\r\nIn-Reply-To: <msg_1@localhost>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"X\"\r\n\r\n--X\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nI paid.\r\n\
--X\r\nContent-Type: application/pdf; name=\"proof.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--X--\r\n";
    let token = app.admin.token.clone();
    fuzz(
        &app,
        "/api/inbound/email",
        "message/rfc822",
        &token,
        inputs(1, mail),
    )
    .await;
}

#[tokio::test]
async fn multipart_uploads_never_break_the_document_store() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/documents", case["caseId"].as_str().unwrap());
    let form = b"--B\r\nContent-Disposition: form-data; name=\"documentType\"\r\n\r\ninvoice\r\n\
--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n\
%PDF-1.4 hello\r\n--B--\r\n";
    fuzz(
        &app,
        &path,
        "multipart/form-data; boundary=B",
        &creditor.token,
        inputs(2, form),
    )
    .await;
}

#[tokio::test]
async fn provider_callbacks_never_break_their_endpoints() {
    let app = spawn_app().await;
    let token = app.admin.token.clone();
    let sms = b"From=%2B4512345678&To=%2B4570000000&Body=STOP&MessageSid=SM1&AccountSid=AC1";
    fuzz(
        &app,
        "/api/inbound/sms",
        "application/x-www-form-urlencoded",
        &token,
        inputs(3, sms),
    )
    .await;
    let status = b"MessageSid=SM1&MessageStatus=delivered&ErrorCode=30003&AccountSid=AC1";
    fuzz(
        &app,
        "/api/providers/sms/status",
        "application/x-www-form-urlencoded",
        &token,
        inputs(4, status),
    )
    .await;
    let events = br#"[{"event":"bounce","smtp-id":"<msg_1@localhost>","sg_event_id":"e1","timestamp":1700000000,"reason":"550 user unknown"},{"event":"open","smtp-id":"x"}]"#;
    fuzz(
        &app,
        "/api/providers/email/events",
        "application/json",
        &token,
        inputs(5, events),
    )
    .await;
}
