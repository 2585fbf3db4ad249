//! Faults of the real binary's peers: PostgreSQL restarted under send load.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::peers::{PgCluster, eventually};

/// One send's answer: the status, whether a 503 said when to come back, the message id.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    message_id: Option<String>,
}

#[tokio::test]
async fn postgres_restarted_under_send_load_loses_nothing_and_answers_503_meanwhile() {
    // The PostgreSQL run of the suite only: this test brings a cluster of its own down.
    if std::env::var("PARLEY_TEST_POSTGRES_URL").map_or(true, |u| u.is_empty()) {
        return;
    }
    let pg = PgCluster::start().await;
    let mut admin = sqlx::PgConnection::connect(&pg.admin_url).await.unwrap();
    sqlx::query("CREATE DATABASE parley_fault")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let database_url = format!("{}/parley_fault", pg.admin_url.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = |cmd: &mut Command| {
        cmd.env("PARLEY_DATA_DIR", dir.path())
            .env("PARLEY_DATABASE_URL", &database_url)
            .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("PARLEY_DELIVERY_LEASE", "2s")
            .env("PARLEY_DELIVERY_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s,1s,1s")
            .env("PARLEY_RATE_LIMIT_PER_MINUTE", "0")
            .env("PARLEY_DEFAULT_CONTACT_HOURS", "off")
            .env("PARLEY_FREQUENCY_CAP", "off")
            .env("PARLEY_LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true);
    };
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(crate::binary::parley_bin());
        cmd.args(args);
        env(&mut cmd);
        cmd
    };
    let out = cli(&["party", "create", "--kind", "creditor", "--name", "Acme"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let party: Value = serde_json::from_slice(&out.stdout).unwrap();
    let party_id = party["partyId"].as_str().unwrap();
    let out = cli(&["token", "create", "--party", party_id])
        .output()
        .await
        .unwrap();
    let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let _server = cli(&["serve"]).stderr(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    eventually(60, "parley serve", || {
        let (client, url) = (client.clone(), format!("{base}/readyz"));
        async move { (client.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    let case: Value = client
        .post(format!("{base}/api/cases"))
        .bearer_auth(&token)
        .json(&crate::helpers::case_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let send_url = format!(
        "{base}/api/cases/{}/messages",
        case["caseId"].as_str().unwrap()
    );

    // Four clients send until told to stop; PostgreSQL goes down and comes back meanwhile.
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, token, answers, stop) = (
            client.clone(),
            send_url.clone(),
            token.clone(),
            answers.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 400 {
                i += 1;
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"messageType": "email", "subject": format!("n {c}-{i}"), "body": "Please pay."}))
                    .send()
                    .await
                    .expect("every request is answered, none hangs");
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let body: Value = r.json().await.unwrap_or_default();
                answers.lock().await.push(Answer {
                    status,
                    retry_after,
                    message_id: body["messageId"].as_str().map(str::to_string),
                });
                if status == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let count = |status: u16| {
        let answers = answers.clone();
        async move {
            answers
                .lock()
                .await
                .iter()
                .filter(|a| a.status == status)
                .count()
        }
    };
    eventually(60, "sends before the restart", || {
        let n = count(201);
        async move { (n.await >= 40).then_some(()) }
    })
    .await;
    pg.stop().await;
    eventually(60, "a 503 while the database is down", || {
        let n = count(503);
        async move { (n.await >= 3).then_some(()) }
    })
    .await;
    pg.start_again().await;
    let before = count(201).await;
    eventually(60, "sends after the restart", || {
        let n = count(201);
        async move { (n.await >= before + 40).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let answers = answers.lock().await;
    for a in answers.iter() {
        assert!(matches!(a.status, 201 | 503), "only 201 or 503: {a:?}");
        if a.status == 503 {
            assert!(a.retry_after, "a 503 says when to come back");
        }
    }
    let accepted: Vec<String> = answers
        .iter()
        .filter_map(|a| a.message_id.clone())
        .collect();
    assert!(accepted.len() >= 80);
    // Every 201 is delivered: each message ends `sent`, its mail in the outbox.
    for id in &accepted {
        let (client, url, token) = (
            client.clone(),
            format!("{base}/api/messages/{id}"),
            token.clone(),
        );
        eventually(90, "every accepted message to be sent", || {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let m: Value = client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (m["status"] == "sent").then_some(())
            }
        })
        .await;
        assert!(
            dir.path().join("outbox").join(format!("{id}.eml")).exists(),
            "{id} reached the outbox"
        );
    }
}
