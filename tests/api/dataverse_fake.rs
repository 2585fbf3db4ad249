//! A strict, stateful fake of Microsoft Dataverse (Dynamics 365) Web API v9.2 and of the
//! Microsoft identity platform's token endpoint, for parley's Dynamics 365 connector, written
//! from Microsoft's documentation (under <https://learn.microsoft.com/>):
//!
//! - `entra/identity-platform/v2-oauth2-client-creds-grant-flow`: `client_credentials` with
//!   `client_secret` and `scope={resource}/.default`; AADSTS errors (7000215 answered 401);
//! - `power-apps/developer/data-platform/authenticate-oauth`: the environment URL is the
//!   resource; 401 with `WWW-Authenticate: Bearer authorization_uri=…`;
//! - `power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors`: the
//!   `OData-MaxVersion`, `OData-Version` and `Accept` headers; `{"error":{"code","message"}}`;
//! - `power-apps/developer/data-platform/webapi/query-metadata-web-api`:
//!   `EntityDefinitions(LogicalName='incident')` with `EntitySetName`, `PrimaryIdAttribute`;
//! - `power-apps/developer/data-platform/webapi/query/filter-rows` and `…/query/select-columns`:
//!   `$select`, `$filter` with `eq` (a quote doubled inside a string literal), `$top`;
//! - `power-apps/developer/data-platform/webapi/create-entity-web-api` (204, `OData-EntityId`,
//!   `@odata.bind`, `email_activity_parties` made with the email) and
//!   `power-apps/developer/data-platform/activityparty-entity` (`participationtypemask` 1 to
//!   11: 1 sender, 2 to, 3 cc, 4 bcc; `addressused`);
//! - `power-apps/developer/data-platform/webapi/update-delete-entities-using-web-api`: PATCH is
//!   an upsert unless `If-Match: *`, which makes a missing row 404; DELETE 204;
//! - `power-apps/developer/data-platform/api-limits`: 429, `Retry-After`, 0x80072322;
//! - `power-apps/developer/data-platform/reference/web-service-error-codes` and
//!   `troubleshoot/power-platform/dataverse/dataverse-web-api-and-sdk/web-api-client-errors`:
//!   0x80040237 duplicate key, 0x80040217 no such row, 0x80060888 unknown property or bad query,
//!   0x8006088a unknown segment, 0x80048d19 bad payload, 0x80040216 unexpected error.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Map, Value, json};

use crate::vendors::{bearer, form, serve};

/// The Web API under the environment's URL.
const API: &str = "/api/data/v9.2/";

/// A column's type, named as in the table's metadata.
#[derive(Clone, Copy, PartialEq)]
enum Col {
    Key,
    Text,
    Bool,
    Decimal,
    Int,
    Date,
}

use Col::{Bool, Date, Decimal, Int, Key, Text};

struct Table {
    logical: &'static str,
    set: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, Col)],
}

/// The tables the fake knows and the columns it takes (`parley_*` are the agency's own
/// columns on `incident`; `_regardingobjectid_value` can be read, not written).
#[rustfmt::skip]
const TABLES: &[Table] = &[
    Table { logical: "incident", set: "incidents", key: "incidentid", columns: &[
        ("incidentid", Key), ("title", Text), ("ticketnumber", Text),
        ("parley_casenumber", Text), ("parley_status", Text), ("parley_paid", Decimal)] },
    Table { logical: "contact", set: "contacts", key: "contactid", columns: &[
        ("contactid", Key), ("fullname", Text), ("emailaddress1", Text)] },
    Table { logical: "account", set: "accounts", key: "accountid", columns: &[
        ("accountid", Key), ("name", Text), ("emailaddress1", Text)] },
    Table { logical: "email", set: "emails", key: "activityid", columns: &[
        ("activityid", Key), ("subject", Text), ("description", Text), ("directioncode", Bool),
        ("actualend", Date), ("category", Text), ("prioritycode", Int),
        ("_regardingobjectid_value", Key)] },
    Table { logical: "task", set: "tasks", key: "activityid", columns: &[
        ("activityid", Key), ("subject", Text), ("description", Text), ("actualend", Date),
        ("category", Text), ("prioritycode", Int), ("_regardingobjectid_value", Key)] },
];

