//! `box`: a Box folder (`folderId`; `0` is the root of the account parley acts as). The
//! token by the Client Credentials Grant at `{apiUrl}/oauth2/token` (`box_subject_type`
//! `enterprise`, the enterprise's service account, or `user`; tokens last an hour and have no
//! refresh token, so another is asked for). Folders by `POST /2.0/folders` (a name in use
//! answers 409 with the folder it is); files under 20 MB by one multipart upload
//! (`attributes` before `file`), a new version by `POST /2.0/files/{id}/content`; larger
//! ones by a chunked upload session (parts of the session's `part_size`, each with its
//! SHA-1 in `Digest`; the commit with the whole file's SHA-1 and the parts, `202` with
//! `Retry-After` while Box assembles it; a session resumed from its uploaded parts). A name
//! in use on a new file (an upload a crash did not record) answers 409 with that file, which
//! then gets the bytes as a new version: never a second file. Changes from the events
//! stream (`stream_position` kept; the first round lists the case folders after taking
//! `now`). A file's bytes by `GET /2.0/files/{id}/content` (a redirect to a pre-signed URL,
//! followed once without the token); a case folder deleted with `recursive=true`.
//!
//! Documentation: <https://developer.box.com/reference/post-oauth2-token/>,
//! <https://developer.box.com/guides/authentication/client-credentials/>,
//! <https://developer.box.com/reference/post-folders/>,
//! <https://developer.box.com/reference/post-files-content/>,
//! <https://developer.box.com/guides/uploads/chunked/>,
//! <https://developer.box.com/reference/get-events/>,
//! <https://developer.box.com/reference/get-files-id-content/>,
//! <https://developer.box.com/reference/delete-folders-id/>.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Digest;

use super::drives::{Changed, Entry, Keeper, Source, Stop, Target, Uploaded};
use super::oauth::TokenCache;
use super::web::{self, Failure};
use crate::domain::connector::Settings;

/// Files under this size go in one upload (Box takes chunked uploads from 20 MB).
pub const SMALL: u64 = 20 * 1024 * 1024;
/// Items and events a page holds at most.
const PAGE: u32 = 1000;
/// How often a commit that Box is still assembling is asked again.
const COMMITS: u32 = 10;

