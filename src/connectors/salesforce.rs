//! Salesforce: the OAuth 2.0 JWT bearer flow (an assertion signed RS256 with the connected
//! app's certificate key, for the integration user), then the REST API at the org's
//! `instance_url`:
//!
//! - the record by SOQL (`SELECT Id FROM {object} WHERE {caseNumberField} = '…'`), else the
//!   contact by `Email`;
//! - activities upserted by the external id field (`externalIdField`, an External ID on
//!   `EmailMessage` and `Task`) through the sObject Collections upsert, 200 a call: a retry
//!   updates what an earlier attempt created, so a message is one activity however often it
//!   is sent. An email on a record is an `EmailMessage` (`ParentId` on a Case, else
//!   `RelatedToId`); an SMS, or an email when only a contact was found, a `Task` (`WhatId`
//!   or `WhoId`);
//! - the record's status and paid fields by `PATCH /sobjects/{object}/{id}`;
//! - deletion through the sObject Collections delete.
//!
//! `REQUEST_LIMIT_EXCEEDED` (the org's API limit) is a throttle; `INVALID_SESSION_ID` after
//! one new token is the credentials.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::crm::{Activity, Logged, RecordFacts, Target};
use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use crate::domain::connector::Settings;
use crate::domain::time::rfc3339;

/// The REST API version parley speaks.
const API: &str = "/services/data/v62.0";
/// Records of one sObject Collections call.
const COLLECTION: usize = 200;
/// How long an org over its API limit is left alone (the limit is per rolling 24 hours).
const LIMIT_WAIT: Duration = Duration::from_secs(900);

pub struct Salesforce {
    http: reqwest::Client,
    login_url: String,
    client_id: String,
    username: String,
    key: String,
    object: String,
    case_field: String,
    external_id: String,
    status_field: String,
    paid_field: String,
    tokens: TokenCache,
    /// The org's `instance_url`, as the last token said.
    instance: std::sync::Mutex<String>,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    instance_url: String,
}

#[derive(Deserialize)]
struct Query {
    #[serde(default)]
    records: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Deserialize)]
struct Saved {
    #[serde(default)]
    id: Option<String>,
    success: bool,
    #[serde(default)]
    errors: Vec<SaveError>,
}

#[derive(Deserialize)]
struct SaveError {
    #[serde(default, rename = "statusCode")]
    status_code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default, rename = "errorCode")]
    error_code: String,
    #[serde(default)]
    message: String,
}

