//! A strict, stateful fake of HubSpot's CRM API as parley's HubSpot connector speaks it (a
//! private app's token; objects, search, batch create and archive, update; the v4 default
//! associations). Written from HubSpot's developer documentation:
//!
//! - <https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines> (the
//!   app's static token as `Authorization: Bearer`; 429 `errorType` `RATE_LIMIT`, `policyName`
//!   `TEN_SECONDLY_ROLLING` or `DAILY`);
//! - <https://developers.hubspot.com/docs/faq/api-error-responses> (`status`, `message`,
//!   `correlationId`, `category`; "Property values were not valid", `PROPERTY_DOESNT_EXIST`);
//! - <https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm>
//!   (`filterGroups` ORed, their `filters` ANDed; `value` for `EQ`, `values` for `IN`; `limit`
//!   up to 200, `after`; `total`, `results`, `paging.next.after`);
//! - <https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/objects/batch/create-objects>
//!   and <https://developers.hubspot.com/docs/api-reference/2026-03/crm/objects/custom-objects/batch/create-custom-objects>
//!   (`inputs[].properties`; 201 `COMPLETE` with `results`, `startedAt`, `completedAt`);
//! - <https://developers.hubspot.com/docs/api-reference/legacy/crm/activities/emails/guide>
//!   and <https://developers.hubspot.com/docs/api-reference/2026-03/crm/objects/communications/guide>
//!   (`hs_timestamp` required, ISO 8601 or epoch milliseconds; the enumerations' options);
//! - <https://developers.hubspot.com/docs/api-reference/latest/crm/associations/associate-records/update-association>
//!   and <https://developers.hubspot.com/docs/api-reference/latest/crm/associations/associate-records/batch/create-associations>
//!   (`associationSpec` `HUBSPOT_DEFINED`; email to deal 210, communication to deal 85, ...).
//!
//! What a client must match: the date-versioned paths, switched off, answer 404
//! `{"status":"error","message":"Not found"}` with no `category` (a missing record's 404 has
//! `OBJECT_NOT_FOUND`); a batch is refused whole; every batch takes 1 to 100 inputs; property
//! values are strings; `EQ` and `IN` ignore ASCII case; a lost write answers 502.

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post, put};
use serde_json::{Map, Value, json};

use crate::vendors::{bearer, serve};

/// The private app's access token.
pub const TOKEN: &str = "pat-eu1-4c1f9a2e-7d3b-4e8a-9f60-b5d2c8e1a7f3";
const DATED: &str = "/crm/objects/2026-03/";
const V3: &str = "/crm/v3/objects/";
const ACTIVITIES: [&str; 2] = ["emails", "communications"];
const RECORDS: [&str; 4] = ["contacts", "companies", "deals", "tickets"];

/// A refusal: its status and its body in HubSpot's shape.
type Refused = (StatusCode, Value);
type Answer = Result<Response, Refused>;

/// HubSpot's 400 `VALIDATION_ERROR` with a formatted message, as an `Err`.
macro_rules! invalid {
    ($($message:tt)+) => {
        Err(validation(format_args!($($message)+)))
    };
}

#[derive(Debug, Clone)]
pub struct HubObject {
    pub object_type: String,
    /// Numeric, as HubSpot's are.
    pub id: String,
    pub properties: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub from_type: String,
    pub from_id: String,
    pub to_type: String,
    pub to_id: String,
    pub type_id: u32,
}

#[allow(dead_code)]
#[derive(Default)]
pub struct HubspotState {
    pub token: String,
    /// Every object made, archived ones too, in the order made.
    pub objects: Vec<HubObject>,
    pub associations: Vec<Association>,
    next: u64,
    /// The next this many API calls are answered 429 (the daily limit's when `daily`).
    pub throttle: usize,
    pub daily: bool,
    /// The next this many batch creates store their objects, then answer 502.
    pub fail_after_write: usize,
    /// Whether `/crm/objects/2026-03/...` is served (else it answers 404).
    pub date_versioned: bool,
    /// Every call, refused or not.
    pub requests: usize,
    /// Batch creates past the token and the rate limit.
    pub batches: usize,
    pub date_path_requests: usize,
    pub v3_path_requests: usize,
    pub throttled: usize,
    /// The next batch create stores its objects, tells this, and never answers (the
    /// caller's process dies meanwhile).
    pub hang_after_write: Option<Arc<tokio::sync::Notify>>,
}

pub struct HubspotFake {
    pub state: Arc<Mutex<HubspotState>>,
    pub base: String,
}

