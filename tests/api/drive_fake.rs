//! A stateful fake of a SharePoint document library through Microsoft Graph's drives, behind
//! prism (tests/api/vendors.rs) with Graph's own description cut to the drive paths
//! (tests/vendors/prepare.mjs). Written from Graph's documentation:
//!
//! - <https://learn.microsoft.com/graph/api/driveitem-list-children> and
//!   <https://learn.microsoft.com/graph/api/driveitem-post-children> (`conflictBehavior`
//!   `fail`: 409 `nameAlreadyExists`; `replace`);
//! - <https://learn.microsoft.com/graph/api/driveitem-put-content> (up to 4 MB; 200 or 201
//!   with the item);
//! - <https://learn.microsoft.com/graph/api/driveitem-createuploadsession> (ranges in
//!   multiples of 320 KiB, under 60 MiB; `Content-Range`; 202 with `nextExpectedRanges`,
//!   then 200/201 with the item; the session's URL takes no token; `GET` on it says where it
//!   stands; an unknown session is 404);
//! - <https://learn.microsoft.com/graph/api/driveitem-get-content> (302 to a pre-authorised
//!   URL);
//! - <https://learn.microsoft.com/graph/api/driveitem-delta> (`nextLink` pages, a
//!   `deltaLink` to keep; `410` with `resyncRequired` for a token it forgot);
//! - <https://learn.microsoft.com/graph/throttling> (429 with `Retry-After`);
//! - the client credentials grant (the token endpoint is the mail fake's, `graph_token`).
//!
//! prism forwards a request's body as text, which breaks binary content: a file's bytes
//! (`PUT .../content`) go around it, straight to the fake, through a small front that sends
//! everything else to prism. Everything JSON is validated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::vendors::{GraphFake, GraphState, Prism, bearer, graph_error, graph_token, serve};

/// The most a range of an upload session may hold (Graph: under 60 MiB).
const MAX_RANGE: usize = 60 * 1024 * 1024;
const RANGE_UNIT: usize = 320 * 1024;

#[derive(Debug, Clone)]
pub struct DriveItem {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub folder: bool,
    pub content: Vec<u8>,
    /// How many times its content was written (SharePoint keeps a version each time).
    pub versions: usize,
    pub deleted: bool,
    /// When it last changed, in the drive's change order.
    seq: u64,
}

struct UploadSession {
    item: String,
    received: Vec<u8>,
}

#[derive(Default)]
pub struct DriveState {
    pub drive: String,
    /// The base URL parley is given (prism's), for the links the fake answers.
    pub public: String,
    /// The fake's own base URL: where upload sessions and downloads go (another host in
    /// the real service, outside the description).
    pub direct: String,
    pub items: HashMap<String, DriveItem>,
    next_id: u64,
    seq: u64,
    /// Delta tokens of an earlier generation are gone (410).
    generation: u32,
    sessions: HashMap<String, UploadSession>,
    /// The next this many Graph requests are throttled (429, `Retry-After: 1`).
    pub throttle: usize,
    pub throttled: usize,
    /// The range PUTs of upload sessions fail from the nth on (a connection lost mid-file),
    /// until this is cleared.
    pub break_ranges_after: Option<usize>,
    pub ranges: usize,
    /// Ranges refused by `break_ranges_after`.
    pub refused: usize,
    pub sessions_opened: usize,
    pub small_puts: usize,
    pub downloads: usize,
    pub deletes: usize,
    /// The largest request body seen.
    pub largest_body: usize,
    /// After this many ranges are taken, the next one is taken too, this is told, and no
    /// answer ever comes (the uploading process dies meanwhile).
    pub hang_after_ranges: Option<(usize, Arc<tokio::sync::Notify>)>,
}

pub struct DriveFake {
    pub graph: GraphFake,
    pub state: Arc<Mutex<DriveState>>,
    pub prism: Prism,
    /// Parley's `graphUrl`: the front before prism.
    pub front: String,
}

impl DriveState {
    fn make(&mut self, name: &str, parent: &str, folder: bool) -> String {
        self.next_id += 1;
        self.seq += 1;
        let id = format!("01BYE5RZ{:06}QKXJ5ZK3A", self.next_id);
        self.items.insert(
            id.clone(),
            DriveItem {
                id: id.clone(),
                name: name.into(),
                parent: Some(parent.into()),
                folder,
                content: Vec::new(),
                versions: 0,
                deleted: false,
                seq: self.seq,
            },
        );
        id
    }

