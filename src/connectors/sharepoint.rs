//! `sharepoint`: a SharePoint document library (or a OneDrive) through Microsoft Graph's
//! drives, every item addressed by its id. The token by the client credentials grant at the
//! tenant's own endpoint; the app needs `Sites.Selected`, granted on the one site by an
//! administrator (README). Folders by `POST .../items/{parent}/children`; a file is made
//! empty the same way, then filled: under 4 MiB by `PUT .../items/{id}/content`, above by an
//! upload session (`createUploadSession`, then byte ranges of 10 MiB, a multiple of 320 KiB,
//! to its pre-authorised URL, which takes no token); changes by the drive root's `delta`
//! (the `deltaLink` kept); a file's bytes from the pre-authorised download URL its item
//! names (or `.../content`'s redirect to one), read without the token.
//!
//! Documentation: <https://learn.microsoft.com/graph/api/driveitem-post-children>,
//! <https://learn.microsoft.com/graph/api/driveitem-put-content>,
//! <https://learn.microsoft.com/graph/api/driveitem-createuploadsession>,
//! <https://learn.microsoft.com/graph/api/driveitem-delta>,
//! <https://learn.microsoft.com/graph/api/driveitem-get-content>,
//! <https://learn.microsoft.com/graph/api/driveitem-delete>.

use serde::Deserialize;
use serde_json::json;

use super::drives::{Changed, Entry, Keeper, Source, Stop, Target, Uploaded};
use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use crate::domain::connector::Settings;

/// Files up to this size go in one `PUT .../content` (Graph's limit is 4 MB).
pub const SMALL: u64 = 4 * 1024 * 1024;
/// One byte range of an upload session: a multiple of 320 KiB, under Graph's 60 MiB.
pub const RANGE: usize = 32 * 320 * 1024;
/// Items a page of children or of the delta holds at most.
const PAGE: u32 = 200;

pub struct Sharepoint {
    http: reqwest::Client,
    tokens: TokenCache,
    graph_url: String,
    /// Where its tokens come from.
    app: oauth::GraphApp,
    drive: String,
    /// The root folder's path under the drive's root, by its names.
    folder: Vec<String>,
    /// The root folder's id, once found or made.
    root: tokio::sync::OnceCell<String>,
}

/// A drive item as Graph describes it (the fields parley reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub parent_reference: Option<ParentReference>,
    #[serde(default)]
    pub folder: Option<serde_json::Value>,
    #[serde(default)]
    pub file: Option<FileFacet>,
    #[serde(default)]
    pub deleted: Option<serde_json::Value>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub web_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileFacet {
    #[serde(default)]
    pub mime_type: Option<String>,
}

impl Item {
    fn entry(self) -> Entry {
        Entry {
            parent: self.parent_reference.and_then(|p| p.id),
            folder: self.folder.is_some(),
            content_type: self.file.and_then(|f| f.mime_type),
            size: self.size,
            id: self.id,
            name: self.name,
        }
    }
}

#[derive(Deserialize)]
struct ItemPage {
    #[serde(default)]
    value: Vec<Item>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    upload_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionState {
    #[serde(default)]
    next_expected_ranges: Vec<String>,
}

#[derive(Deserialize, Default)]
struct GraphError {
    #[serde(default)]
    error: GraphErrorBody,
}

#[derive(Deserialize, Default)]
struct GraphErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A page of the drive's changes.
pub struct Delta {
    pub items: Vec<Item>,
    pub cursor: Option<String>,
    pub more: bool,
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Sharepoint {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            app: oauth::GraphApp::new(http.clone(), settings),
            http,
            tokens: TokenCache::default(),
            graph_url: settings.text("graphUrl").to_string(),
            drive: settings.text("driveId").to_string(),
            folder: settings
                .text("folder")
                .split('/')
                .map(str::to_string)
                .collect(),
            root: tokio::sync::OnceCell::new(),
        }
    }

