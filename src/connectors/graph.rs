//! `microsoft365_mail`: a Microsoft 365 mailbox through Microsoft Graph. The token by the
//! client credentials grant at the tenant's own endpoint (never `/common`); new mail by the
//! inbox's message delta (`nextLink` pages, the `deltaLink` kept as the cursor; `410` or
//! `syncStateNotFound` starts again from the beginning); each mail's MIME by `$value`;
//! sending by `sendMail` with the base64 MIME parley built.

use base64::Engine;
use serde::Deserialize;

use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use super::{Changes, MailTransport, MailboxSource};
use crate::domain::connector::Settings;

/// The largest mail taken through `$value` (as IMAP takes).
pub const MAX_MAIL: usize = 64 * 1024 * 1024;
/// Graph takes a MIME message of up to 4 MB in a `sendMail` request (its base64 text).
const MAX_SEND: usize = 4 * 1024 * 1024;
/// Changes a delta page holds at most.
const PAGE: u32 = 50;

pub struct Graph {
    http: reqwest::Client,
    tokens: TokenCache,
    graph_url: String,
    /// Where its tokens come from.
    app: oauth::GraphApp,
    mailbox: String,
    /// Where the first sync starts: mail received from then on (the connector's creation).
    since: String,
}

#[derive(Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: Vec<DeltaItem>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
struct DeltaItem {
    id: String,
    #[serde(rename = "@removed")]
    removed: Option<serde_json::Value>,
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

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Graph {
    pub fn new(http: reqwest::Client, settings: &Settings, since: String) -> Self {
        Self {
            app: oauth::GraphApp::new(http.clone(), settings),
            http,
            tokens: TokenCache::default(),
            graph_url: settings.text("graphUrl").to_string(),
            mailbox: settings.text("mailbox").to_string(),
            since,
        }
    }

    fn user_url(&self) -> String {
        format!("{}/v1.0/users/{}", self.graph_url, segment(&self.mailbox))
    }

    /// A request with the token (see [`oauth::authorized`]); errors read the way Graph
    /// explains them.
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        oauth::authorized(
            &self.tokens,
            || self.app.token(),
            build,
            |response| self.failure(response, what),
        )
        .await
    }

    async fn failure(&self, response: reqwest::Response, what: &str) -> Failure {
        let status = response.status();
        let retry_after = web::retry_after(&response);
        let body = web::body(response, 64 * 1024).await.unwrap_or_default();
        let error = serde_json::from_slice::<GraphError>(&body)
            .unwrap_or_default()
            .error;
        if status == reqwest::StatusCode::GONE
            || matches!(
                error.code.as_str(),
                "syncStateNotFound" | "SyncStateNotFound" | "resyncRequired" | "syncStateInvalid"
            )
        {
            return Failure::Resync;
        }
        let explained = format!("{what}: {} {}", error.code, web::said(&error.message));
        let explained = explained.trim().to_string();
        match (status.as_u16(), error.code.as_str()) {
            (404, "ErrorInvalidUser" | "ResourceNotFound" | "MailboxNotEnabledForRESTAPI") => {
                Failure::Credentials(format!("{explained} (is `mailbox` right?)"))
            }
            (403, _) => Failure::Reauthorize(format!(
                "{explained} (grant the app Mail.Read and Mail.Send for this mailbox)"
            )),
            _ => web::by_status(status, retry_after, explained),
        }
    }

    /// The first delta request: the inbox's new mail since the connector was made.
    fn first_page(&self) -> String {
        format!(
            "{}/mailFolders/inbox/messages/delta?$select=id&$filter=receivedDateTime+ge+{}",
            self.user_url(),
            self.since
        )
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
}

impl MailboxSource for Graph {
    async fn changes(&self, cursor: Option<&str>) -> Result<Changes, Failure> {
        let url = match cursor {
            Some(link) => self.own_link(link)?,
            None => self.first_page(),
        };
        let response = self
            .call(
                |token| {
                    self.http
                        .get(&url)
                        .bearer_auth(token)
                        .header("Prefer", format!("odata.maxpagesize={PAGE}"))
                },
                "reading the inbox's changes",
            )
            .await?;
        let page: DeltaPage = web::json(response, "the inbox's changes").await?;
        let ids = page
            .value
            .into_iter()
            .filter(|i| i.removed.is_none())
            .map(|i| i.id)
            .collect();
        Ok(match (page.next_link, page.delta_link) {
            (Some(next), _) => Changes {
                ids,
                cursor: Some(self.own_link(&next)?),
                more: true,
            },
            (None, Some(delta)) => Changes {
                ids,
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

    async fn fetch(&self, id: &str) -> Result<Vec<u8>, Failure> {
        let url = format!("{}/messages/{}/$value", self.user_url(), segment(id));
        let response = self
            .call(
                |token| self.http.get(&url).bearer_auth(token),
                "reading a mail",
            )
            .await?;
        web::body(response, MAX_MAIL).await
    }
}

impl MailTransport for Graph {
    async fn send(&self, raw: &[u8]) -> Result<Option<String>, Failure> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        if encoded.len() > MAX_SEND {
            return Err(Failure::Permanent(format!(
                "the message is {} bytes; Microsoft Graph sends MIME of up to 4 MB (base64)",
                raw.len()
            )));
        }
        let url = format!("{}/sendMail", self.user_url());
        self.call(
            |token| {
                self.http
                    .post(&url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(encoded.clone())
            },
            "sending through the mailbox",
        )
        .await?;
        Ok(None)
    }
}