    fn child(&self, parent: &str, name: &str) -> Option<&DriveItem> {
        self.items.values().find(|i| {
            !i.deleted && i.parent.as_deref() == Some(parent) && i.name.eq_ignore_ascii_case(name)
        })
    }

    fn write(&mut self, id: &str, content: Vec<u8>) {
        self.seq += 1;
        let seq = self.seq;
        let item = self.items.get_mut(id).unwrap();
        item.content = content;
        item.versions += 1;
        item.seq = seq;
    }

    fn json(&self, item: &DriveItem) -> Value {
        let mut v = json!({
            "id": item.id, "name": item.name,
            "parentReference": {"driveId": self.drive, "driveType": "documentLibrary",
                "id": item.parent},
            "webUrl": format!("https://agency.sharepoint.com/sites/collections/Shared%20Documents/{}",
                item.name.replace(' ', "%20")),
            "size": item.content.len(),
            "createdDateTime": "2026-12-06T10:00:00Z",
            "lastModifiedDateTime": "2026-12-06T10:00:00Z",
        });
        if item.folder {
            let children = self
                .items
                .values()
                .filter(|c| !c.deleted && c.parent.as_deref() == Some(&item.id))
                .count();
            v["folder"] = json!({"childCount": children});
        } else {
            v["file"] = json!({"mimeType": "application/pdf",
                "hashes": {"quickXorHash": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}});
            v["@microsoft.graph.downloadUrl"] = json!(format!(
                "{}/download/{}?tempauth=v1.eyJ0",
                self.direct, item.id
            ));
        }
        if item.deleted {
            v["deleted"] = json!({"state": "deleted"});
        }
        v
    }

    /// Authentication, the drive and throttling, as Graph checks them before anything else.
    fn gate(&mut self, graph: &GraphState, headers: &HeaderMap, drive: &str) -> Option<Response> {
        if graph
            .tokens
            .get(&bearer(headers))
            .is_none_or(|until| Instant::now() >= *until)
        {
            return Some(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ));
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            self.throttled += 1;
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "activityLimitReached",
                "The request has been throttled.",
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return Some(r);
        }
        if drive != self.drive {
            return Some(not_found());
        }
        None
    }

    fn live(&self, id: &str) -> Option<&DriveItem> {
        self.items.get(id).filter(|i| !i.deleted)
    }
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
    )
}

