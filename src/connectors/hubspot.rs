//! HubSpot: a private app's token, the CRM objects API on its date-versioned paths
//! (`/crm/objects/2026-03/…`), falling back to the `v3` paths where an account answers
//! those with 404:
//!
//! - the record by a search on `caseNumberProperty` in `objectType`, else the contact by
//!   `email`;
//! - emails as `emails` and SMS as `communications` (channel `SMS`), created by the batch
//!   endpoint, then associated with the record or contact by the v4 default association;
//! - the record's status and paid properties by `PATCH`;
//! - deletion by the batch archive endpoint.
//!
//! Once per message: every activity carries the message's id in `messageIdProperty`, and
//! each batch searches for those before it creates any (an attempt that created and then
//! lost its answer, or was throttled before it associated, left them there). Rate limits (`429`, the ten-second and
//! the daily policy) are throttles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::crm::{Activity, Logged, RecordFacts, Target};
use super::web::{self, Failure};
use crate::domain::connector::Settings;
use crate::domain::time::rfc3339;

/// The dated API version parley speaks first.
const VERSION: &str = "2026-03";
/// Inputs of one batch call.
const BATCH: usize = 100;

pub struct Hubspot {
    http: reqwest::Client,
    api: String,
    token: String,
    object: String,
    case_property: String,
    id_property: String,
    status_property: String,
    paid_property: String,
    /// The account answered a dated path with 404: the `v3` paths from then on.
    v3: AtomicBool,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    results: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    id: String,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    category: String,
    #[serde(default, rename = "policyName")]
    policy: String,
}

