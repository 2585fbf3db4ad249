//! A strict, stateful fake of Salesforce: the OAuth 2.0 JWT bearer flow and the REST API
//! (v62.0) calls of parley's Salesforce connector. Written from Salesforce's documentation:
//!
//! - <https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm&type=5>
//!   (an RS256 assertion: `iss` the consumer key, `sub` the username, `aud` the login URL,
//!   `exp` within 3 minutes; `invalid_client_id`, `invalid_grant`; no `expires_in`);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm>
//!   (`[{"message", "errorCode"}]`; 401 `INVALID_SESSION_ID`, 403 `REQUEST_LIMIT_EXCEEDED`,
//!   404 `NOT_FOUND`, 503);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm>
//!   and <https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm>
//!   (string literals in single quotes, `\'` and `\\` escaped; `=` ignores case);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm>
//!   (up to 200 records of the URI's type, each with `attributes.type`, no `Id`; UpsertResults
//!   in request order, `created: false` for an update; `allOrNone`);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_delete.htm>
//!   (`?ids=` up to 200; DeleteResults in order);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm>
//!   (`PATCH sobjects/{object}/{id}`, 204);
//! - <https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_emailmessage.htm>
//!   and <https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_task.htm>
//!   (fields, picklists, `ParentId` a Case, `RelatedToId` not a Contact, `WhoId` a Contact);
//! - <https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm> (ids:
//!   15 case-sensitive characters and a 3-character suffix; key prefixes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::vendors::{TestKey, bearer, form, serve};

const VERSION: &str = "v62.0";
/// The longest `TextBody` (EmailMessage) and `Description` (Task).
const MAX_TEXT: usize = 32_000;
const MAX_RECORDS: usize = 200;
const TOO_MANY: &str = "record limit reached. cannot submit more than 200 records into this call";
const EMAIL_FIELDS: &str =
    "Subject TextBody FromAddress ToAddress Incoming MessageDate Status ParentId RelatedToId";
const TASK_FIELDS: &str =
    "Subject Description ActivityDate Status TaskSubtype WhatId WhoId Priority";
/// Key prefixes: the first three characters of an id tell the record's type.
const PREFIXES: &str = "Case:500 Contact:003 EmailMessage:02s Task:00T Account:001";

#[allow(dead_code)]
#[derive(Default)]
pub struct SalesforceState {
    pub client_id: String,
    pub username: String,
    /// What the assertion's `aud` must be: the login URL parley is given.
    pub login_url: String,
    pub object: String,
    pub case_number_field: String,
    pub external_id_field: String,
    pub status_field: String,
    pub paid_field: String,
    /// Every live record in the order made: `attributes.type`, `Id` and its fields.
    pub records: Vec<Value>,
    /// The next n API calls are answered 403 `REQUEST_LIMIT_EXCEEDED`.
    pub throttle: usize,
    /// The next n upserts write, then answer 503 `SERVER_UNAVAILABLE`.
    pub fail_after_write: usize,
    pub requests: usize,
    pub token_requests: usize,
    /// Upsert calls that got as far as their records.
    pub batches: usize,
    pub largest_batch: usize,
    public_der: Vec<u8>,
    tokens: HashSet<String>,
    next: u64,
}

pub struct SalesforceFake {
    pub base: String,
    pub state: Arc<Mutex<SalesforceState>>,
    pub key: TestKey,
}

type S = State<Arc<Mutex<SalesforceState>>>;
type Params = Query<HashMap<String, String>>;
type Two = Path<(String, String)>;