impl DriveFake {
    /// The fake, prism in front of it, and the mail fake's token endpoint for its tenant.
    pub async fn start() -> Self {
        let graph = GraphFake::start("unused@agency.example").await;
        let state = Arc::new(Mutex::new(DriveState {
            drive: "b!zUJ5Yy3FqU2Hq4rJ3uZ9hw1cRk8YxUWmV0t3XnRk".into(),
            ..Default::default()
        }));
        state.lock().unwrap().items.insert(
            "root".into(),
            DriveItem {
                id: "root".into(),
                name: "root".into(),
                parent: None,
                folder: true,
                content: Vec::new(),
                versions: 0,
                deleted: false,
                seq: 0,
            },
        );
        let tokens = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(graph_token))
            .with_state(graph.state.clone());
        let item = "/v1.0/drives/{drive}/items/{id}";
        let drive = axum::Router::new()
            .route(item, get(get_item).delete(delete_item))
            .route(&format!("{item}/children"), get(children).post(new_child))
            .route(
                &format!("{item}/content"),
                get(get_content).put(put_content),
            )
            .route(&format!("{item}/createUploadSession"), post(open_session))
            .route(&format!("{item}/delta"), get(delta))
            .route("/upload/{session}", get(session_state).put(put_range))
            .route("/download/{id}", get(download))
            .layer(DefaultBodyLimit::max(MAX_RANGE + 1024))
            .with_state(Fake {
                drive: state.clone(),
                graph: graph.state.clone(),
            });
        let base = serve(tokens.merge(drive)).await;
        let prism = Prism::start("graph-drive.json", &base).await;
        let front = front(&prism.base, &base, |method, uri| {
            method == axum::http::Method::PUT && uri.path().ends_with("/content")
        })
        .await;
        {
            let mut s = state.lock().unwrap();
            s.public = front.clone();
            s.direct = base.clone();
        }
        // The token endpoint is reached directly (parley's `loginUrl`).
        graph.state.lock().unwrap().public = base.clone();
        Self {
            graph: GraphFake {
                base,
                state: graph.state,
            },
            state,
            prism,
            front,
        }
    }

    /// The connector's settings: Graph through prism, the token endpoint direct.
    pub fn settings(&self, folder: &str) -> Value {
        let g = self.graph.state.lock().unwrap();
        json!({
            "tenantId": g.tenant, "clientId": g.client_id, "clientSecret": g.secret,
            "driveId": self.state.lock().unwrap().drive, "folder": folder,
            "graphUrl": self.front, "loginUrl": self.graph.base,
        })
    }

    /// The item at a path of names from the drive's root.
    pub fn at(&self, path: &str) -> Option<DriveItem> {
        let s = self.state.lock().unwrap();
        let mut at = "root".to_string();
        for name in path.split('/') {
            at = s.child(&at, name)?.id.clone();
        }
        s.items.get(&at).cloned()
    }

    /// The files in the folder at `path`, by name.
    pub fn files_in(&self, path: &str) -> Vec<DriveItem> {
        let Some(folder) = self.at(path) else {
            return Vec::new();
        };
        let s = self.state.lock().unwrap();
        let mut files: Vec<DriveItem> = s
            .items
            .values()
            .filter(|i| !i.deleted && !i.folder && i.parent.as_deref() == Some(&folder.id))
            .cloned()
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// A person puts a file into the folder at `path` (made as needed), as through the web.
    pub fn put(&self, path: &str, name: &str, content: &[u8]) -> String {
        let mut s = self.state.lock().unwrap();
        let mut at = "root".to_string();
        for folder in path.split('/') {
            at = match s.child(&at, folder) {
                Some(found) => found.id.clone(),
                None => s.make(folder, &at, true),
            };
        }
        let id = s.make(name, &at, false);
        s.write(&id, content.to_vec());
        id
    }

    /// Every delta token handed out is forgotten: the next delta call is 410.
    pub fn forget_sync_state(&self) {
        self.state.lock().unwrap().generation += 1;
    }
}

#[derive(Clone)]
struct Front {
    prism: String,
    direct: String,
    http: reqwest::Client,
    around: fn(&axum::http::Method, &axum::http::Uri) -> bool,
}

/// A front before prism (its base URL): the requests `around` picks (a file's bytes) go
/// straight to the fake at `direct`, everything else through prism.
pub(crate) async fn front(
    prism: &str,
    direct: &str,
    around: fn(&axum::http::Method, &axum::http::Uri) -> bool,
) -> String {
    serve(
        axum::Router::new()
            .fallback(pass_on)
            .layer(DefaultBodyLimit::max(MAX_RANGE + 1024))
            .with_state(Front {
                prism: prism.to_string(),
                direct: direct.to_string(),
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap(),
                around,
            }),
    )
    .await
}