impl Table {
    fn column(&self, name: &str) -> Option<(&'static str, Col)> {
        self.columns.iter().find(|(n, _)| *n == name).copied()
    }

    fn activity(&self) -> bool {
        is_activity(self.logical)
    }
}

fn is_activity(logical: &str) -> bool {
    matches!(logical, "email" | "task")
}

/// One row: its table, its id (lowercase) and its properties as written (an activity's
/// also with its binds, its parties and `_regardingobjectid_value`).
#[derive(Debug, Clone)]
pub struct Row {
    pub table: &'static str,
    pub id: String,
    pub data: Map<String, Value>,
}

impl Row {
    fn json(&self) -> Value {
        let mut m = self.data.clone();
        m.insert("@type".into(), json!(self.table));
        Value::Object(m)
    }
}

#[derive(Default)]
pub struct DataverseState {
    /// The fake's URL: parley's `environmentUrl` and `loginUrl` both.
    pub base: String,
    pub tenant: String,
    pub client_id: String,
    pub secret: String,
    tokens: HashSet<String>,
    /// Every row of every table, oldest first.
    pub rows: Vec<Row>,
    next: u64,
    /// The next this many API calls are answered 429 (service protection).
    pub throttle: usize,
    /// The next this many activity creations are stored, then answered 503.
    pub fail_after_write: usize,
    /// API calls (not token calls), refused ones too.
    #[allow(dead_code)]
    pub requests: usize,
    #[allow(dead_code)]
    pub token_requests: usize,
    /// `POST emails` and `POST tasks` past the token and throttling, valid or not.
    #[allow(dead_code)]
    pub batches: usize,
}

/// A Dataverse error: its status and `{"error":{"code","message"}}`.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}}).to_string();
        let kind = [("content-type", "application/json; odata.metadata=minimal")];
        (self.0, kind, body).into_response()
    }
}

fn fail(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::from_u16(status).unwrap(), code, message.into())
}

fn bad(message: impl Into<String>) -> Refusal {
    fail(400, "0x80060888", message)
}

fn missing(logical: &str, id: &str) -> Refusal {
    fail(
        404,
        "0x80040217",
        format!("{logical} With Id = {id} Does Not Exist"),
    )
}

fn no_property(logical: &str, name: &str) -> Refusal {
    bad(format!(
        "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{logical}'."
    ))
}

fn payload_error(set: &str, detail: String) -> Refusal {
    let message = format!(
        "Error identified in Payload provided by the user for Entity :'{set}', For more \
         information on this error please follow this help link \
         https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : \
         Microsoft.OData.ODataException: {detail}"
    );
    fail(400, "0x80048d19", message)
}

/// A GUID in its 8-4-4-4-12 form: lowercase.
fn guid(s: &str) -> Option<String> {
    let ok = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    ok.then(|| s.to_ascii_lowercase())
}

