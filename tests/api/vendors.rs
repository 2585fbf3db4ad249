//! The vendors parley's connectors speak to, offline: prism (from npm) validating every
//! request and answer against the vendor's own API description (installed pinned by
//! scripts/lib/peers.sh into target/vendor-specs), in front of a small stateful fake of the
//! service written from its documentation:
//!
//! - Microsoft Graph mail: <https://learn.microsoft.com/graph/api/message-delta>,
//!   <https://learn.microsoft.com/graph/api/message-get> (`$value`),
//!   <https://learn.microsoft.com/graph/api/user-sendmail> (MIME, `text/plain`, 202),
//!   <https://learn.microsoft.com/graph/throttling> (429, `Retry-After`), and the identity
//!   platform's client credentials grant
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>);
//! - the Gmail API: <https://developers.google.com/workspace/gmail/api/reference/rest>
//!   (`users.getProfile`, `users.history.list` and its 404 for an old `startHistoryId`,
//!   `users.messages.list|get|send`), and the service account's JWT bearer grant
//!   (<https://developers.google.com/identity/protocols/oauth2/service-account#httprest>).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

fn vendor_specs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/vendor-specs")
}

/// prism in proxy mode with `--errors`: a request that breaks the description is answered
/// 422 and never reaches the fake; an answer that breaks it becomes a 500 with the
/// violations. Every violation is also in its log, which [`Prism::violations`] reads.
pub struct Prism {
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Prism {
    pub async fn start(spec: &str, upstream: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let prism = root.join("tests/vendors/node_modules/.bin/prism");
        let spec = vendor_specs().join(spec);
        assert!(
            prism.exists() && spec.exists(),
            "prism or {} is missing: run scripts/test (install_vendor_descriptions in \
             scripts/lib/peers.sh installs them)",
            spec.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = Command::new(prism)
            .args([
                "proxy",
                spec.to_str().unwrap(),
                upstream,
                "--errors",
                "-v",
                "debug",
            ])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting prism");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line);
                }
            });
        }
        crate::peers::listening(port, 60, "prism").await;
        Self {
            base: format!("http://127.0.0.1:{port}"),
            log,
            _child: child,
        }
    }

    /// Fails the test when prism saw a request or an answer break the description, with
    /// its whole log.
    pub fn assert_clean(&self) {
        let log = self.log.lock().unwrap();
        let broken = log
            .iter()
            .any(|l| l.contains("Violation") || l.contains("violation"));
        assert!(!broken, "prism found violations:\n{}", log.join("\n"));
    }
}

pub(crate) async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

pub(crate) fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

// ------------------------------------------------------------------------------------------
// Microsoft Graph

#[derive(Default)]
pub struct GraphState {
    /// The base URL parley is given (prism's), for the links the fake answers.
    pub public: String,
    pub tenant: String,
    pub client_id: String,
    pub secret: String,
    pub mailbox: String,
    pub(crate) tokens: HashMap<String, Instant>,
    pub token_requests: usize,
    /// The scopes asked for, in order.
    pub scopes: Vec<String>,
    /// The inbox, oldest first: id and MIME.
    pub inbox: Vec<(String, Vec<u8>)>,
    /// Delta and skip tokens of an earlier generation are gone (410).
    generation: u32,
    /// The next this many mail requests are throttled (429, `Retry-After: 1`).
    pub throttle: usize,
    pub throttled: usize,
    /// Every MIME received through `sendMail`, decoded.
    pub sent: Vec<Vec<u8>>,
    /// How often each message's `$value` was read.
    pub fetched: HashMap<String, usize>,
    /// The most items of a delta page.
    pub page: usize,
}

pub struct GraphFake {
    /// Where the token endpoint is (parley's `loginUrl`) and prism sends what it passes on.
    pub base: String,
    pub state: Arc<Mutex<GraphState>>,
}

pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