/// The REST API's error answer: `[{"message", "errorCode"}]`.
fn sf_error(status: u16, code: &str, message: &str) -> Response {
    let body = axum::Json(json!([{"message": message, "errorCode": code}]));
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

fn bad(code: &str, message: &str) -> Response {
    sf_error(400, code, message)
}

fn not_found() -> Response {
    sf_error(404, "NOT_FOUND", "The requested resource does not exist")
}

/// A record's error, as a collection answers it: `{"statusCode", "message", "fields"}`.
fn record_error(code: &str, message: &str, fields: &[&str]) -> Value {
    json!({"statusCode": code, "message": message, "fields": fields})
}

fn refused<T>(code: &str, message: &str, fields: &[&str]) -> Result<T, Value> {
    Err(record_error(code, message, fields))
}

/// A record's error as the answer to a call on that one record.
fn refusal(error: &Value) -> Response {
    let text = |k: &str| error[k].as_str().unwrap_or_default().to_string();
    bad(&text("statusCode"), &text("message"))
}

fn failure(error: Value) -> Value {
    json!({"success": false, "errors": [error]})
}

fn rolled_back() -> Value {
    let message = "Record rolled back because not all records were valid and the request was \
                   using AllOrNone header";
    record_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", message, &[])
}

fn no_such_column(field: &str, on: &str) -> String {
    format!(
        "No such column '{field}' on {on}. If you are attempting to use a custom field, be sure \
         to append the '__c' after the custom field name. Please reference your WSDL or the \
         describe call for the appropriate names."
    )
}

/// The suffix Salesforce appends to a 15-character id: for each run of 5 characters, the
/// positions of its upper-case letters as 5 bits, spelled in `A..Z0..5`.
fn id_suffix(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let upper = |run: &[u8], i: usize| usize::from(run[i].is_ascii_uppercase()) << i;
    let bits = |run: &[u8]| (0..run.len()).map(|i| upper(run, i)).sum::<usize>();
    let runs = id15.as_bytes().chunks(5);
    runs.map(|run| ALPHABET[bits(run)] as char).collect()
}

/// An id as Salesforce takes it (15 characters, or 18 with the right suffix), in 18.
fn full_id(id: &str) -> Option<String> {
    let id15 = id
        .get(..15)
        .filter(|i| i.chars().all(|c| c.is_ascii_alphanumeric()))?;
    let full = format!("{id15}{}", id_suffix(id15));
    (id.len() == 15 || id == full).then_some(full)
}

fn now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn is_datetime(d: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(d).is_ok()
        || chrono::DateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
}

fn is_date(d: &str) -> bool {
    d.len() == 10 && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
}

/// `SELECT {select} FROM {object} WHERE {field} = '{value}' LIMIT 1`, the one shape parley
/// sends, its literal unescaped; `None` when it is anything else.
fn parse_soql(q: &str) -> Option<(&str, &str, &str, String)> {
    let (select, rest) = q.strip_prefix("SELECT ")?.split_once(" FROM ")?;
    let (object, rest) = rest.split_once(" WHERE ")?;
    let (field, rest) = rest.split_once(" = '")?;
    let mut value = String::new();
    let mut chars = rest.char_indices();
    let end = loop {
        match chars.next()? {
            (i, '\'') => break i + 1,
            (_, '\\') => value.push(unescape(chars.next()?.1)?),
            (_, c) => value.push(c),
        }
    };
    let name = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let names = [select, object, field].into_iter().all(name);
    (names && rest.get(end..) == Some(" LIMIT 1")).then_some((select, object, field, value))
}

/// The character a SOQL escape stands for: `\n \r \t \b \f \" \' \\` only.
fn unescape(c: char) -> Option<char> {
    let at = "nrtbf\"'\\".find(c)?;
    "\n\r\t\u{8}\u{c}\"'\\".chars().nth(at)
}

/// An upsert's body: `allOrNone` and 1 to 200 records; else the 400 to answer.
fn collection(body: &str) -> Result<(bool, Vec<Value>), (&'static str, String)> {
    let parse = |m: String| ("JSON_PARSER_ERROR", m);
    let parsed: Value = serde_json::from_str(body).map_err(|e| parse(e.to_string()))?;
    let top = (parsed.as_object()).ok_or_else(|| parse("Expected an object".into()))?;
    let unknown = |k: &&String| !matches!(k.as_str(), "allOrNone" | "records");
    if let Some(k) = top.keys().find(unknown) {
        return Err(parse(format!("Unrecognized field \"{k}\"")));
    }
    let all_or_none = match top.get("allOrNone") {
        None => false,
        Some(v) => (v.as_bool()).ok_or_else(|| parse(format!("Expected a boolean, not {v}")))?,
    };
    let missing = "Required fields are missing: [records]".to_string();
    match top.get("records").and_then(Value::as_array) {
        Some(r) if r.len() > MAX_RECORDS => Err(("EXCEEDED_ID_LIMIT", TOO_MANY.into())),
        Some(r) if !r.is_empty() => Ok((all_or_none, r.clone())),
        _ => Err(("REQUIRED_FIELD_MISSING", missing)),
    }
}

impl SalesforceState {
    /// The fields of an sObject the fake knows (besides `Id`); `None` for an unknown type.
    fn fields(&self, sobject: &str) -> Option<Vec<String>> {
        let external = &self.external_id_field;
        let (standard, custom) = match sobject {
            "EmailMessage" => (EMAIL_FIELDS, vec![external]),
            "Task" => (TASK_FIELDS, vec![external]),
            "Contact" => ("Email FirstName LastName", vec![]),
            o if o == self.object => {
                let (number, status) = (&self.case_number_field, &self.status_field);
                ("Subject", vec![number, status, &self.paid_field])
            }
            _ => return None,
        };
        let standard = standard.split(' ').map(String::from);
        Some(standard.chain(custom.into_iter().cloned()).collect())
    }

    fn live(&self, id: &str) -> Option<&Value> {
        self.records.iter().find(|r| r["Id"] == id)
    }

    fn insert(&mut self, sobject: &str, fields: Map<String, Value>) -> String {
        self.next += 1;
        let prefix = |p: &'static str| p.strip_prefix(sobject)?.strip_prefix(':');
        let prefix = PREFIXES.split(' ').find_map(prefix).unwrap_or("a0B");
        let id15 = format!("{prefix}8Hs{:09}", self.next);
        let id = format!("{id15}{}", id_suffix(&id15));
        let mut record = json!({"attributes": {"type": sobject}, "Id": id});
        record.as_object_mut().unwrap().extend(fields);
        self.records.push(record);
        id
    }

    /// Counts an API call, then refuses it as Salesforce would: a token it does not know (or
    /// no longer), the request limit.
    fn gate(&mut self, headers: &HeaderMap) -> Option<Response> {
        self.requests += 1;
        if !self.tokens.contains(&bearer(headers)) {
            let expired = "Session expired or invalid";
            return Some(sf_error(401, "INVALID_SESSION_ID", expired));
        }
        let throttled = self.throttle > 0;
        self.throttle = self.throttle.saturating_sub(1);
        let limit = "TotalRequests Limit exceeded.";
        throttled.then(|| sf_error(403, "REQUEST_LIMIT_EXCEEDED", limit))
    }

    /// The assertion checked as the token endpoint does; the OAuth error when refused.
    fn check_assertion(&self, assertion: &str) -> Result<(), (&'static str, &'static str)> {
        let invalid = ("invalid_grant", "invalid assertion");
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(invalid);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
        let json = |p: &str| decode(p).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let (Some(h), Some(c), Some(sig)) = (json(header), json(claims), decode(signature)) else {
            return Err(invalid);
        };
        if c["iss"] != self.client_id.as_str() {
            return Err(("invalid_client_id", "client identifier invalid"));
        }
        let rsa = &ring::signature::RSA_PKCS1_2048_8192_SHA256;
        let key = ring::signature::UnparsedPublicKey::new(rsa, &self.public_der);
        let signed = format!("{header}.{claims}");
        if h["alg"] != "RS256" || key.verify(signed.as_bytes(), &sig).is_err() {
            return Err(invalid);
        }
        if c["aud"] != self.login_url.as_str() {
            return Err(("invalid_grant", "audience is invalid"));
        }
        let now = now().as_secs();
        match c["exp"].as_u64() {
            Some(exp) if exp <= now => return Err(("invalid_grant", "expired authorization code")),
            Some(exp) if exp <= now + 180 => {}
            _ => return Err(invalid),
        }
        if c["sub"] != self.username.as_str() {
            return Err(("invalid_grant", "user hasn't approved this consumer"));
        }
        Ok(())
    }

    /// A field's value: its type, then its length, picklist or reference.
    fn check_field(&self, sobject: &str, name: &str, value: &Value) -> Result<(), Value> {
        let fits = match name {
            _ if value.is_null() => return Ok(()),
            "Incoming" => value.is_boolean(),
            "MessageDate" => value.as_str().is_some_and(is_datetime),
            "ActivityDate" => value.as_str().is_some_and(is_date),
            n if n == self.paid_field => value.is_number(),
            _ => value.is_string(),
        };
        if !fits {
            let message = format!("{name}: value not of required type: {value}");
            return refused("INVALID_TYPE_ON_FIELD_IN_RECORD", &message, &[name]);
        }
        value
            .as_str()
            .map_or(Ok(()), |text| self.check_text(sobject, name, text))
    }

    fn check_text(&self, sobject: &str, name: &str, text: &str) -> Result<(), Value> {
        let max = match (sobject, name) {
            (_, "TextBody" | "Description") => MAX_TEXT,
            ("EmailMessage", "Subject") => 3000,
            (_, "ToAddress") => 4000,
            (_, "FromAddress") => 1000,
            _ => 255,
        };
        if text.chars().count() > max {
            let start: String = text.chars().take(40).collect();
            let message = format!("{name}: data value too large: {start}... (max length={max})");
            return refused("STRING_TOO_LONG", &message, &[name]);
        }
        let allowed = match (sobject, name) {
            ("EmailMessage", "Status") => "0|1|2|3|4|5",
            ("Task", "Status") => {
                "Not Started|In Progress|Completed|Waiting on someone else|Deferred"
            }
            ("Task", "TaskSubtype") => "Task|Email|ListEmail|Cadence|Call|LinkedIn",
            ("Task", "Priority") => "High|Normal|Low",
            (_, "ParentId" | "RelatedToId" | "WhoId" | "WhatId") => {
                return self.check_reference(name, text);
            }
            _ => return Ok(()),
        };
        if allowed.split('|').any(|a| a == text) {
            return Ok(());
        }
        let message = format!("{name}: bad value for restricted picklist field: {text}");
        refused("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", &message, &[name])
    }

    /// `ParentId` only a Case, `WhoId` only a Contact, `RelatedToId` and `WhatId` never a
    /// Contact (nor an activity).
    fn check_reference(&self, name: &str, text: &str) -> Result<(), Value> {
        let label = match name {
            "ParentId" => "Parent ID",
            "WhoId" => "Name ID",
            _ => "Related To ID",
        };
        let incorrect = format!("{label}: id value of incorrect type: {text}");
        let Some(id) = full_id(text) else {
            return refused("MALFORMED_ID", &incorrect, &[name]);
        };
        let Some(target) = self.live(&id) else {
            return refused(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[name],
            );
        };
        let kind = target["attributes"]["type"].as_str().unwrap_or_default();
        let fits = match name {
            "ParentId" => kind == "Case",
            "WhoId" => kind == "Contact",
            _ => !matches!(kind, "Contact" | "EmailMessage" | "Task"),
        };
        if !fits {
            return refused("FIELD_INTEGRITY_EXCEPTION", &incorrect, &[name]);
        }
        Ok(())
    }

    /// One record of an upsert: of the URI's type, known fields only, the external id given.
    fn check_record(&self, sobject: &str, record: &Value) -> Result<Map<String, Value>, Value> {
        let typed = record["attributes"]["type"] == sobject;
        let Some(given) = record.as_object().filter(|_| typed) else {
            let message = format!("Each record must be an object of attributes.type {sobject}");
            return refused("INVALID_TYPE", &message, &[]);
        };
        let known = self.fields(sobject).unwrap_or_default();
        let mut fields = given.clone();
        fields.remove("attributes");
        if let Some(name) = fields.keys().find(|name| !known.contains(name)) {
            let message = no_such_column(name, &format!("sobject of type {sobject}"));
            return refused("INVALID_FIELD", &message, &[]);
        }
        for (name, value) in &fields {
            self.check_field(sobject, name, value)?;
        }
        let external = self.external_id_field.as_str();
        match fields.get(external).and_then(Value::as_str) {
            Some(v) if !v.is_empty() => Ok(fields),
            _ => {
                let message = format!("Required fields are missing: [{external}]");
                refused("REQUIRED_FIELD_MISSING", &message, &[external])
            }
        }
    }

    /// Updates the record of this type with the same external id, or makes one: its id, and
    /// whether it was made.
    fn upsert(&mut self, sobject: &str, fields: Map<String, Value>) -> (String, bool) {
        let field = self.external_id_field.clone();
        let same =
            |r: &&mut Value| r["attributes"]["type"] == sobject && r[&field] == fields[&field];
        let Some(record) = self.records.iter_mut().find(same) else {
            return (self.insert(sobject, fields), true);
        };
        record.as_object_mut().unwrap().extend(fields);
        (record["Id"].as_str().unwrap_or_default().to_string(), false)
    }
}

impl SalesforceFake {
    pub async fn start() -> Self {
        let key = TestKey::new();
        let state = Arc::new(Mutex::new(SalesforceState {
            client_id: "3MVG9rZjd7MXFdLhJx8oyWJ4nB2xBnNh0Cc4sQfHmBqVrtE1lRzbHJtK5hOyV0aKcDu".into(),
            username: "integration@agency.example".into(),
            object: "Case".into(),
            case_number_field: "Parley_Case_Number__c".into(),
            external_id_field: "Parley_Message_Id__c".into(),
            status_field: "Parley_Status__c".into(),
            paid_field: "Parley_Paid__c".into(),
            public_der: key.public_der.clone(),
            ..Default::default()
        }));
        let api = axum::Router::new()
            .route("/query", get(query))
            .route("/composite/sobjects", delete(remove))
            .route("/composite/sobjects/{sobject}/{field}", patch(upsert))
            .route("/sobjects/{object}/{id}", patch(update));
        let router = axum::Router::new()
            .route("/services/oauth2/token", post(token))
            .nest(&format!("/services/data/{VERSION}"), api)
            .fallback(|| async { not_found() })
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(state.clone());
        let base = serve(router).await;
        state.lock().unwrap().login_url = base.clone();
        Self { base, state, key }
    }

    /// The connector's settings, as an administrator enters them.
    pub fn settings(&self) -> Value {
        let s = self.state.lock().unwrap();
        json!({"loginUrl": self.base, "clientId": s.client_id, "username": s.username,
            "privateKey": self.key.pkcs8_pem, "object": s.object,
            "caseNumberField": s.case_number_field, "externalIdField": s.external_id_field,
            "statusField": s.status_field, "paidField": s.paid_field})
    }
}

/// What tests may set up and look at.
#[allow(dead_code)]
impl SalesforceFake {
    /// A record of the configured object (a Case) with this case number: its id.
    pub fn add_record(&self, case_number: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let (object, field) = (s.object.clone(), s.case_number_field.clone());
        s.insert(&object, Map::from_iter([(field, json!(case_number))]))
    }

    pub fn add_contact(&self, email: &str) -> String {
        let fields = json!({"Email": email, "LastName": "Debtor"});
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.state.lock().unwrap().insert("Contact", fields)
    }

    /// The live EmailMessage and Task records, in the order made.
    pub fn activities(&self) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let kinds = ["EmailMessage", "Task"];
        let activity = |r: &&Value| kinds.iter().any(|k| r["attributes"]["type"] == *k);
        s.records.iter().filter(activity).cloned().collect()
    }

    /// A live record by its 15- or 18-character id; `Null` when there is none (or deleted).
    pub fn record(&self, id: &str) -> Value {
        let s = self.state.lock().unwrap();
        let found = full_id(id).and_then(|id| s.live(&id).cloned());
        found.unwrap_or_default()
    }

    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    pub fn throttle(&self, n: usize) {
        self.state.lock().unwrap().throttle = n;
    }

    pub fn fail_after_write(&self, n: usize) {
        self.state.lock().unwrap().fail_after_write = n;
    }
}

