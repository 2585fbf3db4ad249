//! The real binary under faults: kill -9 with messages in flight, and two processes on one
//! database.

use std::collections::HashMap;
use std::process::Stdio;

use mail_parser::MessageParser;
use parley::config::Config;
use parley::domain::PartyKind;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::test_config;
use crate::peers::{SmtpPeer, eventually};

struct Setup {
    config: Config,
    token: String,
    case_id: String,
    _dir: tempfile::TempDir,
}

/// A database with a creditor, its token and a case, ready for processes to share.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).await;
    let app = parley::App::build(config.clone()).await.unwrap();
    let store = app.store();
    let party = store
        .parties()
        .create_party(PartyKind::Creditor, "Acme")
        .await
        .unwrap();
    let token = store
        .parties()
        .create_token(party.as_str(), None)
        .await
        .unwrap()
        .unwrap();
    let actor = store.parties().authenticate(&token).await.unwrap().unwrap();
    let case = store
        .cases()
        .create_case(
            &actor,
            parley::store::NewCase {
                case_number: None,
                creditor_id: party.to_string(),
                partner_id: None,
                debtor: parley::domain::Debtor::parse(
                    "Debtor",
                    Some("debtor@example.com"),
                    None,
                    None,
                    None,
                )
                .unwrap(),
                amount: parley::domain::Money::parse("100.00", "DKK").unwrap(),
                invoice_number: None,
                due_date: None,
            },
        )
        .await
        .unwrap();
    store.close().await;
    Setup {
        config,
        token,
        case_id: case.id.to_string(),
        _dir: dir,
    }
}

struct Process {
    base: String,
    child: Child,
}

async fn start(setup: &Setup, smtp: &SmtpPeer) -> Process {
    start_with(setup, smtp, &[]).await
}

