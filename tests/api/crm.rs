//! CRMs: every email and SMS of a case, in and out, logged once as an activity on the
//! Salesforce, Dataverse or HubSpot record that holds the case number (else on the debtor's
//! contact; neither: `unlinked`, and nothing invented), the record told the case's status
//! and what was paid, throttling and expired tokens lived through, a lost answer never
//! making a second activity, and an erasure deleting what was logged. Against strict fakes
//! written from each vendor's documentation (tests/api/salesforce_fake.rs,
//! dataverse_fake.rs, hubspot_fake.rs).

use std::time::Duration;

use parley::domain::PartyKind;
use parley::domain::clock::ManualClock;
use serde_json::{Value, json};

use crate::connectors::{connector, create, sync};
use crate::dataverse_fake::DataverseFake;
use crate::helpers::{Party, TestApp, spawn_app_with, spawn_app_with_clock};
use crate::hubspot_fake::HubspotFake;
use crate::inbound::{mail, post_sms};
use crate::salesforce_fake::SalesforceFake;

/// What the tests ask of each vendor's fake.
trait Fake: Send + Sync {
    const TYPE: &'static str;
    async fn start() -> Self;
    fn settings(&self) -> Value;
    fn add_record(&self, case_number: &str) -> String;
    fn add_contact(&self, email: &str) -> String;
    /// The live activities, each as the vendor keeps it.
    fn activities(&self) -> Vec<Value>;
    fn record(&self, id: &str) -> Value;
    fn throttle(&self, n: usize);
    fn fail_after_write(&self, n: usize);
    /// Writes still to be answered as failures.
    fn losing(&self) -> usize;
    /// The record or contact an activity is on.
    fn on(a: &Value) -> String;
    /// An activity's text.
    fn text(a: &Value) -> String;
    /// Whether it is an SMS.
    fn sms(a: &Value) -> bool;
    /// A record's status and paid amount, as numbers or text.
    fn told(record: &Value) -> (String, f64);
}

impl Fake for SalesforceFake {
    const TYPE: &'static str = "salesforce";
    async fn start() -> Self {
        SalesforceFake::start().await
    }
    fn settings(&self) -> Value {
        SalesforceFake::settings(self)
    }
    fn add_record(&self, n: &str) -> String {
        SalesforceFake::add_record(self, n)
    }
    fn add_contact(&self, e: &str) -> String {
        SalesforceFake::add_contact(self, e)
    }
    fn activities(&self) -> Vec<Value> {
        SalesforceFake::activities(self)
    }
    fn record(&self, id: &str) -> Value {
        SalesforceFake::record(self, id)
    }
    fn throttle(&self, n: usize) {
        SalesforceFake::throttle(self, n)
    }
    fn fail_after_write(&self, n: usize) {
        SalesforceFake::fail_after_write(self, n)
    }
    fn losing(&self) -> usize {
        self.state.lock().unwrap().fail_after_write
    }
    fn on(a: &Value) -> String {
        ["ParentId", "RelatedToId", "WhatId", "WhoId"]
            .iter()
            .find_map(|f| a[*f].as_str())
            .unwrap_or_default()
            .to_string()
    }
    fn text(a: &Value) -> String {
        a["TextBody"]
            .as_str()
            .or(a["Description"].as_str())
            .unwrap_or_default()
            .to_string()
    }
    fn sms(a: &Value) -> bool {
        a["attributes"]["type"] == "Task" && a["TaskSubtype"] == "Task"
    }
    fn told(r: &Value) -> (String, f64) {
        (
            r["Parley_Status__c"].as_str().unwrap_or_default().into(),
            r["Parley_Paid__c"].as_f64().unwrap_or(-1.0),
        )
    }
}