type S = State<Arc<Mutex<HubspotState>>>;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An error in HubSpot's shape, without a `category`.
fn error(status: StatusCode, message: impl Display) -> Refused {
    let correlation = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"status": "error", "message": message.to_string(), "correlationId": correlation});
    (status, body)
}

fn refused(status: StatusCode, category: &str, message: impl Display) -> Refused {
    let (status, mut body) = error(status, message);
    body["category"] = json!(category);
    (status, body)
}

fn validation(message: impl Display) -> Refused {
    refused(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

/// A path HubSpot does not serve (or, switched off, a date-versioned one).
fn route_missing() -> Refused {
    error(StatusCode::NOT_FOUND, "Not found")
}

fn reply(result: Answer) -> Response {
    result.unwrap_or_else(|(status, body)| (status, axum::Json(body)).into_response())
}

/// The properties of an object type, or HubSpot's 400 for a type it does not know.
fn known(object_type: &str) -> Result<Vec<&'static str>, Refused> {
    let names = match object_type {
        "deals" => "dealname parley_case_number parley_status parley_paid",
        "tickets" => "subject parley_case_number parley_status parley_paid",
        "companies" => "name parley_case_number parley_status parley_paid",
        "contacts" => "email firstname lastname",
        "emails" => {
            "hs_timestamp hs_email_direction hs_email_subject hs_email_text hs_email_status \
             hs_email_headers parley_message_id"
        }
        "communications" => {
            "hs_timestamp hs_communication_channel_type hs_communication_logged_from \
             hs_communication_body parley_message_id"
        }
        _ => return invalid!("Unable to infer object type from: {object_type}"),
    };
    Ok(names.split_whitespace().chain(["hs_object_id"]).collect())
}

/// The options of an enumeration property.
fn options(property: &str) -> Option<&'static [&'static str]> {
    let allowed: &'static [&'static str] = match property {
        "hs_email_direction" => &["EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"],
        "hs_email_status" => &["BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT"],
        "hs_communication_channel_type" => &["WHATS_APP", "LINKEDIN_MESSAGE", "SMS"],
        "hs_communication_logged_from" => &["CRM"],
        _ => return None,
    };
    Some(allowed)
}

/// The default (HUBSPOT_DEFINED) association type between two object types: an email to a
/// contact, company, deal or ticket is 198, 186, 210 or 224 (and back one less), a
/// communication 81, 87, 85 or 83 (and back one more).
fn default_type(from: &str, to: &str) -> Option<u32> {
    let (emails, communications) = ([198, 186, 210, 224], [81, 87, 85, 83]);
    let record = |name: &str| RECORDS.iter().position(|r| *r == name);
    match (from, to) {
        ("emails", to) => record(to).map(|i| emails[i]),
        ("communications", to) => record(to).map(|i| communications[i]),
        (from, "emails") => record(from).map(|i| emails[i] - 1),
        (from, "communications") => record(from).map(|i| communications[i] + 1),
        _ => None,
    }
}

fn timestamp(value: &str) -> bool {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        || chrono::DateTime::parse_from_rfc3339(value).is_ok()
}

/// What is wrong with one property written: HubSpot's error code and message.
fn problem(known: &[&str], name: &str, value: &Value) -> Option<(&'static str, String)> {
    let v = value.as_str().unwrap_or_default();
    let json_object = || serde_json::from_str::<Value>(v).is_ok_and(|h| h.is_object());
    let code = if !known.contains(&name) {
        "PROPERTY_DOESNT_EXIST"
    } else if name == "hs_object_id" {
        "READ_ONLY_VALUE"
    } else if !value.is_string() {
        "INVALID_STRING"
    } else if name == "hs_timestamp" && !timestamp(v) {
        "INVALID_DATE"
    } else if name == "parley_paid" && v.parse::<f64>().is_err() {
        "INVALID_DOUBLE"
    } else if name == "hs_email_headers" && !json_object() {
        "INVALID_JSON"
    } else if options(name).is_some_and(|allowed| !allowed.contains(&v)) {
        "INVALID_OPTION"
    } else {
        return None;
    };
    let message = match code {
        "PROPERTY_DOESNT_EXIST" => format!("Property \"{name}\" does not exist"),
        "READ_ONLY_VALUE" => format!("{name} is a read only property"),
        "INVALID_OPTION" => {
            let allowed = options(name).unwrap_or_default();
            format!("{v} was not one of the allowed options: {allowed:?}")
        }
        _ => format!("{value} is not a valid value for {name}"),
    };
    Some((code, message))
}

