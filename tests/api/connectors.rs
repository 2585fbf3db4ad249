//! Connectors: the API, and the Microsoft 365 and Gmail mailboxes against fakes of Graph and
//! the Gmail API behind prism, which validates every request and answer against the vendor's
//! own description (tests/api/vendors.rs).

use parley::domain::PartyKind;
use serde_json::{Value, json};

use crate::helpers::{Party, TestApp, assert_problem, spawn_app};
use crate::inbound::mail;
use crate::peers::HookReceiver;
use crate::vendors::{GmailFake, GraphFake, Prism};

const MAILBOX: &str = "collections@agency.example";

pub(crate) async fn create(app: &TestApp, body: &Value) -> Value {
    let r = app.post(&app.admin.token, "/api/connectors", body).await;
    assert_eq!(r.status(), 201, "creating a connector");
    r.json().await.unwrap()
}

pub(crate) async fn connector(app: &TestApp, id: &str) -> Value {
    app.get(&app.admin.token, &format!("/api/connectors/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// Asks for a sync through the API and runs the round.
pub async fn sync(app: &TestApp, id: &str) -> Value {
    let r = app
        .post(
            &app.admin.token,
            &format!("/api/connectors/{id}/sync"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.sync_connectors().await;
    connector(app, id).await
}

async fn inbound_subjects(app: &TestApp, party: &Party, case_id: &str) -> Vec<String> {
    let list: Value = app
        .get(
            &party.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    let mut subjects: Vec<String> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    subjects.sort();
    subjects
}

async fn unmatched_total(app: &TestApp) -> i64 {
    let page: Value = app
        .get(&app.admin.token, "/api/inbound/unmatched")
        .await
        .json()
        .await
        .unwrap();
    page["totalCount"].as_i64().unwrap()
}

fn reply(case_id: &str, subject: &str, n: usize) -> Vec<u8> {
    mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", subject),
            ("Message-ID", &format!("<m{n}.{case_id}@example.com>")),
        ],
        "I will pay on Friday.\n",
    )
    .replace('\n', "\r\n")
    .into_bytes()
}

#[tokio::test]
async fn the_api_seals_secrets_checks_settings_and_is_for_admins_only() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let settings = json!({"tenantId": "t-1", "clientId": "c-1", "clientSecret": "very-secret-1",
        "mailbox": MAILBOX});
    let body = json!({"type": "microsoft365_mail", "name": "Collections mailbox",
        "creditorId": creditor.id, "settings": settings});

    assert_problem(
        app.post(&creditor.token, "/api/connectors", &body).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.get(&creditor.token, "/api/connectors").await,
        403,
        "forbidden",
    )
    .await;

    let made = create(&app, &body).await;
    let id = made["connectorId"].as_str().unwrap();
    assert!(id.starts_with("con_"), "{made}");
    assert_eq!(made["status"], "active");
    assert_eq!(made["creditorId"], creditor.id.as_str());
    assert_eq!(made["settings"]["clientSecret"], "***");
    assert_eq!(made["settings"]["graphUrl"], "https://graph.microsoft.com");
    assert_eq!(
        made["settings"]["loginUrl"],
        "https://login.microsoftonline.com"
    );
    assert_eq!(made["settings"]["outbound"], true);
    assert!(made["lastSyncAt"].is_null());
    assert!(!made.to_string().contains("very-secret-1"));

    // At rest, sealed: the database holds no secret in the clear.
    let row: (String, Vec<u8>) =
        sqlx::query_as("SELECT settings, secrets_sealed FROM connectors WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool().await)
            .await
            .unwrap();
    assert!(!row.0.contains("very-secret-1"));
    assert!(!String::from_utf8_lossy(&row.1).contains("very-secret-1"));

    let listed: Value = app
        .get(&app.admin.token, "/api/connectors")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["connectors"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains("very-secret-1"));

    // A kept secret goes nowhere new: moving a base URL needs it again.
    let moved = app
        .patch(
            &app.admin.token,
            &format!("/api/connectors/{id}"),
            &json!({"settings": {"clientSecret": "***", "loginUrl": "https://login.attacker.example"}}),
        )
        .await;
    let problem = assert_problem(moved, 422, "validation_failed").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("clientSecret"),
        "{problem}"
    );

    // An update keeps a secret given as "***", and what it does not name.
    let r = app
        .patch(
            &app.admin.token,
            &format!("/api/connectors/{id}"),
            &json!({"name": "Renamed", "creditorId": null, "settings": {"clientSecret": "***"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .patch(
            &app.admin.token,
            &format!("/api/connectors/{id}"),
            &json!({"settings": {"clientSecret": "very-secret-2", "graphUrl": "https://graph.microsoft.us/"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["name"], "Renamed");
    assert!(changed["creditorId"].is_null());
    assert_eq!(
        changed["settings"]["graphUrl"],
        "https://graph.microsoft.us"
    );
    assert_eq!(changed["settings"]["tenantId"], "t-1");

    for (bad, code) in [
        (
            json!({"type": "fax", "name": "x", "settings": {}}),
            "validation_failed",
        ),
        (
            json!({"type": "microsoft365_mail", "name": "x", "settings": {"tenantId": "t"}}),
            "validation_failed",
        ),
        (
            json!({"type": "microsoft365_mail", "name": "x",
                "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "mailbox": "m",
                    "colour": "red"}}),
            "validation_failed",
        ),
        (
            json!({"type": "microsoft365_mail", "name": "x",
                "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "mailbox": "m",
                    "graphUrl": "https://user:pw@graph.example"}}),
            "validation_failed",
        ),
        (
            json!({"type": "microsoft365_mail", "name": "x", "creditorId": app.admin.id,
                "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "mailbox": "m"}}),
            "invalid_party",
        ),
        (
            json!({"type": "gmail", "name": "x",
                "settings": {"serviceAccount": {"client_email": "a@b"}, "user": "u@x"}}),
            "validation_failed",
        ),
    ] {
        assert_problem(
            app.post(&app.admin.token, "/api/connectors", &bad).await,
            422,
            code,
        )
        .await;
    }
    assert_problem(
        app.get(
            &app.admin.token,
            "/api/connectors/con_0123456789abcdef0123456789abcdef",
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get(&app.admin.token, "/api/connectors/nonsense").await,
        404,
        "not_found",
    )
    .await;

    let audit: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE target_type = 'connector' ORDER BY id",
    )
    .fetch_all(&app.pool().await)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            "connector.created",
            "connector.updated",
            "connector.updated"
        ]
    );

    let r = app
        .request(
            reqwest::Method::DELETE,
            &app.admin.token,
            &format!("/api/connectors/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_problem(
        app.get(&app.admin.token, &format!("/api/connectors/{id}"))
            .await,
        404,
        "not_found",
    )
    .await;
}

/// A Microsoft 365 connector in front of the Graph fake, behind prism.
async fn graph_connector(app: &TestApp, creditor: Option<&Party>) -> (GraphFake, Prism, String) {
    let graph = GraphFake::start(MAILBOX).await;
    let prism = Prism::start("graph-mail.json", &graph.base).await;
    graph.behind(&prism);
    let made = create(
        app,
        &json!({"type": "microsoft365_mail", "name": "Collections",
            "creditorId": creditor.map(|c| c.id.clone()),
            "settings": graph.settings(&prism.base)}),
    )
    .await;
    (
        graph,
        prism,
        made["connectorId"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn microsoft365_mail_takes_new_mail_by_delta_and_value_into_the_same_matching() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let (graph, prism, id) = graph_connector(&app, Some(&creditor)).await;

    // Three mails, over two delta pages: two replies to the case, one that names no case.
    graph.deliver(&reply(case_id, "First", 1));
    graph.deliver(&reply(case_id, "Second", 2));
    graph.deliver(
        mail(
            &[
                ("From", "someone@example.org"),
                ("Subject", "Hello"),
                ("Message-ID", "<x1@example.org>"),
            ],
            "hi\n",
        )
        .as_bytes(),
    );
    let after = sync(&app, &id).await;
    assert_eq!(after["status"], "active", "{after}");
    assert!(after["lastSyncAt"].is_string());
    assert_eq!(after["counts"]["items"], 3);
    assert_eq!(
        inbound_subjects(&app, &creditor, case_id).await,
        ["First", "Second"]
    );
    assert_eq!(unmatched_total(&app).await, 1);

    // The next sync goes on from the kept deltaLink: only the new mail is read.
    graph.deliver(&reply(case_id, "Third", 3));
    let after = sync(&app, &id).await;
    assert_eq!(after["counts"]["items"], 4);
    assert_eq!(after["counts"]["syncs"], 2);
    {
        let s = graph.state.lock().unwrap();
        assert!(s.fetched.values().all(|n| *n == 1), "{:?}", s.fetched);
        // One token for both syncs, from the tenant's own endpoint, for Graph's own scope.
        assert_eq!(s.token_requests, 1);
        assert_eq!(s.scopes, [format!("{}/.default", prism.base)]);
    }
    assert_eq!(
        inbound_subjects(&app, &creditor, case_id).await,
        ["First", "Second", "Third"]
    );
    let list: Value = app
        .get(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound"),
        )
        .await
        .json()
        .await
        .unwrap();
    for m in list["messages"].as_array().unwrap() {
        assert_eq!(
            m["carriedBy"],
            json!({"connectorId": id, "type": "microsoft365_mail"})
        );
    }
    prism.assert_clean();
}

#[tokio::test]
async fn an_expired_delta_resyncs_without_storing_twice_and_throttling_is_waited_out() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let (graph, prism, id) = graph_connector(&app, None).await;
    graph.deliver(&reply(case_id, "First", 1));
    graph.deliver(
        mail(
            &[("From", "someone@example.org"), ("Subject", "Hello")],
            "no message id\n",
        )
        .as_bytes(),
    );
    assert_eq!(sync(&app, &id).await["counts"]["items"], 2);

    // Graph forgets the sync state (410 SyncStateNotFound) and throttles the next call.
    graph.forget_sync_state();
    graph.deliver(&reply(case_id, "Second", 2));
    graph.state.lock().unwrap().throttle = 1;
    let after = sync(&app, &id).await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(after["counts"]["items"], 3, "{after}");
    {
        let s = graph.state.lock().unwrap();
        assert_eq!(s.throttled, 1);
        assert!(
            s.fetched.values().all(|n| *n == 1),
            "nothing read twice: {:?}",
            s.fetched
        );
    }
    assert_eq!(
        inbound_subjects(&app, &creditor, case_id).await,
        ["First", "Second"]
    );
    assert_eq!(
        unmatched_total(&app).await,
        1,
        "the unmatched mail is kept once"
    );
    prism.assert_clean();
}

#[tokio::test]
async fn tokens_are_renewed_and_a_wrong_secret_fails_clearly_and_raises_a_webhook() {
    let app = spawn_app().await;
    let hooks = HookReceiver::start().await;
    let r = app
        .post(
            &app.admin.token,
            "/api/webhooks",
            &json!({"url": hooks.url, "events": ["connector.failed"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (graph, prism, id) = graph_connector(&app, None).await;
    assert_eq!(sync(&app, &id).await["status"], "active");

    // The token stops working before its time: one new token, and the sync still works.
    graph.expire_tokens();
    assert_eq!(sync(&app, &id).await["status"], "active");
    assert_eq!(graph.state.lock().unwrap().token_requests, 2);

    // A wrong secret: failing, with the identity platform's reason, and never the secret.
    let r = app
        .patch(
            &app.admin.token,
            &format!("/api/connectors/{id}"),
            &json!({"settings": {"clientSecret": "wrong-secret-value"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let failed = sync(&app, &id).await;
    assert_eq!(failed["status"], "failing", "{failed}");
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("invalid_client") && error.contains("AADSTS7000215"),
        "{error}"
    );
    assert!(!failed.to_string().contains("wrong-secret-value"));
    assert_eq!(failed["counts"]["failures"], 1);

    // Failing again raises nothing more; the webhook said it once.
    sync(&app, &id).await;
    app.dispatch_webhooks().await;
    let raised: Vec<Value> = hooks
        .requests()
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["event"], "connector.failed");
    assert_eq!(raised[0]["connectorId"], id.as_str());
    assert_eq!(raised[0]["connectorType"], "microsoft365_mail");
    assert_eq!(raised[0]["status"], "failing");
    assert!(
        raised[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_client")
    );

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "parley_connector_up{{connector=\"{id}\",type=\"microsoft365_mail\"}} 0"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "parley_connector_failures_total{{connector=\"{id}\",type=\"microsoft365_mail\"}} 2"
    )));

    // Corrected: active again.
    let secret = graph.state.lock().unwrap().secret.clone();
    app.patch(
        &app.admin.token,
        &format!("/api/connectors/{id}"),
        &json!({"settings": {"clientSecret": secret}}),
    )
    .await;
    let fixed = sync(&app, &id).await;
    assert_eq!(fixed["status"], "active");
    assert!(fixed.get("lastError").is_none(), "{fixed}");
    prism.assert_clean();
}

#[tokio::test]
async fn mail_of_the_cases_in_scope_leaves_through_sendmail_as_parley_built_it() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let (graph, prism, connector) = graph_connector(&app, Some(&acme)).await;
    let ours = app.create_case(&acme, None).await;
    let theirs = app.create_case(&other, None).await;
    let send = |case: &Value, party: &Party| {
        let case_id = case["caseId"].as_str().unwrap().to_string();
        let token = party.token.clone();
        let app = &app;
        async move {
            let r = app
                .post(
                    &token,
                    &format!("/api/cases/{case_id}/messages"),
                    &json!({"messageType": "email", "to": "debtor@example.com",
                        "subject": "Your invoice", "body": "Please pay."}),
                )
                .await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let mine = send(&ours, &acme).await;
    let not_mine = send(&theirs, &other).await;
    app.deliver_due().await;

    let sent = graph.state.lock().unwrap().sent.clone();
    assert_eq!(
        sent.len(),
        1,
        "only the case in scope goes through the mailbox"
    );
    let mime = String::from_utf8_lossy(&sent[0]).to_string();
    let case_id = ours["caseId"].as_str().unwrap();
    assert!(mime.contains(&format!("From: {MAILBOX}")), "{mime}");
    assert!(
        mime.contains(&format!("Reply-To: case-{case_id}@")),
        "{mime}"
    );
    assert!(mime.contains("List-Unsubscribe: <"), "{mime}");
    let stored: Value = app
        .get(
            &acme.token,
            &format!("/api/messages/{}", mine["messageId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "sent", "{stored}");
    assert_eq!(
        stored["carriedBy"]["connectorId"],
        connector.as_str(),
        "{stored}"
    );
    let outbox = app.dir.path().join("outbox");
    assert!(
        outbox
            .join(format!("{}.eml", not_mine["messageId"].as_str().unwrap()))
            .exists(),
        "another creditor's mail leaves as before"
    );
    assert!(
        !outbox
            .join(format!("{}.eml", mine["messageId"].as_str().unwrap()))
            .exists()
    );
    prism.assert_clean();
}

#[tokio::test]
async fn a_creditors_mailbox_files_nothing_into_another_creditors_case() {
    let app = spawn_app().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let other = app.party(PartyKind::Creditor, "Other").await;
    let theirs = app.create_case(&other, None).await;
    let case_id = theirs["caseId"].as_str().unwrap();
    let (graph, _prism, id) = graph_connector(&app, Some(&acme)).await;
    graph.deliver(&reply(case_id, "Not yours", 1));
    assert_eq!(sync(&app, &id).await["counts"]["items"], 1);
    assert!(inbound_subjects(&app, &other, case_id).await.is_empty());
    assert_eq!(unmatched_total(&app).await, 1);
}

#[tokio::test]
async fn a_25_mib_mail_comes_in_through_value() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let (graph, prism, id) = graph_connector(&app, None).await;
    let big = "A".repeat(76) + "\r\n";
    let body = big.repeat(25 * 1024 * 1024 / big.len() + 1);
    let mut raw = reply(case_id, "Large", 1);
    raw.extend_from_slice(body.as_bytes());
    assert!(raw.len() > 25 * 1024 * 1024);
    graph.deliver(&raw);
    let after = sync(&app, &id).await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(inbound_subjects(&app, &creditor, case_id).await, ["Large"]);
    prism.assert_clean();
}

/// A Gmail connector in front of the Gmail fake, behind prism.
async fn gmail_connector(app: &TestApp) -> (GmailFake, Prism, String) {
    let gmail = GmailFake::start(MAILBOX).await;
    let prism = Prism::start("gmail.json", &gmail.base).await;
    let made = create(
        app,
        &json!({"type": "gmail", "name": "Workspace mailbox", "settings": gmail.settings(&prism.base)}),
    )
    .await;
    assert_eq!(made["settings"]["serviceAccount"], "***");
    (
        gmail,
        prism,
        made["connectorId"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn gmail_lists_first_then_follows_the_history_and_resyncs_when_it_is_gone() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let (gmail, prism, id) = gmail_connector(&app).await;

    // The first sync lists the inbox (three mails over two pages).
    for n in 1..=3 {
        gmail.deliver(&reply(case_id, &format!("Mail {n}"), n));
    }
    let after = sync(&app, &id).await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(after["counts"]["items"], 3);

    // Then the history from the kept id.
    gmail.deliver(&reply(case_id, "Mail 4", 4));
    assert_eq!(sync(&app, &id).await["counts"]["items"], 4);
    assert_eq!(gmail.state.lock().unwrap().token_requests, 1);

    // The kept history id is too old (404): a bounded full sync, nothing stored twice.
    gmail.deliver(&reply(case_id, "Mail 5", 5));
    {
        let mut s = gmail.state.lock().unwrap();
        s.oldest_history = s.history_id;
    }
    let after = sync(&app, &id).await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(after["counts"]["items"], 5);
    {
        let s = gmail.state.lock().unwrap();
        assert!(s.fetched.values().all(|n| *n == 1), "{:?}", s.fetched);
    }
    assert_eq!(
        inbound_subjects(&app, &creditor, case_id).await,
        ["Mail 1", "Mail 2", "Mail 3", "Mail 4", "Mail 5"]
    );

    // An expired token is renewed; withdrawn delegation asks for reauthorization.
    gmail.expire_tokens();
    assert_eq!(sync(&app, &id).await["status"], "active");
    gmail.expire_tokens();
    gmail.state.lock().unwrap().delegation_revoked = true;
    let failed = sync(&app, &id).await;
    assert_eq!(failed["status"], "reauthorization_required", "{failed}");
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("unauthorized_client"),
        "{failed}"
    );
    prism.assert_clean();
}

#[tokio::test]
async fn gmail_sends_the_raw_mime_through_messages_send() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let (gmail, prism, _) = gmail_connector(&app).await;
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "to": "debtor@example.com",
                "subject": "Your invoice", "body": "Please pay."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let queued: Value = r.json().await.unwrap();
    app.deliver_due().await;
    let sent = gmail.state.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1);
    let mime = String::from_utf8_lossy(&sent[0]).to_string();
    assert!(
        mime.contains(&format!("Reply-To: case-{case_id}@")),
        "{mime}"
    );
    let stored: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{}", queued["messageId"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "sent", "{stored}");
    prism.assert_clean();
}

#[tokio::test]
async fn prism_refuses_what_breaks_the_vendors_description() {
    // The validation the other tests rely on is live: a request Graph's description refuses
    // never reaches the fake, and an answer it refuses becomes a 500.
    let graph = GraphFake::start(MAILBOX).await;
    let prism = Prism::start("graph-mail.json", &graph.base).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1.0/users/{MAILBOX}/sendMail", prism.base))
        .header("content-type", "text/plain")
        .body("this is not base64!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(graph.state.lock().unwrap().sent.is_empty());
    let gmail = GmailFake::start(MAILBOX).await;
    let prism = Prism::start("gmail.json", &gmail.base).await;
    let r = client
        .get(format!(
            "{}/gmail/v1/users/{MAILBOX}/messages/1?format=everything",
            prism.base
        ))
        .bearer_auth("ya29.any")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "format is one of the described words");
}

/// What a hostile Graph answers: a delta page that never ends, a link to another server (to
/// take the token there), a `$value` past 64 MiB.
#[derive(Clone, Copy, PartialEq)]
enum Hostile {
    EndlessPage,
    LinkElsewhere,
    HugeMail,
}

/// Serves `mode` at a base URL of its own; `served` counts the bytes of endless answers.
async fn hostile_graph(
    mode: Hostile,
    elsewhere: String,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use axum::routing::{get, post};
    use futures_util::StreamExt;
    let endless = move || {
        let served = served.clone();
        axum::body::Body::from_stream(
            futures_util::stream::repeat(bytes::Bytes::from_static(&[b'x'; 64 * 1024])).map(
                move |chunk| {
                    served.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, std::io::Error>(chunk)
                },
            ),
        )
    };
    let endless_mail = endless.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let own = base.clone();
    let router = axum::Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(|| async {
                axum::Json(json!({"access_token": "t", "expires_in": 3599, "token_type": "Bearer"}))
            }),
        )
        .route(
            "/v1.0/users/{user}/mailFolders/inbox/messages/delta",
            get(move || {
                let elsewhere = elsewhere.clone();
                let own = own.clone();
                async move {
                    match mode {
                        Hostile::EndlessPage => axum::response::Response::builder()
                            .header("content-type", "application/json")
                            .body(endless())
                            .unwrap(),
                        Hostile::LinkElsewhere => axum::response::IntoResponse::into_response(
                            axum::Json(json!({"value": [],
                                "@odata.nextLink": format!("{elsewhere}/v1.0/users/x/mailFolders/inbox/messages/delta?$skiptoken=1")})),
                        ),
                        Hostile::HugeMail => axum::response::IntoResponse::into_response(
                            axum::Json(json!({"value": [{"id": "big"}],
                                "@odata.deltaLink": format!("{own}/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken=1")})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/v1.0/users/{user}/messages/{id}/{value}",
            get(move || async move {
                axum::response::Response::builder()
                    .header("content-type", "text/plain")
                    .body(endless_mail())
                    .unwrap()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn a_hostile_graph_is_bounded_and_its_links_elsewhere_are_not_followed() {
    let app = spawn_app().await;
    // Whatever reaches this server was sent where parley was never told to send its token.
    let stolen = HookReceiver::start().await;
    let elsewhere = stolen.url.trim_end_matches("/hook").to_string();
    for (mode, expect) in [
        (Hostile::EndlessPage, "longer than"),
        (Hostile::LinkElsewhere, "another server"),
    ] {
        let graph = hostile_graph(mode, elsewhere.clone(), Default::default()).await;
        let made = create(
            &app,
            &json!({"type": "microsoft365_mail", "name": "hostile",
                "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s",
                    "mailbox": MAILBOX, "graphUrl": graph, "loginUrl": graph, "outbound": false}}),
        )
        .await;
        let id = made["connectorId"].as_str().unwrap();
        let after = sync(&app, id).await;
        assert_eq!(after["status"], "failing", "{after}");
        assert!(
            after["lastError"].as_str().unwrap().contains(expect),
            "{after}"
        );
        app.request(
            reqwest::Method::DELETE,
            &app.admin.token,
            &format!("/api/connectors/{id}"),
        )
        .send()
        .await
        .unwrap();
    }
    assert!(stolen.requests().is_empty(), "a request went elsewhere");

    // A mail past 64 MiB stays in the mailbox; the sync goes on.
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let graph = hostile_graph(Hostile::HugeMail, elsewhere, served.clone()).await;
    let made = create(
        &app,
        &json!({"type": "microsoft365_mail", "name": "hostile",
            "settings": {"tenantId": "t", "clientId": "c", "clientSecret": "s",
                "mailbox": MAILBOX, "graphUrl": graph, "loginUrl": graph, "outbound": false}}),
    )
    .await;
    let after = sync(&app, made["connectorId"].as_str().unwrap()).await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(
        after["counts"]["items"], 1,
        "taken as far as a sync goes: {after}"
    );
    assert_eq!(
        unmatched_total(&app).await,
        0,
        "nothing of the huge mail is kept"
    );
}