/// A column type's EDM name, and whether a JSON value fits it.
fn edm(kind: Col, v: &Value) -> (&'static str, bool) {
    let null = v.is_null();
    match kind {
        Key => ("Edm.Guid", v.as_str().and_then(guid).is_some()),
        Text => ("Edm.String", null || v.is_string()),
        Bool => ("Edm.Boolean", null || v.is_boolean()),
        Decimal => ("Edm.Decimal", null || v.is_number()),
        Int => ("Edm.Int32", null || v.is_i64()),
        Date => (
            "Edm.DateTimeOffset",
            null || v
                .as_str()
                .is_some_and(|d| chrono::DateTime::parse_from_rfc3339(d).is_ok()),
        ),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    let value = headers.get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or_default()
}

pub struct DataverseFake {
    pub state: Arc<Mutex<DataverseState>>,
}

type D = State<Arc<Mutex<DataverseState>>>;

impl DataverseFake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(DataverseState {
            tenant: "5c1d3b7e-2f4a-4c6d-8e9f-0a1b2c3d4e5f".into(),
            client_id: "0f8b7a6c-5d4e-4f3a-9b2c-1d0e9f8a7b6c".into(),
            secret: "Wq8Q~parley.dataverse_fake-SECRET".into(),
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/api/data/v9.2/{*rest}", any(api))
            .with_state(state.clone());
        let base = serve(router).await;
        state.lock().unwrap().base = base;
        Self { state }
    }

    pub fn settings(&self) -> Value {
        let s = self.state.lock().unwrap();
        json!({"tenantId": s.tenant, "clientId": s.client_id, "clientSecret": s.secret,
            "environmentUrl": s.base, "loginUrl": s.base, "table": "incident",
            "caseNumberColumn": "parley_casenumber", "statusColumn": "parley_status",
            "paidColumn": "parley_paid"})
    }

    /// An incident with this case number, as made in Dynamics: its id.
    #[allow(dead_code)]
    pub fn add_record(&self, case_number: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = s.guid();
        let ticket = format!("CAS-{:05}-D4T4V3", s.rows.len() + 1);
        let data = json!({"incidentid": id, "title": format!("Debt {case_number}"),
            "ticketnumber": ticket, "parley_casenumber": case_number});
        s.push("incident", &id, data);
        id
    }

    /// A contact with this email address (`emailaddress1`): its id.
    #[allow(dead_code)]
    pub fn add_contact(&self, email: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = s.guid();
        let data = json!({"contactid": id, "fullname": "Dana Debtor", "emailaddress1": email});
        s.push("contact", &id, data);
        id
    }

    /// The live emails and tasks, oldest first: each with `"@type"` and its properties.
    #[allow(dead_code)]
    pub fn activities(&self) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let activities = s.rows.iter().filter(|r| is_activity(r.table));
        activities.map(Row::json).collect()
    }

    /// Any row by its id, with `"@type"`; `Null` when there is none.
    #[allow(dead_code)]
    pub fn record(&self, id: &str) -> Value {
        let (id, s) = (id.to_ascii_lowercase(), self.state.lock().unwrap());
        let row = s.rows.iter().find(|r| r.id == id);
        row.map_or(Value::Null, Row::json)
    }

    /// Every token handed out stops working (as when it expires).
    #[allow(dead_code)]
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    #[allow(dead_code)]
    pub fn throttle(&self, n: usize) {
        self.state.lock().unwrap().throttle = n;
    }

    #[allow(dead_code)]
    pub fn fail_after_write(&self, n: usize) {
        self.state.lock().unwrap().fail_after_write = n;
    }
}

/// `POST {loginUrl}/{tenant}/oauth2/v2.0/token`, the client credentials grant; refusals in
/// the order Entra ID checks, each with its AADSTS code.
async fn token(State(state): D, Path(tenant): Path<String>, body: String) -> Response {
    let f = form(&body);
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let (client, scope) = (field("client_id"), field("scope"));
    let resource = scope.strip_suffix("/.default");
    let checks = [
        (tenant == s.tenant, 400, "invalid_request", 90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")),
        (field("grant_type") == "client_credentials", 400, "unsupported_grant_type", 70003,
            "The app requested an unsupported grant type.".into()),
        (client == s.client_id, 400, "unauthorized_client", 700016,
            format!("Application with identifier '{client}' was not found in the directory '{tenant}'.")),
        (resource.is_some(), 400, "invalid_scope", 1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")),
        (resource == Some(s.base.as_str()), 400, "invalid_resource", 500011,
            format!("The resource principal named {} was not found in the tenant named {tenant}.", resource.unwrap_or_default())),
        (field("client_secret") == s.secret, 401, "invalid_client", 7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".into()),
    ];
    if let Some((_, status, error, code, text)) = checks.into_iter().find(|c| !c.0) {
        let description =
            format!("AADSTS{code}: {text} Trace ID: 0f6c1c52-3d1e-4b7a-9c2d-5e8f7a6b4c3d");
        let body = json!({"error": error, "error_description": description, "error_codes": [code]});
        return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    }
    let token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.dv.{}", s.tick());
    s.tokens.insert(token.clone());
    let body = json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
        "access_token": token});
    axum::Json(body).into_response()
}

/// The token, service protection, then the OData headers, before anything else.
fn gate(s: &mut DataverseState, headers: &HeaderMap, writes: bool) -> Option<Response> {
    if !s.tokens.contains(&bearer(headers)) {
        let challenge = format!(
            "Bearer authorization_uri={}/{}/oauth2/authorize, resource_id={}/",
            s.base, s.tenant, s.base
        );
        let refused = (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]);
        return Some(refused.into_response());
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        let message =
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds.";
        let mut r = fail(429, "0x80072322", message).into_response();
        let retry = HeaderValue::from_static("1");
        r.headers_mut().insert("retry-after", retry);
        return Some(r);
    }
    let accepts = header(headers, "accept")
        .split(',')
        .any(|a| a.trim().starts_with("application/json"));
    let json_body = header(headers, "content-type").starts_with("application/json");
    let odata =
        header(headers, "odata-maxversion") == "4.0" && header(headers, "odata-version") == "4.0";
    if !odata || !accepts || (writes && !json_body) {
        let message = "This fake needs OData-MaxVersion: 4.0, OData-Version: 4.0, Accept: \
                       application/json and, with a body, Content-Type: application/json.";
        return Some(bad(message).into_response());
    }
    None
}

