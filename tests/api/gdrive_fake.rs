//! A stateful fake of a Google shared drive through the Drive API v3, behind prism with
//! Drive's own discovery document converted to OpenAPI (tests/vendors/prepare.mjs). Written
//! from Google's documentation:
//!
//! - <https://developers.google.com/workspace/drive/api/reference/rest/v3/files/list> (`q`:
//!   `'id' in parents`, `name = '…'`, `mimeType = '…'`, `trashed = false`), `files.create`,
//!   `files.get` (`alt=media` for the bytes), `files.delete` (`204`);
//! - <https://developers.google.com/workspace/drive/api/guides/manage-uploads> (`uploadType`
//!   `media`; `resumable`: the session URL in `Location`, chunks in multiples of 256 KiB
//!   with `Content-Range`, `308` with `Range: bytes=0-n`, `bytes */size` to ask);
//! - <https://developers.google.com/workspace/drive/api/guides/manage-changes>
//!   (`changes.getStartPageToken`, `changes.list`: `nextPageToken`, `newStartPageToken`);
//! - <https://developers.google.com/workspace/drive/api/guides/enable-shareddrives> (a shared
//!   drive's items are not found without `supportsAllDrives=true`);
//! - <https://developers.google.com/workspace/drive/api/guides/limits> (`403`
//!   `userRateLimitExceeded`);
//! - the service account's JWT bearer grant (`vendors::verified_jwt`).
//!
//! A file's bytes go around prism (it forwards bodies as text), as do the upload paths,
//! which the converted document does not describe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::vendors::{Prism, TestKey, bearer, form, google_error, serve, verified_jwt};

const FOLDER: &str = "application/vnd.google-apps.folder";
const CHUNK_UNIT: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct GFile {
    pub id: String,
    pub name: String,
    pub parent: String,
    pub folder: bool,
    pub content: Vec<u8>,
    /// Revisions of its content.
    pub revisions: usize,
    pub deleted: bool,
    seq: u64,
}

struct Session {
    file: String,
    total: usize,
    received: Vec<u8>,
}

#[derive(Default)]
pub struct GDriveState {
    pub client_email: String,
    public_der: Vec<u8>,
    token_uri: String,
    tokens: HashMap<String, Instant>,
    /// The root folder the connector is given (in the shared drive).
    pub root: String,
    pub direct: String,
    pub files: HashMap<String, GFile>,
    next: u64,
    seq: u64,
    generation: u32,
    sessions: HashMap<String, Session>,
    /// The next this many API calls are refused with `userRateLimitExceeded`.
    pub throttle: usize,
    pub throttled: usize,
    /// Chunks of resumable sessions fail from the nth on, until cleared.
    pub break_chunks_after: Option<usize>,
    pub chunks: usize,
    pub refused: usize,
    pub sessions_opened: usize,
    pub media_uploads: usize,
    pub downloads: usize,
    pub largest_body: usize,
}

pub struct GDriveFake {
    pub state: Arc<Mutex<GDriveState>>,
    pub prism: Prism,
    pub front: String,
    pub key: TestKey,
}

type G = State<Arc<Mutex<GDriveState>>>;

impl GDriveState {
    fn make(&mut self, name: &str, parent: &str, folder: bool) -> String {
        self.next += 1;
        self.seq += 1;
        let id = format!("1Zx{:08}FAKEdriveFileId", self.next);
        self.files.insert(
            id.clone(),
            GFile {
                id: id.clone(),
                name: name.into(),
                parent: parent.into(),
                folder,
                content: Vec::new(),
                revisions: 0,
                deleted: false,
                seq: self.seq,
            },
        );
        id
    }

    fn write(&mut self, id: &str, content: Vec<u8>) {
        self.seq += 1;
        let seq = self.seq;
        let f = self.files.get_mut(id).unwrap();
        f.content = content;
        f.revisions += 1;
        f.seq = seq;
    }

    fn live(&self, id: &str) -> Option<&GFile> {
        self.files.get(id).filter(|f| !f.deleted)
    }

    fn json(&self, f: &GFile) -> Value {
        let mut v = json!({
            "kind": "drive#file", "id": f.id, "name": f.name,
            "mimeType": if f.folder { FOLDER } else { "application/pdf" },
            "parents": [f.parent], "trashed": f.deleted,
            "webViewLink": format!("https://drive.google.com/file/d/{}/view", f.id),
        });
        if !f.folder {
            v["size"] = json!(f.content.len().to_string());
        }
        v
    }