pub struct BoxCom {
    http: reqwest::Client,
    tokens: TokenCache,
    api_url: String,
    upload_url: String,
    client_id: String,
    secret: String,
    /// `enterprise` or `user`, and its id.
    subject: (&'static str, String),
    folder: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent: Option<Parent>,
    #[serde(default)]
    size: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Parent {
    id: String,
}

impl Item {
    fn entry(self, parent: Option<String>) -> Entry {
        Entry {
            folder: self.kind == "folder",
            parent: self.parent.map(|p| p.id).or(parent),
            content_type: None,
            size: self.size,
            id: self.id,
            name: self.name,
        }
    }
}

#[derive(Deserialize)]
struct Items {
    #[serde(default)]
    entries: Vec<Item>,
    #[serde(default)]
    total_count: Option<u64>,
}

#[derive(Deserialize)]
struct Events {
    #[serde(default)]
    entries: Vec<Event>,
    next_stream_position: Value,
    #[serde(default)]
    chunk_size: u64,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    source: Option<Value>,
}

#[derive(Deserialize)]
struct UploadSession {
    id: String,
    part_size: u64,
}

#[derive(Deserialize)]
struct Parts {
    #[serde(default)]
    entries: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct BoxError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    context_info: Option<Value>,
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A session's part size as Box gives it, held to what one part in memory may be.
fn part_size(given: u64) -> u64 {
    given.clamp(1 << 20, 64 << 20)
}

fn sha1_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(bytes))
}

/// The id of the item a 409 names as in the way (`context_info.conflicts`).
fn conflict(reason: &str) -> Option<String> {
    reason
        .split("conflict:")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

impl BoxCom {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        let subject = match settings.text("userId") {
            "" => ("enterprise", settings.text("enterpriseId").to_string()),
            user => ("user", user.to_string()),
        };
        Self {
            http,
            tokens: TokenCache::default(),
            api_url: settings.text("apiUrl").to_string(),
            upload_url: settings.text("uploadUrl").to_string(),
            client_id: settings.text("clientId").to_string(),
            secret: settings.text("clientSecret").to_string(),
            subject,
            folder: settings.text("folderId").to_string(),
        }
    }

    /// The Client Credentials Grant.
    async fn token(&self) -> Result<(String, std::time::Duration), Failure> {
        super::oauth::form_grant(
            &self.http,
            &format!("{}/oauth2/token", self.api_url),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.secret),
                ("box_subject_type", self.subject.0),
                ("box_subject_id", &self.subject.1),
            ],
        )
        .await
    }

    /// A call answered by a redirect (a file's bytes).
    async fn call_redirect(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        super::oauth::authorized_redirect(
            &self.tokens,
            || self.token(),
            build,
            |r| failure(r, what),
        )
        .await
    }

    /// A request with the token; errors read the way Box explains them.
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        super::oauth::authorized(&self.tokens, || self.token(), build, |r| failure(r, what)).await
    }

    async fn json_call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, Failure> {
        let response = self.call(build, what).await?;
        web::json(response, what).await
    }

    pub async fn root(&self) -> Result<String, Failure> {
        Ok(self.folder.clone())
    }

    /// Every item in a folder (pages of 1,000 followed, up to 100).
    async fn items(&self, folder: &str) -> Result<Vec<Item>, Failure> {
        let url = format!("{}/2.0/folders/{}/items", self.api_url, segment(folder));
        let mut out = Vec::new();
        for page in 0..100u64 {
            let query = [
                ("fields", "type,id,name,parent,size".to_string()),
                ("limit", PAGE.to_string()),
                ("offset", (page * u64::from(PAGE)).to_string()),
            ];
            let response = self
                .call(
                    |t| self.http.get(&url).query(&query).bearer_auth(t),
                    "listing a folder",
                )
                .await?;
            let items: Items = web::json(response, "a folder's items").await?;
            let n = items.entries.len() as u64;
            out.extend(items.entries);
            if n < u64::from(PAGE) || items.total_count.is_some_and(|t| out.len() as u64 >= t) {
                break;
            }
        }
        Ok(out)
    }

    /// The folder `name` in `parent`, made when there is none (one of that name answers
    /// 409 with its id).
    pub async fn folder_in(&self, parent: &str, name: &str) -> Result<String, Failure> {
        let url = format!("{}/2.0/folders", self.api_url);
        let body = json!({"name": name, "parent": {"id": parent}});
        match self
            .json_call(
                |t| self.http.post(&url).bearer_auth(t).json(&body),
                "making a folder",
            )
            .await
        {
            Ok(made) => made["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Failure::Transient("a folder without an id".into())),
            Err(Failure::Permanent(reason)) => conflict(&reason).ok_or(Failure::Permanent(reason)),
            Err(f) => Err(f),
        }
    }

    pub async fn names_in(&self, folder: &str) -> Result<Vec<String>, Failure> {
        Ok(self
            .items(folder)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect())
    }

    fn link(id: &str) -> String {
        format!("https://app.box.com/file/{id}")
    }

    /// A document's bytes into its file: into the kept item as a new version, else as a
    /// new file (a name in use there is the file a lost attempt made: a new version of it).
    pub async fn upload(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Uploaded, Stop> {
        let id = if source.size() < SMALL {
            self.upload_small(target, source, keeper).await?
        } else {
            self.upload_chunked(target, source, keeper).await?
        };
        Ok(Uploaded {
            link: Some(Self::link(&id)),
            id,
        })
    }

    async fn upload_small(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<String, Stop> {
        let bytes = source.whole(SMALL).await?;
        // Box reads `content-md5` as the file's SHA-1, in hex.
        let digest = hex::encode(sha1::Sha1::digest(&bytes));
        let mut existing = target.remote.map(str::to_string);
        for _ in 0..2 {
            let (url, attributes) = match &existing {
                Some(id) => (
                    format!("{}/2.0/files/{}/content", self.upload_url, segment(id)),
                    json!({"name": target.name}),
                ),
                None => (
                    format!("{}/2.0/files/content", self.upload_url),
                    json!({"name": target.name, "parent": {"id": target.folder}}),
                ),
            };
            let sent = self
                .json_call(
                    |t| {
                        let form = reqwest::multipart::Form::new()
                            .text("attributes", attributes.to_string())
                            .part(
                                "file",
                                reqwest::multipart::Part::stream(bytes.clone())
                                    .file_name(target.name.to_string()),
                            );
                        self.http
                            .post(&url)
                            .bearer_auth(t)
                            .header("content-md5", &digest)
                            .multipart(form)
                    },
                    "uploading a file",
                )
                .await;
            match sent {
                Ok(answer) => {
                    return answer["entries"][0]["id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            Stop::Service(Failure::Transient("an upload without a file".into()))
                        });
                }
                Err(Failure::Permanent(reason)) if existing.is_none() => match conflict(&reason) {
                    Some(id) => {
                        keeper.remote(&id).await?;
                        existing = Some(id);
                    }
                    None => return Err(Failure::Permanent(reason).into()),
                },
                Err(f) => return Err(f.into()),
            }
        }
        Err(Failure::Transient("the file's name stays in use".into()).into())
    }

    /// A chunked upload session: the kept one resumed from its uploaded parts, or a new
    /// one (kept before its first part); the parts, then the commit.
    async fn upload_chunked(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<String, Stop> {
        let total = source.size();
        let resumed = match target
            .session
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            Some(kept) => {
                let id = kept["id"].as_str().unwrap_or_default().to_string();
                let size = part_size(kept["partSize"].as_u64().unwrap_or(0));
                self.uploaded_parts(&id)
                    .await?
                    .map(|parts| (id, size, parts))
            }
            None => None,
        };
        let (session, part_size, mut parts) = match resumed {
            Some(found) => found,
            None => {
                let made = self.open_session(target, keeper, total).await?;
                let kept = json!({"id": made.id, "partSize": made.part_size}).to_string();
                keeper.session(Some(&kept)).await?;
                (made.id, part_size(made.part_size), Vec::new())
            }
        };
        let from: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap_or(0)).sum();
        let url = format!(
            "{}/2.0/files/upload_sessions/{}",
            self.upload_url,
            segment(&session)
        );
        let mut ranges = source
            .ranges(from, usize::try_from(part_size).unwrap_or(8 << 20))
            .await?;
        while let Some((start, part)) = ranges.next().await? {
            let end = start + part.len() as u64 - 1;
            let digest = format!("sha={}", sha1_base64(&part));
            let answer = self
                .json_call(
                    |t| {
                        self.http
                            .put(&url)
                            .bearer_auth(t)
                            .header(
                                reqwest::header::CONTENT_RANGE,
                                format!("bytes {start}-{end}/{total}"),
                            )
                            .header("digest", &digest)
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                            .body(part.clone())
                    },
                    "uploading a part",
                )
                .await?;
            parts.push(answer["part"].clone());
        }
        self.commit(&session, source, &parts).await
    }

    async fn open_session(
        &self,
        target: &Target<'_>,
        keeper: &Keeper<'_>,
        total: u64,
    ) -> Result<UploadSession, Stop> {
        let mut existing = target.remote.map(str::to_string);
        for _ in 0..2 {
            let (url, body) = match &existing {
                Some(id) => (
                    format!(
                        "{}/2.0/files/{}/upload_sessions",
                        self.upload_url,
                        segment(id)
                    ),
                    json!({"file_size": total, "file_name": target.name}),
                ),
                None => (
                    format!("{}/2.0/files/upload_sessions", self.upload_url),
                    json!({"folder_id": target.folder, "file_size": total, "file_name": target.name}),
                ),
            };
            let opened = self
                .call(
                    |t| self.http.post(&url).bearer_auth(t).json(&body),
                    "opening an upload session",
                )
                .await;
            match opened {
                Ok(response) => return Ok(web::json(response, "an upload session").await?),
                Err(Failure::Permanent(reason)) if existing.is_none() => match conflict(&reason) {
                    Some(id) => {
                        keeper.remote(&id).await?;
                        existing = Some(id);
                    }
                    None => return Err(Failure::Permanent(reason).into()),
                },
                Err(f) => return Err(f.into()),
            }
        }
        Err(Failure::Transient("the file's name stays in use".into()).into())
    }

    /// The parts a session has; none when it is gone (expired, or committed).
    async fn uploaded_parts(&self, session: &str) -> Result<Option<Vec<Value>>, Failure> {
        let url = format!(
            "{}/2.0/files/upload_sessions/{}/parts",
            self.upload_url,
            segment(session)
        );
        match self
            .call(
                |t| {
                    self.http
                        .get(&url)
                        .query(&[("limit", "1000")])
                        .bearer_auth(t)
                },
                "reading an upload session",
            )
            .await
        {
            Ok(response) => {
                let parts: Parts = web::json(response, "an upload session's parts").await?;
                let mut entries = parts.entries;
                entries.sort_by_key(|p| p["offset"].as_u64().unwrap_or(0));
                Ok(Some(entries))
            }
            Err(Failure::Permanent(reason)) if reason.contains("(HTTP 404") => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// The commit, with the whole file's SHA-1 (read once more from the store, streamed);
    /// asked again while Box answers 202.
    async fn commit(
        &self,
        session: &str,
        source: &Source<'_>,
        parts: &[Value],
    ) -> Result<String, Stop> {
        let mut whole = sha1::Sha1::new();
        let mut all = source.ranges(0, 1 << 20).await?;
        while let Some((_, part)) = all.next().await? {
            whole.update(&part);
        }
        let digest = format!(
            "sha={}",
            base64::engine::general_purpose::STANDARD.encode(whole.finalize())
        );
        let url = format!(
            "{}/2.0/files/upload_sessions/{}/commit",
            self.upload_url,
            segment(session)
        );
        let body = json!({"parts": parts});
        for _ in 0..COMMITS {
            let response = self
                .call(
                    |t| {
                        self.http
                            .post(&url)
                            .bearer_auth(t)
                            .header("digest", &digest)
                            .json(&body)
                    },
                    "committing an upload session",
                )
                .await?;
            if response.status() == reqwest::StatusCode::ACCEPTED {
                let wait = web::retry_after(&response).unwrap_or(std::time::Duration::from_secs(1));
                tokio::time::sleep(wait.min(std::time::Duration::from_secs(30))).await;
                continue;
            }
            let answer: Value = web::json(response, "a committed file").await?;
            return answer["entries"][0]["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| {
                    Stop::Service(Failure::Transient("a commit without a file".into()))
                });
        }
        Err(Failure::Transient("Box is still assembling the file".into()).into())
    }

    /// A page of changes: the first round lists the case folders (after taking the stream's
    /// `now`); later rounds read the events from the kept position.
    pub async fn changes(&self, cursor: Option<&str>) -> Result<Changed, Failure> {
        let url = format!("{}/2.0/events", self.api_url);
        let position = cursor.unwrap_or("now").to_string();
        let query = [
            ("stream_type", "all".to_string()),
            ("stream_position", position),
            ("limit", "500".to_string()),
        ];
        let response = self
            .call(
                |t| self.http.get(&url).query(&query).bearer_auth(t),
                "reading the events",
            )
            .await?;
        let events: Events = web::json(response, "the events").await?;
        let next = match &events.next_stream_position {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if cursor.is_none() {
            return self.first_listing(next).await;
        }
        let mut entries = Vec::new();
        for event in events.entries {
            if !matches!(
                event.event_type.as_str(),
                "ITEM_UPLOAD"
                    | "ITEM_CREATE"
                    | "ITEM_MOVE"
                    | "ITEM_COPY"
                    | "ITEM_UNDELETE_VIA_TRASH"
            ) {
                continue;
            }
            if let Some(item) = event
                .source
                .and_then(|s| serde_json::from_value::<Item>(s).ok())
                && matches!(item.kind.as_str(), "file" | "folder")
            {
                entries.push(item.entry(None));
            }
        }
        Ok(Changed {
            entries,
            cursor: Some(next),
            more: events.chunk_size >= 500,
        })
    }

    /// The root's folders, the folders in those (document types) and their files.
    async fn first_listing(&self, position: String) -> Result<Changed, Failure> {
        let mut entries = Vec::new();
        let mut folders = vec![self.folder.clone()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for folder in &folders {
                for item in self.items(folder).await? {
                    if item.kind == "folder" {
                        next.push(item.id.clone());
                    }
                    entries.push(item.entry(Some(folder.clone())));
                }
            }
            folders = next;
        }
        Ok(Changed {
            entries,
            cursor: Some(position),
            more: false,
        })
    }

    /// A file's bytes: Box redirects to a pre-signed URL, followed once without the token.
    pub async fn download(&self, id: &str) -> Result<reqwest::Response, Failure> {
        let url = format!("{}/2.0/files/{}/content", self.api_url, segment(id));
        let response = self
            .call_redirect(|t| self.http.get(&url).bearer_auth(t), "reading a file")
            .await?;
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url::Url::parse(&url).ok()?.join(l).ok())
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| Failure::Permanent("a redirect without a web URL".into()))?;
        let response = self.http.get(location).send().await.map_err(web::network)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(failure(response, "reading a file").await)
        }
    }

    /// Deletes a folder with all in it; one already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), Failure> {
        let url = format!("{}/2.0/folders/{}", self.api_url, segment(id));
        match self
            .call(
                |t| {
                    self.http
                        .delete(&url)
                        .query(&[("recursive", "true")])
                        .bearer_auth(t)
                },
                "deleting a folder",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Permanent(reason)) if reason.contains("(HTTP 404") => Ok(()),
            Err(f) => Err(f),
        }
    }
}

/// Box's error answer read: the conflicting item of a 409 named (`conflict: <id>`), what
/// the administrator must do, or how long to wait.
async fn failure(response: reqwest::Response, what: &str) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<BoxError>(&body).unwrap_or_default();
    let mut explained = format!("{what}: {} {}", error.code, web::said(&error.message));
    if status.as_u16() == 409
        && let Some(id) = error
            .context_info
            .as_ref()
            .and_then(|c| {
                c["conflicts"]
                    .get(0)
                    .or_else(|| c["conflicts"].as_object().map(|_| &c["conflicts"]))
            })
            .and_then(|c| c["id"].as_str())
    {
        explained = format!("{explained} conflict: {id}");
    }
    let explained = explained.trim().to_string();
    match status.as_u16() {
        403 => Failure::Reauthorize(format!(
            "{explained} (give the app's service account, or the user, access to the folder)"
        )),
        404 if what == "listing a folder" => {
            Failure::Credentials(format!("{explained} (is `folderId` right?)"))
        }
        _ => web::by_status(status, retry_after, explained),
    }
}