impl Hubspot {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        let text = |n: &str| settings.text(n).to_string();
        Self {
            http,
            api: text("apiUrl"),
            token: text("accessToken"),
            object: text("objectType"),
            case_property: text("caseNumberProperty"),
            id_property: text("messageIdProperty"),
            status_property: text("statusProperty"),
            paid_property: text("paidProperty"),
            v3: AtomicBool::new(false),
        }
    }

    /// A call on an object type's path (`rest` after `/{objectType}`): the dated one first.
    async fn objects(
        &self,
        method: reqwest::Method,
        object: &str,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Failure> {
        if !self.v3.load(Ordering::Relaxed) {
            let dated = format!("{}/crm/objects/{VERSION}/{object}{rest}", self.api);
            match self.send(method.clone(), &dated, body).await {
                Err(Failure::Permanent(why))
                    if why.contains("HTTP 404") && why.contains("path") =>
                {
                    tracing::info!("HubSpot has no dated API here: using the v3 paths");
                    self.v3.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let v3 = format!("{}/crm/v3/objects/{object}{rest}", self.api);
        self.send(method, &v3, body).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Failure> {
        let mut waited = 0;
        loop {
            let mut r = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&self.token);
            if let Some(b) = body {
                r = r.json(b);
            }
            let response = r.send().await.map_err(web::network)?;
            if response.status().is_success() {
                return Ok(response);
            }
            match failure(response).await {
                f @ Failure::Throttled { .. } if web::wait_out(&f, &mut waited).await => {}
                f => return Err(f),
            }
        }
    }

    pub async fn check(&self) -> Result<(), Failure> {
        self.search(
            &self.object,
            &self.case_property,
            json!({"operator": "EQ", "value": "-"}),
            1,
        )
        .await
        .map(|_| ())
    }

    async fn search(
        &self,
        object: &str,
        property: &str,
        filter: Value,
        limit: usize,
    ) -> Result<Vec<Object>, Failure> {
        let mut f = filter;
        f["propertyName"] = json!(property);
        let body = json!({"filterGroups": [{"filters": [f]}],
            "properties": ["hs_object_id", property], "limit": limit});
        let response = self
            .objects(reqwest::Method::POST, object, "/search", Some(&body))
            .await?;
        let found: Found = web::json(response, "a HubSpot search").await?;
        Ok(found.results)
    }

    pub async fn find_record(&self, case_number: &str) -> Result<Option<String>, Failure> {
        let found = self
            .search(
                &self.object,
                &self.case_property,
                json!({"operator": "EQ", "value": case_number}),
                1,
            )
            .await?;
        Ok(found.into_iter().next().map(|o| o.id))
    }

    pub async fn find_contact(&self, email: &str) -> Result<Option<String>, Failure> {
        let found = self
            .search(
                "contacts",
                "email",
                json!({"operator": "EQ", "value": email}),
                1,
            )
            .await?;
        Ok(found.into_iter().next().map(|o| o.id))
    }

    fn properties(&self, a: &Activity) -> Value {
        let mut p = if a.sms {
            json!({"hs_timestamp": rfc3339(a.at), "hs_communication_channel_type": "SMS",
                "hs_communication_logged_from": "CRM", "hs_communication_body": a.body})
        } else {
            let headers = json!({"from": {"email": a.from},
                "to": a.to.iter().map(|t| json!({"email": t})).collect::<Vec<_>>()});
            let mut p = json!({"hs_timestamp": rfc3339(a.at),
                "hs_email_direction": if a.inbound { "INCOMING_EMAIL" } else { "EMAIL" },
                "hs_email_subject": a.subject.clone().unwrap_or_default(),
                "hs_email_text": a.body, "hs_email_headers": headers.to_string()});
            if !a.inbound {
                p["hs_email_status"] = json!("SENT");
            }
            p
        };
        p[&self.id_property] = json!(a.key);
        p
    }

    /// The activities of `keys` already there (an earlier attempt created them), by key.
    async fn existing(
        &self,
        object: &str,
        keys: &[&str],
    ) -> Result<Vec<(String, String)>, Failure> {
        let found = self
            .search(
                object,
                &self.id_property,
                json!({"operator": "IN", "values": keys}),
                keys.len(),
            )
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|o| {
                let key = o.properties.get(&self.id_property)?.as_str()?.to_string();
                Some((key, o.id))
            })
            .collect())
    }

    /// Creates the activities (after a search for those already there), then associates each with its
    /// record or contact.
    pub async fn log(
        &self,
        batch: &[(&Activity, &Target)],
    ) -> Result<Vec<Result<Logged, Failure>>, Failure> {
        let mut ids: Vec<Option<String>> = vec![None; batch.len()];
        for object in ["emails", "communications"] {
            let mine: Vec<usize> = (0..batch.len())
                .filter(|i| (batch[*i].0.sms) == (object == "communications"))
                .collect();
            for chunk in mine.chunks(BATCH) {
                self.create(object, batch, chunk, &mut ids).await?;
                self.associate(object, batch, chunk, &ids).await?;
            }
        }
        Ok(ids
            .into_iter()
            .zip(batch)
            .map(|(id, (a, _))| {
                let object = if a.sms { "communications" } else { "emails" };
                id.map(|id| Logged {
                    remote_id: format!("{object}/{id}"),
                    link: None,
                })
                .ok_or_else(|| Failure::Transient("HubSpot did not create it".into()))
            })
            .collect())
    }

    async fn create(
        &self,
        object: &str,
        batch: &[(&Activity, &Target)],
        chunk: &[usize],
        ids: &mut [Option<String>],
    ) -> Result<(), Failure> {
        // Always, not only on a retry: an attempt put off by a throttle after its create
        // went through is not counted as one.
        let keys: Vec<&str> = chunk.iter().map(|i| batch[*i].0.key.as_str()).collect();
        for (key, id) in self.existing(object, &keys).await? {
            if let Some(i) = chunk.iter().find(|i| batch[**i].0.key == key) {
                ids[*i] = Some(id);
            }
        }
        let fresh: Vec<usize> = chunk
            .iter()
            .copied()
            .filter(|i| ids[*i].is_none())
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Value> = fresh
            .iter()
            .map(|i| json!({"properties": self.properties(batch[*i].0)}))
            .collect();
        let response = self
            .objects(
                reqwest::Method::POST,
                object,
                "/batch/create",
                Some(&json!({"inputs": inputs})),
            )
            .await?;
        let created: Found = web::json(response, "a HubSpot batch create").await?;
        // The results come in any order: each is found by its key.
        for o in created.results {
            let key = o.properties.get(&self.id_property).and_then(Value::as_str);
            if let Some(i) = fresh
                .iter()
                .find(|i| Some(batch[**i].0.key.as_str()) == key)
            {
                ids[*i] = Some(o.id);
            }
        }
        Ok(())
    }

    async fn associate(
        &self,
        object: &str,
        batch: &[(&Activity, &Target)],
        chunk: &[usize],
        ids: &[Option<String>],
    ) -> Result<(), Failure> {
        for to_type in [self.object.as_str(), "contacts"] {
            let inputs: Vec<Value> = chunk
                .iter()
                .filter_map(|i| {
                    let to = match (batch[*i].1, to_type == "contacts") {
                        (Target::Record(id), false) => id,
                        (Target::Contact(id), true) => id,
                        _ => return None,
                    };
                    Some(json!({"from": {"id": ids[*i].as_ref()?}, "to": {"id": to}}))
                })
                .collect();
            if inputs.is_empty() {
                continue;
            }
            let url = format!(
                "{}/crm/v4/associations/{object}/{to_type}/batch/associate/default",
                self.api
            );
            self.send(
                reqwest::Method::POST,
                &url,
                Some(&json!({"inputs": inputs})),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn update(&self, record: &str, facts: &RecordFacts) -> Result<(), Failure> {
        let mut properties = json!({});
        properties[&self.status_property] = json!(facts.status);
        properties[&self.paid_property] = json!(facts.paid);
        let rest = format!("/{}", urlencoded(record));
        self.objects(
            reqwest::Method::PATCH,
            &self.object,
            &rest,
            Some(&json!({"properties": properties})),
        )
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, remote: &[&str]) -> Result<Vec<Result<(), Failure>>, Failure> {
        for object in ["emails", "communications"] {
            let inputs: Vec<Value> = remote
                .iter()
                .filter_map(|r| r.strip_prefix(object)?.strip_prefix('/'))
                .map(|id| json!({"id": id}))
                .collect();
            for chunk in inputs.chunks(BATCH) {
                self.objects(
                    reqwest::Method::POST,
                    object,
                    "/batch/archive",
                    Some(&json!({"inputs": chunk})),
                )
                .await?;
            }
        }
        Ok(remote.iter().map(|_| Ok(())).collect())
    }
}

fn urlencoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error answer (`{"status": "error", "message", "category", "policyName"?}`).
async fn failure(response: reqwest::Response) -> Failure {
    let status = response.status();
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let what = format!(
        "HubSpot answered {} {}: {}",
        status.as_u16(),
        e.category,
        web::said(&e.message)
    );
    match status.as_u16() {
        429 => Failure::Throttled {
            reason: what,
            // The daily limit resets at midnight in the account's zone: an hour at a time.
            retry_after: Some(retry_after.unwrap_or(if e.policy == "DAILY" {
                Duration::from_secs(3600)
            } else {
                // The ten-second window rolls: a second's wait, a few times in place.
                Duration::from_secs(1)
            })),
        },
        401 => Failure::Credentials(what),
        403 => Failure::Reauthorize(what),
        // A path this account does not have (the dated API before it is rolled out).
        404 if e.category != "OBJECT_NOT_FOUND" => {
            Failure::Permanent(format!("{what} (HTTP 404: no such path)"))
        }
        _ => web::by_status(status, retry_after, what),
    }
}
