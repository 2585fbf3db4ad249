//! `gmail`: a Google Workspace mailbox through the Gmail API, as a service account with
//! domain-wide delegation (the JWT bearer grant, `sub` the mailbox's user). New mail by
//! `users.history.list` from the kept `historyId`; the first sync, and one after the kept
//! id became too old (`404`), lists the inbox's mail since the connector was made, at most
//! [`FULL_SYNC`] of it. Each mail by `users.messages.get?format=raw`; sending by
//! `users.messages.send` with the raw MIME.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde::{Deserialize, Serialize};

use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use super::{Changes, MailTransport, MailboxSource};
use crate::domain::connector::{ServiceAccount, Settings};

/// The scope asked for: read the mailbox and send from it.
pub const SCOPE: &str = "https://www.googleapis.com/auth/gmail.modify";
/// The most mail a full sync takes.
const FULL_SYNC: usize = 500;
/// Gmail's own limit on a message sent through the API.
const MAX_SEND: usize = 35 * 1024 * 1024;

pub struct Gmail {
    http: reqwest::Client,
    tokens: TokenCache,
    api_url: String,
    account: Option<ServiceAccount>,
    user: String,
    /// The first sync takes mail received after this (seconds since the epoch).
    since: i64,
}

/// Where a sync stands, kept as JSON in the connector's cursor.
#[derive(Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "camelCase")]
enum Cursor {
    /// Reading the history from `start`; `page` within it.
    History { start: String, page: Option<String> },
    /// Listing the inbox in a full sync; `then` is the history id to go on from after it.
    Listing {
        then: String,
        page: Option<String>,
        taken: usize,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    history_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryPage {
    #[serde(default)]
    history: Vec<History>,
    next_page_token: Option<String>,
    history_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct History {
    #[serde(default)]
    messages_added: Vec<Added>,
}

#[derive(Deserialize)]
struct Added {
    message: MessageRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageRef {
    id: String,
    #[serde(default)]
    label_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    messages: Vec<MessageRef>,
    next_page_token: Option<String>,
}

/// A mail's `raw`, borrowed from the answer (base64url has nothing JSON escapes).
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    raw: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Sent {
    id: Option<String>,
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
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Gmail {
    pub fn new(http: reqwest::Client, settings: &Settings, since: i64) -> Self {
        Self {
            http,
            tokens: TokenCache::default(),
            api_url: settings.text("apiUrl").to_string(),
            account: ServiceAccount::parse(settings.text("serviceAccount")).ok(),
            user: settings.text("user").to_string(),
            since,
        }
    }

    fn user_url(&self) -> String {
        format!("{}/gmail/v1/users/{}", self.api_url, segment(&self.user))
    }

    /// A request with the token (see [`oauth::authorized`]).
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
            || oauth::jwt_bearer(&self.http, account, &self.user, SCOPE),
            build,
            |response| failure(response, what),
        )
        .await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<T, Failure> {
        let response = self
            .call(
                |token| self.http.get(url).query(query).bearer_auth(token),
                what,
            )
            .await?;
        web::json(response, what).await
    }

    async fn history(&self, start: String, page: Option<String>) -> Result<Changes, Failure> {
        let mut query = vec![
            ("startHistoryId", start.clone()),
            ("historyTypes", "messageAdded".to_string()),
            ("labelId", "INBOX".to_string()),
            ("maxResults", "100".to_string()),
        ];
        if let Some(p) = &page {
            query.push(("pageToken", p.clone()));
        }
        let read: HistoryPage = match self
            .get(
                &format!("{}/history", self.user_url()),
                &query,
                "reading the history",
            )
            .await
        {
            Err(Failure::Permanent(s)) if s.contains("HTTP 404") => return Err(Failure::Resync),
            other => other?,
        };
        let ids = read
            .history
            .into_iter()
            .flat_map(|h| h.messages_added)
            .map(|a| a.message)
            .filter(|m| m.label_ids.is_empty() || m.label_ids.iter().any(|l| l == "INBOX"))
            .map(|m| m.id)
            .collect();
        let (cursor, more) = match read.next_page_token {
            Some(next) => (
                Cursor::History {
                    start,
                    page: Some(next),
                },
                true,
            ),
            None => (
                Cursor::History {
                    start: read.history_id.unwrap_or(start),
                    page: None,
                },
                false,
            ),
        };
        Ok(Changes {
            ids,
            cursor: Some(to_text(&cursor)),
            more,
        })
    }

    async fn listing(
        &self,
        then: String,
        page: Option<String>,
        taken: usize,
    ) -> Result<Changes, Failure> {
        let mut query = vec![
            ("labelIds", "INBOX".to_string()),
            ("q", format!("after:{}", self.since)),
            ("maxResults", "100".to_string()),
        ];
        if let Some(p) = &page {
            query.push(("pageToken", p.clone()));
        }
        let read: ListPage = self
            .get(
                &format!("{}/messages", self.user_url()),
                &query,
                "listing the inbox",
            )
            .await?;
        let mut ids: Vec<String> = read.messages.into_iter().map(|m| m.id).collect();
        ids.truncate(FULL_SYNC.saturating_sub(taken));
        let taken = taken + ids.len();
        let (cursor, more) = match read.next_page_token {
            Some(next) if taken < FULL_SYNC => (
                Cursor::Listing {
                    then,
                    page: Some(next),
                    taken,
                },
                true,
            ),
            // Listed: the history from where it stood before, in the same sync.
            _ => (
                Cursor::History {
                    start: then,
                    page: None,
                },
                true,
            ),
        };
        Ok(Changes {
            ids,
            cursor: Some(to_text(&cursor)),
            more,
        })
    }
}

fn to_text(cursor: &Cursor) -> String {
    serde_json::to_string(cursor).unwrap_or_default()
}

async fn failure(response: reqwest::Response, what: &str) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let error = serde_json::from_slice::<GoogleError>(&body)
        .unwrap_or_default()
        .error;
    let explained = format!("{what}: {} {}", error.status, web::said(&error.message));
    let explained = explained.trim().to_string();
    match status.as_u16() {
        // Gmail's per-user rate limits are 403 and 429 with `rateLimitExceeded`.
        403 if error.message.contains("ate Limit") || error.status == "RESOURCE_EXHAUSTED" => {
            Failure::Throttled {
                reason: explained,
                retry_after,
            }
        }
        403 => Failure::Reauthorize(format!(
            "{explained} (delegate the gmail.modify scope to the service account's client id)"
        )),
        400 if error.status == "FAILED_PRECONDITION" => {
            Failure::Credentials(format!("{explained} (is `user` a mailbox of the domain?)"))
        }
        _ => web::by_status(status, retry_after, explained),
    }
}

impl MailboxSource for Gmail {
    async fn changes(&self, cursor: Option<&str>) -> Result<Changes, Failure> {
        match cursor.and_then(|c| serde_json::from_str::<Cursor>(c).ok()) {
            Some(Cursor::History { start, page }) => self.history(start, page).await,
            Some(Cursor::Listing { then, page, taken }) => self.listing(then, page, taken).await,
            None => {
                // Where the history stands now, then the mail since the connector was made.
                let profile: Profile = self
                    .get(
                        &format!("{}/profile", self.user_url()),
                        &[],
                        "reading the mailbox's profile",
                    )
                    .await?;
                self.listing(profile.history_id, None, 0).await
            }
        }
    }

    async fn fetch(&self, id: &str) -> Result<Vec<u8>, Failure> {
        let url = format!("{}/messages/{}", self.user_url(), segment(id));
        let response = self
            .call(
                |token| {
                    self.http
                        .get(&url)
                        .query(&[("format", "raw")])
                        .bearer_auth(token)
                },
                "reading a mail",
            )
            .await?;
        // base64url of up to 64 MiB of mail, in JSON.
        let bytes = web::body(response, super::graph::MAX_MAIL / 3 * 4 + 64 * 1024).await?;
        let raw: Raw = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Transient(format!("reading a mail: not the JSON expected ({e})"))
        })?;
        let text = raw.raw.trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Failure::Permanent("reading a mail: raw is not base64url".into()))
    }
}

impl MailTransport for Gmail {
    async fn send(&self, raw: &[u8]) -> Result<Option<String>, Failure> {
        if raw.len() > MAX_SEND {
            return Err(Failure::Permanent(format!(
                "the message is {} bytes; Gmail sends up to 35 MB",
                raw.len()
            )));
        }
        let body = serde_json::json!({ "raw": URL_SAFE.encode(raw) }).to_string();
        let url = format!("{}/messages/send", self.user_url());
        let response = self
            .call(
                |token| {
                    self.http
                        .post(&url)
                        .bearer_auth(token)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                "sending through the mailbox",
            )
            .await?;
        let sent: Sent = web::json(response, "the sent message").await?;
        Ok(sent.id)
    }
}