async fn start_with(setup: &Setup, smtp: &SmtpPeer, extra: &[(&str, &str)]) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = &setup.config;
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(c.storage.master_key.unwrap().expose())
    };
    let child = Command::new(crate::binary::parley_bin())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("PARLEY_DATA_DIR", &c.storage.data_dir)
        .env("PARLEY_DATABASE_URL", c.storage.database_url.expose())
        .env("PARLEY_MASTER_KEY", key)
        .env("PARLEY_SMTP_URL", smtp.url())
        .env("PARLEY_DELIVERY_LEASE", "2s")
        .env("PARLEY_DELIVERY_CONCURRENCY", "4")
        .env("PARLEY_RATE_LIMIT_PER_MINUTE", "0")
        .env("PARLEY_DEFAULT_CONTACT_HOURS", "off")
        .env("PARLEY_FREQUENCY_CAP", "off")
        .env("PARLEY_LOG_LEVEL", "warn")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(30, "parley serve to answer", || {
        let url = format!("{base}/healthz");
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    Process { base, child }
}

impl Process {
    async fn kill_9(mut self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().await.unwrap();
    }
}

async fn queue(
    client: &reqwest::Client,
    p: &Process,
    s: &Setup,
    n: usize,
    tag: &str,
) -> Vec<String> {
    let sends = (0..n).map(|i| {
        let body = json!({"messageType": "email", "to": format!("{tag}-{i}@example.com"), "subject": format!("{tag} {i}"), "body": "Text"});
        client.post(format!("{}/api/cases/{}/messages", p.base, s.case_id)).bearer_auth(&s.token).json(&body).send()
    });
    let mut ids = Vec::new();
    for r in futures_util::future::join_all(sends).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["messageId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids
}

/// Message-ID → how many times the SMTP peer received it.
fn received(smtp: &SmtpPeer) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for raw in smtp.messages() {
        let id = MessageParser::default()
            .parse(&raw)
            .unwrap()
            .message_id()
            .unwrap()
            .to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

async fn all_sent(client: &reqwest::Client, p: &Process, s: &Setup, ids: &[String]) {
    eventually(90, "every accepted message to be sent", || async {
        for id in ids {
            let m: Value = client
                .get(format!("{}/api/messages/{id}", p.base))
                .bearer_auth(&s.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if m["status"] != "sent" {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test]
async fn accepted_messages_survive_kill_9() {
    let smtp = SmtpPeer::start().await;
    let s = setup().await;
    let client = reqwest::Client::new();
    let first = start(&s, &smtp).await;
    let ids = queue(&client, &first, &s, 40, "crash").await;
    first.kill_9().await;

    let second = start(&s, &smtp).await;
    all_sent(&client, &second, &s, &ids).await;
    let seen = received(&smtp);
    for id in &ids {
        assert!(
            seen.contains_key(&format!("{id}@localhost")),
            "{id} was accepted but never delivered"
        );
    }
    second.kill_9().await;
}

#[tokio::test]
async fn two_processes_on_one_database_never_send_a_job_twice() {
    let smtp = SmtpPeer::start().await;
    let s = setup().await;
    let client = reqwest::Client::new();
    let a = start(&s, &smtp).await;
    let b = start(&s, &smtp).await;
    let mut ids = queue(&client, &a, &s, 30, "a").await;
    ids.extend(queue(&client, &b, &s, 30, "b").await);
    all_sent(&client, &a, &s, &ids).await;
    let seen = received(&smtp);
    assert_eq!(seen.len(), ids.len());
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was delivered twice: {seen:?}"
    );
    a.kill_9().await;
    b.kill_9().await;
}

/// Whether the process holds `work` (from its `/metrics`).
async fn holds(client: &reqwest::Client, p: &Process, work: &str) -> bool {
    let Ok(r) = client.get(format!("{}/metrics", p.base)).send().await else {
        return false;
    };
    r.text()
        .await
        .unwrap_or_default()
        .contains(&format!("parley_singleton_held{{work=\"{work}\"}} 1"))
}

/// The index of the one process that holds `work`, once exactly one does.
async fn holder(client: &reqwest::Client, ps: &[&Process], work: &str) -> usize {
    eventually(30, &format!("one process to hold {work}"), || async {
        let mut held = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            if holds(client, p, work).await {
                held.push(i);
            }
        }
        (held.len() == 1).then(|| held[0])
    })
    .await
}

async fn inbound_count(client: &reqwest::Client, p: &Process, s: &Setup) -> Option<u64> {
    let list: Value = client
        .get(format!(
            "{}/api/cases/{}/messages?direction=inbound",
            p.base, s.case_id
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    list["totalCount"].as_u64()
}

#[tokio::test]
async fn three_processes_share_the_work_and_one_takes_over_the_mailbox() {
    let imap = crate::peers::ImapPeer::start().await;
    let smtp = SmtpPeer::start().await;
    let s = setup().await;
    let client = reqwest::Client::new();
    let url = imap.plain_url();
    let env = [
        ("PARLEY_IMAP_URL", url.as_str()),
        ("PARLEY_IMAP_POLL_INTERVAL", "1s"),
        ("PARLEY_SMS_FROM", "+4570000000"),
        ("PARLEY_SMS_RATE_PER_SECOND", "2"),
    ];
    let mut ps = Vec::new();
    for _ in 0..3 {
        ps.push(start_with(&s, &smtp, &env).await);
    }
    let first = holder(&client, &ps.iter().collect::<Vec<_>>(), "imap").await;
    // Mail without a Message-ID: a second poller would store it twice.
    let reply = |n: usize| {
        format!(
            "From: debtor@example.com\nTo: case-{}@localhost\nSubject: Reply {n}\n\nAnswer {n}\n",
            s.case_id
        )
    };
    for n in 0..4 {
        imap.append(&reply(n)).await;
    }
    eventually(30, "the first replies to be stored", || async {
        (inbound_count(&client, &ps[0], &s).await? == 4).then_some(())
    })
    .await;

    // The holder dies; another takes the mailbox over within 30 s.
    let dead = ps.remove(first);
    dead.kill_9().await;
    let next = holder(&client, &ps.iter().collect::<Vec<_>>(), "imap").await;
    for n in 4..8 {
        imap.append(&reply(n)).await;
    }
    eventually(30, "the later replies to be stored", || async {
        (inbound_count(&client, &ps[next], &s).await? == 8).then_some(())
    })
    .await;
    assert_eq!(imap.count().await, 0);
    // Stored once each, by whichever process held the mailbox.
    assert_eq!(inbound_count(&client, &ps[0], &s).await, Some(8));

    // Each message sent once, whichever process takes it.
    let mut ids = queue(&client, &ps[0], &s, 15, "x").await;
    ids.extend(queue(&client, &ps[1], &s, 15, "y").await);
    all_sent(&client, &ps[0], &s, &ids).await;
    let seen = received(&smtp);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert_eq!(seen.len(), ids.len());

    // SMS from one number keep its pace (2 a second) across both processes.
    let sms = (0..6).map(|i| {
        let p = &ps[i % 2];
        let body =
            json!({"messageType": "sms", "to": "+4512345678", "body": format!("Reminder {i}")});
        client
            .post(format!("{}/api/cases/{}/messages", p.base, s.case_id))
            .bearer_auth(&s.token)
            .json(&body)
            .send()
    });
    let mut sms_ids = Vec::new();
    for r in futures_util::future::join_all(sms).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 201);
        sms_ids.push(
            r.json::<Value>().await.unwrap()["messageId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    all_sent(&client, &ps[0], &s, &sms_ids).await;
    let mut sent_at = Vec::new();
    for id in &sms_ids {
        let m: Value = client
            .get(format!("{}/api/messages/{id}", ps[0].base))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(m["sentAt"].as_str().unwrap()).unwrap();
        sent_at.push(t.timestamp_millis());
    }
    sent_at.sort_unstable();
    let span = sent_at[5] - sent_at[0];
    assert!(
        span >= 2_400,
        "6 SMS at 2 a second take 2.5 s at least; took {span} ms"
    );
    for p in ps {
        p.kill_9().await;
    }
}

/// An OpenTelemetry collector's OTLP/HTTP endpoint: keeps every span it receives (JSON).
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        post(move |axum::Json(body): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["service"] = resource["resource"]["attributes"].clone();
                            kept.lock().unwrap().push(span);
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, spans)
}

#[tokio::test]
async fn a_request_s_trace_continues_into_the_delivery_of_its_message() {
    let smtp = SmtpPeer::start().await;
    let s = setup().await;
    let (endpoint, spans) = collector().await;
    let p = start_with(
        &s,
        &smtp,
        &[
            ("PARLEY_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    // The client's own trace: the request joins it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let sent: Value = reqwest::Client::new()
        .post(format!("{}/api/cases/{}/messages", p.base, s.case_id))
        .bearer_auth(&s.token)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"messageType": "email", "to": "debtor@example.com", "subject": "Traced", "body": "Text"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["status"], "queued", "{sent}");

    let (request, delivery, send) = eventually(
        30,
        "the request's, the send's and the delivery's spans",
        || {
            let spans = spans.lock().unwrap().clone();
            async move {
                let in_trace: Vec<&Value> =
                    spans.iter().filter(|s| s["traceId"] == trace_id).collect();
                let request = in_trace
                    .iter()
                    .find(|s| s["name"] == "POST /api/cases/{caseId}/messages")?;
                let delivery = in_trace
                    .iter()
                    .find(|s| s["name"] == "delivery deliver_message")?;
                let send = in_trace.iter().find(|s| s["name"] == "send")?;
                Some(((*request).clone(), (*delivery).clone(), (*send).clone()))
            }
        },
    )
    .await;
    assert_eq!(request["parentSpanId"], client_span, "{request}");
    // The request's span holds the send's (the application's entry point), under which the
    // message was queued: its delivery continues from there.
    assert_eq!(send["parentSpanId"], request["spanId"], "{send}");
    assert_eq!(delivery["parentSpanId"], send["spanId"], "{delivery}");
    assert!(
        request["service"].to_string().contains("parley"),
        "{request}"
    );
    // Spans carry ids and routes, never the message or its recipient.
    let all = serde_json::to_string(&*spans.lock().unwrap()).unwrap();
    assert!(!all.contains("debtor@example.com") && !all.contains("Traced"));
    drop(p);
}