impl GraphFake {
    pub async fn start(mailbox: &str) -> Self {
        let state = Arc::new(Mutex::new(GraphState {
            tenant: "7d3c1b2a-0000-4000-8000-000000000001".into(),
            client_id: "a1b2c3d4-0000-4000-8000-000000000002".into(),
            secret: "s3cret~value".into(),
            mailbox: mailbox.into(),
            page: 2,
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(graph_token))
            .route(
                "/v1.0/users/{user}/mailFolders/{folder}/messages/delta",
                get(graph_delta),
            )
            .route("/v1.0/users/{user}/messages/{id}/{value}", get(graph_value))
            .route("/v1.0/users/{user}/sendMail", post(graph_send))
            .with_state(state.clone());
        let base = serve(router).await;
        state.lock().unwrap().public = base.clone();
        Self { base, state }
    }

    /// The fake behind prism: parley talks to prism, which validates and passes on.
    pub fn behind(&self, prism: &Prism) {
        self.state.lock().unwrap().public = prism.base.clone();
    }

    pub fn deliver(&self, raw: &[u8]) -> String {
        let mut s = self.state.lock().unwrap();
        let id = format!("AAMkAGI2TG93AAA-{}=", s.inbox.len() + 1);
        s.inbox.push((id.clone(), raw.to_vec()));
        id
    }

    /// Every token handed out stops working (as when it expires or is revoked).
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// Every delta token handed out is forgotten: the next delta call is 410.
    pub fn forget_sync_state(&self) {
        self.state.lock().unwrap().generation += 1;
    }

    pub fn settings(&self, graph_url: &str) -> Value {
        let s = self.state.lock().unwrap();
        json!({
            "tenantId": s.tenant, "clientId": s.client_id, "clientSecret": s.secret,
            "mailbox": s.mailbox, "graphUrl": graph_url, "loginUrl": self.base,
        })
    }
}

type Graph = State<Arc<Mutex<GraphState>>>;

pub(crate) async fn graph_token(
    State(state): Graph,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let f = form(&body);
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    s.scopes.push(f.get("scope").cloned().unwrap_or_default());
    let refuse = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            axum::Json(json!({"error": error, "error_description": description,
                "error_codes": [7000215], "timestamp": "2026-12-06 12:00:00Z"})),
        )
            .into_response()
    };
    if tenant != s.tenant {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if f.get("grant_type").map(String::as_str) != Some("client_credentials")
        || !f.get("scope").is_some_and(|s| s.ends_with("/.default"))
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: The request body must contain grant_type and a /.default scope.",
        );
    }
    if f.get("client_id") != Some(&s.client_id) || f.get("client_secret") != Some(&s.secret) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in \
             the request is the client secret value, not the client secret ID.",
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}",
        uuid::Uuid::new_v4()
    );
    s.tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(3599));
    axum::Json(
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
        "access_token": token}),
    )
    .into_response()
}

/// Authentication, the mailbox and throttling, as Graph checks them before anything else.
fn graph_gate(s: &mut GraphState, headers: &HeaderMap, user: &str) -> Option<Response> {
    if s.tokens
        .get(&bearer(headers))
        .is_none_or(|until| Instant::now() >= *until)
    {
        return Some(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ));
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        s.throttled += 1;
        let mut r = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        );
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return Some(r);
    }
    if !user.eq_ignore_ascii_case(&s.mailbox) {
        return Some(graph_error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            "The requested user is invalid.",
        ));
    }
    None
}

async fn graph_delta(
    State(state): Graph,
    Path((user, folder)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = graph_gate(&mut s, &headers, &user) {
        return refused;
    }
    assert_eq!(folder, "inbox");
    let token = query.get("$deltatoken").or_else(|| query.get("$skiptoken"));
    let start = match token {
        None => 0,
        Some(t) => {
            let (generation, at) = t.split_once('.').unwrap_or(("x", "0"));
            if generation != s.generation.to_string() {
                return graph_error(
                    StatusCode::GONE,
                    "SyncStateNotFound",
                    "The sync state generation is not found or has expired.",
                );
            }
            at.parse::<usize>().unwrap()
        }
    };
    let wanted = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("odata.maxpagesize="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(10);
    let end = (start + wanted.min(s.page)).min(s.inbox.len());
    let value: Vec<Value> = s.inbox[start..end]
        .iter()
        .map(|(id, _)| json!({"@odata.etag": "W/\"CQAAABYAAAC\"", "id": id}))
        .collect();
    let link = format!(
        "{}/v1.0/users/{}/mailFolders/inbox/messages/delta",
        s.public,
        urlencoding(&user)
    );
    let mut page = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
        "value": value,
    });
    if end < s.inbox.len() {
        page["@odata.nextLink"] = json!(format!("{link}?$skiptoken={}.{end}", s.generation));
    } else {
        page["@odata.deltaLink"] = json!(format!("{link}?$deltatoken={}.{end}", s.generation));
    }
    axum::Json(page).into_response()
}

fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn graph_value(
    State(state): Graph,
    Path((user, id, value)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = graph_gate(&mut s, &headers, &user) {
        return refused;
    }
    assert_eq!(value, "$value");
    let Some(raw) = s
        .inbox
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, r)| r.clone())
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    *s.fetched.entry(id).or_default() += 1;
    ([("content-type", "text/plain")], raw).into_response()
}

async fn graph_send(
    State(state): Graph,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = graph_gate(&mut s, &headers, &user) {
        return refused;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("text/plain") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "MIME content must be sent as text/plain.",
        );
    }
    match base64::engine::general_purpose::STANDARD.decode(body.trim()) {
        Ok(mime) => {
            s.sent.push(mime);
            StatusCode::ACCEPTED.into_response()
        }
        Err(_) => graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        ),
    }
}