/// The front: what `around` picks straight to the fake, everything else through prism.
async fn pass_on(
    State(front): State<Front>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let to = if (front.around)(&method, &uri) {
        &front.direct
    } else {
        &front.prism
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = front
        .http
        .request(method, format!("{to}{path}"))
        .body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let mut out = Response::builder().status(status.as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    out.body(axum::body::Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

#[derive(Clone)]
struct Fake {
    drive: Arc<Mutex<DriveState>>,
    graph: Arc<Mutex<GraphState>>,
}

macro_rules! gated {
    ($fake:expr, $headers:expr, $drive:expr) => {{
        let graph = $fake.graph.lock().unwrap();
        let mut s = $fake.drive.lock().unwrap();
        if let Some(refused) = s.gate(&graph, &$headers, &$drive) {
            return refused;
        }
        drop(graph);
        s
    }};
}

async fn get_item(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = gated!(fake, headers, drive);
    match s.live(&id) {
        Some(item) => axum::Json(s.json(item)).into_response(),
        None => not_found(),
    }
}

async fn delete_item(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = gated!(fake, headers, drive);
    if s.live(&id).is_none() || id == "root" {
        return not_found();
    }
    s.deletes += 1;
    // The item and everything under it.
    let mut gone = vec![id];
    while let Some(next) = gone.pop() {
        s.seq += 1;
        let seq = s.seq;
        if let Some(item) = s.items.get_mut(&next) {
            item.deleted = true;
            item.seq = seq;
        }
        gone.extend(
            s.items
                .values()
                .filter(|i| !i.deleted && i.parent.as_deref() == Some(&next))
                .map(|i| i.id.clone()),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn children(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = gated!(fake, headers, drive);
    if s.live(&id).is_none_or(|i| !i.folder) {
        return not_found();
    }
    let top: usize = query
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(200);
    let skip: usize = query
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut all: Vec<&DriveItem> = s
        .items
        .values()
        .filter(|i| !i.deleted && i.parent.as_deref() == Some(&id))
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let page: Vec<Value> = all.iter().skip(skip).take(top).map(|i| s.json(i)).collect();
    let mut body = json!({"value": page});
    if skip + top < all.len() {
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/drives/{drive}/items/{id}/children?$top={top}&$skiptoken={}",
            s.public,
            skip + top
        ));
    }
    axum::Json(body).into_response()
}

async fn new_child(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = gated!(fake, headers, drive);
    if s.live(&id).is_none_or(|i| !i.folder) {
        return not_found();
    }
    let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "A name is required.",
        );
    };
    if name.contains(['"', '*', ':', '<', '>', '?', '/', '\\', '|']) || name.ends_with('.') {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "The name contains characters that are not allowed.",
        );
    }
    let folder = body.get("folder").is_some();
    if folder == body.get("file").is_some() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Exactly one of folder and file is required.",
        );
    }
    let behaviour = body["@microsoft.graph.conflictBehavior"]
        .as_str()
        .unwrap_or("fail");
    let existing = s.child(&id, name).map(|i| i.id.clone());
    let made = match (existing, behaviour) {
        (Some(_), "fail") => {
            return graph_error(
                StatusCode::CONFLICT,
                "nameAlreadyExists",
                "The specified item name already exists.",
            );
        }
        (Some(found), "replace") if !folder => {
            s.write(&found, Vec::new());
            found
        }
        _ => s.make(name, &id, folder),
    };
    let item = s.items[&made].clone();
    (StatusCode::CREATED, axum::Json(s.json(&item))).into_response()
}

async fn put_content(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = gated!(fake, headers, drive);
    if s.live(&id).is_none_or(|i| i.folder) {
        return not_found();
    }
    if body.len() > 4 * 1024 * 1024 {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requestTooLarge",
            "Use an upload session for files over 4 MB.",
        );
    }
    s.small_puts += 1;
    s.largest_body = s.largest_body.max(body.len());
    s.write(&id, body.to_vec());
    let item = s.items[&id].clone();
    axum::Json(s.json(&item)).into_response()
}

async fn get_content(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = gated!(fake, headers, drive);
    if s.live(&id).is_none_or(|i| i.folder) {
        return not_found();
    }
    (
        StatusCode::FOUND,
        [(
            "location",
            format!("{}/download/{id}?tempauth=v1.eyJ0", s.direct),
        )],
    )
        .into_response()
}

async fn download(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = fake.drive.lock().unwrap();
    // Pre-authorised: a token sent here would be a token leaked to another host.
    assert!(
        headers.get("authorization").is_none(),
        "parley sent its token to the download URL"
    );
    s.downloads += 1;
    match s.live(&id) {
        Some(item) => (
            [("content-type", "application/octet-stream")],
            item.content.clone(),
        )
            .into_response(),
        None => not_found(),
    }
}

async fn open_session(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(_body): axum::Json<Value>,
) -> Response {
    let mut s = gated!(fake, headers, drive);
    if s.live(&id).is_none_or(|i| i.folder) {
        return not_found();
    }
    s.sessions_opened += 1;
    let session = format!("sess{}", s.sessions_opened);
    s.sessions.insert(
        session.clone(),
        UploadSession {
            item: id,
            received: Vec::new(),
        },
    );
    axum::Json(json!({
        "uploadUrl": format!("{}/upload/{session}", s.direct),
        "expirationDateTime": "2026-12-07T10:00:00Z",
        "nextExpectedRanges": ["0-"],
    }))
    .into_response()
}

