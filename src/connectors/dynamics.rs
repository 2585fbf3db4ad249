//! Dynamics 365 (Dataverse Web API v9.2): the client credentials grant at the tenant's
//! endpoint for `{environmentUrl}/.default`, OData v4 headers on every call:
//!
//! - the table's entity set and key by `EntityDefinitions(LogicalName='…')`, once;
//! - the record by `$filter={caseNumberColumn} eq '…'`, else the contact by
//!   `emailaddress1`;
//! - an email as an `emails` activity (`regardingobjectid` bound to the record or contact,
//!   the sender and recipients as activity parties), an SMS as a `tasks` activity;
//! - the record's status and paid columns by `PATCH` with `If-Match: *` (never an upsert);
//! - deletion by `DELETE emails(id)`.
//!
//! Once per message: the activity's id is made from the connector's settings and the
//! message's id, so a retry that finds it there (`0x80040237`, a duplicate key) knows it was
//! logged. Service protection's `429` is waited out as `Retry-After` says.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::crm::{Activity, Logged, RecordFacts, Target};
use super::oauth::{self, TokenCache};
use super::web::{self, Failure};
use crate::domain::connector::Settings;

const API: &str = "/api/data/v9.2";
/// Activities created at once (Dataverse's service protection counts concurrent requests
/// per user; 52 are allowed).
const AT_ONCE: usize = 8;
/// Dataverse's code for a record whose key exists.
const DUPLICATE: &str = "0x80040237";

pub struct Dynamics {
    http: reqwest::Client,
    login_url: String,
    tenant: String,
    client_id: String,
    secret: String,
    environment: String,
    table: String,
    case_column: String,
    status_column: String,
    paid_column: String,
    tokens: TokenCache,
    /// The table's entity set name and key column, read once.
    entity: tokio::sync::OnceCell<(String, String)>,
}