// ------------------------------------------------------------------------------------------
// The Gmail API

/// An RSA key made for the test, as a service account's JSON key holds it, with its public
/// half for checking what parley signs.
pub struct TestKey {
    pub pkcs8_pem: String,
    pub public_der: Vec<u8>,
}

impl TestKey {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let pub_der = dir.path().join("pub.der");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .arg("-out")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey");
        let ok = std::process::Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pub_der)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl rsa -RSAPublicKey_out");
        Self {
            pkcs8_pem: std::fs::read_to_string(&key).unwrap(),
            public_der: std::fs::read(&pub_der).unwrap(),
        }
    }
}

#[derive(Default)]
pub struct GmailState {
    pub client_email: String,
    pub user: String,
    public_der: Vec<u8>,
    token_uri: String,
    tokens: HashMap<String, Instant>,
    pub token_requests: usize,
    /// The mailbox: id, MIME, the history id of its arrival.
    pub inbox: Vec<(String, Vec<u8>, u64)>,
    pub history_id: u64,
    /// History older than this is gone (404 for a `startHistoryId` below it).
    pub oldest_history: u64,
    pub sent: Vec<Vec<u8>>,
    pub fetched: HashMap<String, usize>,
    /// Ids listed per page of `messages.list` and `history.list`.
    pub page: usize,
    /// The domain-wide delegation was withdrawn.
    pub delegation_revoked: bool,
}

pub struct GmailFake {
    pub base: String,
    pub state: Arc<Mutex<GmailState>>,
    pub key: TestKey,
}

pub(crate) fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": match status.as_u16() { 404 => "NOT_FOUND", 401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED", 429 => "RESOURCE_EXHAUSTED", _ => "INVALID_ARGUMENT" }}})),
    )
        .into_response()
}

impl GmailFake {
    pub async fn start(user: &str) -> Self {
        let key = TestKey::new();
        let state = Arc::new(Mutex::new(GmailState {
            client_email: "parley@agency-project.iam.gserviceaccount.com".into(),
            user: user.into(),
            public_der: key.public_der.clone(),
            history_id: 1000,
            oldest_history: 1,
            page: 2,
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/token", post(gmail_token))
            .route("/gmail/v1/users/{user}/profile", get(gmail_profile))
            .route("/gmail/v1/users/{user}/history", get(gmail_history))
            .route("/gmail/v1/users/{user}/messages", get(gmail_list))
            .route("/gmail/v1/users/{user}/messages/{id}", get(gmail_get))
            .route("/gmail/v1/users/{user}/messages/send", post(gmail_send))
            .with_state(state.clone());
        let base = serve(router).await;
        state.lock().unwrap().token_uri = format!("{base}/token");
        Self { base, state, key }
    }

    pub fn deliver(&self, raw: &[u8]) -> String {
        let mut s = self.state.lock().unwrap();
        s.history_id += 3;
        let id = format!("18c{:013x}", s.history_id);
        let h = s.history_id;
        s.inbox.push((id.clone(), raw.to_vec(), h));
        id
    }

    /// The service account's key file, as Google issues it.
    pub fn service_account(&self) -> Value {
        let s = self.state.lock().unwrap();
        json!({
            "type": "service_account", "project_id": "agency-project",
            "private_key_id": "0123456789abcdef", "private_key": self.key.pkcs8_pem,
            "client_email": s.client_email, "client_id": "109876543210987654321",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": s.token_uri,
        })
    }

    pub fn settings(&self, api_url: &str) -> Value {
        json!({
            "serviceAccount": self.service_account(),
            "user": self.state.lock().unwrap().user,
            "apiUrl": api_url,
        })
    }

    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }
}

type Gmail = State<Arc<Mutex<GmailState>>>;

/// Checks the JWT bearer grant as Google does: the signature by the account's key, its
/// issuer, audience, subject, scope and lifetime.
/// A service account's assertion checked as Google's token endpoint checks it: three parts,
/// signed RS256 with the account's key, from the account (`iss`) to this endpoint (`aud`),
/// short-lived. Its claims, or why it is refused.
pub(crate) fn verified_jwt(
    assertion: &str,
    public_der: &[u8],
    (client_email, token_uri): (&str, &str),
) -> Result<Value, &'static str> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |p: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap_or_default()
    };
    if parts.len() != 3 {
        return Err("Invalid JWT: Token must be a short-lived token");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_der,
    );
    if key.verify(signed.as_bytes(), &decode(parts[2])).is_err() {
        return Err("Invalid JWT Signature.");
    }
    let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if header["alg"] != "RS256"
        || claims["iss"] != client_email
        || claims["aud"] != token_uri
        || exp <= now
        || exp - iat > 3600
    {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    Ok(claims)
}

async fn gmail_token(State(state): Gmail, body: String) -> Response {
    let f = form(&body);
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported_grant_type", "Invalid grant_type: ");
    }
    let assertion = f.get("assertion").cloned().unwrap_or_default();
    let claims = match verified_jwt(&assertion, &s.public_der, (&s.client_email, &s.token_uri)) {
        Ok(claims) => claims,
        Err(description) => return refuse("invalid_grant", description),
    };
    if s.delegation_revoked
        || claims["sub"] != s.user.as_str()
        || !claims["scope"]
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .any(|sc| sc == "https://www.googleapis.com/auth/gmail.modify")
    {
        return refuse(
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        );
    }
    let token = format!("ya29.{}", uuid::Uuid::new_v4().simple());
    s.tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(3599));
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn gmail_gate(s: &GmailState, headers: &HeaderMap, user: &str) -> Option<Response> {
    if s.tokens
        .get(&bearer(headers))
        .is_none_or(|until| Instant::now() >= *until)
    {
        return Some(google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        ));
    }
    if user != "me" && user != s.user {
        return Some(google_error(
            StatusCode::BAD_REQUEST,
            "failedPrecondition",
            "Precondition check failed.",
        ));
    }
    None
}