    /// The token, throttling, and `supportsAllDrives`, as Drive checks them.
    fn gate(&mut self, headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Response> {
        if self
            .tokens
            .get(&bearer(headers))
            .is_none_or(|until| Instant::now() >= *until)
        {
            return Some(google_error(
                StatusCode::UNAUTHORIZED,
                "authError",
                "Request had invalid authentication credentials.",
            ));
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            self.throttled += 1;
            return Some(google_error(
                StatusCode::FORBIDDEN,
                "userRateLimitExceeded",
                "User rate limit exceeded.",
            ));
        }
        if query.get("supportsAllDrives").map(String::as_str) != Some("true") {
            return Some(google_error(
                StatusCode::NOT_FOUND,
                "notFound",
                "File not found: shared drive items need supportsAllDrives.",
            ));
        }
        None
    }
}

fn not_found(id: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "notFound",
        &format!("File not found: {id}."),
    )
}

impl GDriveFake {
    pub async fn start() -> Self {
        let key = TestKey::new();
        let state = Arc::new(Mutex::new(GDriveState {
            client_email: "parley-drive@agency-project.iam.gserviceaccount.com".into(),
            public_der: key.public_der.clone(),
            root: "0AKr00tFolderOfTheSharedDrive".into(),
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/token", post(token))
            .route("/drive/v3/files", get(list).post(create))
            .route("/drive/v3/files/{id}", get(read).delete(delete))
            .route("/drive/v3/changes/startPageToken", get(start_token))
            .route("/drive/v3/changes", get(changes))
            .route("/upload/drive/v3/files/{id}", axum::routing::patch(upload))
            .route("/session/{id}", put(chunk))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(state.clone());
        let base = serve(router).await;
        let prism = Prism::start("drive.json", &base).await;
        let front = crate::drive_fake::front(&prism.base, &base, |method, uri| {
            uri.path().starts_with("/upload/")
                || uri.path().starts_with("/session/")
                || (method == axum::http::Method::GET
                    && uri.query().is_some_and(|q| q.contains("alt=media")))
        })
        .await;
        {
            let mut s = state.lock().unwrap();
            s.token_uri = format!("{base}/token");
            s.direct = base.clone();
            let root = s.root.clone();
            s.files.insert(
                root.clone(),
                GFile {
                    id: root,
                    name: "Cases".into(),
                    parent: "0AAsharedDriveId".into(),
                    folder: true,
                    content: Vec::new(),
                    revisions: 0,
                    deleted: false,
                    seq: 0,
                },
            );
        }
        Self {
            state,
            prism,
            front,
            key,
        }
    }

    /// The connector's settings.
    pub fn settings(&self) -> Value {
        let s = self.state.lock().unwrap();
        json!({
            "serviceAccount": {
                "type": "service_account", "project_id": "agency-project",
                "private_key_id": "0123456789abcdef", "private_key": self.key.pkcs8_pem,
                "client_email": s.client_email, "client_id": "109876543210987654322",
                "token_uri": s.token_uri,
            },
            "folderId": s.root, "apiUrl": self.front,
        })
    }

    fn at(&self, path: &str) -> Option<GFile> {
        let s = self.state.lock().unwrap();
        let mut at = s.root.clone();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = s
                .files
                .values()
                .find(|f| !f.deleted && f.parent == at && f.name == name)?
                .id
                .clone();
        }
        s.files.get(&at).cloned()
    }

    /// The files in the folder at `path` (under the root), by name.
    pub fn files_in(&self, path: &str) -> Vec<GFile> {
        let Some(folder) = self.at(path) else {
            return Vec::new();
        };
        let s = self.state.lock().unwrap();
        let mut files: Vec<GFile> = s
            .files
            .values()
            .filter(|f| !f.deleted && !f.folder && f.parent == folder.id)
            .cloned()
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    pub fn exists(&self, path: &str) -> bool {
        self.at(path).is_some()
    }

    /// A person puts a file into the folder at `path` (under the root, made as needed).
    pub fn put(&self, path: &str, name: &str, content: &[u8]) {
        let mut s = self.state.lock().unwrap();
        let mut at = s.root.clone();
        for folder in path.split('/').filter(|n| !n.is_empty()) {
            let found = s
                .files
                .values()
                .find(|f| !f.deleted && f.parent == at && f.name == folder)
                .map(|f| f.id.clone());
            at = match found {
                Some(id) => id,
                None => s.make(folder, &at, true),
            };
        }
        let id = s.make(name, &at, false);
        s.write(&id, content.to_vec());
    }

    /// Every page token handed out is forgotten.
    pub fn forget_sync_state(&self) {
        self.state.lock().unwrap().generation += 1;
    }
}

async fn token(State(state): G, body: String) -> Response {
    let f = form(&body);
    let mut s = state.lock().unwrap();
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
    if !claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .any(|scope| scope == "https://www.googleapis.com/auth/drive")
    {
        return refuse("invalid_scope", "The drive scope is required.");
    }
    let token = format!("ya29.c.{}", uuid::Uuid::new_v4().simple());
    s.tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(3599));
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// The `q` parley sends: `'<id>' in parents and trashed = false`, optionally with
/// `name = '…'` and `mimeType = '…'`. Anything else is refused, as Drive refuses what it
/// cannot parse.
fn parse_q(q: &str) -> Option<(String, Option<String>, Option<String>)> {
    fn value(s: &str) -> Option<(String, &str)> {
        let rest = s.strip_prefix('\'')?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '\'' => return Some((out, &rest[i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let (parent, rest) = value(q)?;
    let mut rest = rest.strip_prefix(" in parents")?;
    let (mut name, mut mime, mut trashed) = (None, None, false);
    while let Some(next) = rest.strip_prefix(" and ") {
        if let Some(r) = next.strip_prefix("trashed = false") {
            trashed = true;
            rest = r;
        } else if let Some(r) = next.strip_prefix("name = ") {
            let (v, r) = value(r)?;
            name = Some(v);
            rest = r;
        } else if let Some(r) = next.strip_prefix("mimeType = ") {
            let (v, r) = value(r)?;
            mime = Some(v);
            rest = r;
        } else {
            return None;
        }
    }
    (rest.is_empty() && trashed).then_some((parent, name, mime))
}

async fn list(
    State(state): G,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    let Some((parent, name, mime)) = query.get("q").and_then(|q| parse_q(q)) else {
        return google_error(StatusCode::BAD_REQUEST, "invalid", "Invalid Value");
    };
    if s.live(&parent).is_none_or(|f| !f.folder) {
        return not_found(&parent);
    }
    let files: Vec<Value> = s
        .files
        .values()
        .filter(|f| !f.deleted && f.parent == parent)
        .filter(|f| name.as_ref().is_none_or(|n| *n == f.name))
        .filter(|f| mime.as_ref().is_none_or(|m| (m == FOLDER) == f.folder))
        .map(|f| s.json(f))
        .collect();
    axum::Json(json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files}))
        .into_response()
}

async fn create(
    State(state): G,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    let (Some(name), Some(parent)) = (body["name"].as_str(), body["parents"][0].as_str()) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "required",
            "A name and a parent are required.",
        );
    };
    if s.live(parent).is_none_or(|f| !f.folder) {
        return not_found(parent);
    }
    let folder = body["mimeType"] == FOLDER;
    let id = s.make(name, parent, folder);
    let file = s.files[&id].clone();
    axum::Json(s.json(&file)).into_response()
}

async fn read(
    State(state): G,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    let Some(file) = s.live(&id).cloned() else {
        return not_found(&id);
    };
    if query.get("alt").map(String::as_str) == Some("media") {
        s.downloads += 1;
        return ([("content-type", "application/pdf")], file.content).into_response();
    }
    axum::Json(s.json(&file)).into_response()
}

async fn delete(
    State(state): G,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    if s.live(&id).is_none() {
        return not_found(&id);
    }
    let mut gone = vec![id];
    while let Some(next) = gone.pop() {
        s.seq += 1;
        let seq = s.seq;
        if let Some(f) = s.files.get_mut(&next) {
            f.deleted = true;
            f.seq = seq;
        }
        gone.extend(
            s.files
                .values()
                .filter(|f| !f.deleted && f.parent == next)
                .map(|f| f.id.clone()),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn upload(
    State(state): G,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    if s.live(&id).is_none_or(|f| f.folder) {
        return not_found(&id);
    }
    match query.get("uploadType").map(String::as_str) {
        Some("media") => {
            if body.len() > 5 * 1024 * 1024 {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "badContent",
                    "Media uploads are for files up to 5 MB.",
                );
            }
            s.media_uploads += 1;
            s.largest_body = s.largest_body.max(body.len());
            s.write(&id, body.to_vec());
            let file = s.files[&id].clone();
            axum::Json(s.json(&file)).into_response()
        }
        Some("resumable") => {
            let Some(total) = headers
                .get("x-upload-content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
            else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "X-Upload-Content-Length is required.",
                );
            };
            s.sessions_opened += 1;
            let session = format!("s{}", s.sessions_opened);
            s.sessions.insert(
                session.clone(),
                Session {
                    file: id,
                    total,
                    received: Vec::new(),
                },
            );
            let location = format!("{}/session/{session}?upload_id=ADPycdu{session}", s.direct);
            (StatusCode::OK, [("location", location)]).into_response()
        }
        _ => google_error(StatusCode::BAD_REQUEST, "invalid", "Invalid uploadType."),
    }
}

/// `308 Resume Incomplete`, with what the session has.
fn incomplete(received: usize) -> Response {
    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
    if received > 0 {
        r.headers_mut().insert(
            "range",
            format!("bytes=0-{}", received - 1).parse().unwrap(),
        );
    }
    r
}

async fn chunk(
    State(state): G,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let range = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .map(str::to_string);
    let Some(range) = range else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "badContent",
            "Content-Range is required.",
        );
    };
    if let Some(total) = range.strip_prefix("*/") {
        // Where the session stands.
        let Some(u) = s.sessions.get(&session) else {
            return not_found(&session);
        };
        if total.parse::<usize>().ok() != Some(u.total) {
            return google_error(
                StatusCode::BAD_REQUEST,
                "badContent",
                "The size does not match.",
            );
        }
        return incomplete(u.received.len());
    }
    s.chunks += 1;
    s.largest_body = s.largest_body.max(body.len());
    if s.break_chunks_after.is_some_and(|n| s.chunks > n) {
        s.refused += 1;
        return google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "Backend Error",
        );
    }
    let parsed = (|| {
        let (span, total) = range.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        Some((
            start.parse::<usize>().ok()?,
            end.parse::<usize>().ok()?,
            total.parse::<usize>().ok()?,
        ))
    })();
    let Some((start, end, total)) = parsed else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "badContent",
            "Content-Range is malformed.",
        );
    };
    let Some(u) = s.sessions.get_mut(&session) else {
        return not_found(&session);
    };
    let last = end + 1 == total;
    if total != u.total
        || start != u.received.len()
        || end + 1 - start != body.len()
        || (!last && !body.len().is_multiple_of(CHUNK_UNIT))
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "badContent",
            "The chunk does not fit the session.",
        );
    }
    u.received.extend_from_slice(&body);
    if !last {
        return incomplete(u.received.len());
    }
    let done = s.sessions.remove(&session).unwrap();
    s.write(&done.file, done.received);
    let file = s.files[&done.file].clone();
    axum::Json(s.json(&file)).into_response()
}

