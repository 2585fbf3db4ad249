//! Data subjects: the export of everything held about one person, found through the blind
//! indexes across cases and tenants, complete against what the API shows of those cases.

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::documents::{pdf_bytes, seed_form, upload};
use crate::helpers::{Party, TestApp, assert_problem, spawn_app};

async fn case_for(app: &TestApp, creditor: &Party, email: &str, phone: &str) -> String {
    let r = app
        .post(
            &creditor.token,
            "/api/cases",
            &json!({"debtor": {"name": "Jens Hansen", "email": email, "phone": phone},
                    "amount": {"value": "100.00", "currency": "DKK"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["caseId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn export(app: &TestApp, query: &str) -> Value {
    let r = app
        .get(
            &app.admin.token,
            &format!("/api/data-subjects/export?{query}"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

#[tokio::test]
async fn an_export_holds_everything_the_persons_cases_show_across_tenants() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let globex = app.party(PartyKind::Creditor, "Globex").await;
    let first = case_for(&app, &acme, "Jens@Example.com", "+4512345678").await;
    let second = case_for(&app, &globex, "jens@example.com", "+4587654321").await;
    let stranger = case_for(&app, &acme, "other@example.com", "+4511111111").await;
    for (party, case) in [(&acme, &first), (&globex, &second), (&acme, &stranger)] {
        let base = format!("/api/cases/{case}");
        app.post(
            &party.token,
            &format!("{base}/notes"),
            &json!({"note": "Called"}),
        )
        .await;
        app.post(
            &party.token,
            &format!("{base}/notes"),
            &json!({"note": "Private thought", "visibility": "private"}),
        )
        .await;
        app.post(
            &party.token,
            &format!("{base}/payments"),
            &json!({"amount": "10.00"}),
        )
        .await;
        let r = app
            .post(
                &party.token,
                &format!("{base}/messages"),
                &json!({"messageType": "email", "subject": "Reminder", "body": "Please pay, Jens"}),
            )
            .await;
        assert_eq!(r.status(), 201);
        upload(&app, &party.token, case, seed_form(pdf_bytes(1000))).await;
    }
    let reply = format!(
        "From: jens@example.com\r\nTo: case-{first}@localhost\r\nSubject: Re: Reminder\r\n\r\nI will pay Friday\r\n"
    );
    assert_eq!(app.post_mail(&app.admin.token, &reply).await.status(), 201);
    app.deliver_due().await;
    app.store
        .policy()
        .suppress(
            "email",
            "jens@example.com",
            "unsubscribed",
            Some(&parley::domain::CaseId::parse(&first).unwrap()),
            None,
            parley::store::SuppressionScope::Everyone,
        )
        .await
        .unwrap();

    let got = export(&app, "email=jens%40example.com").await;
    assert_eq!(got["subject"]["email"], "jens@example.com");
    let cases = got["cases"].as_array().unwrap();
    let ids: Vec<&str> = cases
        .iter()
        .map(|c| c["case"]["caseId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "both tenants' cases, not the stranger's"
    );
    for (c, party) in cases.iter().zip([&acme, &globex]) {
        let id = c["case"]["caseId"].as_str().unwrap();
        // Every item the case shows in the API is in the export.
        let messages: Value = app
            .get(&party.token, &format!("/api/cases/{id}/messages?limit=200"))
            .await
            .json()
            .await
            .unwrap();
        let exported: Vec<&Value> = c["messages"].as_array().unwrap().iter().collect();
        assert_eq!(
            exported.len() as u64,
            messages["totalCount"].as_u64().unwrap()
        );
        for m in messages["messages"].as_array().unwrap() {
            let e = exported
                .iter()
                .find(|e| e["messageId"] == m["messageId"])
                .unwrap_or_else(|| panic!("{m} not exported"));
            assert!(e["body"].is_string(), "with its body: {e}");
        }
        let documents: Value = app
            .get(&party.token, &format!("/api/cases/{id}/documents"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            c["documents"].as_array().unwrap().len(),
            documents["documents"].as_array().unwrap().len()
        );
        let doc = &c["documents"][0];
        assert_eq!(
            doc["downloadUrl"],
            format!(
                "/api/documents/{}/download",
                doc["documentId"].as_str().unwrap()
            )
        );
        // Private notes of every party are the person's data too.
        let notes: Vec<&str> = c["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["note"].as_str().unwrap())
            .collect();
        assert!(
            notes.contains(&"Called") && notes.contains(&"Private thought"),
            "{notes:?}"
        );
        assert_eq!(c["payments"].as_array().unwrap().len(), 1);
        assert!(c["preferences"].is_object());
        assert!(c["auditLog"].as_array().unwrap().len() >= 4);
    }
    let first_case = &cases[0];
    let inbound = first_case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "inbound")
        .expect("the reply");
    assert_eq!(
        inbound["body"].as_str().unwrap().trim_end(),
        "I will pay Friday"
    );
    assert!(
        inbound["original"]
            .as_str()
            .unwrap()
            .contains("Subject: Re: Reminder")
    );
    assert_eq!(got["suppressions"][0]["address"], "jens@example.com");
    // The export is in each case's audit log.
    let log: Value = app
        .get(&acme.token, &format!("/api/cases/{first}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "data_subject.exported")
    );

    // By phone: the one case with that number.
    let by_phone = export(&app, "phone=%2B4587654321").await;
    assert_eq!(by_phone["cases"].as_array().unwrap().len(), 1);
    assert_eq!(by_phone["cases"][0]["case"]["caseId"], second.as_str());
    // Someone unknown: nothing.
    assert_eq!(
        export(&app, "email=nobody%40example.com").await["cases"],
        json!([])
    );

    assert_problem(
        app.get(
            &acme.token,
            "/api/data-subjects/export?email=jens%40example.com",
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    for bad in [
        "",
        "email=x%40y.z&phone=%2B4512345678",
        "email=not-an-address",
        "phone=12",
    ] {
        assert_problem(
            app.get(
                &app.admin.token,
                &format!("/api/data-subjects/export?{bad}"),
            )
            .await,
            422,
            "validation_failed",
        )
        .await;
    }
}

/// Every table either holds personal data that the export carries, or is named here as
/// holding none: a new table fails this test until it is placed.
#[tokio::test]
async fn every_table_is_in_the_export_or_named_as_holding_no_personal_data() {
    let app = spawn_app().await;
    // In the export: (table, where).
    let exported = [
        ("cases", "case"),
        ("messages", "messages"),
        ("message_attachments", "messages[].attachments"),
        (
            "job_attempts",
            "messages[].deliveryAttempts (errors may quote an address)",
        ),
        ("inbound_raw", "messages[].original of received mail"),
        ("threads", "the thread subject is the messages' subject"),
        (
            "thread_participants",
            "the addresses of the messages' envelopes",
        ),
        ("notes", "notes"),
        ("note_tags", "notes[].tags"),
        ("documents", "documents"),
        ("preferences", "preferences"),
        ("payments", "payments"),
        ("deadlines", "deadlines"),
        ("audit_log", "auditLog"),
        ("suppressions", "suppressions"),
    ];
    // Holding no personal data of a debtor: (table, why).
    let none = [
        (
            "parties",
            "creditors, partners and admins: organisations, not data subjects",
        ),
        ("tokens", "hashes of API tokens"),
        ("key_material", "keys"),
        (
            "subject_keys",
            "data subjects' keys, sealed (in the database only where no key store is configured)",
        ),
        ("templates", "texts with placeholders"),
        ("template_contents", "texts with placeholders"),
        ("webhooks", "receivers of the parties"),
        ("webhook_deliveries", "ids and states"),
        (
            "events",
            "ids and states (payloads name cases, messages, documents)",
        ),
        ("jobs", "ids and times"),
        ("message_events", "statuses and times"),
        ("idempotency_keys", "keyed hashes of keys and requests"),
        (
            "message_copies",
            "which recipients' copies of a message went out, by place",
        ),
        ("case_number_counters", "counters"),
        ("pending_work", "names of work left after a migration"),
        ("sms_pace", "parley's own sender numbers"),
        (
            "imap_progress",
            "digests of parley's own mailboxes, and UIDs",
        ),
        (
            "connectors",
            "connections to the agencies' own systems (secrets sealed)",
        ),
        (
            "connector_items",
            "the remote systems' ids of what a connector took in",
        ),
        (
            "sent_copies",
            "where a sent email's bytes are: a file sealed under its case's key, its content the message's (exported with `messages`)",
        ),
        (
            "archive_items",
            "which archive connector journaled which message, and when",
        ),
        (
            "remote_folders",
            "which folder of a document system is a case's, by its remote id",
        ),
        (
            "remote_files",
            "where a document's copy is on a document system: its name and link sealed under the case's key (the document is exported with `documents`)",
        ),
        (
            "remote_erasures",
            "case folders an erasure has still to delete on a document system, by remote id",
        ),
        (
            "crm_activities",
            "which message (or case change) a CRM connector logged as which activity there, on which record or contact, by remote ids and a link: no content (the message is exported with `messages`)",
        ),
        ("_sqlx_migrations", "the schema's history"),
    ];
    let tables: Vec<String> = app.store.subjects().table_names().await.unwrap();
    for t in &tables {
        assert!(
            exported.iter().any(|(n, _)| n == t) || none.iter().any(|(n, _)| n == t),
            "table {t} is neither in the data subject export nor named as holding no personal data"
        );
    }
}