async fn gmail_profile(
    State(state): Gmail,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if let Some(refused) = gmail_gate(&s, &headers, &user) {
        return refused;
    }
    axum::Json(
        json!({"emailAddress": s.user, "messagesTotal": s.inbox.len(),
        "threadsTotal": s.inbox.len(), "historyId": s.history_id.to_string()}),
    )
    .into_response()
}

fn after_token(query: &HashMap<String, String>) -> usize {
    query
        .get("pageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

async fn gmail_list(
    State(state): Gmail,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if let Some(refused) = gmail_gate(&s, &headers, &user) {
        return refused;
    }
    // Newest first, as Gmail lists.
    let all: Vec<&(String, Vec<u8>, u64)> = s.inbox.iter().rev().collect();
    let from = after_token(&query);
    let to = (from + s.page).min(all.len());
    let mut page = json!({
        "messages": all[from..to].iter().map(|(id, _, _)| json!({"id": id, "threadId": id})).collect::<Vec<_>>(),
        "resultSizeEstimate": all.len(),
    });
    if to < all.len() {
        page["nextPageToken"] = json!(to.to_string());
    }
    axum::Json(page).into_response()
}

async fn gmail_history(
    State(state): Gmail,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if let Some(refused) = gmail_gate(&s, &headers, &user) {
        return refused;
    }
    let Some(start) = query
        .get("startHistoryId")
        .and_then(|h| h.parse::<u64>().ok())
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "Invalid startHistoryId",
        );
    };
    if start < s.oldest_history {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "Requested entity was not found.",
        );
    }
    let added: Vec<&(String, Vec<u8>, u64)> =
        s.inbox.iter().filter(|(_, _, h)| *h > start).collect();
    let from = after_token(&query);
    let to = (from + s.page).min(added.len());
    let history: Vec<Value> = added[from..to]
        .iter()
        .map(|(id, _, h)| {
            json!({"id": h.to_string(), "messages": [{"id": id, "threadId": id}],
                "messagesAdded": [{"message": {"id": id, "threadId": id, "labelIds": ["UNREAD", "INBOX"]}}]})
        })
        .collect();
    let mut page = json!({"history": history, "historyId": s.history_id.to_string()});
    if to < added.len() {
        page["nextPageToken"] = json!(to.to_string());
    }
    axum::Json(page).into_response()
}

async fn gmail_get(
    State(state): Gmail,
    Path((user, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = gmail_gate(&s, &headers, &user) {
        return refused;
    }
    assert_eq!(query.get("format").map(String::as_str), Some("raw"));
    let Some((_, raw, h)) = s.inbox.iter().find(|(i, _, _)| *i == id).cloned() else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "Requested entity was not found.",
        );
    };
    *s.fetched.entry(id.clone()).or_default() += 1;
    axum::Json(json!({
        "id": id, "threadId": id, "labelIds": ["UNREAD", "INBOX"], "snippet": "",
        "historyId": h.to_string(), "internalDate": "1765022400000", "sizeEstimate": raw.len(),
        "raw": base64::engine::general_purpose::URL_SAFE.encode(&raw),
    }))
    .into_response()
}

async fn gmail_send(
    State(state): Gmail,
    Path(user): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = gmail_gate(&s, &headers, &user) {
        return refused;
    }
    let raw = body["raw"].as_str().unwrap_or_default();
    let Ok(mime) = base64::engine::general_purpose::URL_SAFE.decode(raw) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "Invalid value for ByteString",
        );
    };
    s.sent.push(mime);
    let id = format!("18d{:013x}", s.sent.len());
    axum::Json(json!({"id": id, "threadId": id, "labelIds": ["SENT"]})).into_response()
}