async fn api(
    State(state): D,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let writes = method == Method::POST || method == Method::PATCH;
    let mut r = match gate(&mut s, &headers, writes) {
        Some(refused) => refused,
        None => s
            .route(method.as_str(), &uri, &headers, &body)
            .unwrap_or_else(IntoResponse::into_response),
    };
    let version = HeaderValue::from_static("4.0");
    r.headers_mut().insert("odata-version", version);
    r
}

/// `$filter` in the one shape parley sends: `column eq 'text'` (a `'` doubled inside) or
/// `column eq <guid>`. The column and the value, lowercase (Dataverse compares text without
/// regard to case).
fn parse_filter(t: &Table, text: &str) -> Result<(&'static str, String), Refusal> {
    let syntax = |at: usize| bad(format!("Syntax error at position {at} in '{text}'."));
    let (name, rest) = text.split_once(' ').ok_or_else(|| syntax(text.len()))?;
    let literal = rest
        .strip_prefix("eq ")
        .ok_or_else(|| syntax(name.len() + 1))?;
    let (column, kind) = t.column(name).ok_or_else(|| no_property(t.logical, name))?;
    let (value, found) = match literal.strip_prefix('\'') {
        Some(inner) => {
            let (mut out, mut chars, mut closed) = (String::new(), inner.chars().peekable(), false);
            while let Some(c) = chars.next() {
                if c != '\'' {
                    out.push(c);
                } else if chars.next_if_eq(&'\'').is_some() {
                    out.push('\'');
                } else {
                    closed = true;
                    break;
                }
            }
            if !closed || chars.next().is_some() {
                return Err(syntax(text.len()));
            }
            (out, Text)
        }
        None => (guid(literal).ok_or_else(|| syntax(text.len()))?, Key),
    };
    if found != kind {
        let (want, have) = (edm(kind, &Value::Null).0, edm(found, &Value::Null).0);
        return Err(bad(format!(
            "A binary operator with incompatible types was detected. Found operand types '{want}' and '{have}' for operator kind 'Equal'."
        )));
    }
    Ok((column, value.to_lowercase()))
}

