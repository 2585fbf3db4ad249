//! `google_drive`: a folder of a Google shared drive (`folderId`) through the Drive API v3.
//! The token by the service account's JWT bearer grant, as the account itself (no subject:
//! a service account holds no files of its own, so it is made a `Manager` of the shared
//! drive: deleting a case folder there takes an organizer), scope `drive`; `supportsAllDrives` on every call. Folders and empty
//! files by `files.create` (metadata); a file's bytes into it by `files.update` on the upload
//! path: one media request under 5 MiB, a resumable session above (10 MiB chunks, a
//! multiple of 256 KiB; `308` with `Range` until the file; a session's state asked with
//! `Content-Range: bytes */size`). The first round lists the root's case folders (after
//! taking `changes.getStartPageToken`), later rounds `changes.list` from the kept token. A
//! file's bytes by `files.get?alt=media`; deletion by `files.delete` (a shared drive's
//! files are deleted, not trashed).
//!
//! Documentation: <https://developers.google.com/workspace/drive/api/reference/rest/v3/files>,
//! <https://developers.google.com/workspace/drive/api/guides/manage-uploads> (media and
//! resumable uploads), <https://developers.google.com/workspace/drive/api/guides/manage-changes>,
//! <https://developers.google.com/workspace/drive/api/guides/enable-shareddrives>,
//! <https://developers.google.com/identity/protocols/oauth2/service-account#httprest>.

use serde::Deserialize;
use serde_json::json;

use super::drives::{Changed, Entry, Keeper, Source, Stop, Target, Uploaded};
use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use crate::domain::connector::{ServiceAccount, Settings};

const SCOPE: &str = "https://www.googleapis.com/auth/drive";
const FOLDER: &str = "application/vnd.google-apps.folder";
/// Files up to this size go in one media request (Google's advice for larger is resumable).
pub const SMALL: u64 = 5 * 1024 * 1024;
/// One chunk of a resumable session: a multiple of 256 KiB.
pub const CHUNK: usize = 40 * 256 * 1024;
/// The fields parley reads of a file.
const FILE_FIELDS: &str = "id,name,mimeType,parents,size,webViewLink";
/// Files a page of a listing or of the changes holds at most.
const PAGE: u32 = 1000;

pub struct GoogleDrive {
    http: reqwest::Client,
    tokens: TokenCache,
    api_url: String,
    account: Option<ServiceAccount>,
    folder: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    parents: Vec<String>,
    /// Drive writes 64-bit numbers as strings.
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    web_view_link: Option<String>,
    #[serde(default)]
    trashed: Option<bool>,
}

