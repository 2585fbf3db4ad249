//! A stateful fake of Box behind prism with Box's own OpenAPI description (cut to folders,
//! upload sessions and events; tests/vendors/prepare.mjs). Written from Box's documentation:
//!
//! - <https://developer.box.com/reference/post-oauth2-token/> (Client Credentials Grant:
//!   `box_subject_type` `enterprise` or `user`, `box_subject_id`; `invalid_client`);
//! - <https://developer.box.com/reference/post-folders/>, `GET /folders/{id}/items`,
//!   `DELETE /folders/{id}?recursive=true` (409 `item_name_in_use` with
//!   `context_info.conflicts`);
//! - <https://developer.box.com/reference/post-files-content/> (multipart, `attributes`
//!   before `file`; 409 names the file in the way), `POST /files/{id}/content` (a version);
//! - <https://developer.box.com/guides/uploads/chunked/> (20 MB at least; parts of
//!   `part_size` with `Digest: sha=<base64 SHA-1>` and `Content-Range`; the parts listed;
//!   the commit with the whole file's digest, `202` with `Retry-After` first);
//! - <https://developer.box.com/reference/get-events/> (`stream_position`, `now`);
//! - <https://developer.box.com/reference/get-files-id-content/> (`302` to a pre-signed URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use serde_json::{Value, json};
use sha1::Digest;

use crate::vendors::{Prism, bearer, form, serve};

/// The part size the fake's sessions ask for.
pub const PART: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BoxItem {
    pub id: String,
    pub name: String,
    pub parent: String,
    pub folder: bool,
    pub content: Vec<u8>,
    pub versions: usize,
    pub deleted: bool,
}

struct Session {
    folder: String,
    /// A new version of this file, when given.
    file: Option<String>,
    name: String,
    size: usize,
    parts: Vec<(usize, Vec<u8>, String)>,
    commits: usize,
}

#[derive(Default)]
pub struct BoxState {
    pub client_id: String,
    pub secret: String,
    pub enterprise: String,
    tokens: HashMap<String, Instant>,
    pub direct: String,
    pub items: HashMap<String, BoxItem>,
    next: u64,
    /// The events stream: (position, event type, item id).
    events: Vec<(u64, &'static str, String)>,
    sessions: HashMap<String, Session>,
    /// Parts of sessions fail from the nth on, until cleared.
    pub break_parts_after: Option<usize>,
    pub parts: usize,
    pub refused: usize,
    pub sessions_opened: usize,
    pub uploads: usize,
    pub commits: usize,
    pub downloads: usize,
    pub largest_body: usize,
}

pub struct BoxFake {
    pub state: Arc<Mutex<BoxState>>,
    pub prism: Prism,
    pub front: String,
}

type B = State<Arc<Mutex<BoxState>>>;

fn box_error(status: StatusCode, code: &str, message: &str, context: Option<Value>) -> Response {
    let mut body = json!({"type": "error", "status": status.as_u16(), "code": code,
        "message": message, "request_id": "abcdef123456"});
    if let Some(c) = context {
        body["context_info"] = c;
    }
    (status, axum::Json(body)).into_response()
}

fn not_found() -> Response {
    box_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "Could not find the specified resource",
        None,
    )
}

impl BoxState {
    fn make(&mut self, name: &str, parent: &str, folder: bool) -> String {
        self.next += 1;
        let id = format!("{}", 1_200_000 + self.next);
        self.items.insert(
            id.clone(),
            BoxItem {
                id: id.clone(),
                name: name.into(),
                parent: parent.into(),
                folder,
                content: Vec::new(),
                versions: 0,
                deleted: false,
            },
        );
        self.event(if folder { "ITEM_CREATE" } else { "ITEM_UPLOAD" }, &id);
        id
    }

    fn event(&mut self, kind: &'static str, id: &str) {
        let position = self.events.len() as u64 + 1;
        self.events.push((position, kind, id.to_string()));
    }

    fn write(&mut self, id: &str, content: Vec<u8>) {
        let item = self.items.get_mut(id).unwrap();
        item.content = content;
        item.versions += 1;
        self.event("ITEM_UPLOAD", id);
    }

    fn live(&self, id: &str) -> Option<&BoxItem> {
        self.items.get(id).filter(|i| !i.deleted)
    }

    fn child(&self, parent: &str, name: &str) -> Option<&BoxItem> {
        self.items
            .values()
            .find(|i| !i.deleted && i.parent == parent && i.name.eq_ignore_ascii_case(name))
    }