/// A create's or an update's body: known columns of their type, and the navigation
/// properties the table declares (`regardingobjectid_{table}_{activity}@odata.bind`; an
/// email's `email_activity_parties`).
fn payload(t: &Table, body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    let Ok(Value::Object(data)) = serde_json::from_slice::<Value>(body) else {
        return Err(payload_error(
            t.set,
            "The body is not a JSON object.".into(),
        ));
    };
    for (k, v) in &data {
        if let Some(nav) = k.strip_suffix("@odata.bind") {
            if regarding_target(t, k).is_none() {
                return Err(bad(format!(
                    "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                )));
            }
            continue;
        }
        if k == "email_activity_parties" && t.logical == "email" {
            continue; // checked in `parties`
        }
        let Some((_, kind)) = t.column(k).filter(|(c, _)| !c.starts_with('_')) else {
            let logical = t.logical;
            let message = format!(
                "Invalid property '{k}' was found in entity 'Microsoft.Dynamics.CRM.{logical}'."
            );
            return Err(bad(message));
        };
        let (name, fits) = edm(kind, v);
        if !fits {
            let detail = format!("Cannot convert the literal '{v}' to the expected type '{name}'.");
            return Err(payload_error(t.set, detail));
        }
    }
    Ok(data)
}

/// The table a `regardingobjectid_{table}_{activity}@odata.bind` of activity `t` points to.
fn regarding_target(t: &Table, key: &str) -> Option<&'static Table> {
    let logical = key
        .strip_suffix("@odata.bind")?
        .strip_prefix("regardingobjectid_")?
        .strip_suffix(t.logical)?
        .strip_suffix('_')?;
    let mut targets = TABLES.iter().filter(|r| !r.activity() && t.activity());
    targets.find(|r| r.logical == logical)
}

/// An email's `email_activity_parties`: each a `participationtypemask` (1 to 11) and an
/// `addressused`, nothing else.
fn parties(data: &Map<String, Value>) -> Result<(), Refusal> {
    let Some(list) = data.get("email_activity_parties") else {
        return Ok(());
    };
    let shape = "email_activity_parties is a collection of activityparty objects, each with a \
                 participationtypemask (1 to 11) and an addressused";
    let wrong = || payload_error("emails", shape.into());
    for party in list.as_array().ok_or_else(wrong)? {
        let party = party.as_object().ok_or_else(wrong)?;
        let known = ["participationtypemask", "addressused"];
        if let Some(k) = party.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!(
                "Invalid property '{k}' was found in entity 'Microsoft.Dynamics.CRM.activityparty'."
            )));
        }
        let mask = party.get("participationtypemask").and_then(Value::as_i64);
        let address = party.get("addressused").is_some_and(Value::is_string);
        if !address || !mask.is_some_and(|m| (1..=11).contains(&m)) {
            return Err(wrong());
        }
    }
    Ok(())
}