async fn token(State(state): S, headers: HeaderMap, body: String) -> Response {
    let f = form(&body);
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let refuse = |error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let grant = f.get("grant_type").map(String::as_str);
    if !content_type.is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
        || grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported_grant_type", "grant type not supported");
    }
    let assertion = f.get("assertion").map(String::as_str).unwrap_or_default();
    if let Err((error, description)) = s.check_assertion(assertion) {
        return refuse(error, description);
    }
    let token = format!("00D8Hs000000001!AR8AQ{}", uuid::Uuid::new_v4().simple());
    s.tokens.insert(token.clone());
    let base = s.login_url.clone();
    let id = format!("{base}/id/00D8Hs000000001EAA/0058Hs000000001AAA");
    let issued = now().as_millis().to_string();
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.client_id.as_bytes());
    let signature = STANDARD.encode(ring::hmac::sign(&hmac, format!("{id}{issued}").as_bytes()));
    let body = json!({"access_token": token, "scope": "api", "instance_url": base, "id": id,
        "token_type": "Bearer", "issued_at": issued, "signature": signature});
    axum::Json(body).into_response()
}

async fn query(State(state): S, Query(q): Params, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers) {
        return refused;
    }
    let soql = q.get("q").map(String::as_str).unwrap_or_default();
    let Some((select, object, field, value)) = parse_soql(soql) else {
        let message = format!("\n{soql}\n^\nERROR at Row:1:Column:1\nunexpected token");
        return bad("MALFORMED_QUERY", &message);
    };
    let Some(known) = s.fields(object) else {
        let message = format!("sObject type '{object}' is not supported.");
        return bad("INVALID_TYPE", &message);
    };
    let unknown = |f: &&str| *f != "Id" && !known.iter().any(|k| k == f);
    if let Some(unknown) = [select, field].into_iter().find(unknown) {
        let message = no_such_column(unknown, &format!("entity '{object}'"));
        return bad("INVALID_FIELD", &message);
    }
    // `=` on text ignores case.
    let wanted = value.to_lowercase();
    let same = |v: &str| v.to_lowercase() == wanted;
    let found =
        |r: &&Value| r["attributes"]["type"] == object && r[field].as_str().is_some_and(same);
    let row = |r: &Value| {
        let id = r["Id"].as_str().unwrap_or_default();
        let url = format!("/services/data/{VERSION}/sobjects/{object}/{id}");
        let mut row = json!({"attributes": {"type": object, "url": url}});
        row[select] = r[select].clone();
        row
    };
    let records: Vec<Value> = s.records.iter().filter(found).take(1).map(row).collect();
    let body = json!({"totalSize": records.len(), "done": true, "records": records});
    axum::Json(body).into_response()
}

