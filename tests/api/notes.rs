use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn seed_note_example_round_trips_with_the_acting_party_name() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let token = app.labelled_token(&creditor, "John Doe").await;
    let path = format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap());
    let body = json!({
        "note": "Debtor called requesting payment plan. Discussed 6-month installment option.",
        "visibility": "internal",
        "category": "call_log",
        "tags": ["payment_plan", "phone_call"]
    });
    let r = app.post(&token, &path, &body).await;
    assert_eq!(r.status(), 201);
    let note: Value = r.json().await.unwrap();
    assert!(note["noteId"].as_str().unwrap().starts_with("note_"));
    assert_eq!(note["createdBy"], "John Doe");
    assert_eq!(note["category"], "call_log");
    assert_eq!(note["tags"], json!(["payment_plan", "phone_call"]));

    let list: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    assert_eq!(list["notes"][0]["note"], body["note"]);
    assert_eq!(list["notes"][0]["noteId"], note["noteId"]);
    assert_eq!(list["notes"][0]["createdBy"], "John Doe");
    assert!(
        chrono::DateTime::parse_from_rfc3339(list["notes"][0]["createdAt"].as_str().unwrap())
            .is_ok()
    );
}

#[tokio::test]
async fn private_notes_are_seen_by_their_authors_party_only() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let partner = app.party(PartyKind::Partner, "Collector").await;
    let case = app.create_case(&creditor, Some(&partner)).await;
    let path = format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap());
    assert_eq!(
        app.post(
            &partner.token,
            &path,
            &json!({"note": "shared", "visibility": "internal"})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        app.post(
            &partner.token,
            &path,
            &json!({"note": "partner only", "visibility": "private"})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        app.post(
            &creditor.token,
            &path,
            &json!({"note": "creditor only", "visibility": "private"})
        )
        .await
        .status(),
        201
    );

    let texts = |token: String| {
        let (app, path) = (&app, &path);
        async move {
            let list: Value = app.get(&token, path).await.json().await.unwrap();
            let mut t: Vec<String> = list["notes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["note"].as_str().unwrap().to_string())
                .collect();
            t.sort();
            t
        }
    };
    assert_eq!(
        texts(partner.token.clone()).await,
        ["partner only", "shared"]
    );
    assert_eq!(
        texts(creditor.token.clone()).await,
        ["creditor only", "shared"]
    );
    assert_eq!(texts(app.admin.token.clone()).await, ["shared"]);
    let second_partner_token = app.labelled_token(&partner, "Desk 2").await;
    assert_eq!(
        texts(second_partner_token).await,
        ["partner only", "shared"],
        "private to the party, not the token"
    );
}

#[tokio::test]
async fn notes_filter_by_category_and_tag_and_page() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap());
    for (note, category, tags) in [
        ("call one", "call_log", json!(["phone_call"])),
        ("letter", "correspondence", json!(["paper"])),
        (
            "call two",
            "call_log",
            json!(["phone_call", "payment_plan"]),
        ),
    ] {
        let r = app
            .post(
                &creditor.token,
                &path,
                &json!({"note": note, "category": category, "tags": tags}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let texts = |v: Value| -> Vec<String> {
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["note"].as_str().unwrap().to_string())
            .collect()
    };
    let calls = texts(
        app.get(&creditor.token, &format!("{path}?category=call_log"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(calls, ["call two", "call one"]);
    let plans = texts(
        app.get(&creditor.token, &format!("{path}?tag=payment_plan"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(plans, ["call two"]);
    let both = texts(
        app.get(
            &creditor.token,
            &format!("{path}?category=correspondence&tag=phone_call"),
        )
        .await
        .json()
        .await
        .unwrap(),
    );
    assert!(both.is_empty());

    let first: Value = app
        .get(&creditor.token, &format!("{path}?limit=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(first.clone()), ["call two", "letter"]);
    let next: Value = app
        .get(
            &creditor.token,
            &format!(
                "{path}?limit=2&cursor={}",
                first["nextCursor"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(texts(next), ["call one"]);
}

#[tokio::test]
async fn bad_notes_are_refused() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/notes", case["caseId"].as_str().unwrap());
    for body in [
        json!({"note": ""}),
        json!({"note": "x", "visibility": "public"}),
        json!({"note": "x", "category": "Call Log"}),
        json!({"note": "x", "tags": ["ok", "not ok"]}),
        json!({"note": "x".repeat(20_001)}),
    ] {
        assert_problem(
            app.post(&creditor.token, &path, &body).await,
            422,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.post(&creditor.token, &path, &json!({"note": 5})).await,
        422,
        "invalid_body",
    )
    .await;
    let list: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    assert!(list["notes"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn audit_log_records_every_change_in_order() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let partner = app.party(PartyKind::Partner, "Collector").await;
    let case = app.create_case(&creditor, None).await;
    let id = case["caseId"].as_str().unwrap();
    let c = format!("/api/cases/{id}");
    app.patch(&creditor.token, &c, &json!({"partnerId": partner.id}))
        .await;
    app.patch(&partner.token, &c, &json!({"status": "payment_plan"}))
        .await;
    app.patch(&partner.token, &c, &json!({"status": "payment_plan"}))
        .await;
    let note: Value = app
        .post(
            &partner.token,
            &format!("{c}/notes"),
            &json!({"note": "called"}),
        )
        .await
        .json()
        .await
        .unwrap();
    app.post(
        &creditor.token,
        &format!("{c}/payments"),
        &json!({"amount": "100"}),
    )
    .await;
    app.post(
        &creditor.token,
        &format!("{c}/deadlines"),
        &json!({"title": "t", "dueAt": "2030-01-01"}),
    )
    .await;
    app.patch(
        &creditor.token,
        &c,
        &json!({"debtor": {"phone": "+4587654321"}}),
    )
    .await;

    let log: Value = app
        .get(&partner.token, &format!("{c}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "case.created",
            "case.partner_changed",
            "case.status_changed",
            "note.created",
            "payment.recorded",
            "deadline.created",
            "case.debtor_updated"
        ],
        "a status set to its current value is no change"
    );
    assert_eq!(entries[0]["actor"], "Acme");
    assert_eq!(entries[2]["actor"], "Collector");
    assert_eq!(entries[3]["targetId"], note["noteId"]);
    assert_eq!(entries[3]["actorPartyId"], partner.id.as_str());

    let page: Value = app
        .get(&partner.token, &format!("{c}/audit-log?limit=3"))
        .await
        .json()
        .await
        .unwrap();
    let rest: Value = app
        .get(
            &partner.token,
            &format!(
                "{c}/audit-log?limit=10&cursor={}",
                page["nextCursor"].as_str().unwrap()
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["entries"].as_array().unwrap().len() + rest["entries"].as_array().unwrap().len(),
        7
    );
    assert_eq!(rest["entries"][0]["action"], "note.created");
    assert_problem(
        app.get(&partner.token, &format!("{c}/audit-log?cursor=bm9wZQ"))
            .await,
        422,
        "invalid_cursor",
    )
    .await;
}

/// Writes that seal under the debtor's key check the case's erasure while their transaction
/// is open. On a pool of two connections, 32 of them at once (and sends) all succeed: none waits
/// for a second connection of the pool it holds one of. (On SQLite the writer and the readers
/// are two pools anyway; the suite's PostgreSQL run is where this can fail.)
#[tokio::test]
async fn many_writes_at_once_on_a_small_pool_all_succeed() {
    let app = crate::helpers::spawn_app_with(|c| c.storage.database_max_connections = 2).await;
    let creditor = app.party(parley::domain::PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    let due = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let writes = (0..32).map(|i| {
        let (app, creditor, case_id, due) = (&app, &creditor, &case_id, &due);
        async move {
            let r = match i % 4 {
                3 => {
                    app.post(
                        &creditor.token,
                        &format!("/api/cases/{case_id}/messages"),
                        &serde_json::json!({"messageType": "email", "subject": "Hi", "body": "Text"}),
                    )
                    .await
                }
                0 => {
                    app.post(
                        &creditor.token,
                        &format!("/api/cases/{case_id}/notes"),
                        &serde_json::json!({"note": format!("Called, attempt {i}")}),
                    )
                    .await
                }
                1 => {
                    app.post(
                        &creditor.token,
                        &format!("/api/cases/{case_id}/deadlines"),
                        &serde_json::json!({"title": format!("Deadline {i}"), "dueAt": due}),
                    )
                    .await
                }
                _ => app
                    .request(
                        reqwest::Method::PUT,
                        &creditor.token,
                        &format!("/api/cases/{case_id}/communication-preferences"),
                    )
                    .json(&serde_json::json!({"preferredLanguage": "da"}))
                    .send()
                    .await
                    .unwrap(),
            };
            r.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(writes).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
}