impl DataverseState {
    fn tick(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn guid(&mut self) -> String {
        format!("5e0f1c2a-7b3d-4e6f-8a9b-{:012x}", self.tick())
    }

    fn push(&mut self, table: &'static str, id: &str, data: Value) {
        let Value::Object(data) = data else {
            unreachable!("a row is an object")
        };
        let id = id.to_string();
        self.rows.push(Row { table, id, data });
    }

    fn find(&self, t: &Table, id: &str) -> Option<usize> {
        let mut rows = self.rows.iter();
        rows.position(|r| r.table == t.logical && r.id == id)
    }

    /// `{set}`, `{set}(<guid>)` or `EntityDefinitions(LogicalName='…')` under the API.
    fn route(
        &mut self,
        method: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Refusal> {
        let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
        let rest = path.strip_prefix(API).unwrap_or_default();
        let raw = uri.query().unwrap_or_default().as_bytes();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw).into_owned().collect();
        let segment = |name: &str| {
            let message = format!("Resource not found for the segment '{name}'.");
            fail(404, "0x8006088a", message)
        };
        let (name, key) = match rest.split_once('(') {
            None => (rest, None),
            Some((name, key)) => (
                name,
                Some(key.strip_suffix(')').ok_or_else(|| segment(rest))?),
            ),
        };
        if name == "EntityDefinitions" && method == "GET" {
            return self.definition(key, &pairs);
        }
        let t = TABLES
            .iter()
            .find(|t| t.set == name)
            .ok_or_else(|| segment(name))?;
        let unrecognized = |k: &str| bad(format!("Unrecognized 'Edm.Guid' literal '{k}'."));
        let id = key
            .map(|k| guid(k).ok_or_else(|| unrecognized(k)))
            .transpose()?;
        match (method, id) {
            ("GET", None) => self.select(t, &pairs),
            ("POST", None) => self.create(t, body),
            ("PATCH", Some(id)) => self.update(t, &id, headers, body),
            ("DELETE", Some(id)) => {
                let at = self.find(t, &id).ok_or_else(|| missing(t.logical, &id))?;
                self.rows.remove(at);
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            _ => Err(fail(
                405,
                "0x80060888",
                format!("No HTTP resource was found that matches the request URI '{path}'."),
            )),
        }
    }

    fn definition(
        &self,
        key: Option<&str>,
        pairs: &[(String, String)],
    ) -> Result<Response, Refusal> {
        let name = key.and_then(|k| k.strip_prefix("LogicalName='")?.strip_suffix('\''));
        let name = name.ok_or_else(|| bad("Bad Request - Error in query syntax."))?;
        let Some((i, t)) = TABLES.iter().enumerate().find(|(_, t)| t.logical == name) else {
            let message = format!("Could not find entity with logical name '{name}'.");
            return Err(fail(404, "0x80040217", message));
        };
        let select = match pairs {
            [(k, v)] if k == "$select" => v.as_str(),
            [] => "LogicalName,EntitySetName,PrimaryIdAttribute",
            _ => return Err(bad("EntityDefinitions takes $select only here.")),
        };
        let all =
            json!({"LogicalName": t.logical, "EntitySetName": t.set, "PrimaryIdAttribute": t.key});
        let context = format!(
            "{}{API}$metadata#EntityDefinitions({select})/$entity",
            self.base
        );
        let mut answer = json!({"@odata.context": context});
        for c in select.split(',') {
            answer[c] = all
                .get(c)
                .cloned()
                .ok_or_else(|| no_property("EntityMetadata", c))?;
        }
        answer["MetadataId"] = json!(format!("70816501-edb9-4740-a16c-6a5efbc05d{i:02x}"));
        Ok(axum::Json(answer).into_response())
    }

    /// `GET {set}` with `$select` (columns that exist; all when absent), `$filter` (as
    /// [`parse_filter`] reads it) and `$top`; no other query option.
    fn select(&self, t: &Table, pairs: &[(String, String)]) -> Result<Response, Refusal> {
        let mut columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let (mut select, mut filter, mut top) = (String::new(), None, 5000);
        for (k, v) in pairs {
            match k.as_str() {
                "$select" => {
                    let found = v.split(',').map(|c| {
                        t.column(c)
                            .map(|(n, _)| n)
                            .ok_or_else(|| no_property(t.logical, c))
                    });
                    columns = found.collect::<Result<Vec<_>, _>>()?;
                    select = format!("({v})");
                }
                "$filter" => filter = Some(parse_filter(t, v)?),
                "$top" => {
                    let n = v.parse::<usize>().ok().filter(|n| *n > 0);
                    top = n.ok_or_else(|| {
                        bad(format!("Invalid value '{v}' for $top query option found."))
                    })?;
                }
                _ => return Err(bad(format!("The query parameter '{k}' is not supported."))),
            }
        }
        let fits = |r: &&Row| {
            filter.as_ref().is_none_or(|(c, want)| {
                let have = r.data.get(*c).and_then(Value::as_str);
                have.is_some_and(|h| h.to_lowercase() == *want)
            })
        };
        let rows = self
            .rows
            .iter()
            .filter(|r| r.table == t.logical)
            .filter(fits);
        let value: Vec<Value> = rows
            .take(top)
            .map(|r| {
                let pick = columns.iter().map(|c| {
                    (
                        (*c).to_string(),
                        r.data.get(*c).cloned().unwrap_or_default(),
                    )
                });
                Value::Object(pick.collect())
            })
            .collect();
        let context = format!("{}{API}$metadata#{}{select}", self.base, t.set);
        Ok(axum::Json(json!({"@odata.context": context, "value": value})).into_response())
    }

    fn created(&self, t: &Table, id: &str) -> Response {
        let entity = format!("{}{API}{}({id})", self.base, t.set);
        (StatusCode::NO_CONTENT, [("odata-entityid", entity)]).into_response()
    }

    /// `POST {set}`: an activity needs its `activityid` (parley chooses it, so that a retry
    /// cannot log a message twice) and one regarding bind to a row that exists.
    fn create(&mut self, t: &Table, body: &[u8]) -> Result<Response, Refusal> {
        let activity = t.activity();
        if activity {
            self.batches += 1;
        }
        let mut data = payload(t, body)?;
        let id = match data.get(t.key).and_then(Value::as_str) {
            Some(id) => id.to_ascii_lowercase(),
            None if activity => {
                let message = "activityid is required: parley names each activity so that a retry cannot log it twice.";
                return Err(fail(400, "0x80040203", message));
            }
            None => self.guid(),
        };
        data.insert(t.key.into(), json!(id));
        if activity {
            self.regarding(t, &mut data)?;
            parties(&data)?;
        }
        let taken = self
            .rows
            .iter()
            .any(|r| r.id == id && (r.table == t.logical || (activity && is_activity(r.table))));
        if taken {
            let message = "A record with matching key values already exists.";
            return Err(fail(412, "0x80040237", message));
        }
        self.push(t.logical, &id, Value::Object(data));
        if activity && self.fail_after_write > 0 {
            self.fail_after_write -= 1;
            return Err(fail(503, "0x80040216", "An unexpected error occurred."));
        }
        Ok(self.created(t, &id))
    }

    /// Exactly one regarding bind, to a row that exists (`/incidents(<guid>)`, without the
    /// slash, or the absolute URL); the lookup then also reads as Dataverse answers it.
    fn regarding(&self, t: &Table, data: &mut Map<String, Value>) -> Result<(), Refusal> {
        let binds: Vec<(String, &'static Table)> = data
            .keys()
            .filter_map(|k| regarding_target(t, k).map(|target| (k.clone(), target)))
            .collect();
        let [(key, target)] = binds.as_slice() else {
            let logical = t.logical;
            let message = format!(
                "Each {logical} needs exactly one regardingobjectid_<table>_{logical}@odata.bind: parley logs every activity on a record."
            );
            return Err(fail(400, "0x80040203", message));
        };
        let uri = data[key.as_str()].as_str().unwrap_or_default();
        let relative = uri.strip_prefix(self.base.as_str()).unwrap_or(uri);
        let relative = relative.strip_prefix("/api/data/v9.2").unwrap_or(relative);
        let relative = relative.strip_prefix('/').unwrap_or(relative);
        let id = relative
            .strip_prefix(target.set)
            .and_then(|r| r.strip_prefix('(')?.strip_suffix(')'))
            .and_then(guid)
            .ok_or_else(|| {
                bad(format!(
                    "The value '{uri}' of '{key}' is not the URI of a {} row, as /{}(<guid>).",
                    target.logical, target.set
                ))
            })?;
        if self.find(target, &id).is_none() {
            return Err(missing(target.logical, &id));
        }
        data.insert("_regardingobjectid_value".into(), json!(id));
        let annotation = "_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname";
        data.insert(annotation.into(), json!(target.logical));
        Ok(())
    }

    /// `PATCH {set}(<guid>)`: with `If-Match: *` an update only, 404 when the row is
    /// missing; without it an upsert, as Dataverse does.
    fn update(
        &mut self,
        t: &Table,
        id: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Refusal> {
        let mut data = payload(t, body)?;
        data.insert(t.key.into(), json!(id));
        let if_match = headers.get("if-match").map(|v| v.as_bytes());
        if if_match.is_some_and(|m| m != b"*") {
            let message = "The version of the existing record doesn't match the RowVersion property provided.";
            return Err(fail(412, "0x80060882", message));
        }
        let Some(at) = self.find(t, id) else {
            if if_match.is_some() {
                return Err(missing(t.logical, id));
            }
            self.push(t.logical, id, Value::Object(data));
            return Ok(self.created(t, id));
        };
        self.rows[at].data.extend(data);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}