#[derive(Deserialize)]
struct Definition {
    #[serde(rename = "EntitySetName")]
    set: String,
    #[serde(rename = "PrimaryIdAttribute")]
    key: String,
}

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    value: Vec<serde_json::Map<String, Value>>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Dynamics {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        let text = |n: &str| settings.text(n).to_string();
        Self {
            http,
            login_url: text("loginUrl"),
            tenant: text("tenantId"),
            client_id: text("clientId"),
            secret: text("clientSecret"),
            environment: text("environmentUrl"),
            table: text("table"),
            case_column: text("caseNumberColumn"),
            status_column: text("statusColumn"),
            paid_column: text("paidColumn"),
            tokens: TokenCache::default(),
            entity: Default::default(),
        }
    }

    async fn token(&self) -> Result<(String, Duration), Failure> {
        oauth::client_credentials(
            &self.http,
            (&self.login_url, &self.tenant),
            (&self.client_id, &self.secret),
            &format!("{}/.default", self.environment),
        )
        .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        exists: bool,
    ) -> Result<reqwest::Response, Failure> {
        oauth::authorized(
            &self.tokens,
            || self.token(),
            |token| {
                let mut r = self
                    .http
                    .request(method.clone(), format!("{}{API}/{path}", self.environment))
                    .bearer_auth(token)
                    .header("OData-MaxVersion", "4.0")
                    .header("OData-Version", "4.0")
                    .header("Accept", "application/json");
                if exists {
                    r = r.header("If-Match", "*");
                }
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
        self.entity().await.map(|_| ())
    }

    /// The table's entity set and key column.
    async fn entity(&self) -> Result<&(String, String), Failure> {
        self.entity
            .get_or_try_init(|| async {
                let path = format!(
                    "EntityDefinitions(LogicalName='{}')?$select=EntitySetName,PrimaryIdAttribute",
                    self.table
                );
                let response = self.call(reqwest::Method::GET, &path, None, false).await?;
                let d: Definition = web::json(response, "a Dataverse table's definition").await?;
                if !crate::domain::connector::schema_name(&d.set)
                    || !crate::domain::connector::schema_name(&d.key)
                {
                    return Err(Failure::Permanent(
                        "Dataverse named the table's entity set oddly".into(),
                    ));
                }
                Ok((d.set, d.key))
            })
            .await
    }

    async fn first(
        &self,
        set: &str,
        key: &str,
        column: &str,
        value: &str,
    ) -> Result<Option<String>, Failure> {
        let filter = format!("{column} eq '{}'", value.replace('\'', "''"));
        // Spaces as %20: OData reads `+` in a query as itself.
        let filter =
            percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("{set}?$select={key}&$filter={filter}&$top=1");
        let response = self.call(reqwest::Method::GET, &path, None, false).await?;
        let found: Values = web::json(response, "a Dataverse query").await?;
        Ok(found
            .value
            .into_iter()
            .next()
            .and_then(|row| row.get(key).and_then(Value::as_str).map(str::to_string)))
    }

    pub async fn find_record(&self, case_number: &str) -> Result<Option<String>, Failure> {
        let (set, key) = self.entity().await?;
        self.first(set, key, &self.case_column, case_number).await
    }

    pub async fn find_contact(&self, email: &str) -> Result<Option<String>, Failure> {
        self.first("contacts", "contactid", "emailaddress1", email)
            .await
    }

    /// The activity's id: the same for the same message on the same environment.
    fn activity_id(&self, key: &str) -> String {
        let digest = sha2::Sha256::digest(format!("{}\n{key}", self.environment));
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        // A version 8 (name-based, custom) UUID.
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn body_of(&self, a: &Activity, target: &Target, set: &str) -> (&'static str, Value) {
        let table = if a.sms { "task" } else { "email" };
        let (bind_table, bind) = match target {
            Target::Record(id) => (self.table.as_str(), format!("/{set}({id})")),
            Target::Contact(id) => ("contact", format!("/contacts({id})")),
        };
        let id = self.activity_id(&a.key);
        let mut v = if a.sms {
            let way = if a.inbound { "from" } else { "to" };
            let party = if a.inbound {
                a.from.clone()
            } else {
                a.to.join(", ")
            };
            json!({"activityid": id, "subject": format!("SMS {way} {party}"), "description": a.body})
        } else {
            let mut parties = vec![json!({"participationtypemask": 1, "addressused": a.from})];
            parties.extend(
                a.to.iter()
                    .map(|to| json!({"participationtypemask": 2, "addressused": to})),
            );
            json!({"activityid": id, "subject": a.subject.clone().unwrap_or_default(),
                "description": a.body, "directioncode": !a.inbound,
                "email_activity_parties": parties})
        };
        v[format!("regardingobjectid_{bind_table}_{table}@odata.bind")] = json!(bind);
        (if a.sms { "tasks" } else { "emails" }, v)
    }

    /// Creates each activity with its own id; one found there was logged before.
    pub async fn log(
        &self,
        batch: &[(&Activity, &Target)],
    ) -> Result<Vec<Result<Logged, Failure>>, Failure> {
        use futures_util::StreamExt;
        let (set, _) = self.entity().await?;
        let created: Vec<Result<Logged, Failure>> = futures_util::stream::iter(
            (0..batch.len()).map(|i| self.create(batch[i].0, batch[i].1, set)),
        )
        .buffered(AT_ONCE)
        .collect()
        .await;
        // A failure of the service stops the batch; a refusal of one activity is its own.
        if let Some(Err(f)) = created
            .iter()
            .find(|r| matches!(r, Err(f) if !matches!(f, Failure::Permanent(_))))
        {
            return Err(f.clone());
        }
        Ok(created)
    }

    /// One activity, with its own id.
    async fn create(&self, a: &Activity, target: &Target, set: &str) -> Result<Logged, Failure> {
        let (activities, body) = self.body_of(a, target, set);
        let id = self.activity_id(&a.key);
        let logged = Logged {
            remote_id: format!("{activities}/{id}"),
            link: Some(format!(
                "{}/main.aspx?pagetype=entityrecord&etn={}&id={id}",
                self.environment,
                activities.trim_end_matches('s')
            )),
        };
        match self
            .call(reqwest::Method::POST, activities, Some(&body), false)
            .await
        {
            Ok(_) => Ok(logged),
            // Made before, by an attempt whose answer was lost.
            Err(Failure::Permanent(why)) if why.contains(DUPLICATE) => Ok(logged),
            Err(f) => Err(f),
        }
    }

    pub async fn update(&self, record: &str, facts: &RecordFacts) -> Result<(), Failure> {
        let (set, _) = self.entity().await?;
        let paid: Value = serde_json::from_str(&facts.paid).unwrap_or(Value::Null);
        let mut body = json!({});
        body[&self.status_column] = json!(facts.status);
        body[&self.paid_column] = paid;
        self.call(
            reqwest::Method::PATCH,
            &format!("{set}({record})"),
            Some(&body),
            true,
        )
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, remote: &[&str]) -> Result<Vec<Result<(), Failure>>, Failure> {
        let mut out = Vec::with_capacity(remote.len());
        for r in remote {
            let (set, id) = r.split_once('/').unwrap_or(("emails", r));
            match self
                .call(
                    reqwest::Method::DELETE,
                    &format!("{set}({id})"),
                    None,
                    false,
                )
                .await
            {
                Ok(_) => out.push(Ok(())),
                // Deleted before.
                Err(Failure::Permanent(why)) if why.contains("HTTP 404") => out.push(Ok(())),
                Err(f @ Failure::Permanent(_)) => out.push(Err(f)),
                Err(other) => return Err(other),
            }
        }
        Ok(out)
    }
}

/// An error answer of the Web API (`{"error": {"code", "message"}}`).
async fn failure(response: reqwest::Response) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let what = format!(
        "Dataverse answered {} (HTTP {}): {}",
        e.error.code,
        status.as_u16(),
        web::said(&e.error.message)
    );
    if e.error.code == DUPLICATE {
        return Failure::Permanent(what);
    }
    web::by_status(status, retry_after, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_id_is_a_uuid_of_the_message_and_the_environment() {
        let http = reqwest::Client::new();
        let mut s = Settings::default();
        s.public.insert(
            "environmentUrl".into(),
            json!("https://org.crm4.dynamics.com"),
        );
        let d = Dynamics::new(http, &s);
        let a = d.activity_id("msg_1");
        assert_eq!(a, d.activity_id("msg_1"));
        assert_ne!(a, d.activity_id("msg_2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
