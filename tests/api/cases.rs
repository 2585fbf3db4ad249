use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, case_body, spawn_app};

#[tokio::test]
async fn creditor_creates_a_case_with_a_generated_case_number() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let number = case["caseNumber"].as_str().unwrap();
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(number, format!("DEB-{year}-00001"));
    assert!(uuid::Uuid::parse_str(case["caseId"].as_str().unwrap()).is_ok());
    assert_eq!(case["status"], "open");
    assert_eq!(case["creditorId"], creditor.id.as_str());
    assert_eq!(
        case["amount"],
        json!({"value": "15000.00", "currency": "DKK"})
    );
    assert_eq!(case["debtor"]["email"], "debtor@example.com");
    let second = app.create_case(&creditor, None).await;
    assert_eq!(second["caseNumber"], format!("DEB-{year}-00002"));

    let fetched: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{}", case["caseId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, case);
}

#[tokio::test]
async fn a_given_case_number_is_kept_and_must_be_unique() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = case_body();
    body["caseNumber"] = json!("DEB-2024-12345");
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["caseNumber"],
        "DEB-2024-12345"
    );
    let again = app.post(&creditor.token, "/api/cases", &body).await;
    assert_problem(again, 409, "case_number_taken").await;
}

#[tokio::test]
async fn admin_creates_cases_for_a_named_creditor_and_partners_create_none() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let partner = app.party(PartyKind::Partner, "Collector A").await;

    let r = app.post(&app.admin.token, "/api/cases", &case_body()).await;
    assert_problem(r, 422, "validation_failed").await;

    let mut body = case_body();
    body["creditorId"] = json!(creditor.id);
    body["partnerId"] = json!(partner.id);
    let r = app.post(&app.admin.token, "/api/cases", &body).await;
    assert_eq!(r.status(), 201);
    let case: Value = r.json().await.unwrap();
    assert_eq!(case["creditorId"], creditor.id.as_str());
    assert_eq!(case["partnerId"], partner.id.as_str());

    body["creditorId"] = json!(partner.id);
    assert_problem(
        app.post(&app.admin.token, "/api/cases", &body).await,
        422,
        "invalid_party",
    )
    .await;
    assert_problem(
        app.post(&partner.token, "/api/cases", &case_body()).await,
        403,
        "forbidden",
    )
    .await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let mut foreign = case_body();
    foreign["creditorId"] = json!(other.id);
    assert_problem(
        app.post(&creditor.token, "/api/cases", &foreign).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn invalid_case_fields_are_refused_by_name() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let cases = [
        ("/debtor/email", json!("not-an-address"), "email"),
        ("/debtor/phone", json!("12345"), "E.164"),
        ("/debtor/timezone", json!("Mars/Olympus"), "time zone"),
        ("/debtor/name", json!(""), "name"),
        ("/amount/value", json!("-5"), "amount"),
        ("/amount/currency", json!("dkk"), "currency"),
        ("/dueDate", json!("15/01/2024"), "dueDate"),
    ];
    for (pointer, value, word) in cases {
        let mut body = case_body();
        *body.pointer_mut(pointer).unwrap() = value;
        let problem = assert_problem(
            app.post(&creditor.token, "/api/cases", &body).await,
            422,
            "validation_failed",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(word),
            "{pointer}: {problem}"
        );
    }
    let listed: Value = app
        .get(&creditor.token, "/api/cases")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["totalCount"], 0, "nothing half-written");
}