    fn json(&self, item: &BoxItem) -> Value {
        let mut v = json!({
            "type": if item.folder { "folder" } else { "file" }, "id": item.id,
            "name": item.name, "etag": "1", "sequence_id": "1",
            "parent": {"type": "folder", "id": item.parent, "name": "parent", "etag": "1", "sequence_id": "1"},
        });
        if !item.folder {
            v["size"] = json!(item.content.len());
            v["sha1"] = json!(hex::encode(sha1::Sha1::digest(&item.content)));
            v["file_version"] = json!({"type": "file_version", "id": format!("{}{}", item.id, item.versions),
                "sha1": hex::encode(sha1::Sha1::digest(&item.content))});
        }
        v
    }

    fn conflict(&self, item: &BoxItem) -> Response {
        let conflict = json!({"type": if item.folder { "folder" } else { "file" },
            "id": item.id, "name": item.name, "etag": "1", "sequence_id": "1"});
        let conflicts = if item.folder {
            json!([conflict])
        } else {
            conflict
        };
        box_error(
            StatusCode::CONFLICT,
            "item_name_in_use",
            "Item with the same name already exists",
            Some(json!({"conflicts": conflicts})),
        )
    }

    fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        if self
            .tokens
            .get(&bearer(headers))
            .is_none_or(|until| Instant::now() >= *until)
        {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"Service\", error=\"invalid_token\""
                    .parse()
                    .unwrap(),
            );
            return Some(r);
        }
        None
    }
}

impl BoxFake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(BoxState {
            client_id: "ly1nj6n11vionaie65emwzk575hnnmrk".into(),
            secret: "hOzsTeFlT6ko0dme22uGbQal04SBPYc1".into(),
            enterprise: "899905961".into(),
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/oauth2/token", post(token))
            .route("/2.0/folders", post(new_folder))
            .route("/2.0/folders/{id}", axum::routing::delete(delete_folder))
            .route("/2.0/folders/{id}/items", get(items))
            .route("/2.0/files/content", post(upload))
            .route("/2.0/files/{id}/content", post(upload_version).get(content))
            .route("/2.0/files/upload_sessions", post(open_session))
            .route(
                "/2.0/files/{id}/upload_sessions",
                post(open_version_session),
            )
            .route("/2.0/files/upload_sessions/{id}", put(part))
            .route("/2.0/files/upload_sessions/{id}/parts", get(parts))
            .route("/2.0/files/upload_sessions/{id}/commit", post(commit))
            .route("/2.0/events", get(events))
            .route("/dl/{id}", get(download))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(state.clone());
        let base = serve(router).await;
        let prism = Prism::start("box.json", &base).await;
        let front = crate::drive_fake::front(&prism.base, &base, |method, uri| {
            let path = uri.path();
            path.starts_with("/oauth2/")
                || path.ends_with("/content")
                || (method == axum::http::Method::PUT && path.contains("/upload_sessions/"))
        })
        .await;
        {
            let mut s = state.lock().unwrap();
            s.direct = base.clone();
            s.items.insert(
                "0".into(),
                BoxItem {
                    id: "0".into(),
                    name: "All Files".into(),
                    parent: String::new(),
                    folder: true,
                    content: Vec::new(),
                    versions: 0,
                    deleted: false,
                },
            );
        }
        Self {
            state,
            prism,
            front,
        }
    }

    pub fn settings(&self, folder: &str) -> Value {
        let s = self.state.lock().unwrap();
        json!({"clientId": s.client_id, "clientSecret": s.secret, "enterpriseId": s.enterprise,
            "folderId": folder, "apiUrl": self.front, "uploadUrl": self.front})
    }

    /// The item at a path of names from the root (`0`).
    pub fn at(&self, path: &str) -> Option<BoxItem> {
        let s = self.state.lock().unwrap();
        let mut at = "0".to_string();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = s.child(&at, name)?.id.clone();
        }
        s.items.get(&at).cloned()
    }

    pub fn files_in(&self, path: &str) -> Vec<BoxItem> {
        let Some(folder) = self.at(path) else {
            return Vec::new();
        };
        let s = self.state.lock().unwrap();
        let mut files: Vec<BoxItem> = s
            .items
            .values()
            .filter(|i| !i.deleted && !i.folder && i.parent == folder.id)
            .cloned()
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// A folder made at a path (as needed), as through the web: its id.
    pub fn folder(&self, path: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let mut at = "0".to_string();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = match s.child(&at, name) {
                Some(found) => found.id.clone(),
                None => s.make(name, &at, true),
            };
        }
        at
    }

    pub fn put(&self, path: &str, name: &str, content: &[u8]) {
        let folder = self.folder(path);
        let mut s = self.state.lock().unwrap();
        let id = s.make(name, &folder, false);
        s.write(&id, content.to_vec());
    }
}