impl File {
    fn entry(self) -> Entry {
        Entry {
            folder: self.mime_type.as_deref() == Some(FOLDER),
            parent: self.parents.into_iter().next(),
            size: self.size.and_then(|s| s.parse().ok()),
            content_type: self.mime_type,
            id: self.id,
            name: self.name,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileList {
    #[serde(default)]
    files: Vec<File>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeList {
    #[serde(default)]
    changes: Vec<Change>,
    next_page_token: Option<String>,
    new_start_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    #[serde(default)]
    removed: Option<bool>,
    #[serde(default)]
    file: Option<File>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartToken {
    start_page_token: String,
}

#[derive(Deserialize, Default)]
struct GoogleError {
    #[serde(default)]
    error: GoogleErrorBody,
}

#[derive(Deserialize, Default)]
struct GoogleErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    errors: Vec<GoogleReason>,
}

#[derive(Deserialize, Default)]
struct GoogleReason {
    #[serde(default)]
    reason: String,
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A value inside a `q` query's quotes.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

impl GoogleDrive {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http,
            tokens: TokenCache::default(),
            api_url: settings.text("apiUrl").to_string(),
            account: ServiceAccount::parse(settings.text("serviceAccount")).ok(),
            folder: settings.text("folderId").to_string(),
        }
    }

    fn files_url(&self) -> String {
        format!("{}/drive/v3/files", self.api_url)
    }

    /// A request with the token; errors read the way Google explains them.
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        let account = self
            .account
            .as_ref()
            .ok_or_else(|| Failure::Credentials("serviceAccount is not a usable key".into()))?;
        oauth::authorized(
            &self.tokens,
            || oauth::jwt_bearer(&self.http, account, "", SCOPE),
            build,
            |response| failure(response, what),
        )
        .await
    }

    /// The connector's root: the folder it was given.
    pub async fn root(&self) -> Result<String, Failure> {
        Ok(self.folder.clone())
    }

    /// The files a `q` query finds (pages followed, up to 100).
    async fn list(&self, q: &str, what: &str) -> Result<Vec<File>, Failure> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..100 {
            let mut query = vec![
                ("q", q.to_string()),
                ("fields", format!("nextPageToken,files({FILE_FIELDS})")),
                ("pageSize", PAGE.to_string()),
                ("supportsAllDrives", "true".into()),
                ("includeItemsFromAllDrives", "true".into()),
            ];
            if let Some(token) = &page {
                query.push(("pageToken", token.clone()));
            }
            let url = self.files_url();
            let response = self
                .call(|t| self.http.get(&url).query(&query).bearer_auth(t), what)
                .await?;
            let list: FileList = web::json(response, what).await?;
            out.extend(list.files);
            match list.next_page_token {
                Some(next) => page = Some(next),
                None => break,
            }
        }
        Ok(out)
    }

    async fn children(&self, folder: &str) -> Result<Vec<File>, Failure> {
        self.list(
            &format!("'{}' in parents and trashed = false", quoted(folder)),
            "listing a folder",
        )
        .await
    }

    /// The folder `name` in `parent`, made when there is none.
    pub async fn folder_in(&self, parent: &str, name: &str) -> Result<String, Failure> {
        let q = format!(
            "'{}' in parents and name = '{}' and mimeType = '{FOLDER}' and trashed = false",
            quoted(parent),
            quoted(name)
        );
        if let Some(found) = self.list(&q, "finding a folder").await?.into_iter().next() {
            return Ok(found.id);
        }
        Ok(self.create(parent, name, Some(FOLDER)).await?.id)
    }

    /// A file's or folder's metadata made in `parent` (a file without content).
    async fn create(&self, parent: &str, name: &str, mime: Option<&str>) -> Result<File, Failure> {
        let mut body = json!({"name": name, "parents": [parent]});
        if let Some(mime) = mime {
            body["mimeType"] = json!(mime);
        }
        let url = self.files_url();
        let query = [("supportsAllDrives", "true"), ("fields", FILE_FIELDS)];
        let response = self
            .call(
                |t| {
                    self.http
                        .post(&url)
                        .query(&query)
                        .bearer_auth(t)
                        .json(&body)
                },
                "making a file",
            )
            .await?;
        web::json(response, "a new file").await
    }

    /// The names in a folder.
    pub async fn names_in(&self, folder: &str) -> Result<Vec<String>, Failure> {
        Ok(self
            .children(folder)
            .await?
            .into_iter()
            .map(|f| f.name)
            .collect())
    }

    fn upload_url(&self, id: &str) -> String {
        format!("{}/upload/drive/v3/files/{}", self.api_url, segment(id))
    }

    /// A document's bytes into its file: the file made without content first (and kept)
    /// where it has none, then filled by one media request under 5 MiB, or through a
    /// resumable session (the kept one resumed where Drive says it stopped). A file that
    /// had content gets a new revision.
    pub async fn upload(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Uploaded, Stop> {
        let item = match target.remote {
            Some(id) => id.to_string(),
            None => {
                let made = self.create(target.folder, target.name, None).await?;
                keeper.remote(&made.id).await?;
                made.id
            }
        };
        let done = if source.size() < SMALL {
            let bytes = source.whole(SMALL).await?;
            let url = self.upload_url(&item);
            let query = [
                ("uploadType", "media"),
                ("supportsAllDrives", "true"),
                ("fields", FILE_FIELDS),
            ];
            let response = self
                .call(
                    |t| {
                        self.http
                            .patch(&url)
                            .query(&query)
                            .bearer_auth(t)
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                            .body(bytes.clone())
                    },
                    "uploading a file",
                )
                .await?;
            web::json::<File>(response, "an uploaded file").await?
        } else {
            self.resumable(&item, source, keeper, target.session)
                .await?
        };
        Ok(Uploaded {
            id: done.id,
            link: done.web_view_link,
        })
    }

    /// A large file through a resumable session, one chunk in memory at a time.
    async fn resumable(
        &self,
        item: &str,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
        kept: Option<&str>,
    ) -> Result<File, Stop> {
        let total = source.size();
        let resumed = match kept {
            Some(session) => match self.session_state(session, total).await? {
                SessionState::Done(file) => return Ok(file),
                SessionState::At(at) => Some((session.to_string(), at)),
                SessionState::Gone => None,
            },
            None => None,
        };
        let (session, from) = match resumed {
            Some(found) => found,
            None => {
                let session = self.open_session(item, total).await?;
                keeper.session(Some(&session)).await?;
                (session, 0)
            }
        };
        let mut chunks = source.ranges(from, CHUNK).await?;
        while let Some((start, part)) = chunks.next().await? {
            let end = start + part.len() as u64 - 1;
            let response = self
                .http
                .put(&session)
                .header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                )
                .header(reqwest::header::CONTENT_LENGTH, part.len())
                .body(part)
                .send()
                .await
                .map_err(web::network)?;
            match response.status().as_u16() {
                308 => continue,
                200 | 201 => return Ok(web::json(response, "an uploaded file").await?),
                _ => return Err(failure(response, "uploading a chunk").await.into()),
            }
        }
        Err(Stop::Service(Failure::Transient(
            "the resumable session did not end with the file".into(),
        )))
    }

    /// A resumable session for new content of the file: its URL.
    async fn open_session(&self, item: &str, total: u64) -> Result<String, Failure> {
        let url = self.upload_url(item);
        let query = [
            ("uploadType", "resumable"),
            ("supportsAllDrives", "true"),
            ("fields", FILE_FIELDS),
        ];
        let response = self
            .call(
                |t| {
                    self.http
                        .patch(&url)
                        .query(&query)
                        .bearer_auth(t)
                        .header("X-Upload-Content-Length", total)
                        .header("X-Upload-Content-Type", "application/octet-stream")
                        .json(&json!({}))
                },
                "opening a resumable upload",
            )
            .await?;
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| url::Url::parse(l).is_ok_and(|u| matches!(u.scheme(), "https" | "http")))
            .map(str::to_string)
            .ok_or_else(|| Failure::Permanent("a resumable upload without a session URL".into()))
    }