#[tokio::test]
async fn case_list_pages_with_a_cursor_and_filters_by_status() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_case(&creditor, None).await["caseId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first: Value = app
        .get(&creditor.token, "/api/cases?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["totalCount"], 5);
    let page1: Vec<&str> = first["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["caseId"].as_str().unwrap())
        .collect();
    assert_eq!(page1, [ids[4].as_str(), ids[3].as_str()], "newest first");
    let cursor = first["nextCursor"].as_str().unwrap();
    let second: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases?limit=2&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .unwrap();
    let page2: Vec<&str> = second["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["caseId"].as_str().unwrap())
        .collect();
    assert_eq!(page2, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = second["nextCursor"].as_str().unwrap();
    let third: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases?limit=2&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["cases"].as_array().unwrap().len(), 1);
    assert!(third.get("nextCursor").is_none());

    let r = app
        .patch(
            &creditor.token,
            &format!("/api/cases/{}", ids[0]),
            &json!({"status": "disputed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let disputed: Value = app
        .get(&creditor.token, "/api/cases?status=disputed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(disputed["totalCount"], 1);
    assert_eq!(disputed["cases"][0]["caseId"], ids[0].as_str());
    assert_problem(
        app.get(&creditor.token, "/api/cases?status=lost").await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.get(&creditor.token, "/api/cases?cursor=%%%").await,
        422,
        "invalid_cursor",
    )
    .await;
    assert_problem(
        app.get(&creditor.token, "/api/cases?limit=0").await,
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn patch_changes_status_partner_and_debtor_contact() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let partner = app.party(PartyKind::Partner, "Collector A").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}", case["caseId"].as_str().unwrap());

    assert_eq!(
        app.get(&partner.token, &path).await.status(),
        404,
        "not yet assigned"
    );
    let body = json!({"status": "payment_plan", "partnerId": partner.id,
                      "debtor": {"email": "new@example.com", "phone": null, "language": "en-gb"}});
    let r = app.patch(&creditor.token, &path, &body).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["status"], "payment_plan");
    assert_eq!(updated["partnerId"], partner.id.as_str());
    assert_eq!(updated["debtor"]["email"], "new@example.com");
    assert_eq!(updated["debtor"]["language"], "en-GB");
    assert!(updated["debtor"].get("phone").is_none());
    assert_eq!(
        updated["debtor"]["name"], "Example Company ApS",
        "untouched fields stay"
    );

    let seen: Value = app.get(&partner.token, &path).await.json().await.unwrap();
    assert_eq!(seen["status"], "payment_plan");
    let r = app
        .patch(&partner.token, &path, &json!({"status": "paid"}))
        .await;
    assert_eq!(r.status(), 200, "a partner works the case");
    assert_problem(
        app.patch(&partner.token, &path, &json!({"partnerId": null}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.patch(&creditor.token, &path, &json!({"status": "won"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.patch(&creditor.token, &path, &json!({"partnerId": creditor.id}))
            .await,
        422,
        "invalid_party",
    )
    .await;

    let r = app
        .patch(&creditor.token, &path, &json!({"partnerId": null}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.get(&partner.token, &path).await.status(),
        404,
        "unassigned again"
    );
}

#[tokio::test]
async fn payments_reduce_the_outstanding_amount() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}", case["caseId"].as_str().unwrap());
    let r = app
        .post(
            &creditor.token,
            &format!("{path}/payments"),
            &json!({"amount": "2500.50", "paidAt": "2024-02-01", "reference": "bank-123"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let payment: Value = r.json().await.unwrap();
    assert_eq!(
        payment["amount"],
        json!({"value": "2500.50", "currency": "DKK"})
    );
    assert_eq!(payment["paidAt"], "2024-02-01T00:00:00Z");
    let r = app
        .post(
            &creditor.token,
            &format!("{path}/payments"),
            &json!({"amount": {"value": 499.5, "currency": "DKK"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post(
            &creditor.token,
            &format!("{path}/payments"),
            &json!({"amount": {"value": "1", "currency": "EUR"}}),
        )
        .await;
    assert_problem(r, 422, "currency_mismatch").await;
    assert_problem(
        app.post(
            &creditor.token,
            &format!("{path}/payments"),
            &json!({"amount": "0"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;

    let case: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    assert_eq!(case["amountPaid"]["value"], "3000.00");
    assert_eq!(case["amountOutstanding"]["value"], "12000.00");
    let list: Value = app
        .get(&creditor.token, &format!("{path}/payments"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["payments"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn deadlines_are_stored_and_listed_by_due_date() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/deadlines", case["caseId"].as_str().unwrap());
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"title": "Court filing", "dueAt": "2024-03-01T12:00:00+01:00"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["dueAt"], "2024-03-01T11:00:00Z");
    assert!(d["deadlineId"].as_str().unwrap().starts_with("ddl_"));
    assert_eq!(
        app.post(
            &creditor.token,
            &path,
            &json!({"title": "Reply", "dueAt": "2024-02-01"})
        )
        .await
        .status(),
        201
    );
    assert_problem(
        app.post(
            &creditor.token,
            &path,
            &json!({"title": "x", "dueAt": "soon"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let list: Value = app.get(&creditor.token, &path).await.json().await.unwrap();
    let titles: Vec<&str> = list["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Reply", "Court filing"]);
}

#[tokio::test]
async fn amounts_are_bounded_and_payment_sums_never_overflow() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let mut body = case_body();
    body["amount"] = json!({"value": "1000000000000.00", "currency": "DKK"});
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    assert_problem(r, 422, "validation_failed").await;
    body["amount"] = json!({"value": "100.50", "currency": "JPY"});
    let r = app.post(&creditor.token, "/api/cases", &body).await;
    assert_problem(r, 422, "validation_failed").await;

    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/payments", case["caseId"].as_str().unwrap());
    let big = json!({"amount": "999999999999.99", "paidAt": "2024-02-01"});
    assert_eq!(app.post(&creditor.token, &path, &big).await.status(), 201);
    // A second one would make the case's sum larger than any amount: refused, not wrapped.
    let r = app.post(&creditor.token, &path, &big).await;
    assert_problem(r, 422, "amount_out_of_range").await;
    let r = app
        .post(
            &creditor.token,
            &path,
            &json!({"amount": "0.01", "paidAt": "2024-02-01"}),
        )
        .await;
    assert_problem(r, 422, "amount_out_of_range").await;
    // Every list that sums payments still answers.
    assert_eq!(app.get(&creditor.token, "/api/cases").await.status(), 200);
    let got: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{}", case["caseId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(got.is_object());
}