async fn token(State(state): B, body: String) -> Response {
    let f = form(&body);
    let mut s = state.lock().unwrap();
    let refuse = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Grant type is not supported",
        );
    }
    if f.get("client_id") != Some(&s.client_id) || f.get("client_secret") != Some(&s.secret) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "The client credentials are invalid",
        );
    }
    let subject_ok = match f.get("box_subject_type").map(String::as_str) {
        Some("enterprise") => f.get("box_subject_id") == Some(&s.enterprise),
        Some("user") => f.get("box_subject_id").is_some_and(|u| !u.is_empty()),
        _ => false,
    };
    if !subject_ok {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Grant credentials are invalid",
        );
    }
    let token = format!(
        "T9cE5asGnuyYCCqIZFoWjFHvNbvVqHjl{}",
        uuid::Uuid::new_v4().simple()
    );
    s.tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(3600));
    axum::Json(
        json!({"access_token": token, "expires_in": 3600, "token_type": "bearer",
        "restricted_to": [], "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
    )
    .into_response()
}

async fn new_folder(
    State(state): B,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let (Some(name), Some(parent)) = (body["name"].as_str(), body["parent"]["id"].as_str()) else {
        return box_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name and parent are required",
            None,
        );
    };
    if s.live(parent).is_none_or(|p| !p.folder) {
        return not_found();
    }
    if let Some(existing) = s.child(parent, name).cloned() {
        return s.conflict(&existing);
    }
    let id = s.make(name, parent, true);
    let item = s.items[&id].clone();
    (StatusCode::CREATED, axum::Json(s.json(&item))).into_response()
}