/// HubSpot's check of the properties written to objects: a 400 listing every failure.
fn check(object_type: &str, written: &[Map<String, Value>], creating: bool) -> Result<(), Refused> {
    let known = known(object_type)?;
    let mut errors = Vec::new();
    for properties in written {
        for (name, value) in properties {
            if let Some((code, message)) = problem(&known, name, value) {
                errors.push(
                    json!({"isValid": false, "message": message, "error": code, "name": name}),
                );
            }
        }
        let activity = ACTIVITIES.contains(&object_type);
        if creating && activity && !properties.contains_key("hs_timestamp") {
            let (name, message) = ("hs_timestamp", "hs_timestamp is required");
            errors.push(json!({"isValid": false, "message": message, "error": "REQUIRED_PROPERTY", "name": name}));
        }
    }
    if !errors.is_empty() {
        return invalid!("Property values were not valid: {}", Value::from(errors));
    }
    Ok(())
}

/// The JSON of a request's body, as HubSpot's deserializer takes it.
fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, Refused> {
    let content_type = headers.get("content-type").map(|v| v.as_bytes());
    if !content_type.is_some_and(|t| t.starts_with(b"application/json")) {
        let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(refused(
            status,
            "VALIDATION_ERROR",
            "Content type not supported",
        ));
    }
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(e) => invalid!("Invalid input JSON: {e}"),
    }
}

/// Refuses a value that is not an object, or has a field not `allowed`.
fn fields(value: &Value, allowed: &[&str]) -> Result<(), Refused> {
    let Some(object) = value.as_object() else {
        return invalid!("Invalid input JSON: expected an object, not {value}");
    };
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            invalid!("Invalid input JSON: Unrecognized field \"{k}\", not marked as ignorable")
        }
        None => Ok(()),
    }
}

fn inputs(body: &Value) -> Result<&Vec<Value>, Refused> {
    fields(body, &["inputs"])?;
    match body["inputs"].as_array() {
        Some(list) if (1..=100).contains(&list.len()) => Ok(list),
        Some(list) => invalid!("A batch takes 1 to 100 inputs, not {}", list.len()),
        None => invalid!("Some required fields were not set: [inputs]"),
    }
}

fn properties_of(input: &Value) -> Result<Map<String, Value>, Refused> {
    fields(input, &["properties", "objectWriteTraceId"])?;
    match input["properties"].as_object() {
        Some(properties) => Ok(properties.clone()),
        None => invalid!("Some required fields were not set: [properties]"),
    }
}