async fn upsert(State(state): S, Path(path): Two, headers: HeaderMap, body: String) -> Response {
    let (sobject, field) = path;
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers) {
        return refused;
    }
    if !matches!(sobject.as_str(), "EmailMessage" | "Task") {
        return not_found();
    }
    if field != s.external_id_field {
        let message =
            format!("Provided external ID field does not exist or is not accessible: {field}");
        return sf_error(404, "NOT_FOUND", &message);
    }
    let (all_or_none, records) = match collection(&body) {
        Ok(c) => c,
        Err((code, message)) => return bad(code, &message),
    };
    s.batches += 1;
    s.largest_batch = s.largest_batch.max(records.len());
    let mut checked: Vec<_> = records
        .iter()
        .map(|r| s.check_record(&sobject, r))
        .collect();
    // An external id given twice in one call fails each time.
    let key = |c: &Result<Map<String, Value>, Value>| c.as_ref().ok().map(|f| f[&field].clone());
    let keys: Vec<Option<Value>> = checked.iter().map(key).collect();
    for (c, k) in checked.iter_mut().zip(&keys) {
        if let Some(id) = k
            && keys.iter().filter(|other| *other == k).count() > 1
        {
            let message = format!("Duplicate external id specified: {id}");
            *c = refused("DUPLICATE_VALUE", &message, &[field.as_str()]);
        }
    }
    let rollback = all_or_none && checked.iter().any(Result::is_err);
    let result = |c: Result<Map<String, Value>, Value>| match c {
        Ok(_) if rollback => failure(rolled_back()),
        Ok(fields) => {
            let (id, created) = s.upsert(&sobject, fields);
            json!({"id": id, "success": true, "errors": [], "created": created})
        }
        Err(e) => failure(e),
    };
    let results: Vec<Value> = checked.into_iter().map(result).collect();
    if s.fail_after_write > 0 {
        s.fail_after_write -= 1;
        let message = "Server is temporarily unavailable. Please try again later.";
        return sf_error(503, "SERVER_UNAVAILABLE", message);
    }
    axum::Json(Value::Array(results)).into_response()
}