    fn item_url(&self, id: &str) -> String {
        format!(
            "{}/v1.0/drives/{}/items/{}",
            self.graph_url,
            segment(&self.drive),
            segment(id)
        )
    }

    /// A request with the token; errors read the way Graph explains them.
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        oauth::authorized(
            &self.tokens,
            || self.app.token(),
            build,
            |response| failure(response, what),
        )
        .await
    }

    /// A link Graph gave is followed only when it points where parley sends its token.
    fn own_link(&self, link: &str) -> Result<String, Failure> {
        if link.starts_with(&format!("{}/", self.graph_url)) {
            Ok(link.to_string())
        } else {
            Err(Failure::Permanent(
                "Graph answered a link to another server; it is not followed".into(),
            ))
        }
    }

    /// The connector's root folder (`folder` under the drive's root), made where missing.
    pub async fn root(&self) -> Result<String, Failure> {
        self.root
            .get_or_try_init(|| async {
                let mut at = "root".to_string();
                for name in &self.folder {
                    at = self.folder_in(&at, name).await?;
                }
                Ok(at)
            })
            .await
            .cloned()
    }

    /// The folder `name` in `parent`, made when there is none.
    pub async fn folder_in(&self, parent: &str, name: &str) -> Result<String, Failure> {
        if let Some(found) = self.child(parent, name).await? {
            return Ok(found.id);
        }
        let url = format!("{}/children", self.item_url(parent));
        let body = json!({"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"});
        match self
            .call(
                |t| self.http.post(&url).bearer_auth(t).json(&body),
                "making a folder",
            )
            .await
        {
            Ok(response) => Ok(web::json::<Item>(response, "a new folder").await?.id),
            // Made meanwhile by someone else: that one.
            Err(Failure::Permanent(reason)) if reason.contains("nameAlreadyExists") => self
                .child(parent, name)
                .await?
                .map(|i| i.id)
                .ok_or(Failure::Transient(reason)),
            Err(f) => Err(f),
        }
    }

    /// The item named `name` in `parent` (names compare without regard to case, as
    /// SharePoint's do).
    async fn child(&self, parent: &str, name: &str) -> Result<Option<Item>, Failure> {
        Ok(self
            .children(parent)
            .await?
            .into_iter()
            .find(|i| i.name.to_lowercase() == name.to_lowercase()))
    }

    /// Every item in a folder (its pages followed, up to 100).
    pub async fn children(&self, parent: &str) -> Result<Vec<Item>, Failure> {
        let mut url = format!(
            "{}/children?$top={PAGE}&$select=id,name,folder,file,size,parentReference",
            self.item_url(parent)
        );
        let mut out = Vec::new();
        for _ in 0..100 {
            let response = self
                .call(|t| self.http.get(&url).bearer_auth(t), "listing a folder")
                .await?;
            let page: ItemPage = web::json(response, "a folder's items").await?;
            out.extend(page.value);
            match page.next_link {
                Some(next) => url = self.own_link(&next)?,
                None => break,
            }
        }
        Ok(out)
    }

    /// The names in a folder.
    pub async fn names_in(&self, folder: &str) -> Result<Vec<String>, Failure> {
        Ok(self
            .children(folder)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect())
    }

    /// A document's bytes into its file: the file made empty first (and kept) where it has
    /// none, then filled by one `PUT` under 4 MiB, or through an upload session (the kept
    /// one resumed where Graph says it stopped).
    pub async fn upload(
        &self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Uploaded, Stop> {
        let item = match target.remote {
            Some(id) => id.to_string(),
            None => {
                let made = self.new_file(target.folder, target.name).await?;
                keeper.remote(&made.id).await?;
                made.id
            }
        };
        let done = if source.size() < SMALL {
            let bytes = source.whole(SMALL).await?;
            self.put_content(&item, bytes).await?
        } else {
            self.upload_session(&item, source, keeper, target.session)
                .await?
        };
        Ok(Uploaded {
            id: done.id,
            link: done.web_url,
        })
    }

    /// A large file through an upload session: the kept one resumed where Graph says it
    /// stopped, or a new one (kept before its first range is sent). One range in memory.
    async fn upload_session(
        &self,
        item: &str,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
        kept: Option<&str>,
    ) -> Result<Item, Stop> {
        let resumed = match kept {
            Some(url) => self
                .session_offset(url)
                .await?
                .map(|at| (url.to_string(), at)),
            None => None,
        };
        let (session, from) = match resumed {
            Some(found) => found,
            None => {
                let url = self.open_session(item).await?;
                keeper.session(Some(&url)).await?;
                (url, 0)
            }
        };
        let mut ranges = source.ranges(from, RANGE).await?;
        let mut done = None;
        while let Some((start, part)) = ranges.next().await? {
            done = self.put_range(&session, start, source.size(), part).await?;
        }
        done.ok_or_else(|| {
            Stop::Service(Failure::Transient(
                "the upload session did not end with the file".into(),
            ))
        })
    }

    /// A page of the drive's changes, as entries (what was deleted left out).
    pub async fn changes(&self, cursor: Option<&str>) -> Result<Changed, Failure> {
        let page = self.delta(cursor).await?;
        Ok(Changed {
            entries: page
                .items
                .into_iter()
                .filter(|i| i.deleted.is_none() && (i.folder.is_some() || i.file.is_some()))
                .map(Item::entry)
                .collect(),
            cursor: page.cursor,
            more: page.more,
        })
    }

    /// An empty file `name` in `parent`, replacing one of that name: the item a document's
    /// bytes then go into (by its id).
    pub async fn new_file(&self, parent: &str, name: &str) -> Result<Item, Failure> {
        let url = format!("{}/children", self.item_url(parent));
        let body =
            json!({"name": name, "file": {}, "@microsoft.graph.conflictBehavior": "replace"});
        let response = self
            .call(
                |t| self.http.post(&url).bearer_auth(t).json(&body),
                "making a file",
            )
            .await?;
        web::json(response, "a new file").await
    }

    /// The whole content of a small file, in one request.
    pub async fn put_content(&self, id: &str, bytes: bytes::Bytes) -> Result<Item, Failure> {
        let url = format!("{}/content", self.item_url(id));
        let response = self
            .call(
                |t| {
                    self.http
                        .put(&url)
                        .bearer_auth(t)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(bytes.clone())
                },
                "uploading a file",
            )
            .await?;
        web::json(response, "an uploaded file").await
    }

    /// An upload session for new content of the file: its pre-authorised URL.
    pub async fn open_session(&self, id: &str) -> Result<String, Failure> {
        let url = format!("{}/createUploadSession", self.item_url(id));
        let body = json!({"item": {"@microsoft.graph.conflictBehavior": "replace"}});
        let response = self
            .call(
                |t| self.http.post(&url).bearer_auth(t).json(&body),
                "opening an upload session",
            )
            .await?;
        let session: Session = web::json(response, "an upload session").await?;
        url::Url::parse(&session.upload_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| Failure::Permanent("an upload session without a web URL".into()))?;
        Ok(session.upload_url)
    }

    /// Where an upload session goes on from (the first byte it expects); none when the
    /// session is gone (expired, finished or cancelled).
    pub async fn session_offset(&self, session: &str) -> Result<Option<u64>, Failure> {
        let response = self.http.get(session).send().await.map_err(web::network)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(failure(response, "reading an upload session").await);
        }
        let state: SessionState = web::json(response, "an upload session's state").await?;
        Ok(state
            .next_expected_ranges
            .first()
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok()))
    }

    /// One byte range of an upload session (no token: the URL is the authority). The item
    /// when it was the last range.
    pub async fn put_range(
        &self,
        session: &str,
        start: u64,
        total: u64,
        bytes: bytes::Bytes,
    ) -> Result<Option<Item>, Failure> {
        let end = start + bytes.len() as u64 - 1;
        let response = self
            .http
            .put(session)
            .header(
                reqwest::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{total}"),
            )
            .header(reqwest::header::CONTENT_LENGTH, bytes.len())
            .body(bytes)
            .send()
            .await
            .map_err(web::network)?;
        match response.status().as_u16() {
            202 => Ok(None),
            200 | 201 => Ok(Some(web::json(response, "an uploaded file").await?)),
            _ => Err(failure(response, "uploading a byte range").await),
        }
    }

    /// A page of the drive's changes since `cursor` (none: everything, once).
    pub async fn delta(&self, cursor: Option<&str>) -> Result<Delta, Failure> {
        let url = match cursor {
            Some(link) => self.own_link(link)?,
            None => format!(
                "{}/delta?$top={PAGE}&$select=id,name,folder,file,size,parentReference,deleted",
                self.item_url("root")
            ),
        };
        let response = self
            .call(
                |t| self.http.get(&url).bearer_auth(t),
                "reading the drive's changes",
            )
            .await?;
        let page: ItemPage = web::json(response, "the drive's changes").await?;
        Ok(match (page.next_link, page.delta_link) {
            (Some(next), _) => Delta {
                items: page.value,
                cursor: Some(self.own_link(&next)?),
                more: true,
            },
            (None, Some(delta)) => Delta {
                items: page.value,
                cursor: Some(self.own_link(&delta)?),
                more: false,
            },
            (None, None) => {
                return Err(Failure::Transient(
                    "a delta page with neither nextLink nor deltaLink".into(),
                ));
            }
        })
    }

    /// A file's bytes, as a streaming answer, from the pre-authorised URL the item names
    /// (`@microsoft.graph.downloadUrl`), read without the token; where the item names none,
    /// `.../content`, whose redirect to such a URL is followed once, without the token.
    pub async fn download(&self, id: &str) -> Result<reqwest::Response, Failure> {
        let response = self
            .call(
                |t| self.http.get(self.item_url(id)).bearer_auth(t),
                "reading a file",
            )
            .await?;
        let item: serde_json::Value = web::json(response, "a file").await?;
        let location = match item["@microsoft.graph.downloadUrl"].as_str() {
            Some(link) => url::Url::parse(link).ok(),
            None => {
                let url = format!("{}/content", self.item_url(id));
                let response = oauth::authorized_redirect(
                    &self.tokens,
                    || self.app.token(),
                    |t| self.http.get(&url).bearer_auth(t),
                    |response| failure(response, "reading a file"),
                )
                .await?;
                if !response.status().is_redirection() {
                    return Ok(response);
                }
                response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url::Url::parse(&url).ok()?.join(l).ok())
            }
        }
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| Failure::Permanent("a file without a download URL".into()))?;
        let response = self.http.get(location).send().await.map_err(web::network)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(failure(response, "reading a file").await)
        }
    }

    /// Deletes an item (a folder with all in it); one already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), Failure> {
        let url = self.item_url(id);
        match self
            .call(
                |t| self.http.delete(&url).bearer_auth(t),
                "deleting a folder",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Permanent(reason)) if reason.contains("itemNotFound") => Ok(()),
            Err(f) => Err(f),
        }
    }
}

/// Graph's error answer read: what the administrator must do, or how long to wait.
async fn failure(response: reqwest::Response, what: &str) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<GraphError>(&body)
        .unwrap_or_default()
        .error;
    if status == reqwest::StatusCode::GONE
        || matches!(error.code.as_str(), "resyncRequired" | "syncStateNotFound")
    {
        return Failure::Resync;
    }
    let explained = format!("{what}: {} {}", error.code, web::said(&error.message));
    let explained = explained.trim().to_string();
    match status.as_u16() {
        403 => Failure::Reauthorize(format!(
            "{explained} (grant the app Sites.Selected with write access on this site)"
        )),
        404 if error.code == "itemNotFound" && what == "listing a folder" => {
            Failure::Credentials(format!("{explained} (is `driveId` right?)"))
        }
        _ => web::by_status(status, retry_after, explained),
    }
}
