//! What reaches the database: no token, no note text, no debtor contact in the clear.

use parley::domain::PartyKind;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{TestApp, spawn_app};

/// Everything the database holds, as bytes: the SQLite files, or every PostgreSQL row as text.
pub(crate) async fn database_contents(app: &TestApp) -> Vec<u8> {
    let url = app.config.storage.database_url.expose();
    if url.starts_with("sqlite") {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(app.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("parley.db")
            {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        return bytes;
    }
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut text = String::new();
    for t in tables {
        let rows = sqlx::query(&format!("SELECT t::text FROM {t} t"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            text.push_str(&r.get::<String, _>(0));
            text.push('\n');
        }
    }
    text.into_bytes()
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    let plain = needle.as_bytes();
    let hex = hex::encode(plain);
    haystack.windows(plain.len()).any(|w| w == plain)
        || haystack.windows(hex.len()).any(|w| w == hex.as_bytes())
}

#[tokio::test]
async fn tokens_notes_debtor_contacts_and_messages_are_not_stored_in_plaintext() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = crate::helpers::case_body();
    body["debtor"] = json!({"name": "Zacharias Quist", "email": "zq-private@example.org", "phone": "+4598765432"});
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    assert_eq!(r.status(), 201);
    let case: serde_json::Value = r.json().await.unwrap();
    let note = "Debtor disclosed a serious illness; handle with care (xyzzy-4711)";
    let path = format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap());
    assert_eq!(
        app.post(&creditor.token, &path, &json!({"note": note}))
            .await
            .status(),
        201
    );

    let message = json!({"messageType": "email", "to": "hidden-recipient@example.org", "subject": "Settlement qwerty-9911",
                         "body": "Offer: zork-3344 in full settlement", "htmlBody": "<p>Offer: zork-3344</p>"});
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    assert_eq!(
        app.post(&creditor.token, &path, &message).await.status(),
        201
    );
    app.deliver_due().await;

    let contents = database_contents(&app).await;
    assert!(
        contains(&contents, case["caseNumber"].as_str().unwrap()),
        "the scan sees stored data"
    );
    assert!(
        contains(&contents, &parley::crypto::token_hash(&creditor.token)),
        "the token's hash is what is kept"
    );
    for secret in [
        &creditor.token[3..],
        &app.admin.token[3..],
        "xyzzy-4711",
        "serious illness",
        "Zacharias",
        "zq-private",
        "98765432",
    ] {
        assert!(
            !contains(&contents, secret),
            "{secret:?} found in the database"
        );
    }
}