async fn items(
    State(state): B,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    if s.live(&id).is_none_or(|f| !f.folder) {
        return not_found();
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let offset: usize = q.get("offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut all: Vec<&BoxItem> = s
        .items
        .values()
        .filter(|i| !i.deleted && i.parent == id)
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let entries: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|i| s.json(i))
        .collect();
    axum::Json(
        json!({"total_count": all.len(), "limit": limit, "offset": offset, "entries": entries}),
    )
    .into_response()
}

async fn delete_folder(
    State(state): B,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    if s.live(&id).is_none_or(|f| !f.folder) || id == "0" {
        return not_found();
    }
    let has_children = s.items.values().any(|i| !i.deleted && i.parent == id);
    if has_children && q.get("recursive").map(String::as_str) != Some("true") {
        return box_error(
            StatusCode::BAD_REQUEST,
            "folder_not_empty",
            "Cannot delete – folder not empty",
            None,
        );
    }
    let mut gone = vec![id];
    while let Some(next) = gone.pop() {
        if let Some(i) = s.items.get_mut(&next) {
            i.deleted = true;
        }
        gone.extend(
            s.items
                .values()
                .filter(|i| !i.deleted && i.parent == next)
                .map(|i| i.id.clone()),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A multipart upload's attributes and file, `attributes` first as Box requires.
async fn multipart(headers: &HeaderMap, body: Bytes) -> Result<(Value, Vec<u8>), Response> {
    let bad = |m: &str| box_error(StatusCode::BAD_REQUEST, "bad_request", m, None);
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| bad("a multipart body is required"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut attributes = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|_| bad("a broken multipart body"))?
    {
        match field.name() {
            Some("attributes") => {
                let text = field
                    .text()
                    .await
                    .map_err(|_| bad("unreadable attributes"))?;
                attributes = Some(
                    serde_json::from_str::<Value>(&text)
                        .map_err(|_| bad("attributes are not JSON"))?,
                );
            }
            Some("file") => {
                let Some(attributes) = attributes.take() else {
                    return Err(bad("attributes must come before file"));
                };
                let bytes = field.bytes().await.map_err(|_| bad("unreadable file"))?;
                return Ok((attributes, bytes.to_vec()));
            }
            _ => {}
        }
    }
    Err(bad("a file part is required"))
}

async fn upload(State(state): B, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = state.lock().unwrap().gate(&headers) {
        return r;
    }
    let (attributes, content) = match multipart(&headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let (Some(name), Some(parent)) = (
        attributes["name"].as_str(),
        attributes["parent"]["id"].as_str(),
    ) else {
        return box_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name and parent are required",
            None,
        );
    };
    if s.live(parent).is_none_or(|p| !p.folder) {
        return not_found();
    }
    if let Some(existing) = s.child(parent, name).cloned() {
        return s.conflict(&existing);
    }
    s.uploads += 1;
    s.largest_body = s.largest_body.max(content.len());
    let id = s.make(name, parent, false);
    s.write(&id, content);
    let item = s.items[&id].clone();
    (
        StatusCode::CREATED,
        axum::Json(json!({"total_count": 1, "entries": [s.json(&item)]})),
    )
        .into_response()
}

async fn upload_version(
    State(state): B,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = state.lock().unwrap().gate(&headers) {
        return r;
    }
    let (_, content) = match multipart(&headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    if s.live(&id).is_none_or(|f| f.folder) {
        return not_found();
    }
    s.uploads += 1;
    s.write(&id, content);
    let item = s.items[&id].clone();
    (
        StatusCode::CREATED,
        axum::Json(json!({"total_count": 1, "entries": [s.json(&item)]})),
    )
        .into_response()
}

async fn content(State(state): B, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    if s.live(&id).is_none_or(|f| f.folder) {
        return not_found();
    }
    (
        StatusCode::FOUND,
        [("location", format!("{}/dl/{id}?signature=x", s.direct))],
    )
        .into_response()
}

async fn download(State(state): B, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    assert!(
        headers.get("authorization").is_none(),
        "parley sent its token to the download URL"
    );
    s.downloads += 1;
    match s.live(&id) {
        Some(item) => item.content.clone().into_response(),
        None => not_found(),
    }
}

fn session_json(id: &str, u: &Session) -> Value {
    json!({"id": id, "type": "upload_session", "session_expires_at": "2026-12-13T10:00:00Z",
        "part_size": PART, "total_parts": u.size.div_ceil(PART), "num_parts_processed": u.parts.len(),
        "session_endpoints": {"upload_part": format!("https://upload.box.com/api/2.0/files/upload_sessions/{id}"),
            "commit": format!("https://upload.box.com/api/2.0/files/upload_sessions/{id}/commit"),
            "list_parts": format!("https://upload.box.com/api/2.0/files/upload_sessions/{id}/parts"),
            "status": format!("https://upload.box.com/api/2.0/files/upload_sessions/{id}"),
            "abort": format!("https://upload.box.com/api/2.0/files/upload_sessions/{id}")}})
}

fn opened(s: &mut BoxState, folder: String, file: Option<String>, body: &Value) -> Response {
    let (Some(size), Some(name)) = (body["file_size"].as_u64(), body["file_name"].as_str()) else {
        return box_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "file_size and file_name are required",
            None,
        );
    };
    if size < 20_000_000 {
        return box_error(
            StatusCode::BAD_REQUEST,
            "file_size_too_small",
            "File size is less than minimum allowed for this API",
            None,
        );
    }
    if file.is_none()
        && let Some(existing) = s.child(&folder, name).cloned()
    {
        return s.conflict(&existing);
    }
    s.sessions_opened += 1;
    let id = format!("F971964745A5CD0C001BBE4E58196B{:02}", s.sessions_opened);
    let session = Session {
        folder,
        file,
        name: name.into(),
        size: size as usize,
        parts: Vec::new(),
        commits: 0,
    };
    let answer = session_json(&id, &session);
    s.sessions.insert(id, session);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn open_session(
    State(state): B,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let Some(folder) = body["folder_id"].as_str().map(str::to_string) else {
        return box_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "folder_id is required",
            None,
        );
    };
    if s.live(&folder).is_none_or(|f| !f.folder) {
        return not_found();
    }
    opened(&mut s, folder, None, &body)
}

async fn open_version_session(
    State(state): B,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let Some(file) = s.live(&id).filter(|f| !f.folder).cloned() else {
        return not_found();
    };
    opened(&mut s, file.parent, Some(id), &body)
}

async fn part(
    State(state): B,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    s.parts += 1;
    s.largest_body = s.largest_body.max(body.len());
    if s.break_parts_after.is_some_and(|n| s.parts > n) {
        s.refused += 1;
        return box_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
            None,
        );
    }
    let digest = headers
        .get("digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|d| d.strip_prefix("sha="))
        .map(str::to_string);
    let range = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (span, total) = v.split_once('/')?;
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<usize>().ok()?,
                b.parse::<usize>().ok()?,
                total.parse::<usize>().ok()?,
            ))
        });
    let Some(u) = s.sessions.get_mut(&id) else {
        return not_found();
    };
    let Some((start, end, total)) = range else {
        return box_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "Content-Range is required",
            None,
        );
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&body));
    if digest.as_deref() != Some(expected.as_str()) {
        return box_error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "The digest does not match the part",
            None,
        );
    }
    let last = end + 1 == total;
    if total != u.size
        || end + 1 - start != body.len()
        || !start.is_multiple_of(PART)
        || (!last && body.len() != PART)
    {
        return box_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "The part does not fit the session",
            None,
        );
    }
    let part_id = format!("{:08X}", start / PART + 0xBFDF_0000);
    u.parts.retain(|(offset, _, _)| *offset != start);
    u.parts.push((start, body.to_vec(), part_id.clone()));
    axum::Json(
        json!({"part": {"part_id": part_id, "offset": start, "size": body.len(),
        "sha1": hex::encode(sha1::Sha1::digest(&body))}}),
    )
    .into_response()
}