impl Salesforce {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        let text = |n: &str| settings.text(n).to_string();
        Self {
            http,
            login_url: text("loginUrl"),
            client_id: text("clientId"),
            username: text("username"),
            key: text("privateKey"),
            object: text("object"),
            case_field: text("caseNumberField"),
            external_id: text("externalIdField"),
            status_field: text("statusField"),
            paid_field: text("paidField"),
            tokens: TokenCache::default(),
            instance: Default::default(),
        }
    }

    /// A new access token by the JWT bearer flow; the org's instance kept.
    async fn token(&self) -> Result<(String, Duration), Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Salesforce takes an assertion valid for at most three minutes.
        let claims = json!({"iss": self.client_id, "sub": self.username,
            "aud": self.login_url, "exp": now + 170});
        let assertion = oauth::signed_rs256(&claims, &self.key, "settings.privateKey")?;
        let granted: Granted = oauth::grant(
            &self.http,
            &format!("{}/services/oauth2/token", self.login_url),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ],
        )
        .await?;
        let instance = granted.instance_url.trim_end_matches('/');
        let fits = url::Url::parse(instance)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some());
        if !fits {
            return Err(Failure::Transient(
                "the token endpoint named no usable instance_url".into(),
            ));
        }
        *self.instance.lock().unwrap_or_else(|e| e.into_inner()) = instance.to_string();
        // Its lifetime is the org's session timeout, not told: a 401 fetches another.
        Ok((granted.access_token, Duration::from_secs(3600)))
    }

    fn instance(&self) -> String {
        self.instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A call to the REST API (`path` after the version), with the token.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Failure> {
        oauth::authorized(
            &self.tokens,
            || self.token(),
            |token| {
                let mut r = self
                    .http
                    .request(method.clone(), format!("{}{API}{path}", self.instance()))
                    .bearer_auth(token);
                if let Some(b) = body {
                    r = r.json(b);
                }
                r
            },
            failure,
        )
        .await
    }

    pub async fn check(&self) -> Result<(), Failure> {
        self.tokens.get(self.token()).await.map(|_| ())
    }

    async fn first_id(&self, soql: String) -> Result<Option<String>, Failure> {
        let q: String = url::form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        let response = self
            .call(reqwest::Method::GET, &format!("/query?q={q}"), None)
            .await?;
        let found: Query = web::json(response, "a Salesforce query").await?;
        Ok(found.records.into_iter().next().map(|r| r.id))
    }

    pub async fn find_record(&self, case_number: &str) -> Result<Option<String>, Failure> {
        self.first_id(format!(
            "SELECT Id FROM {} WHERE {} = '{}' LIMIT 1",
            self.object,
            self.case_field,
            soql_text(case_number)
        ))
        .await
    }

    pub async fn find_contact(&self, email: &str) -> Result<Option<String>, Failure> {
        self.first_id(format!(
            "SELECT Id FROM Contact WHERE Email = '{}' LIMIT 1",
            soql_text(email)
        ))
        .await
    }

    /// An email on a record is an `EmailMessage`; anything else a `Task`.
    fn record_of(&self, a: &Activity, target: &Target) -> (&'static str, Value) {
        let subject = a.subject.clone().unwrap_or_default();
        match target {
            Target::Record(id) if !a.sms => {
                let link = if self.object == "Case" {
                    "ParentId"
                } else {
                    "RelatedToId"
                };
                let mut v = json!({"attributes": {"type": "EmailMessage"},
                    "Subject": cut(&subject, 3000), "TextBody": a.body,
                    "FromAddress": cut(&a.from, 1000),
                    "ToAddress": cut(&a.to.join("; "), 4000), "Incoming": a.inbound,
                    "MessageDate": rfc3339(a.at), "Status": if a.inbound { "0" } else { "3" }});
                v[link] = json!(id);
                v[&self.external_id] = json!(a.key);
                ("EmailMessage", v)
            }
            _ => {
                let (what, who) = match target {
                    Target::Record(id) => (Some(id), None),
                    Target::Contact(id) => (None, Some(id)),
                };
                let kind = if a.sms { "SMS" } else { "Email" };
                let way = if a.inbound { "from" } else { "to" };
                let party = if a.inbound {
                    a.from.clone()
                } else {
                    a.to.join(", ")
                };
                let title: String = match a.subject.as_deref().filter(|s| !s.is_empty()) {
                    Some(s) => format!("{kind} {way} {party}: {s}"),
                    None => format!("{kind} {way} {party}"),
                };
                let mut v = json!({"attributes": {"type": "Task"},
                    "Subject": cut(&title, 255), "Description": a.body,
                    "ActivityDate": rfc3339(a.at).get(..10).unwrap_or_default(),
                    "Status": "Completed", "Priority": "Normal",
                    "TaskSubtype": if a.sms { "Task" } else { "Email" }});
                if let Some(id) = what {
                    v["WhatId"] = json!(id);
                }
                if let Some(id) = who {
                    v["WhoId"] = json!(id);
                }
                v[&self.external_id] = json!(a.key);
                ("Task", v)
            }
        }
    }

    /// Upserts the activities by their external id, 200 a call per sObject type.
    pub async fn log(
        &self,
        batch: &[(&Activity, &Target)],
    ) -> Result<Vec<Result<Logged, Failure>>, Failure> {
        let mut out: Vec<Option<Result<Logged, Failure>>> = vec![None; batch.len()];
        for sobject in ["EmailMessage", "Task"] {
            let mine: Vec<(usize, Value)> = batch
                .iter()
                .enumerate()
                .map(|(i, (a, t))| (i, self.record_of(a, t)))
                .filter(|(_, (kind, _))| *kind == sobject)
                .map(|(i, (_, v))| (i, v))
                .collect();
            for chunk in mine.chunks(COLLECTION) {
                let records: Vec<&Value> = chunk.iter().map(|(_, v)| v).collect();
                let body = json!({"allOrNone": false, "records": records});
                let path = format!("/composite/sobjects/{sobject}/{}", self.external_id);
                let response = self
                    .call(reqwest::Method::PATCH, &path, Some(&body))
                    .await?;
                let saved: Vec<Saved> = web::json(response, "a Salesforce upsert").await?;
                if saved.len() != chunk.len() {
                    return Err(Failure::Transient(
                        "Salesforce answered an upsert for another number of records".into(),
                    ));
                }
                for ((i, _), s) in chunk.iter().zip(saved) {
                    out[*i] = Some(self.saved(sobject, s));
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Failure::Transient("not sent".into()))))
            .collect())
    }

    fn saved(&self, sobject: &str, s: Saved) -> Result<Logged, Failure> {
        match (s.success, s.id) {
            (true, Some(id)) => Ok(Logged {
                link: Some(format!(
                    "{}/lightning/r/{sobject}/{id}/view",
                    self.instance()
                )),
                remote_id: format!("{sobject}/{id}"),
            }),
            _ => {
                let e = s.errors.into_iter().next();
                let (code, message) = e.map(|e| (e.status_code, e.message)).unwrap_or_default();
                Err(Failure::Permanent(format!(
                    "Salesforce refused the {sobject}: {code} {}",
                    web::said(&message)
                )))
            }
        }
    }

    pub async fn update(&self, record: &str, facts: &RecordFacts) -> Result<(), Failure> {
        let paid: Value = serde_json::from_str(&facts.paid).unwrap_or(Value::Null);
        let mut body = json!({});
        body[&self.status_field] = json!(facts.status);
        body[&self.paid_field] = paid;
        let path = format!("/sobjects/{}/{}", self.object, id_part(record));
        self.call(reqwest::Method::PATCH, &path, Some(&body))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, remote: &[&str]) -> Result<Vec<Result<(), Failure>>, Failure> {
        let mut out = Vec::with_capacity(remote.len());
        for chunk in remote.chunks(COLLECTION) {
            let ids: Vec<&str> = chunk.iter().map(|r| id_part(r)).collect();
            let path = format!(
                "/composite/sobjects?ids={}&allOrNone=false",
                ids.iter()
                    .map(|i| url::form_urlencoded::byte_serialize(i.as_bytes()).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let response = self.call(reqwest::Method::DELETE, &path, None).await?;
            let saved: Vec<Saved> = web::json(response, "a Salesforce delete").await?;
            for (i, _) in chunk.iter().enumerate() {
                out.push(match saved.get(i) {
                    Some(s) if s.success => Ok(()),
                    // Deleted before: nothing is left to delete.
                    Some(s)
                        if s.errors.iter().any(|e| {
                            matches!(
                                e.status_code.as_str(),
                                "ENTITY_IS_DELETED" | "INVALID_CROSS_REFERENCE_KEY"
                            )
                        }) =>
                    {
                        Ok(())
                    }
                    _ => Err(Failure::Transient("Salesforce did not delete it".into())),
                });
            }
        }
        Ok(out)
    }
}

/// At most `n` characters of a field Salesforce bounds.
fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The id of a `Type/id`.
fn id_part(remote: &str) -> &str {
    remote.rsplit('/').next().unwrap_or(remote)
}

/// A value inside a SOQL string literal: backslash and quote escaped, controls dropped.
fn soql_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().filter(|c| !c.is_control()) {
        if matches!(c, '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An error answer of the REST API (`[{"errorCode", "message"}]`).
async fn failure(response: reqwest::Response) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let errors: Vec<ApiError> = serde_json::from_slice(&body).unwrap_or_default();
    let first = errors.into_iter().next().unwrap_or_default();
    let what = format!(
        "Salesforce answered {}: {} {}",
        status.as_u16(),
        first.error_code,
        web::said(&first.message)
    );
    match first.error_code.as_str() {
        "REQUEST_LIMIT_EXCEEDED" => Failure::Throttled {
            reason: what,
            retry_after: Some(retry_after.unwrap_or(LIMIT_WAIT)),
        },
        "INVALID_SESSION_ID" => Failure::Credentials(what),
        "INSUFFICIENT_ACCESS" | "API_DISABLED_FOR_ORG" | "API_CURRENTLY_DISABLED" => {
            Failure::Reauthorize(what)
        }
        "NOT_FOUND" | "INVALID_FIELD" | "MALFORMED_QUERY" | "INVALID_TYPE" => {
            Failure::Permanent(what)
        }
        _ => web::by_status(status, retry_after, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_values_cannot_leave_their_literal() {
        assert_eq!(soql_text("O'Brien"), "O\\'Brien");
        assert_eq!(soql_text("a\\' OR Id != '"), "a\\\\\\' OR Id != \\'");
        assert_eq!(soql_text("x\ny"), "xy");
    }
}