async fn start_token(
    State(state): G,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    axum::Json(json!({"kind": "drive#startPageToken",
        "startPageToken": format!("{}.{}", s.generation, s.seq)}))
    .into_response()
}

async fn changes(
    State(state): G,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers, &query) {
        return refused;
    }
    let token = query.get("pageToken").cloned().unwrap_or_default();
    let since = match token.split_once('.') {
        Some((generation, at)) if generation == s.generation.to_string() => {
            at.parse::<u64>().unwrap_or(0)
        }
        _ => return google_error(StatusCode::NOT_FOUND, "notFound", "Page token not found."),
    };
    let size: usize = query
        .get("pageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    let mut changed: Vec<&GFile> = s.files.values().filter(|f| f.seq > since).collect();
    changed.sort_by_key(|f| f.seq);
    let page: Vec<&GFile> = changed.iter().take(size).copied().collect();
    let reached = page.last().map_or(s.seq.max(since), |f| f.seq);
    let items: Vec<Value> = page
        .iter()
        .map(|f| {
            json!({"kind": "drive#change", "changeType": "file", "fileId": f.id,
                "removed": f.deleted, "time": "2026-12-06T10:00:00.000Z", "file": s.json(f)})
        })
        .collect();
    let mut body = json!({"kind": "drive#changeList", "changes": items});
    let next = format!("{}.{reached}", s.generation);
    if changed.len() > size {
        body["nextPageToken"] = json!(next);
    } else {
        body["newStartPageToken"] = json!(next);
    }
    axum::Json(body).into_response()
}