async fn update(State(state): S, Path(path): Two, headers: HeaderMap, body: String) -> Response {
    let (object, id) = path;
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers) {
        return refused;
    }
    let id = full_id(&id).unwrap_or_default();
    let this = |r: &Value| r["Id"] == id.as_str() && r["attributes"]["type"] == object.as_str();
    let (Some(known), Some(at)) = (s.fields(&object), s.records.iter().position(this)) else {
        return not_found();
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&body) else {
        let message = "Cannot deserialize instance of sObject from the body";
        return bad("JSON_PARSER_ERROR", message);
    };
    for (name, value) in &fields {
        if !known.contains(name) {
            let message = no_such_column(name, &format!("sobject of type {object}"));
            return bad("INVALID_FIELD", &message);
        }
        if let Err(error) = s.check_field(&object, name, value) {
            return refusal(&error);
        }
    }
    s.records[at].as_object_mut().unwrap().extend(fields);
    StatusCode::NO_CONTENT.into_response()
}

async fn remove(State(state): S, Query(q): Params, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    if let Some(refused) = s.gate(&headers) {
        return refused;
    }
    let ids: Vec<&str> = q.get("ids").map_or(vec![], |v| v.split(',').collect());
    if ids.is_empty() || ids.contains(&"") {
        let message = "Required fields are missing: [ids]";
        return bad("REQUIRED_FIELD_MISSING", message);
    }
    if ids.len() > MAX_RECORDS {
        return bad("EXCEEDED_ID_LIMIT", TOO_MANY);
    }
    let all_or_none = match q.get("allOrNone").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return bad("JSON_PARSER_ERROR", &format!("Not a boolean: {other}")),
    };
    let live = |id: &&str| full_id(id).filter(|full| s.live(full).is_some());
    let found: Vec<Option<String>> = ids.iter().map(live).collect();
    let rollback = all_or_none && found.contains(&None);
    let result = |f: Option<String>| match f {
        Some(_) if rollback => failure(rolled_back()),
        Some(full) => {
            s.records.retain(|r| r["Id"] != full.as_str());
            json!({"id": full, "success": true, "errors": []})
        }
        None => failure(record_error("ENTITY_IS_DELETED", "entity is deleted", &[])),
    };
    let results: Vec<Value> = found.into_iter().map(result).collect();
    axum::Json(Value::Array(results)).into_response()
}