impl Fake for DataverseFake {
    const TYPE: &'static str = "dynamics365";
    async fn start() -> Self {
        DataverseFake::start().await
    }
    fn settings(&self) -> Value {
        DataverseFake::settings(self)
    }
    fn add_record(&self, n: &str) -> String {
        DataverseFake::add_record(self, n)
    }
    fn add_contact(&self, e: &str) -> String {
        DataverseFake::add_contact(self, e)
    }
    fn activities(&self) -> Vec<Value> {
        DataverseFake::activities(self)
    }
    fn record(&self, id: &str) -> Value {
        DataverseFake::record(self, id)
    }
    fn throttle(&self, n: usize) {
        DataverseFake::throttle(self, n)
    }
    fn fail_after_write(&self, n: usize) {
        DataverseFake::fail_after_write(self, n)
    }
    fn losing(&self) -> usize {
        self.state.lock().unwrap().fail_after_write
    }
    fn on(a: &Value) -> String {
        a["_regardingobjectid_value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn text(a: &Value) -> String {
        a["description"].as_str().unwrap_or_default().to_string()
    }
    fn sms(a: &Value) -> bool {
        a["@type"] == "task"
    }
    fn told(r: &Value) -> (String, f64) {
        (
            r["parley_status"].as_str().unwrap_or_default().into(),
            r["parley_paid"].as_f64().unwrap_or(-1.0),
        )
    }
}

impl Fake for HubspotFake {
    const TYPE: &'static str = "hubspot";
    async fn start() -> Self {
        HubspotFake::start().await
    }
    fn settings(&self) -> Value {
        HubspotFake::settings(self)
    }
    fn add_record(&self, n: &str) -> String {
        HubspotFake::add_record(self, n)
    }
    fn add_contact(&self, e: &str) -> String {
        HubspotFake::add_contact(self, e)
    }
    fn activities(&self) -> Vec<Value> {
        HubspotFake::activities(self)
    }
    fn record(&self, id: &str) -> Value {
        HubspotFake::record(self, id)
    }
    fn throttle(&self, n: usize) {
        HubspotFake::throttle(self, n)
    }
    fn fail_after_write(&self, n: usize) {
        HubspotFake::fail_after_write(self, n)
    }
    fn losing(&self) -> usize {
        self.state.lock().unwrap().fail_after_write
    }
    fn on(a: &Value) -> String {
        a["associations"][0][1]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn text(a: &Value) -> String {
        let p = &a["properties"];
        p["hs_email_text"]
            .as_str()
            .or(p["hs_communication_body"].as_str())
            .unwrap_or_default()
            .to_string()
    }
    fn sms(a: &Value) -> bool {
        a["type"] == "communications"
    }
    fn told(r: &Value) -> (String, f64) {
        let p = &r["properties"];
        (
            p["parley_status"].as_str().unwrap_or_default().into(),
            p["parley_paid"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1.0),
        )
    }
}

/// A case of `creditor` whose debtor writes from `email`: its id and number.
async fn case(app: &TestApp, creditor: &Party, email: &str) -> (String, String) {
    let case: Value = app
        .post(
            &creditor.token,
            "/api/cases",
            &json!({"debtor": {"name": "Ruth Calloway", "email": email, "phone": "+4512345678"},
                    "amount": {"value": "1500.00", "currency": "DKK"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    (
        case["caseId"].as_str().unwrap().to_string(),
        case["caseNumber"].as_str().unwrap().to_string(),
    )
}

async fn crm<F: Fake>(app: &TestApp, fake: &F, creditor: Option<&Party>) -> String {
    let made = create(
        app,
        &json!({"type": F::TYPE, "name": "The creditor's CRM",
            "creditorId": creditor.map(|c| c.id.clone()), "settings": fake.settings()}),
    )
    .await;
    made["connectorId"].as_str().unwrap().to_string()
}

/// Sends a message on the case (and delivers it); its id.
async fn send(app: &TestApp, party: &Party, case_id: &str, kind: &str, text: &str) -> String {
    let body = match kind {
        "sms" => json!({"messageType": "sms", "body": text}),
        _ => json!({"messageType": "email", "subject": "Your invoice", "body": text}),
    };
    let r = app
        .post(
            &party.token,
            &format!("/api/cases/{case_id}/messages"),
            &body,
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    app.deliver_due().await;
    id
}

/// The debtor's emailed reply; its message id.
async fn reply(app: &TestApp, case_id: &str, from: &str, text: &str) -> String {
    let raw = mail(
        &[
            ("From", from),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "Re: Your invoice"),
            (
                "Message-ID",
                &format!("<{}@example.com>", uuid::Uuid::new_v4()),
            ),
            ("Date", "Sun, 6 Dec 2026 10:00:00 +0000"),
        ],
        text,
    )
    .replace('\n', "\r\n");
    let r = app.post_mail(&app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn logged(app: &TestApp, party: &Party, message: &str) -> Vec<Value> {
    let m: Value = app
        .get(&party.token, &format!("/api/messages/{message}"))
        .await
        .json()
        .await
        .unwrap();
    m["crmActivities"].as_array().cloned().unwrap_or_default()
}

async fn every_message_in_and_out_is_logged_once_on_the_record<F: Fake>() {
    let app = spawn_app_with(|_| {}).await;
    let fake = F::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    let record = fake.add_record(&number);
    let id = crm(&app, &fake, Some(&acme)).await;

    let out = send(&app, &acme, &case_id, "email", "Please pay 1.500,00 kr.").await;
    let back = reply(&app, &case_id, "ruth@example.com", "I paid it yesterday.").await;
    let sms = send(&app, &acme, &case_id, "sms", "Reminder: 1.500,00 kr.").await;
    let r = post_sms(&app, "+4512345678", "Paid today", "SM-crm-1").await;
    assert!(r.status().is_success(), "{}", r.status());
    // Another creditor's case, and its record, are not this connector's.
    let (theirs, their_number) = case(&app, &other, "ruth@example.com").await;
    fake.add_record(&their_number);
    send(&app, &other, &theirs, "email", "Not Acme's").await;

    app.log_in_crms().await;
    let activities = fake.activities();
    assert_eq!(activities.len(), 4, "{activities:#?}");
    assert!(
        activities.iter().all(|a| F::on(a) == record),
        "{activities:#?}"
    );
    assert_eq!(activities.iter().filter(|a| F::sms(a)).count(), 2);
    let texts: Vec<String> = activities.iter().map(F::text).collect();
    for said in [
        "Please pay 1.500,00 kr.",
        "I paid it yesterday.",
        "Reminder: 1.500,00 kr.",
        "Paid today",
    ] {
        assert!(texts.iter().any(|t| t.contains(said)), "{said}: {texts:?}");
    }
    for m in [&out, &back, &sms] {
        let shown = logged(&app, &acme, m).await;
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["status"], "logged");
        assert_eq!(shown[0]["type"], F::TYPE);
        assert_eq!(shown[0]["connectorId"], id.as_str());
    }
    // Nothing is logged twice: a queue that is worked again, or asked to sync, adds nothing.
    let r = app
        .post(
            &app.admin.token,
            &format!("/api/connectors/{id}/sync"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.sync_connectors().await;
    app.log_in_crms().await;
    assert_eq!(fake.activities().len(), 4);
    let shown = connector(&app, &id).await;
    assert_eq!(shown["status"], "active", "{shown}");
}

#[tokio::test]
async fn salesforce_logs_every_message_in_and_out_once_on_the_record() {
    every_message_in_and_out_is_logged_once_on_the_record::<SalesforceFake>().await;
}

#[tokio::test]
async fn dynamics_logs_every_message_in_and_out_once_on_the_record() {
    every_message_in_and_out_is_logged_once_on_the_record::<DataverseFake>().await;
}

#[tokio::test]
async fn hubspot_logs_every_message_in_and_out_once_on_the_record() {
    every_message_in_and_out_is_logged_once_on_the_record::<HubspotFake>().await;
}

async fn a_contact_stands_in_and_an_unlinked_case_waits_for_its_record<F: Fake>() {
    let app = spawn_app_with(|_| {}).await;
    let fake = F::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (known, _) = case(&app, &acme, "ruth@example.com").await;
    let contact = fake.add_contact("ruth@example.com");
    let (unknown, number) = case(&app, &acme, "nobody@example.com").await;
    let id = crm(&app, &fake, None).await;

    send(&app, &acme, &known, "email", "To the contact").await;
    let waiting = send(&app, &acme, &unknown, "email", "To no one yet").await;
    app.log_in_crms().await;
    let activities = fake.activities();
    assert_eq!(activities.len(), 1, "{activities:#?}");
    assert_eq!(F::on(&activities[0]), contact);
    let shown = logged(&app, &acme, &waiting).await;
    assert_eq!(shown[0]["status"], "unlinked", "{shown:?}");
    // The admin sees what waits for a record on the connector.
    let counts = &connector(&app, &id).await["counts"]["activities"];
    assert_eq!(counts["unlinked"], 1, "{counts}");
    assert_eq!(counts["logged"], 1, "{counts}");

    // The record is made in the CRM; a sync asked for logs what waited.
    let record = fake.add_record(&number);
    let r = app
        .post(
            &app.admin.token,
            &format!("/api/connectors/{id}/sync"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.log_in_crms().await;
    let activities = fake.activities();
    assert_eq!(activities.len(), 2, "{activities:#?}");
    assert!(activities.iter().any(|a| F::on(a) == record));
    assert_eq!(logged(&app, &acme, &waiting).await[0]["status"], "logged");
}

#[tokio::test]
async fn salesforce_logs_on_the_contact_and_leaves_an_unlinked_case_until_its_record_exists() {
    a_contact_stands_in_and_an_unlinked_case_waits_for_its_record::<SalesforceFake>().await;
}

#[tokio::test]
async fn dynamics_logs_on_the_contact_and_leaves_an_unlinked_case_until_its_record_exists() {
    a_contact_stands_in_and_an_unlinked_case_waits_for_its_record::<DataverseFake>().await;
}

#[tokio::test]
async fn hubspot_logs_on_the_contact_and_leaves_an_unlinked_case_until_its_record_exists() {
    a_contact_stands_in_and_an_unlinked_case_waits_for_its_record::<HubspotFake>().await;
}

async fn the_record_hears_of_status_and_payments<F: Fake>() {
    let app = spawn_app_with(|_| {}).await;
    let fake = F::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    let record = fake.add_record(&number);
    crm(&app, &fake, Some(&acme)).await;

    let r = app
        .patch(
            &acme.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "payment_plan"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            &acme.token,
            &format!("/api/cases/{case_id}/payments"),
            &json!({"amount": "500.25"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.log_in_crms().await;
    assert_eq!(
        F::told(&fake.record(&record)),
        ("payment_plan".to_string(), 500.25)
    );
    assert!(fake.activities().is_empty(), "a change is no activity");
}

#[tokio::test]
async fn salesforce_records_hear_of_status_and_payments() {
    the_record_hears_of_status_and_payments::<SalesforceFake>().await;
}

#[tokio::test]
async fn dynamics_records_hear_of_status_and_payments() {
    the_record_hears_of_status_and_payments::<DataverseFake>().await;
}

#[tokio::test]
async fn hubspot_records_hear_of_status_and_payments() {
    the_record_hears_of_status_and_payments::<HubspotFake>().await;
}

async fn a_lost_answer_and_throttling_make_no_second_activity<F: Fake>() {
    let clock = ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = F::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    fake.add_record(&number);
    let id = crm(&app, &fake, None).await;

    // The CRM writes the activities, and its answer is lost.
    fake.fail_after_write(1);
    let first = send(&app, &acme, &case_id, "email", "One").await;
    send(&app, &acme, &case_id, "sms", "Two").await;
    app.log_in_crms().await;
    assert!(
        !fake.activities().is_empty(),
        "the CRM wrote before it failed"
    );
    assert_eq!(fake.losing(), 0, "an answer was lost");
    // Tried again in place (a 503 is waited out) or by the queue (a 502, later).
    clock.advance(Duration::from_secs(15));
    app.log_in_crms().await;
    assert_eq!(fake.activities().len(), 2, "{:#?}", fake.activities());
    assert_eq!(logged(&app, &acme, &first).await[0]["status"], "logged");

    // Throttled: put off as the CRM asks, and then logged once.
    fake.throttle(2);
    send(&app, &acme, &case_id, "email", "Three").await;
    app.log_in_crms().await;
    for _ in 0..4 {
        if fake.activities().len() == 3 {
            break;
        }
        clock.advance(Duration::from_secs(3600));
        app.log_in_crms().await;
    }
    assert_eq!(fake.activities().len(), 3, "{:#?}", fake.activities());
    assert_eq!(connector(&app, &id).await["status"], "active");
}

#[tokio::test]
async fn salesforce_makes_no_second_activity_after_a_lost_answer_or_throttling() {
    a_lost_answer_and_throttling_make_no_second_activity::<SalesforceFake>().await;
}

#[tokio::test]
async fn dynamics_makes_no_second_activity_after_a_lost_answer_or_throttling() {
    a_lost_answer_and_throttling_make_no_second_activity::<DataverseFake>().await;
}

#[tokio::test]
async fn hubspot_makes_no_second_activity_after_a_lost_answer_or_throttling() {
    a_lost_answer_and_throttling_make_no_second_activity::<HubspotFake>().await;
}

async fn an_erasure_deletes_what_was_logged<F: Fake>() {
    let app = spawn_app_with(|c| c.policy.retention = Duration::ZERO).await;
    let fake = F::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "quinta@example.com").await;
    let (kept, kept_number) = case(&app, &acme, "ruth@example.com").await;
    fake.add_record(&number);
    fake.add_record(&kept_number);
    let id = crm(&app, &fake, None).await;
    send(&app, &acme, &case_id, "email", "Quinta's letter").await;
    reply(&app, &case_id, "quinta@example.com", "Quinta answers").await;
    send(&app, &acme, &kept, "email", "Ruth's letter").await;
    app.log_in_crms().await;
    assert_eq!(fake.activities().len(), 3);

    let r = app
        .patch(
            &acme.token,
            &format!("/api/cases/{case_id}"),
            &json!({"status": "closed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            &app.admin.token,
            "/api/data-subjects/erase",
            &json!({"email": "quinta@example.com", "reason": "Art. 17 request"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let copies = answer["remoteCopies"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{answer}");
    assert_eq!(copies[0]["connectorId"], id.as_str());
    assert_eq!(copies[0]["type"], F::TYPE);
    assert_eq!(copies[0]["status"], "deleted");
    let left = fake.activities();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert!(F::text(&left[0]).contains("Ruth's letter"));
    assert!(!format!("{left:?}").contains("Quinta"));
}

#[tokio::test]
async fn salesforce_activities_of_an_erased_person_are_deleted() {
    an_erasure_deletes_what_was_logged::<SalesforceFake>().await;
}

#[tokio::test]
async fn dynamics_activities_of_an_erased_person_are_deleted() {
    an_erasure_deletes_what_was_logged::<DataverseFake>().await;
}

#[tokio::test]
async fn hubspot_activities_of_an_erased_person_are_deleted() {
    an_erasure_deletes_what_was_logged::<HubspotFake>().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_wrong_credentials_show_on_the_connector() {
    let app = spawn_app_with(|_| {}).await;
    let sf = SalesforceFake::start().await;
    let dv = DataverseFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    sf.add_record(&number);
    dv.add_record(&number);
    crm(&app, &sf, None).await;
    crm(&app, &dv, None).await;
    send(&app, &acme, &case_id, "email", "First").await;
    app.log_in_crms().await;
    sf.expire_tokens();
    dv.expire_tokens();
    send(&app, &acme, &case_id, "email", "Second").await;
    app.log_in_crms().await;
    assert_eq!(sf.activities().len(), 2);
    assert_eq!(dv.activities().len(), 2);
    assert_eq!(sf.state.lock().unwrap().token_requests, 2);
    assert_eq!(dv.state.lock().unwrap().token_requests, 2);

    // Another key, another secret: tried when the connector is made, and shown.
    let mut wrong = sf.settings();
    wrong["clientId"] = json!("3MVG9-not-this-app");
    let bad_sf = create(
        &app,
        &json!({"type": "salesforce", "name": "Wrong app", "settings": wrong}),
    )
    .await;
    let mut wrong = dv.settings();
    wrong["clientSecret"] = json!("not the secret");
    let bad_dv = create(
        &app,
        &json!({"type": "dynamics365", "name": "Wrong secret", "settings": wrong}),
    )
    .await;
    assert_eq!(bad_dv["settings"]["clientSecret"], "***");
    app.sync_connectors().await;
    for made in [bad_sf, bad_dv] {
        let shown = connector(&app, made["connectorId"].as_str().unwrap()).await;
        assert_eq!(shown["status"], "failing", "{shown}");
        let error = shown["lastError"].as_str().unwrap();
        assert!(error.contains("invalid_client"), "{error}");
        assert!(!shown.to_string().contains("not the secret"));
    }
}

#[tokio::test]
async fn hubspot_falls_back_to_the_v3_paths_where_the_dated_api_is_missing() {
    let app = spawn_app_with(|_| {}).await;
    let fake = HubspotFake::start().await;
    fake.date_versioned(false);
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    let record = fake.add_record(&number);
    crm(&app, &fake, None).await;
    send(&app, &acme, &case_id, "email", "Over v3").await;
    app.log_in_crms().await;
    let activities = fake.activities();
    assert_eq!(activities.len(), 1);
    assert_eq!(HubspotFake::on(&activities[0]), record);
    let s = fake.state.lock().unwrap();
    assert!(s.v3_path_requests > 0 && s.date_path_requests > 0);
}

#[tokio::test]
async fn a_process_that_dies_mid_batch_leaves_one_activity_per_message() {
    let clock = ManualClock::at(parley::domain::time::now_micros());
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let fake = HubspotFake::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, number) = case(&app, &acme, "ruth@example.com").await;
    fake.add_record(&number);
    crm(&app, &fake, None).await;
    let email = send(&app, &acme, &case_id, "email", "Before the crash").await;
    let sms = send(&app, &acme, &case_id, "sms", "After the crash").await;

    // HubSpot stores the emails of the batch; the process dies before it hears back.
    let told = std::sync::Arc::new(tokio::sync::Notify::new());
    fake.state.lock().unwrap().hang_after_write = Some(told.clone());
    tokio::select! {
        _ = app.crm.run_once() => panic!("the CRM never answered, so the step cannot end"),
        () = told.notified() => {}
    }
    assert_eq!(fake.activities().len(), 1);
    assert_eq!(logged(&app, &acme, &email).await[0]["status"], "logging");
    assert_eq!(app.log_in_crms().await, 0, "a held claim is left alone");

    // Its lease runs out; another process on the same database takes the claim up, finds
    // the email HubSpot has by its message id, and logs only the SMS.
    clock.advance(Duration::from_secs(301));
    let again = parley::App::build_with_clock(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = again.crm();
    while worker.run_once().await.unwrap() > 0 {}
    let activities = fake.activities();
    assert_eq!(activities.len(), 2, "{activities:#?}");
    let keys: Vec<&str> = activities
        .iter()
        .map(|a| a["properties"]["parley_message_id"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&email.as_str()) && keys.contains(&sms.as_str()));
    assert!(
        activities
            .iter()
            .all(|a| a["associations"][0][0] == "deals")
    );
    for m in [&email, &sms] {
        assert_eq!(logged(&app, &acme, m).await[0]["status"], "logged");
    }
}

/// A hostile CRM: every answer a JSON body that never ends. parley reads no more of each
/// than its bound (4 MiB), shows the connector failing with why, and fails the activity with
/// the reason (an answer past the bound is not one a second try reads differently); the
/// admin's sync queues it again: not logged, not lost.
#[tokio::test]
async fn an_endless_crm_answer_is_read_only_to_its_bound_and_a_sync_queues_the_activity_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    let served = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s, r) = (served.clone(), requests.clone());
    let router = axum::Router::new().fallback(move || {
        let served = s.clone();
        r.fetch_add(1, Ordering::Relaxed);
        async move {
            let endless = futures_util::stream::repeat(bytes::Bytes::from_static(
                &[b' '; 64 * 1024],
            ))
            .map(move |chunk| {
                served.fetch_add(chunk.len(), Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk)
            });
            axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(endless))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = spawn_app_with(|_| {}).await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let (case_id, _) = case(&app, &acme, "ruth@example.com").await;
    let mut settings = HubspotFake::start().await.settings();
    settings["apiUrl"] = json!(base);
    let made = create(
        &app,
        &json!({"type": "hubspot", "name": "Hostile", "settings": settings}),
    )
    .await;
    let id = made["connectorId"].as_str().unwrap();
    app.sync_connectors().await;
    let shown = connector(&app, id).await;
    assert_eq!(shown["status"], "failing", "{shown}");
    assert!(
        shown["lastError"].as_str().unwrap().contains("longer than"),
        "{shown}"
    );

    let message = send(&app, &acme, &case_id, "email", "Hello").await;
    app.log_in_crms().await;
    let activities = logged(&app, &acme, &message).await;
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(activities[0]["status"], "failed", "{activities:?}");
    let shown = sync(&app, id).await;
    assert_eq!(shown["status"], "failing", "{shown}");
    assert_eq!(
        logged(&app, &acme, &message).await[0]["status"],
        "pending",
        "queued again by the sync"
    );
    let (served, requests) = (
        served.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed),
    );
    assert!(requests >= 2, "{requests} requests");
    assert!(
        served < requests * 16 * 1024 * 1024,
        "{served} bytes served for {requests} requests"
    );
}