async fn session_state(State(fake): State<Fake>, Path(session): Path<String>) -> Response {
    let s = fake.drive.lock().unwrap();
    match s.sessions.get(&session) {
        Some(u) => axum::Json(json!({
            "expirationDateTime": "2026-12-07T10:00:00Z",
            "nextExpectedRanges": [format!("{}-", u.received.len())],
        }))
        .into_response(),
        None => not_found(),
    }
}

async fn put_range(
    State(fake): State<Fake>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = take_range(&fake, &session, &headers, &body);
    let hang = {
        let mut s = fake.drive.lock().unwrap();
        let taken = s.ranges - s.refused;
        match s.hang_after_ranges.take() {
            Some((n, told)) if taken > n && answer.status().is_success() => Some(told),
            other => {
                s.hang_after_ranges = other;
                None
            }
        }
    };
    if let Some(told) = hang {
        told.notify_one();
        std::future::pending::<()>().await;
    }
    answer
}

fn take_range(fake: &Fake, session: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut s = fake.drive.lock().unwrap();
    assert!(
        headers.get("authorization").is_none(),
        "parley sent its token to the upload session's URL"
    );
    s.ranges += 1;
    s.largest_body = s.largest_body.max(body.len());
    if s.break_ranges_after.is_some_and(|n| s.ranges > n) {
        s.refused += 1;
        return graph_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        );
    }
    let range = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (span, total) = v.split_once('/')?;
            let (start, end) = span.split_once('-')?;
            Some((
                start.parse::<usize>().ok()?,
                end.parse::<usize>().ok()?,
                total.parse::<usize>().ok()?,
            ))
        });
    let Some((start, end, total)) = range else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "Content-Range is required.",
        );
    };
    let Some(upload) = s.sessions.get_mut(session) else {
        return not_found();
    };
    let last = end + 1 == total;
    if start != upload.received.len()
        || end + 1 - start != body.len()
        || body.len() > MAX_RANGE
        || (!last && !body.len().is_multiple_of(RANGE_UNIT))
    {
        return graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            "The uploaded fragment does not match the expected range or size.",
        );
    }
    upload.received.extend_from_slice(body);
    if !last {
        let next = upload.received.len();
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"expirationDateTime": "2026-12-07T10:00:00Z",
                "nextExpectedRanges": [format!("{next}-")]})),
        )
            .into_response();
    }
    let done = s.sessions.remove(session).unwrap();
    s.write(&done.item, done.received);
    let item = s.items[&done.item].clone();
    (StatusCode::CREATED, axum::Json(s.json(&item))).into_response()
}

async fn delta(
    State(fake): State<Fake>,
    Path((drive, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = gated!(fake, headers, drive);
    if id != "root" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Delta is only supported on the root of a document library.",
        );
    }
    let since = match query.get("token") {
        None => 0,
        Some(t) => {
            let (generation, at) = t.split_once('.').unwrap_or(("x", "0"));
            if generation != s.generation.to_string() {
                return graph_error(
                    StatusCode::GONE,
                    "resyncRequired",
                    "The delta token is no longer valid.",
                );
            }
            at.parse::<u64>().unwrap_or(0)
        }
    };
    let top: usize = query
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(200);
    let mut changed: Vec<&DriveItem> = s
        .items
        .values()
        .filter(|i| i.seq > since && i.id != "root")
        .collect();
    changed.sort_by_key(|i| i.seq);
    let page: Vec<&DriveItem> = changed.iter().take(top).copied().collect();
    let reached = page.last().map_or(s.seq.max(since), |i| i.seq);
    let value: Vec<Value> = page.iter().map(|i| s.json(i)).collect();
    let link = format!("{}/v1.0/drives/{drive}/items/root/delta", s.public);
    let mut body = json!({"value": value});
    if changed.len() > top {
        body["@odata.nextLink"] = json!(format!("{link}?token={}.{reached}", s.generation));
    } else {
        body["@odata.deltaLink"] = json!(format!("{link}?token={}.{reached}", s.generation));
    }
    axum::Json(body).into_response()
}
