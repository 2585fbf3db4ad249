//! `dropbox`: a folder of a Dropbox (Business) account (`folder`, a path from the root). The
//! token by the refresh-token grant with the app's key and secret (`{apiUrl}/oauth2/token`;
//! short-lived tokens, renewed); a team token acts for one member
//! (`Dropbox-API-Select-User: teamMemberId`). Folders are addressed by their lowercased
//! path, files by their `id:`. RPC calls (JSON bodies) go to `apiUrl`, content calls
//! (arguments in the `Dropbox-API-Arg` header, as header-safe JSON) to `contentUrl`. A file
//! under 8 MiB goes in one `/2/files/upload`; larger ones through an upload session
//! (`start`, `append_v2`, `finish`, 8 MiB at a time; the session and its offset kept after
//! every part, an `incorrect_offset` answered with the offset Dropbox has). Every upload
//! writes `{case folder}/{name}` in `overwrite` mode: a retry after a crash overwrites what
//! a lost attempt left, and a new version becomes a new revision of the same file. Changes by
//! `list_folder` (recursive, from the root) and `list_folder/continue` from the kept cursor
//! (`reset` starts again). A case folder deleted with `delete_v2`.
//!
//! Documentation: <https://www.dropbox.com/developers/documentation/http/documentation>
//! (files/upload, upload_session/start|append_v2|finish, list_folder[/continue],
//! create_folder_v2, download, delete_v2), <https://developers.dropbox.com/oauth-guide>
//! (the refresh token), <https://developers.dropbox.com/dbx-team-files-guide>
//! (`Dropbox-API-Select-User`), <https://developers.dropbox.com/dbx-performance-guide>
//! (`too_many_write_operations`, `Retry-After`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::drives::{Changed, Entry, Keeper, Source, Stop, Target, Uploaded};
use super::oauth::TokenCache;
use super::web::{self, Failure};
use crate::domain::connector::Settings;

/// Files under this size go in one upload; larger ones through a session.
pub const SMALL: u64 = 8 * 1024 * 1024;
/// One part of an upload session (a multiple of 4 MiB, as Dropbox asks).
pub const PART: usize = 8 * 1024 * 1024;

pub struct Dropbox {
    http: reqwest::Client,
    tokens: TokenCache,
    api_url: String,
    content_url: String,
    app_key: String,
    app_secret: String,
    refresh_token: String,
    member: String,
    /// The root folder's path, lowercased, from the account's root (`/parley`).
    root: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    #[serde(rename = ".tag", default)]
    tag: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    path_lower: Option<String>,
    #[serde(default)]
    size: Option<i64>,
}

impl Metadata {
    /// As an entry: a folder by its lowercased path, a file by its id.
    fn entry(self) -> Option<Entry> {
        let path = self.path_lower?;
        let parent = path.rsplit_once('/').map(|(p, _)| p.to_string());
        let folder = self.tag == "folder";
        Some(Entry {
            id: if folder { path } else { self.id? },
            name: self.name,
            parent,
            folder,
            content_type: None,
            size: self.size,
        })
    }
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    entries: Vec<Metadata>,
    cursor: String,
    has_more: bool,
}

#[derive(Deserialize, Default)]
struct DropboxError {
    #[serde(default)]
    error_summary: String,
    #[serde(default)]
    error: Value,
}

