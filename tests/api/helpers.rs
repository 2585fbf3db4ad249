use std::path::Path;

use parley::config::{Config, Secret};
use parley::domain::PartyKind;
use parley::store::Store;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A party and one of its tokens.
#[derive(Clone)]
pub struct Party {
    pub id: String,
    pub token: String,
}

pub struct TestApp {
    pub base: String,
    /// The app's delivery worker, driven one step at a time (`deliver_due`): tests run no
    /// background worker unless they ask for one.
    pub delivery: parley::DeliveryWorker,
    /// The app's periodic work (deadline scanner, retention sweeper), run once at the start
    /// of each `deliver_due`.
    pub periodic: Vec<std::sync::Arc<parley::periodic::Periodic>>,
    /// The app's webhook dispatcher, driven one step at a time (`dispatch_webhooks`).
    pub webhooks: std::sync::Arc<parley::WebhookWorker>,
    /// The app's CRM worker, driven one step at a time (`log_in_crms`).
    pub crm: parley::CrmWorker,
    /// The app's receiving service, for driving the IMAP poller.
    pub inbound: parley::app::inbound::Inbound,
    pub client: reqwest::Client,
    pub store: Store,
    pub config: Config,
    pub admin: Party,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The database URL for a fresh test database: a new PostgreSQL database when the suite runs
/// against PostgreSQL, else `None` (SQLite in the test's data folder).
pub async fn fresh_database() -> Option<String> {
    let admin_url = std::env::var("PARLEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connecting to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let _ = conn.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("admin URL names a database");
    Some(format!("{base}/{name}"))
}

pub async fn test_config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.storage.master_key = Some(parley::config::KeyBytes([42; 32]));
    config.storage.database_max_connections = 5;
    config.delivery.concurrency = 0;
    // Time-of-day and volume rules are tested on their own (tests/api/policy.rs), so that the
    // rest of the suite passes at any hour and sends as often as it likes.
    config.policy.default_contact_hours = None;
    config.policy.frequency_cap = None;
    // Webhook receivers of the tests listen on loopback; retries come due at once.
    config.webhooks.allow_private = true;
    // Tests send webhooks a step at a time (`dispatch_webhooks`).
    config.webhooks.concurrency = 0;
    config.webhooks.retry_schedule = vec![std::time::Duration::ZERO; 2];
    config.sms.rate_per_second = 1000.0;
    // Senders are authenticated against the test DNS server where a test asks for it
    // (tests/api/sender_auth.rs); elsewhere a `From:` is believed as written.
    config.mail.sender_auth.dns = parley::config::InboundDns::Off;
    config.delivery.retry_schedule = vec![std::time::Duration::ZERO; 2];
    if let Some(url) = fresh_database().await {
        config.storage.database_url = Secret::new(url);
    }
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_clock(parley::domain::clock::system(), adjust).await
}

/// An app whose rules read the time from `clock`: tests of contact hours, retries and leases
/// set and move it instead of depending on the wall clock.
pub async fn spawn_app_with_clock(
    clock: parley::domain::clock::SharedClock,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = parley::App::build_with_clock(config.clone(), clock)
        .await
        .expect("building the app");
    let store = app.store().clone();
    let inbound = app.services().inbound.clone();
    let delivery = app.delivery().expect("building the delivery worker");
    let periodic = app.periodic();
    let webhooks = std::sync::Arc::new(app.webhooks().expect("building the webhook dispatcher"));
    let crm = app.crm();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run(listener, async move {
        let _ = rx.await;
    }));
    let admin_id = store
        .parties()
        .create_party(PartyKind::Admin, "Operations")
        .await
        .unwrap();
    let admin_token = store
        .parties()
        .create_token(admin_id.as_str(), None)
        .await
        .unwrap()
        .unwrap();
    TestApp {
        base,
        delivery,
        periodic,
        webhooks,
        crm,
        inbound,
        client: reqwest::Client::new(),
        store,
        config,
        admin: Party {
            id: admin_id.to_string(),
            token: admin_token,
        },
        dir,
        shutdown: Some(tx),
    }
}

