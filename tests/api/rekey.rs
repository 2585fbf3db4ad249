//! `parley rekey`: after a rotation, everything sealed under the old master key is sealed
//! again under the new one (data subjects' keys wrapped anew, legacy values moved under
//! their subject's key), and the old key can go.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::binary::{b64, command_on};
use crate::documents::{pdf_bytes, seed_form, upload};
use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::inbound::post_sms;
use crate::peers::HookReceiver;
use crate::policy::put_prefs;
use crate::webhooks::verify;

const NEW_KEY: [u8; 32] = [7; 32];

/// Runs the real `parley rekey` on the database and documents of `app`, under the new key
/// with the app's key as the old one.
async fn rekey(app: &TestApp) -> Value {
    let old = app.config.storage.master_key.expect("tests set a key");
    let out = command_on(app, "rekey", &NEW_KEY)
        .env("PARLEY_OLD_MASTER_KEYS", b64(old.expose()))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "rekey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn after_a_rekey_the_old_key_can_go_and_nothing_is_lost() {
    let receiver = HookReceiver::start().await;
    let first = spawn_app().await;
    let creditor = first.party(PartyKind::Creditor, "Acme").await;
    let case = first.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    let hook: Value = first
        .post(
            &creditor.token,
            "/api/webhooks",
            &json!({"url": receiver.url, "events": ["note.created"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    let prefs = json!({
        "preferredChannel": "email", "emailAddress": "debtor@example.com",
        "phoneNumber": "+4512345678", "allowSms": true, "allowEmail": true,
        "preferredLanguage": "da", "doNotContact": false
    });
    assert_eq!(
        put_prefs(&first, &creditor, &case_id, &prefs)
            .await
            .status(),
        200
    );
    let notes = format!("/api/cases/{case_id}/notes");
    let r = first
        .post(
            &creditor.token,
            &notes,
            &json!({"note": "Called, no answer"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let messages = format!("/api/cases/{case_id}/messages");
    let r = first
        .post(
            &creditor.token,
            &messages,
            &json!({"messageType": "email", "subject": "Payment Reminder", "body": "Please pay"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let file = pdf_bytes(200_000);
    let r = upload(&first, &creditor.token, &case_id, seed_form(file.clone())).await;
    assert_eq!(r.status(), 201);
    let document: Value = r.json().await.unwrap();
    let document_id = document["documentId"].as_str().unwrap().to_string();
    let mail = format!(
        "From: debtor@example.com\r\nTo: case-{case_id}@localhost\r\nSubject: Re: Payment Reminder\r\n\r\nI will pay Friday\r\n"
    );
    assert_eq!(
        first.post_mail(&first.admin.token, &mail).await.status(),
        201
    );
    assert_eq!(
        post_sms(&first, "+4512345678", "STOP", "SM300")
            .await
            .status(),
        200
    );

    // A note as an installation from before subject keys holds it: under the master key.
    let note_list: Value = first
        .get(&creditor.token, &notes)
        .await
        .json()
        .await
        .unwrap();
    let note_id = note_list["notes"][0]["noteId"]
        .as_str()
        .unwrap()
        .to_string();
    let old_ring = parley::crypto::KeyRing::new(
        first.config.storage.master_key.as_ref().unwrap().expose(),
        &[],
    );
    first
        .store
        .subjects()
        .overwrite_stored_value(
            "notes",
            "note_sealed",
            &note_id,
            &old_ring.seal_str(&format!("note:{note_id}"), "Called, no answer"),
        )
        .await
        .unwrap();

    let done = rekey(&first).await;
    let values = &done["values"];
    // The case's data is under its debtor's key, which the rekey wraps anew; what is no
    // one's personal data is sealed again under the new master key; the legacy note moves
    // under the debtor's key.
    for column in [
        "key_material.sealed",
        "webhooks.secret_sealed",
        "subject_keys.key_sealed",
        "notes.note_sealed",
    ] {
        assert!(values[column].as_u64().unwrap() >= 1, "{column}: {done}");
    }
    for column in [
        "cases.debtor_sealed",
        "messages.body_sealed",
        "messages.envelope_sealed",
        "preferences.contact_sealed",
        "documents.description_sealed",
        "inbound_raw.raw_sealed",
    ] {
        assert_eq!(values[column], 0, "{column} is under a subject key: {done}");
    }
    let note = first
        .store
        .subjects()
        .stored_value("notes", "note_sealed", &note_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note[0], 2, "sealed under a subject key now");
    assert_eq!(done["documents"], 0, "{done}");
    // A second run finds nothing left to do.
    let again = rekey(&first).await;
    assert!(
        again["values"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0),
        "{again}"
    );
    assert_eq!(again["documents"], 0);
    assert_eq!(again["keyId"], done["keyId"]);

    // The same data under the new key alone.
    let storage = first.config.storage.clone();
    let app = spawn_app_with(move |c| {
        c.storage = storage;
        c.storage.master_key = Some(parley::config::KeyBytes(NEW_KEY));
        c.storage.old_master_keys = Vec::new();
    })
    .await;
    let token = &creditor.token;
    let got: Value = app
        .get(token, &format!("/api/cases/{case_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["debtor"], case["debtor"]);
    let list: Value = app.get(token, &notes).await.json().await.unwrap();
    assert_eq!(list["notes"][0]["note"], "Called, no answer", "{list}");
    let list: Value = app.get(token, &messages).await.json().await.unwrap();
    let mut bodies = Vec::new();
    for m in list["messages"].as_array().unwrap() {
        let id = m["messageId"].as_str().unwrap();
        let one: Value = app
            .get(token, &format!("/api/messages/{id}"))
            .await
            .json()
            .await
            .unwrap();
        bodies.push(
            one["body"]
                .as_str()
                .unwrap_or_default()
                .trim_end()
                .to_string(),
        );
    }
    bodies.sort();
    assert_eq!(bodies, ["I will pay Friday", "Please pay", "STOP"]);
    let got: Value = app
        .get(
            token,
            &format!("/api/cases/{case_id}/communication-preferences"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["emailAddress"], "debtor@example.com");
    let r = app
        .get(token, &format!("/api/documents/{document_id}/download"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), file);
    // The STOP still holds, the queued mail still leaves, the webhook still signs.
    let r = app
        .post(
            token,
            &messages,
            &json!({"messageType": "sms", "body": "Reminder"}),
        )
        .await;
    assert_problem(r, 422, "recipient_suppressed").await;
    // The queued mail, and the system message of the upload (written now, under the new key).
    assert_eq!(app.deliver_due().await, 2);
    app.post(token, &notes, &json!({"note": "After the rekey"}))
        .await;
    app.dispatch_webhooks().await;
    let requests = receiver.requests();
    let (headers, body) = requests.last().expect("a webhook after the rekey");
    assert!(body.contains("note.created"));
    assert!(verify(&secret, headers, body));
}

#[tokio::test]
async fn a_rekey_without_the_old_key_stops_and_changes_nothing() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    app.create_case(&creditor, None).await;
    let out = command_on(&app, "rekey", &NEW_KEY)
        .env_remove("PARLEY_OLD_MASTER_KEYS")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not open"), "{err}");
    // The app under its own key still reads its case.
    let r = app.get(&creditor.token, "/api/cases").await;
    assert_eq!(r.status(), 200);
}