async fn parts(State(state): B, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let Some(u) = s.sessions.get(&id) else {
        return not_found();
    };
    let entries: Vec<Value> = u.parts.iter().map(|(offset, bytes, part_id)| {
        json!({"part_id": part_id, "offset": offset, "size": bytes.len(), "sha1": hex::encode(sha1::Sha1::digest(bytes))})
    }).collect();
    axum::Json(
        json!({"total_count": entries.len(), "limit": 1000, "offset": 0, "entries": entries}),
    )
    .into_response()
}

async fn commit(
    State(state): B,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let Some(u) = s.sessions.get_mut(&id) else {
        return not_found();
    };
    let mut pieces = u.parts.clone();
    pieces.sort_by_key(|(offset, _, _)| *offset);
    let whole: Vec<u8> = pieces.iter().flat_map(|(_, b, _)| b.clone()).collect();
    let named: Vec<String> = body["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["part_id"].as_str().map(str::to_string))
        .collect();
    let expected = format!(
        "sha={}",
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&whole))
    );
    if whole.len() != u.size
        || named
            != pieces
                .iter()
                .map(|(_, _, id)| id.clone())
                .collect::<Vec<_>>()
        || headers.get("digest").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        return box_error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "The parts or the digest do not match",
            None,
        );
    }
    u.commits += 1;
    if u.commits == 1 {
        // Box is still assembling the parts.
        return (StatusCode::ACCEPTED, [("retry-after", "1")]).into_response();
    }
    let u = s.sessions.remove(&id).unwrap();
    s.commits += 1;
    let file = match u.file {
        Some(file) => file,
        None => s.make(&u.name, &u.folder, false),
    };
    s.write(&file, whole);
    let item = s.items[&file].clone();
    (
        StatusCode::CREATED,
        axum::Json(json!({"total_count": 1, "entries": [s.json(&item)]})),
    )
        .into_response()
}

async fn events(
    State(state): B,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if let Some(r) = s.gate(&headers) {
        return r;
    }
    let now = s.events.len() as u64;
    let since = match q.get("stream_position").map(String::as_str) {
        Some("now") => {
            return axum::Json(
                json!({"chunk_size": 0, "next_stream_position": now.to_string(), "entries": []}),
            )
            .into_response();
        }
        Some(p) => p.parse::<u64>().unwrap_or(0),
        None => 0,
    };
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let page: Vec<&(u64, &'static str, String)> = s
        .events
        .iter()
        .filter(|(p, _, _)| *p > since)
        .take(limit)
        .collect();
    let next = page.last().map_or(since, |(p, _, _)| *p);
    let entries: Vec<Value> = page
        .iter()
        .filter_map(|(p, kind, id)| {
            let item = s.items.get(id)?;
            Some(
                json!({"type": "event", "event_id": format!("ev{p}"), "event_type": kind,
            "created_at": "2026-12-06T10:00:00-08:00", "source": s.json(item)}),
            )
        })
        .collect();
    axum::Json(json!({"chunk_size": entries.len(), "next_stream_position": next.to_string(), "entries": entries})).into_response()
}