impl TestApp {
    /// A pool of its own on the app's database, for what a test reads or writes behind the
    /// API's back (a crash's leftovers, rows no endpoint shows).
    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(self.config.storage.database_url.expose())
            .await
            .unwrap()
    }

    pub async fn party(&self, kind: PartyKind, name: &str) -> Party {
        let id = self.store.parties().create_party(kind, name).await.unwrap();
        let token = self
            .store
            .parties()
            .create_token(id.as_str(), None)
            .await
            .unwrap()
            .unwrap();
        Party {
            id: id.to_string(),
            token,
        }
    }

    /// Posts a raw mail to `POST /api/inbound/email`, its line ends made CRLF.
    pub async fn post_mail(&self, token: &str, raw: &str) -> Response {
        self.client
            .post(format!("{}/api/inbound/email", self.base))
            .bearer_auth(token)
            .header("content-type", "message/rfc822")
            .body(raw.replace("\r\n", "\n").replace('\n', "\r\n"))
            .send()
            .await
            .unwrap()
    }

    /// The party behind a token, as the API sees it.
    pub async fn actor(&self, party: &Party) -> parley::domain::party::Actor {
        self.store
            .parties()
            .authenticate(&party.token)
            .await
            .unwrap()
            .expect("a valid token")
    }

    pub async fn labelled_token(&self, party: &Party, label: &str) -> String {
        self.store
            .parties()
            .create_token(&party.id, Some(label))
            .await
            .unwrap()
            .unwrap()
    }

    pub fn request(&self, method: Method, token: &str, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.request(Method::GET, token, path).send().await.unwrap()
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> Response {
        self.request(Method::POST, token, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, token: &str, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, token, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Delivers everything that is due now, retries included, until the queue is idle.
    pub async fn deliver_due(&self) -> usize {
        for work in &self.periodic {
            work.run_once().await.expect("a periodic step");
        }
        let mut total = 0;
        loop {
            let n = self.delivery.run_once().await.expect("a delivery step");
            if n == 0 {
                return total;
            }
            total += n;
        }
    }

    /// Runs one round of the connectors' syncs (what is due, or asked for by
    /// `POST /api/connectors/{id}/sync`); how many mails they took in.
    pub async fn sync_connectors(&self) -> usize {
        let work = self
            .periodic
            .iter()
            .find(|p| p.work() == parley::store::singleton::Work::ConnectorSync)
            .expect("the connectors' periodic work");
        work.run_once()
            .await
            .expect("a connector round")
            .expect("this process holds the connectors' work")
    }

    /// Works every CRM activity that is due now until none is left; how many.
    pub async fn log_in_crms(&self) -> usize {
        let mut total = 0;
        loop {
            let n = self.crm.run_once().await.expect("a CRM step");
            if n == 0 {
                return total;
            }
            total += n;
        }
    }

    /// Sends every webhook delivery that is due, or due within a second (one put back while
    /// its endpoint was busy), polling until none is left.
    pub async fn dispatch_webhooks(&self) -> usize {
        let queue = parley::store::queue::WEBHOOK_DELIVERIES;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut total = 0;
        loop {
            let n = self.webhooks.run_once().await.expect("a dispatch step");
            total += n;
            if n > 0 {
                continue;
            }
            let soon = parley::domain::time::now_micros() + 1_000_000;
            match self
                .store
                .queue()
                .next_due(queue)
                .await
                .expect("the next due delivery")
            {
                Some(due) if due <= soon => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "webhooks never drained"
                    );
                    tokio::time::timeout(
                        std::time::Duration::from_millis(25),
                        std::future::pending::<()>(),
                    )
                    .await
                    .ok();
                }
                _ => return total,
            }
        }
    }

    /// A case owned by `creditor`, optionally assigned to `partner`.
    pub async fn create_case(&self, creditor: &Party, partner: Option<&Party>) -> Value {
        let mut body = case_body();
        if let Some(p) = partner {
            body["partnerId"] = json!(p.id);
        }
        let r = self.post(&creditor.token, "/api/cases", &body).await;
        assert_eq!(r.status(), 201, "creating a case");
        r.json().await.unwrap()
    }
}

pub fn case_body() -> Value {
    json!({
        "debtor": {"name": "Example Company ApS", "email": "debtor@example.com", "phone": "+4512345678",
                   "language": "da", "timezone": "Europe/Copenhagen"},
        "amount": {"value": "15000.00", "currency": "DKK"},
        "invoiceNumber": "INV-2024-001",
        "dueDate": "2024-01-15"
    })
}

/// Asserts an RFC 9457 problem response with the given status and code; returns its body.
pub async fn assert_problem(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status, "status");
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:parley:problem:{code}"));
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