    /// Where a resumable session stands: `308` with the bytes it has (`Range: bytes=0-n`,
    /// none: nothing yet), the file when it is whole, gone when it expired.
    async fn session_state(&self, session: &str, total: u64) -> Result<SessionState, Failure> {
        let response = self
            .http
            .put(session)
            .header(reqwest::header::CONTENT_RANGE, format!("bytes */{total}"))
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(web::network)?;
        match response.status().as_u16() {
            308 => {
                let at = response
                    .headers()
                    .get(reqwest::header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|r| r.strip_prefix("bytes=0-"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .map_or(0, |last| last + 1);
                Ok(SessionState::At(at))
            }
            200 | 201 => Ok(SessionState::Done(
                web::json(response, "an uploaded file").await?,
            )),
            404 | 410 => Ok(SessionState::Gone),
            _ => Err(failure(response, "reading a resumable upload").await),
        }
    }

    /// A page of changes: the first round lists the root's case folders and what is in
    /// them (the start token taken first, so nothing made meanwhile is missed); later
    /// rounds read `changes.list` from the kept token.
    pub async fn changes(&self, cursor: Option<&str>) -> Result<Changed, Failure> {
        let Some(token) = cursor else {
            return self.first_listing().await;
        };
        let query = [
            ("pageToken", token.to_string()),
            ("pageSize", PAGE.to_string()),
            ("supportsAllDrives", "true".into()),
            ("includeItemsFromAllDrives", "true".into()),
            (
                "fields",
                format!(
                    "nextPageToken,newStartPageToken,changes(removed,file({FILE_FIELDS},trashed))"
                ),
            ),
        ];
        let url = format!("{}/drive/v3/changes", self.api_url);
        let response = match self
            .call(
                |t| self.http.get(&url).query(&query).bearer_auth(t),
                "reading the drive's changes",
            )
            .await
        {
            // A page token Drive no longer knows: read everything again.
            Err(Failure::Permanent(reason)) if reason.contains("(HTTP 404") => {
                return Err(Failure::Resync);
            }
            other => other?,
        };
        let page: ChangeList = web::json(response, "the drive's changes").await?;
        let entries = page
            .changes
            .into_iter()
            .filter(|c| c.removed != Some(true))
            .filter_map(|c| c.file)
            .filter(|f| f.trashed != Some(true))
            .map(File::entry)
            .collect();
        Ok(match (page.next_page_token, page.new_start_page_token) {
            (Some(next), _) => Changed {
                entries,
                cursor: Some(next),
                more: true,
            },
            (None, Some(start)) => Changed {
                entries,
                cursor: Some(start),
                more: false,
            },
            (None, None) => {
                return Err(Failure::Transient(
                    "a page of changes with neither nextPageToken nor newStartPageToken".into(),
                ));
            }
        })
    }

    /// The first round: the start token, then the root's folders, the folders in those
    /// (document types) and their files.
    async fn first_listing(&self) -> Result<Changed, Failure> {
        let url = format!("{}/drive/v3/changes/startPageToken", self.api_url);
        let response = self
            .call(
                |t| {
                    self.http
                        .get(&url)
                        .query(&[("supportsAllDrives", "true")])
                        .bearer_auth(t)
                },
                "starting the drive's changes",
            )
            .await?;
        let start: StartToken = web::json(response, "the start of the changes").await?;
        let mut entries = Vec::new();
        let mut folders = vec![self.folder.clone()];
        // The root, the case folders, their document-type folders: three levels.
        for _ in 0..3 {
            let mut next = Vec::new();
            for folder in &folders {
                for file in self.children(folder).await? {
                    if file.mime_type.as_deref() == Some(FOLDER) {
                        next.push(file.id.clone());
                    }
                    entries.push(file.entry());
                }
            }
            folders = next;
        }
        Ok(Changed {
            entries,
            cursor: Some(start.start_page_token),
            more: false,
        })
    }

    /// A file's bytes, as a streaming answer.
    pub async fn download(&self, id: &str) -> Result<reqwest::Response, Failure> {
        let url = format!("{}/{}", self.files_url(), segment(id));
        let query = [("alt", "media"), ("supportsAllDrives", "true")];
        self.call(
            |t| self.http.get(&url).query(&query).bearer_auth(t),
            "reading a file",
        )
        .await
    }

    /// Deletes a file or a folder with all in it; one already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), Failure> {
        let url = format!("{}/{}", self.files_url(), segment(id));
        match self
            .call(
                |t| {
                    self.http
                        .delete(&url)
                        .query(&[("supportsAllDrives", "true")])
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

enum SessionState {
    At(u64),
    Done(File),
    Gone,
}

/// Google's error answer read: what the administrator must do, or how long to wait.
async fn failure(response: reqwest::Response, what: &str) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<GoogleError>(&body)
        .unwrap_or_default()
        .error;
    let reason = error
        .errors
        .first()
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    let explained = format!("{what}: {} {}", error.status, web::said(&error.message));
    let explained = explained.trim().to_string();
    match (status.as_u16(), reason.as_str()) {
        // Drive's rate limits are 403 and 429 with these reasons.
        (403 | 429, "userRateLimitExceeded" | "rateLimitExceeded") => Failure::Throttled {
            reason: explained,
            retry_after,
        },
        (403, _) => Failure::Reauthorize(format!(
            "{explained} (make the service account a Manager of the shared drive)"
        )),
        (404, _) if what == "listing a folder" || what == "finding a folder" => {
            Failure::Credentials(format!("{explained} (is `folderId` right?)"))
        }
        _ => web::by_status(status, retry_after, explained),
    }
}