/// JSON for the `Dropbox-API-Arg` header: every character outside ASCII escaped.
fn header_json(v: &Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

impl Dropbox {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http,
            tokens: TokenCache::default(),
            api_url: settings.text("apiUrl").to_string(),
            content_url: settings.text("contentUrl").to_string(),
            app_key: settings.text("appKey").to_string(),
            app_secret: settings.text("appSecret").to_string(),
            refresh_token: settings.text("refreshToken").to_string(),
            member: settings.text("teamMemberId").to_string(),
            root: format!("/{}", settings.text("folder").to_lowercase()),
        }
    }

    async fn token(&self) -> Result<(String, std::time::Duration), Failure> {
        super::oauth::form_grant(
            &self.http,
            &format!("{}/oauth2/token", self.api_url),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &self.refresh_token),
                ("client_id", &self.app_key),
                ("client_secret", &self.app_secret),
            ],
        )
        .await
    }

    /// A request with the token (and the team member it acts for).
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        super::oauth::authorized(
            &self.tokens,
            || self.token(),
            |t| {
                let request = build(t).bearer_auth(t);
                if self.member.is_empty() {
                    request
                } else {
                    request.header("Dropbox-API-Select-User", &self.member)
                }
            },
            |r| failure(r, what),
        )
        .await
    }

    /// An RPC call: a JSON argument, a JSON answer.
    async fn rpc(&self, route: &str, arg: &Value, what: &str) -> Result<Value, Failure> {
        let url = format!("{}/2/{route}", self.api_url);
        let response = self.call(|_| self.http.post(&url).json(arg), what).await?;
        web::json(response, what).await
    }

    /// A content upload call: the argument in the header, the bytes as the body.
    async fn content(
        &self,
        route: &str,
        arg: &Value,
        body: bytes::Bytes,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        let url = format!("{}/2/{route}", self.content_url);
        let arg = header_json(arg);
        self.call(
            |_| {
                self.http
                    .post(&url)
                    .header("Dropbox-API-Arg", &arg)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            },
            what,
        )
        .await
    }

    /// The root folder, made where missing.
    pub async fn root(&self) -> Result<String, Failure> {
        self.make_folder(&self.root).await?;
        Ok(self.root.clone())
    }

    /// A folder at `path`, made where missing: its lowercased path.
    async fn make_folder(&self, path: &str) -> Result<String, Failure> {
        match self
            .rpc(
                "files/create_folder_v2",
                &json!({"path": path, "autorename": false}),
                "making a folder",
            )
            .await
        {
            Ok(made) => Ok(made["metadata"]["path_lower"]
                .as_str()
                .unwrap_or(path)
                .to_string()),
            Err(Failure::Permanent(reason)) if reason.contains("path/conflict") => {
                Ok(path.to_lowercase())
            }
            Err(f) => Err(f),
        }
    }

    pub async fn folder_in(&self, parent: &str, name: &str) -> Result<String, Failure> {
        self.make_folder(&format!("{parent}/{name}")).await
    }

    /// Pages of a listing, from its first answer.
    async fn listing(
        &self,
        first: Listing,
        limit: usize,
    ) -> Result<(Vec<Metadata>, String, bool), Failure> {
        let (mut entries, mut cursor, mut more) = (first.entries, first.cursor, first.has_more);
        while more && entries.len() < limit {
            let next: Listing = serde_json::from_value(
                self.rpc(
                    "files/list_folder/continue",
                    &json!({"cursor": cursor}),
                    "listing a folder",
                )
                .await?,
            )
            .map_err(|e| Failure::Transient(format!("a listing that is not Dropbox's: {e}")))?;
            entries.extend(next.entries);
            cursor = next.cursor;
            more = next.has_more;
        }
        Ok((entries, cursor, more))
    }

    pub async fn names_in(&self, folder: &str) -> Result<Vec<String>, Failure> {
        let first: Listing = serde_json::from_value(
            self.rpc(
                "files/list_folder",
                &json!({"path": folder, "recursive": false, "limit": 2000}),
                "listing a folder",
            )
            .await?,
        )
        .map_err(|e| Failure::Transient(format!("a listing that is not Dropbox's: {e}")))?;
        let (entries, _, _) = self.listing(first, 100_000).await?;
        Ok(entries.into_iter().map(|m| m.name).collect())
    }

    fn commit(target: &Target<'_>) -> Value {
        json!({"path": format!("{}/{}", target.folder, target.name), "mode": "overwrite",
            "autorename": false, "mute": true})
    }

    /// A document's bytes to `{folder}/{name}`, overwriting: one upload under 8 MiB, else a
    /// session (the kept one resumed at the offset Dropbox has).
    pub async fn upload(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Uploaded, Stop> {
        let done = if source.size() < SMALL {
            let bytes = source.whole(SMALL).await?;
            let response = self
                .content(
                    "files/upload",
                    &Self::commit(target),
                    bytes,
                    "uploading a file",
                )
                .await?;
            web::json::<Value>(response, "an uploaded file").await?
        } else {
            self.session(target, source, keeper).await?
        };
        let id = done["id"]
            .as_str()
            .ok_or_else(|| Stop::Service(Failure::Transient("an upload without an id".into())))?;
        Ok(Uploaded {
            id: id.to_string(),
            link: None,
        })
    }

    async fn session(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Value, Stop> {
        let kept = target
            .session
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        let (mut session, mut from) = match kept {
            Some(k) => (
                k["id"].as_str().map(str::to_string),
                k["offset"].as_u64().unwrap_or(0),
            ),
            None => (None, 0),
        };
        // At most twice: once more from the offset Dropbox says it has.
        for _ in 0..3 {
            match self
                .parts(target, source, keeper, (&mut session, from))
                .await
            {
                Ok(done) => return Ok(done),
                Err(Stop::Service(Failure::Permanent(reason)))
                    if reason.contains("incorrect_offset") =>
                {
                    from = reason
                        .split("correct_offset=")
                        .nth(1)
                        .and_then(|n| n.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                }
                Err(Stop::Service(Failure::Permanent(reason)))
                    if reason.contains("not_found") || reason.contains("closed") =>
                {
                    session = None;
                    from = 0;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Failure::Transient("the upload session did not end with the file".into()).into())
    }

    /// Sends the parts from `from`, the session and its offset kept after each; the last
    /// part finishes it.
    async fn parts(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
        (session, from): (&mut Option<String>, u64),
    ) -> Result<Value, Stop> {
        let total = source.size();
        let mut ranges = source.ranges(from, PART).await?;
        while let Some((start, part)) = ranges.next().await? {
            let end = start + part.len() as u64;
            let id = match session.clone() {
                None => {
                    let answer = self
                        .content(
                            "files/upload_session/start",
                            &json!({"close": false}),
                            part,
                            "starting an upload session",
                        )
                        .await?;
                    let started: Value = web::json(answer, "an upload session").await?;
                    let id = started["session_id"]
                        .as_str()
                        .ok_or_else(|| {
                            Stop::Service(Failure::Transient("a session without an id".into()))
                        })?
                        .to_string();
                    *session = Some(id.clone());
                    keeper
                        .session(Some(&json!({"id": id, "offset": end}).to_string()))
                        .await?;
                    if end == total {
                        return self.finish(&id, end, target).await;
                    }
                    continue;
                }
                Some(id) => id,
            };
            let cursor = json!({"session_id": id, "offset": start});
            if end == total {
                let arg = json!({"cursor": cursor, "commit": Self::commit(target)});
                let response = self
                    .content(
                        "files/upload_session/finish",
                        &arg,
                        part,
                        "finishing an upload",
                    )
                    .await?;
                return Ok(web::json(response, "an uploaded file").await?);
            }
            self.content(
                "files/upload_session/append_v2",
                &json!({"cursor": cursor, "close": false}),
                part,
                "uploading a part",
            )
            .await?;
            keeper
                .session(Some(&json!({"id": id, "offset": end}).to_string()))
                .await?;
        }
        // Every byte was sent before (a crash before the finish): finish with none.
        match session.clone() {
            Some(id) => self.finish(&id, total, target).await,
            None => Err(Failure::Transient("an empty upload session".into()).into()),
        }
    }

    async fn finish(&self, id: &str, offset: u64, target: &Target<'_>) -> Result<Value, Stop> {
        let arg =
            json!({"cursor": {"session_id": id, "offset": offset}, "commit": Self::commit(target)});
        let response = self
            .content(
                "files/upload_session/finish",
                &arg,
                bytes::Bytes::new(),
                "finishing an upload",
            )
            .await?;
        Ok(web::json(response, "an uploaded file").await?)
    }

    /// A page of changes: `list_folder` of the root (recursive) first, then
    /// `list_folder/continue` from the kept cursor.
    pub async fn changes(&self, cursor: Option<&str>) -> Result<Changed, Failure> {
        let answer = match cursor {
            Some(cursor) => {
                self.rpc(
                    "files/list_folder/continue",
                    &json!({"cursor": cursor}),
                    "reading the folder's changes",
                )
                .await
            }
            None => {
                let root = self.root().await?;
                self.rpc(
                    "files/list_folder",
                    &json!({"path": root, "recursive": true, "include_deleted": false, "limit": 2000}),
                    "reading the folder's changes",
                )
                .await
            }
        };
        let answer = match answer {
            Err(Failure::Permanent(reason)) if reason.contains("reset") => {
                return Err(Failure::Resync);
            }
            other => other?,
        };
        let page: Listing = serde_json::from_value(answer)
            .map_err(|e| Failure::Transient(format!("a listing that is not Dropbox's: {e}")))?;
        Ok(Changed {
            entries: page
                .entries
                .into_iter()
                .filter(|m| m.tag == "file" || m.tag == "folder")
                .filter_map(Metadata::entry)
                .collect(),
            cursor: Some(page.cursor),
            more: page.has_more,
        })
    }

    pub async fn download(&self, id: &str) -> Result<reqwest::Response, Failure> {
        let url = format!("{}/2/files/download", self.content_url);
        let arg = header_json(&json!({"path": id}));
        self.call(
            |_| self.http.post(&url).header("Dropbox-API-Arg", &arg),
            "reading a file",
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        match self
            .rpc(
                "files/delete_v2",
                &json!({"path": path}),
                "deleting a folder",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Permanent(reason)) if reason.contains("not_found") => Ok(()),
            Err(f) => Err(f),
        }
    }
}

/// Dropbox's error answer read: a route's own error (409, `error_summary`, with
/// `correct_offset` when it names one), what the administrator must do, or how long to wait.
async fn failure(response: reqwest::Response, what: &str) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<DropboxError>(&body).unwrap_or_default();
    let mut explained = format!("{what}: {}", web::said(&error.error_summary));
    if let Some(offset) = error
        .error
        .get("correct_offset")
        .or_else(|| error.error.pointer("/lookup_failed/correct_offset"))
        .and_then(Value::as_u64)
    {
        explained = format!("{explained} correct_offset={offset}");
    }
    let explained = explained.trim().to_string();
    let summary = error.error_summary.as_str();
    match status.as_u16() {
        // Dropbox's 400 is plain text that repeats the argument (a path: not shown).
        400 if summary.is_empty() => Failure::Credentials(format!(
            "{explained} Dropbox refused the call (HTTP 400; is the app, or teamMemberId for a team app, right?)"
        )),
        401 if summary.contains("expired_access_token") => Failure::Credentials(explained),
        401 => Failure::Reauthorize(format!("{explained} (connect the app again)")),
        409 => Failure::Permanent(explained),
        _ => web::by_status(status, retry_after, explained),
    }
}