/// `COMPLETE`, with the results and the times HubSpot's batch answers carry.
fn complete(results: Vec<Value>, started: String) -> Value {
    json!({"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now()})
}

impl HubObject {
    /// The object as HubSpot answers it, with only the properties named (all without).
    fn json(&self, names: Option<&[&str]>) -> Value {
        let value = |n: &str| self.properties.get(n).cloned().unwrap_or(Value::Null);
        let properties: Map<String, Value> = match names {
            None => self.properties.clone(),
            Some(names) => names.iter().map(|&n| (n.to_string(), value(n))).collect(),
        };
        json!({"id": self.id, "properties": properties, "createdAt": self.created_at,
            "updatedAt": self.updated_at, "archived": self.archived})
    }
}

impl HubspotState {
    fn make(&mut self, object_type: &str, mut properties: Map<String, Value>) -> HubObject {
        self.next += 1;
        let id = (31_000_000_000 + self.next).to_string();
        properties.insert("hs_object_id".into(), json!(id));
        let created_at = now();
        let object = HubObject {
            object_type: object_type.into(),
            id,
            properties,
            updated_at: created_at.clone(),
            created_at,
            archived: false,
        };
        self.objects.push(object.clone());
        object
    }

    fn live(&mut self, object_type: &str, id: &str) -> Option<&mut HubObject> {
        let mut objects = self.objects.iter_mut();
        objects.find(|o| o.id == id && o.object_type == object_type && !o.archived)
    }

    /// Counts the call, then refuses it for its path, its token or the rate limit.
    fn gate(&mut self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refused> {
        self.requests += 1;
        if uri.path().starts_with(DATED) {
            self.date_path_requests += 1;
            if !self.date_versioned {
                return Err(route_missing());
            }
        } else if uri.path().starts_with(V3) {
            self.v3_path_requests += 1;
        }
        if bearer(headers) != self.token {
            let message = "Authentication credentials not found. This API supports OAuth 2.0 \
                authentication and you can find more details at \
                https://developers.hubspot.com/docs/methods/auth/oauth-overview";
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                message,
            ));
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            self.throttled += 1;
            let (policy, limit) = if self.daily {
                ("DAILY", "daily")
            } else {
                ("TEN_SECONDLY_ROLLING", "ten_secondly_rolling")
            };
            let message = format!("You have reached your {limit} limit.");
            let (status, mut body) = error(StatusCode::TOO_MANY_REQUESTS, message);
            body["errorType"] = json!("RATE_LIMIT");
            body["policyName"] = json!(policy);
            return Err((status, body));
        }
        Ok(())
    }

    /// An object as tests read it: type, id, properties, archived, and the `[type, id]` of
    /// the objects associated with it (either way).
    fn described(&self, o: &HubObject) -> Value {
        let mut associations = Vec::new();
        for a in &self.associations {
            if a.from_type == o.object_type && a.from_id == o.id {
                associations.push(json!([a.to_type, a.to_id]));
            } else if a.to_type == o.object_type && a.to_id == o.id {
                associations.push(json!([a.from_type, a.from_id]));
            }
        }
        json!({"type": o.object_type, "id": o.id, "properties": o.properties,
            "archived": o.archived, "associations": associations})
    }

    fn searched(&self, object_type: &str, body: &Value) -> Answer {
        let known = known(object_type)?;
        fields(
            body,
            &["filterGroups", "properties", "limit", "after", "sorts"],
        )?;
        let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
        let mut parsed = Vec::new();
        for group in &groups {
            fields(group, &["filters"])?;
            let filters = group["filters"].as_array().cloned().unwrap_or_default();
            if groups.len() > 5 || filters.is_empty() || filters.len() > 6 {
                return invalid!("A search takes up to 5 filterGroups of 1 to 6 filters");
            }
            let filters: Result<Vec<Filter>, Refused> =
                filters.iter().map(|f| Filter::parse(&known, f)).collect();
            parsed.push(filters?);
        }
        let mut wanted = vec!["hs_object_id"];
        for name in body["properties"].as_array().into_iter().flatten() {
            match name.as_str() {
                Some(n) if known.contains(&n) => wanted.push(n),
                _ => return invalid!("Property {name} does not exist"),
            }
        }
        let limit = match &body["limit"] {
            Value::Null => 10,
            given => match given.as_u64().and_then(|l| usize::try_from(l).ok()) {
                Some(l) if (1..=200).contains(&l) => l,
                _ => return invalid!("limit must be 1 to 200, not {given}"),
            },
        };
        let after = body["after"].as_str().unwrap_or("0");
        let after: usize = after.parse().unwrap_or(0);
        let matches = |o: &&HubObject| parsed.iter().any(|g| g.iter().all(|f| f.matches(o)));
        let mut hits: Vec<&HubObject> = self.objects.iter().collect();
        hits.retain(|o| o.object_type == object_type && !o.archived);
        hits.retain(|o| parsed.is_empty() || matches(o));
        let page = hits.iter().skip(after).take(limit);
        let results: Vec<Value> = page.map(|o| o.json(Some(&wanted[..]))).collect();
        let mut answer = json!({"total": hits.len(), "results": results});
        if after + limit < hits.len() {
            answer["paging"] = json!({"next": {"after": (after + limit).to_string()}});
        }
        Ok(axum::Json(answer).into_response())
    }

    fn created(&mut self, object_type: &str, body: &Value) -> Answer {
        self.batches += 1;
        let all: Result<Vec<_>, _> = inputs(body)?.iter().map(properties_of).collect();
        let all = all?;
        check(object_type, &all, true)?;
        let started = now();
        let mut results = Vec::new();
        for properties in all {
            results.push(self.make(object_type, properties).json(None));
        }
        if self.fail_after_write > 0 {
            self.fail_after_write -= 1;
            return Err(error(StatusCode::BAD_GATEWAY, "Bad Gateway"));
        }
        Ok((StatusCode::CREATED, axum::Json(complete(results, started))).into_response())
    }

    /// Archives the ids given; ids not there (or archived already) are passed over, as
    /// HubSpot does, so that an archive can be repeated.
    fn archived(&mut self, object_type: &str, body: &Value) -> Answer {
        known(object_type)?;
        let mut ids = Vec::new();
        for input in inputs(body)? {
            fields(input, &["id"])?;
            match input["id"].as_str() {
                Some(id) => ids.push(id),
                None => return invalid!("Some required fields were not set: [id]"),
            }
        }
        let at = now();
        for id in ids {
            if let Some(o) = self.live(object_type, id) {
                o.archived = true;
                o.updated_at.clone_from(&at);
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    fn updated(&mut self, object_type: &str, id: &str, body: &Value) -> Answer {
        let properties = properties_of(body)?;
        if properties.is_empty() {
            return invalid!("No properties found to update, please provide at least one.");
        }
        check(object_type, std::slice::from_ref(&properties), false)?;
        let Some(o) = self.live(object_type, id) else {
            let message = "resource not found";
            return Err(refused(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message));
        };
        o.properties.extend(properties);
        o.updated_at = now();
        Ok(axum::Json(o.json(None)).into_response())
    }

    /// The default associations of pairs of ids, all or none.
    fn associate(&mut self, from: &str, to: &str, pairs: &[(&str, &str)]) -> Answer {
        known(from)?;
        known(to)?;
        let Some(type_id) = default_type(from, to) else {
            return invalid!("No default association from {from} to {to}");
        };
        let ends = pairs.iter().flat_map(|(f, t)| [(from, *f), (to, *t)]);
        let missing: Vec<&str> = ends
            .filter(|(k, id)| self.live(k, id).is_none())
            .map(|e| e.1)
            .collect();
        if !missing.is_empty() {
            let (status, message) = (StatusCode::BAD_REQUEST, format!("No objects: {missing:?}"));
            return Err(refused(status, "OBJECT_NOT_FOUND", message));
        }
        let started = now();
        let mut results = Vec::new();
        for &(from_id, to_id) in pairs {
            let spec =
                json!({"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id});
            let result =
                json!({"from": {"id": from_id}, "to": {"id": to_id}, "associationSpec": spec});
            results.push(result);
            let association = Association {
                from_type: from.into(),
                from_id: from_id.into(),
                to_type: to.into(),
                to_id: to_id.into(),
                type_id,
            };
            if !self.associations.contains(&association) {
                self.associations.push(association);
            }
        }
        Ok(axum::Json(complete(results, started)).into_response())
    }
}

/// One search filter: the property and the values it may equal.
struct Filter {
    property: String,
    values: Vec<String>,
}

impl Filter {
    fn parse(known: &[&str], f: &Value) -> Result<Self, Refused> {
        fields(f, &["propertyName", "operator", "value", "values"])?;
        let property = f["propertyName"].as_str().unwrap_or_default();
        if !known.contains(&property) {
            return invalid!("Property \"{property}\" does not exist");
        }
        let strings = |list: &Vec<Value>| -> Option<Vec<String>> {
            list.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let values = match f["operator"].as_str().unwrap_or_default() {
            "EQ" if f["values"].is_null() => f["value"].as_str().map(|v| vec![v.to_string()]),
            "IN" if f["value"].is_null() => f["values"].as_array().and_then(strings),
            "EQ" | "IN" => None,
            operator => return invalid!("Unsupported filter operator \"{operator}\""),
        };
        match values {
            Some(values) if !values.is_empty() => Ok(Self {
                property: property.into(),
                values,
            }),
            _ => invalid!("A filter on {property} takes a string `value` (EQ) or `values` (IN)"),
        }
    }

    fn matches(&self, o: &HubObject) -> bool {
        let value = o.properties.get(&self.property).and_then(Value::as_str);
        value.is_some_and(|v| self.values.iter().any(|w| w.eq_ignore_ascii_case(v)))
    }
}

impl HubspotFake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(HubspotState {
            token: TOKEN.into(),
            date_versioned: true,
            ..Default::default()
        }));
        let one = "/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}";
        let batch = "/crm/v4/associations/{from_type}/{to_type}/batch/associate/default";
        let router = axum::Router::new()
            .route("/crm/objects/2026-03/{object_type}/{*rest}", any(objects))
            .route("/crm/v3/objects/{object_type}/{*rest}", any(objects))
            .route(one, put(associate))
            .route(batch, post(associate_batch))
            .fallback(unknown)
            .with_state(state.clone());
        let base = serve(router).await;
        Self { state, base }
    }

    pub fn settings(&self) -> Value {
        json!({"accessToken": TOKEN, "apiUrl": self.base, "objectType": "deals",
            "caseNumberProperty": "parley_case_number", "messageIdProperty": "parley_message_id",
            "statusProperty": "parley_status", "paidProperty": "parley_paid"})
    }

    fn add(&self, object_type: &str, properties: Value) -> String {
        let properties = properties.as_object().cloned().unwrap_or_default();
        self.state.lock().unwrap().make(object_type, properties).id
    }

    /// A deal with that case number, as made in HubSpot: its id.
    pub fn add_record(&self, case_number: &str) -> String {
        let name = format!("Case {case_number}");
        let properties = json!({"dealname": name, "parley_case_number": case_number});
        self.add("deals", properties)
    }
}

/// Helpers a test may do without.
#[allow(dead_code)]
impl HubspotFake {
    /// A contact with that email (HubSpot keeps emails in lower case): its id.
    pub fn add_contact(&self, email: &str) -> String {
        self.add("contacts", json!({"email": email.to_ascii_lowercase()}))
    }

    /// The live emails and communications, in the order made: `type`, `id`, `properties`,
    /// `archived` and `associations` (`[type, id]` pairs).
    pub fn activities(&self) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let live = s.objects.iter().filter(|o| !o.archived);
        let activities = live.filter(|o| ACTIVITIES.contains(&o.object_type.as_str()));
        activities.map(|o| s.described(o)).collect()
    }

    /// Any object by id (archived ones too) in the shape of `activities`; `null` if none.
    pub fn record(&self, id: &str) -> Value {
        let s = self.state.lock().unwrap();
        let found = s.objects.iter().find(|o| o.id == id);
        found.map_or(Value::Null, |o| s.described(o))
    }

    /// The next `n` API calls are answered 429.
    pub fn throttle(&self, n: usize) {
        self.state.lock().unwrap().throttle = n;
    }

    /// The next `n` batch creates store their objects, then answer 502.
    pub fn fail_after_write(&self, n: usize) {
        self.state.lock().unwrap().fail_after_write = n;
    }

    /// Whether the `/crm/objects/2026-03/` paths are served (else they answer 404).
    pub fn date_versioned(&self, served: bool) {
        self.state.lock().unwrap().date_versioned = served;
    }

    /// Whether the 429s are the daily limit's (else the ten-secondly one's).
    pub fn daily(&self, daily: bool) {
        self.state.lock().unwrap().daily = daily;
    }
}

async fn unknown(State(state): S, uri: Uri, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    reply(s.gate(&uri, &headers).and_then(|()| Err(route_missing())))
}

/// `/crm/objects/2026-03/{objectType}/...` and `/crm/v3/objects/{objectType}/...`.
async fn objects(
    State(state): S,
    Path((object_type, rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (answer, hang) = {
        let mut s = state.lock().unwrap();
        let s = &mut *s;
        let t = object_type.as_str();
        let creating = method == Method::POST && rest == "batch/create";
        let answer = reply(s.gate(&uri, &headers).and_then(|()| {
            let body = || parse(&headers, &bytes);
            match (method, rest.as_str()) {
                (Method::POST, "search") => s.searched(t, &body()?),
                (Method::POST, "batch/create") => s.created(t, &body()?),
                (Method::POST, "batch/archive") => s.archived(t, &body()?),
                (Method::PATCH, id) if !id.contains('/') => s.updated(t, id, &body()?),
                _ => Err(route_missing()),
            }
        }));
        let hang = if creating && answer.status().is_success() {
            s.hang_after_write.take()
        } else {
            None
        };
        (answer, hang)
    };
    if let Some(told) = hang {
        told.notify_one();
        std::future::pending::<()>().await;
    }
    answer
}

async fn associate(
    State(state): S,
    Path((from_type, from_id, to_type, to_id)): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    let s = &mut *s;
    let pair = [(from_id.as_str(), to_id.as_str())];
    let answer = s.gate(&uri, &headers);
    reply(answer.and_then(|()| s.associate(&from_type, &to_type, &pair)))
}

async fn associate_batch(
    State(state): S,
    Path((from_type, to_type)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let s = &mut *s;
    reply(s.gate(&uri, &headers).and_then(|()| {
        let body = parse(&headers, &bytes)?;
        let mut pairs = Vec::new();
        for input in inputs(&body)? {
            fields(input, &["from", "to"])?;
            match (input["from"]["id"].as_str(), input["to"]["id"].as_str()) {
                (Some(from), Some(to)) => pairs.push((from, to)),
                _ => return invalid!("Some required fields were not set: [from.id, to.id]"),
            }
        }
        s.associate(&from_type, &to_type, &pairs)
    }))
}
