//! What the OpenAPI document says beyond each handler's own annotation: the problem responses,
//! declared once under `components.responses` and referenced from every operation that can give
//! them, and the shapes of the strings the handlers check, so that a request the document calls
//! valid is one the API accepts, and one it calls invalid is refused.

use serde_json::Value;
use utoipa::Modify;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, OpenApi, Ref, RefOr};

/// The media type of every error response (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Each problem response: status, component name, description.
const PROBLEMS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "The query string or the body cannot be read: `invalid_query`, `malformed_json`, \
         `invalid_body`.",
    ),
    (
        401,
        "Unauthorized",
        "No credentials, or a token that is unknown or revoked: `unauthorized`.",
    ),
    (
        403,
        "Forbidden",
        "The token's party may not do this: `forbidden`.",
    ),
    (
        404,
        "NotFound",
        "No such resource, or not one this token's party can see: `not_found`.",
    ),
    (
        408,
        "RequestTimeout",
        "The request, its body included, took longer than the server allows: \
         `request_timeout`.",
    ),
    (
        409,
        "Conflict",
        "The request conflicts with the resource's current state.",
    ),
    (
        413,
        "PayloadTooLarge",
        "The body is larger than this endpoint accepts: `payload_too_large`.",
    ),
    (
        415,
        "UnsupportedMediaType",
        "The body's `Content-Type` is not one this endpoint reads: `unsupported_media_type`.",
    ),
    (
        422,
        "UnprocessableContent",
        "The body is well-formed but its values are refused; `code` names the rule, e.g. \
         `invalid_body`, `validation_failed`.",
    ),
    (
        429,
        "TooManyRequests",
        "The token's rate limit is spent: `rate_limited`; retry after `Retry-After` seconds.",
    ),
    (
        503,
        "ServiceUnavailable",
        "The database is not reachable: `service_unavailable`; retry after `Retry-After` \
         seconds.",
    ),
];

fn component_name(status: u16) -> Option<&'static str> {
    PROBLEMS
        .iter()
        .find(|(s, _, _)| *s == status)
        .map(|(_, name, _)| *name)
}

/// Declares the problem responses and the security schemes, then attaches to every operation
/// the problems it can give:
///
/// - 401 (and 429 for bearer-only operations) where credentials are required;
/// - 400 where there is a query string or a body to read;
/// - 404 where a path names a resource;
/// - 413, 415 and 422 where there is a body;
/// - 408 and 503 everywhere: any request may run over the server's time limit, and every
///   operation reads the database.
///
/// Problem responses an annotation declares itself (`body = ProblemBody`, or a bare status)
/// become references to the same components, so every error is `application/problem+json`.
pub struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        for (status, name, description) in PROBLEMS {
            let mut response = ResponseBuilder::new().description(*description).content(
                PROBLEM_JSON,
                Content::new(Some(Ref::from_schema_name("ProblemBody"))),
            );
            let integer = || {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .build()
            };
            let text = || ObjectBuilder::new().schema_type(Type::String).build();
            match status {
                401 => {
                    response = response.header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(text())
                            .description(Some("`Bearer`"))
                            .build(),
                    );
                }
                429 | 503 => {
                    response = response.header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(integer())
                            .description(Some("seconds"))
                            .build(),
                    );
                }
                _ => {}
            }
            components
                .responses
                .insert((*name).to_string(), response.build().into());
        }
        for (path, item) in api.paths.paths.iter_mut() {
            for (_, op) in operations(item) {
                attach_problems(path, op);
            }
        }
    }
}

/// Operation ids that say what an operation does, where the handler's own name is too short
/// to be unique or clear across the document (`list`, `create`, `open`): by method and path.
/// Every other operation takes its handler's name in camelCase (`create_case` →
/// `createCase`). Generated clients name their functions after these, so each is unique.
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("get", "/api/cases/{caseId}/documents", "listDocuments"),
    ("post", "/api/cases/{caseId}/documents", "uploadDocument"),
    ("get", "/api/documents/{documentId}", "getDocument"),
    (
        "get",
        "/api/documents/{documentId}/download",
        "downloadDocument",
    ),
    ("get", "/api/suppressions", "listSuppressions"),
    (
        "delete",
        "/api/suppressions/{suppressionId}",
        "liftSuppression",
    ),
    ("get", "/api/webhooks", "listWebhooks"),
    ("post", "/api/webhooks", "createWebhook"),
    ("delete", "/api/webhooks/{webhookId}", "deleteWebhook"),
    (
        "get",
        "/api/webhooks/{webhookId}/deliveries",
        "listWebhookDeliveries",
    ),
    (
        "post",
        "/api/webhooks/{webhookId}/deliveries/{deliveryId}/resend",
        "resendWebhookDelivery",
    ),
    (
        "post",
        "/api/webhooks/{webhookId}/recover",
        "recoverWebhookDeliveries",
    ),
    ("post", "/api/messages/{messageId}/retry", "retryMessage"),
    ("post", "/api/messages/{messageId}/cancel", "cancelMessage"),
    (
        "post",
        "/api/messages/{messageId}/accept",
        "acceptReceivedMessage",
    ),
    (
        "post",
        "/api/messages/{messageId}/reject",
        "rejectReceivedMessage",
    ),
    ("get", "/api/inbound/review", "listMessagesAwaitingReview"),
    ("get", "/api/inbound/unmatched", "listUnmatched"),
    (
        "post",
        "/api/inbound/unmatched/{inboundId}/assign",
        "assignUnmatched",
    ),
    ("get", "/api/cases/{caseId}/audit-log", "getAuditLog"),
    ("get", "/api/data-subjects/export", "exportDataSubject"),
    ("post", "/api/data-subjects/erase", "eraseDataSubject"),
    ("get", "/t/open/{token}", "trackOpen"),
    ("get", "/t/click/{token}", "trackClick"),
    ("get", "/unsubscribe/{token}", "unsubscribePage"),
    ("post", "/unsubscribe/{token}", "unsubscribe"),
    (
        "get",
        "/api/threads/{threadId}/messages",
        "listThreadMessages",
    ),
    (
        "get",
        "/api/messages/{messageId}/delivery-report",
        "getDeliveryReport",
    ),
];

/// Names every operation ([`OPERATION_IDS`], else its handler's name in camelCase).
pub struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, api: &mut OpenApi) {
        for (path, item) in api.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let named = OPERATION_IDS
                    .iter()
                    .find(|(m, p, _)| *m == method && p == path)
                    .map(|(_, _, id)| (*id).to_string());
                op.operation_id = named.or_else(|| op.operation_id.as_deref().map(camel_case));
            }
        }
    }
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The `TimeZone` component (see [`timezone_or_null`]).
pub struct SharedSchemas;

impl Modify for SharedSchemas {
    fn modify(&self, api: &mut OpenApi) {
        api.components
            .get_or_insert_with(Default::default)
            .schemas
            .insert("TimeZone".to_string(), Schema::Object(timezone()).into());
    }
}

/// Rules between the members of a request that a struct's own schema cannot state, added to
/// its component as `allOf: [<the struct's schema>, <the rule>]`, so that whatever the
/// document calls valid the server takes:
/// - an erasure names exactly one of `email` and `phone`;
/// - an email template has a subject in every language, an SMS template none and no HTML;
/// - an email goes to at most 50 addresses (and cc), an SMS to one number and no cc.
pub struct RequestRules;

/// Somewhere a character that is not white space.
const NOT_BLANK: &str =
    "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// A character that is not white space among others, none of them NUL.
const TEMPLATE_TEXT: &str = "^[^\\x00]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00]*$";

/// A subject line: not blank, no CR, LF or NUL.
const SUBJECT: &str = "^[^\\r\\n\\x00]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\r\\n\\x00]*$";

fn null() -> Object {
    ObjectBuilder::new().schema_type(Type::Null).build()
}

fn subject_line() -> Object {
    string().pattern(Some(SUBJECT)).build()
}

/// Exactly one of `email` and `phone`.
fn one_subject() -> OneOfBuilder {
    let only = |given: &str, other: &str| {
        ObjectBuilder::new()
            .required(given)
            .property(given, string())
            .property(other, null())
    };
    OneOfBuilder::new()
        .item(only("email", "phone"))
        .item(only("phone", "email"))
}

/// Exactly one of two members, as query parameters (absent rather than null).
fn one_of_two(a: &str, b: &str) -> OneOfBuilder {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().required(a))
        .item(ObjectBuilder::new().required(b))
}

/// An email template's texts each have a subject; an SMS template's none, and no HTML.
fn template_texts() -> OneOfBuilder {
    let email = ObjectBuilder::new()
        .required("subject")
        .property("type", words(["email"]))
        .property("subject", subject_line())
        .property(
            "translations",
            ObjectBuilder::new()
                .property_names(Some(language()))
                .additional_properties(Some(
                    ObjectBuilder::new()
                        .required("subject")
                        .property("subject", subject_line()),
                )),
        );
    let sms_text = || {
        ObjectBuilder::new()
            .property("subject", null())
            .property("htmlBody", null())
    };
    let sms = sms_text().property("type", words(["sms"])).property(
        "translations",
        ObjectBuilder::new()
            .property_names(Some(language()))
            .additional_properties(Some(sms_text())),
    );
    OneOfBuilder::new().item(email).item(sms)
}

/// An email to at most 50 addresses and as many cc, with a subject (its own or its
/// template's); an SMS to one number and no cc; a body (its own or its template's).
fn recipients() -> AllOfBuilder {
    let to = |one: Object, most: usize| {
        OneOfBuilder::new()
            .item(null())
            .item(one.clone())
            .item(array(one).max_items(Some(most)))
    };
    // A template gives what is not given: the body, and an email's subject.
    let or_template = |field: &str, schema: Object| {
        AnyOfBuilder::new()
            .item(ObjectBuilder::new().required(field).property(field, schema))
            .item(
                ObjectBuilder::new()
                    .required("templateId")
                    .property("templateId", template_id()),
            )
    };
    let email = AllOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .property("messageType", words(["email"]))
                .property("to", to(self::email(), 50))
                .property("cc", array(self::email()).max_items(Some(50)))
                .property("subject", or_null(subject_line())),
        )
        .item(or_template("subject", subject_line()));
    let sms = ObjectBuilder::new()
        .property("messageType", words(["sms"]))
        .property("to", to(phone(), 1))
        .property("cc", array(string().build()).max_items(Some(0)))
        .property("subject", or_null(subject_line()));
    AllOfBuilder::new()
        .item(OneOfBuilder::new().item(email).item(sms))
        .item(or_template(
            "body",
            string().pattern(Some(NOT_BLANK)).build(),
        ))
}

/// A folder's path under a drive's root: names joined by `/`, each starting with no space
/// and ending with neither a space nor a dot, none holding `" * : < > ? \ |`.
const FOLDER: &str = r#"^(([^"*:<>?\\|/\x00-\x1f ][^"*:<>?\\|/\x00-\x1f]*)?[^"*:<>?\\|/\x00-\x1f. ])(/([^"*:<>?\\|/\x00-\x1f ][^"*:<>?\\|/\x00-\x1f]*)?[^"*:<>?\\|/\x00-\x1f. ])*$"#;

/// A connector's settings: its type's fields, each of its kind; on creation the ones
/// without a default are required, and nothing else is taken.
fn settings_of(kind: crate::domain::connector::ConnectorType, create: bool) -> ObjectBuilder {
    use crate::domain::connector::Kind;
    let mut o = ObjectBuilder::new().additional_properties(Some(
        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
    ));
    for f in kind.fields() {
        let schema: Object = match f.kind {
            Kind::Text if f.name == "target" => string()
                .enum_values(Some(["imap", "smtp", "documents"]))
                .build(),
            Kind::Text => text(2000),
            Kind::Url => connector_url(),
            Kind::MailUrl => string()
                .pattern(Some("^(imaps?|smtps?)://[^/?#]+"))
                .max_length(Some(2000))
                .build(),
            Kind::Folder => string().pattern(Some(FOLDER)).max_length(Some(400)).build(),
            Kind::Bool => ObjectBuilder::new().schema_type(Type::Boolean).build(),
            Kind::ServiceAccount => service_account(),
            Kind::PrivateKey => string()
                .pattern(Some("-----BEGIN PRIVATE KEY-----"))
                .max_length(Some(16_384))
                .build(),
            Kind::Name => string()
                .pattern(Some("^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$"))
                .build(),
        };
        o = o.property(f.name, schema);
        if create && f.default.is_none() && !f.optional {
            o = o.required(f.name);
        }
    }
    o
}

/// A Google service account's JSON key, as an object (the file's content).
fn service_account() -> Object {
    ObjectBuilder::new()
        .required("client_email")
        .required("private_key")
        .required("token_uri")
        .property("client_email", text(320))
        .property(
            "private_key",
            string()
                .pattern(Some("BEGIN PRIVATE KEY"))
                .max_length(Some(12_000))
                .build(),
        )
        .property("token_uri", connector_url())
        .build()
}

/// Each connector type with its own settings.
fn connector_settings() -> OneOfBuilder {
    use crate::domain::connector::ConnectorType;
    ConnectorType::ALL
        .iter()
        .filter(|kind| **kind != ConnectorType::Archive)
        .fold(OneOfBuilder::new(), |one, kind| {
            let settings: RefOr<Schema> = if *kind == ConnectorType::Box {
                // Box acts for the enterprise or for one user: exactly one of the two ids.
                AllOfBuilder::new()
                    .item(settings_of(*kind, true))
                    .item(one_of_two("enterpriseId", "userId"))
                    .into()
            } else {
                settings_of(*kind, true).into()
            };
            one.item(
                ObjectBuilder::new()
                    .property("type", words([kind.as_str()]))
                    .property("settings", settings),
            )
        })
        .item(
            ObjectBuilder::new()
                .property("type", words(["archive"]))
                .property("settings", archive_settings()),
        )
}

/// An archive's settings, by its target: what each needs and nothing else.
fn archive_settings() -> OneOfBuilder {
    let url = |schemes: &str| {
        string()
            .pattern(Some(format!(
                "^{schemes}://[a-z0-9][a-z0-9.-]{{0,200}}(:[1-9][0-9]{{0,3}})?(/[A-Za-z0-9]{{0,50}})?$"
            )))
            .max_length(Some(2000))
            .build()
    };
    let closed = || {
        ObjectBuilder::new().additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ))
    };
    OneOfBuilder::new()
        .item(
            closed()
                .property("target", words(["imap"]))
                .property("url", url("imaps?"))
                .required("target")
                .required("url"),
        )
        .item(
            closed()
                .property("target", words(["smtp"]))
                .property("url", url("smtps?"))
                .property("journalAddress", email())
                .required("target")
                .required("url")
                .required("journalAddress"),
        )
        .item(
            closed()
                .property("target", words(["documents"]))
                .required("target"),
        )
}

impl Modify for RequestRules {
    fn modify(&self, api: &mut OpenApi) {
        let rules: [(&str, RefOr<Schema>); 5] = [
            ("CreateConnectorRequest", connector_settings().into()),
            ("EraseRequest", one_subject().into()),
            ("ExportQuery", one_of_two("email", "phone").into()),
            ("TemplateRequest", template_texts().into()),
            ("SendMessageRequest", recipients().into()),
        ];
        let schemas = &mut api.components.get_or_insert_with(Default::default).schemas;
        for (name, rule) in rules {
            let Some(own) = schemas.remove(name) else {
                continue;
            };
            let joined = AllOfBuilder::new().item(own).item(rule);
            schemas.insert(name.to_string(), joined.into());
        }
    }
}

/// The operations of a path, with their methods.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
        ("head", &mut item.head),
        ("options", &mut item.options),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

fn problem_ref(status: u16) -> Option<RefOr<utoipa::openapi::Response>> {
    component_name(status)
        .map(|name| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))))
}

fn attach_problems(path: &str, op: &mut Operation) {
    // What an annotation declared as a problem becomes the shared component.
    for (status, response) in op.responses.responses.iter_mut() {
        let Ok(code) = status.parse::<u16>() else {
            continue;
        };
        if code < 400 {
            continue;
        }
        if let (RefOr::T(_), Some(shared)) = (&*response, problem_ref(code)) {
            *response = shared;
        }
    }
    let params = op.parameters.as_deref().unwrap_or_default();
    let in_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path) || path.contains('{');
    let in_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let body = op.request_body.is_some();
    let schemes: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter_map(|v| v.as_object().cloned())
        .flat_map(|o| o.keys().cloned().collect::<Vec<_>>())
        .collect();
    let mut add = |status: u16| {
        if let Some(shared) = problem_ref(status) {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert(shared);
        }
    };
    if !schemes.is_empty() {
        add(401);
        if schemes.iter().all(|s| s == "bearer") {
            add(429);
        }
    }
    if in_query || body {
        add(400);
    }
    if in_path {
        add(404);
    }
    if body {
        add(413);
        add(415);
        add(422);
    }
    add(408);
    add(503);
}

// ---------------------------------------------------------------------------------------------
// String shapes. Each mirrors a check the handlers make, so both sides agree on what is valid.

/// Printable text that is not blank: no control characters, at least one character that is not
/// white space (the handlers trim it).
const PRINTABLE: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$";

/// E.164 after dropping spaces, hyphens, dots and parentheses: `+`, a first digit that is not
/// 0, 8 to 15 digits in all.
const PHONE: &str = "^\\s*[ ().-]*\\+[ ().-]*[1-9](?:[ ().-]*[0-9]){7,14}[ ().-]*\\s*$";

/// `da`, `en-GB`, `en_gb`.
const LANGUAGE: &str = "^[A-Za-z]{2,3}(?:[-_][A-Za-z]{2})?$";

/// ISO 4217.
const CURRENCY: &str = "^[A-Z]{3}$";

/// A positive amount with at most two decimals, below 10^12.
const AMOUNT: &str = "^(?:[1-9][0-9]{0,11}(?:\\.[0-9]{1,2})?|0\\.(?:0[1-9]|[1-9][0-9]?))$";

/// A page cursor: base64url (no padding) of printable ASCII, as `nextCursor` gives it.
const CURSOR: &str = "^(?:[I-Za-f][C-HS-Xi-ny-z0-3](?:[AEIMQUYcgkosw048][g-z0-9_-]|[BFJNRVZdhlptx159][A-Za-z0-9_-]))*(?:[I-Za-f][AQgw]|[I-Za-f][C-HS-Xi-ny-z0-3][AEIMQUYcgkosw048])?$";

/// The audit log's cursor: base64url (no padding) of an entry number of 1 to 18 digits.
const NUMBER_CURSOR: &str = "^(?:(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]){0,5}(?:(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]|(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]|[MN][AQgw]|O[AQ])$";

/// A calendar date, `YYYY-MM-DD` (February 29 in leap years only).
const DATE: &str = "^(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)";

/// RFC 3339 time of day after a date: `THH:MM:SS`, optional fraction, `Z` or an offset.
const TIME: &str = "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$";

/// A webhook URL: `http(s)://`, optional user info, a host name (its last label starting with
/// a letter) or an IPv4 address, an optional port, path and query; no fragment. What
/// `webhooks::web_url` takes.
const WEB_URL: &str = r"^https?://(?:(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*@)?(?:(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*|(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?(?:\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// The same schema that also takes `null` (which the handler reads as "absent" or "clear").
pub fn or_null(mut o: Object) -> Object {
    let mut types = match o.schema_type {
        SchemaType::Type(t) => vec![t],
        SchemaType::Array(ts) => ts,
        SchemaType::AnyValue => return o,
    };
    if !types.contains(&Type::Null) {
        types.push(Type::Null);
    }
    o.schema_type = SchemaType::Array(types);
    if let Some(values) = &mut o.enum_values {
        values.push(Value::Null);
    }
    o
}

/// 1 to `max` printable characters, not blank.
pub fn text(max: usize) -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(PRINTABLE))
        .build()
}

/// One of fixed words.
pub fn words<'a>(words: impl IntoIterator<Item = &'a str>) -> Object {
    string()
        .enum_values(Some(words.into_iter().collect::<Vec<_>>()))
        .build()
}

pub fn email() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(254))
        .build()
}

pub fn phone() -> Object {
    string()
        .pattern(Some(PHONE))
        .examples(["+4512345678"])
        .build()
}

/// A party's id, `party_` and 32 hex digits.
pub fn party_id() -> Object {
    string().pattern(Some("^party_[0-9a-f]{32}$")).build()
}

pub fn party_id_or_null() -> Object {
    or_null(party_id())
}

/// A template's text: not blank, no NUL.
pub fn template_body() -> Object {
    string().pattern(Some(TEMPLATE_TEXT)).build()
}

/// A template's HTML, or null: no NUL.
pub fn template_html_or_null() -> Object {
    or_null(string().pattern(Some("^[^\\x00]*$")).build())
}

/// 1 to 500 printable characters, not blank.
pub fn reason_text() -> Object {
    text(500)
}

pub fn language() -> Object {
    string()
        .pattern(Some(LANGUAGE))
        .examples(["da", "en-GB"])
        .build()
}

/// An IANA time zone name.
pub fn timezone() -> Object {
    let mut names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    names.sort_unstable();
    names.dedup();
    let var_names: Vec<String> = names.iter().map(|n| zone_var_name(n)).collect();
    let mut zone = words(names);
    zone.extensions = Some(
        [("x-enum-varnames", serde_json::json!(var_names))]
            .into_iter()
            .collect(),
    );
    zone
}

/// The name a generated client gives a time zone's constant: the signs of `GMT+0` and
/// `GMT-0` spelled out (`GMT_plus_0`, `GMT_minus_0`), which names that differ only in them
/// would otherwise lose, `/` and other punctuation as `_`.
fn zone_var_name(zone: &str) -> String {
    let mut out = String::with_capacity(zone.len() + 8);
    let mut chars = zone.chars().peekable();
    while let Some(c) = chars.next() {
        let before_digit = chars.peek().is_some_and(char::is_ascii_digit);
        match c {
            '+' => out.push_str("_plus_"),
            '-' if before_digit => out.push_str("_minus_"),
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

pub fn currency() -> Object {
    string().pattern(Some(CURRENCY)).examples(["DKK"]).build()
}

/// `YYYY-MM-DD`
pub fn date() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .pattern(Some(format!("{DATE}$")))
        .build()
}

/// A date (midnight UTC) or an RFC 3339 date-time.
pub fn instant() -> Schema {
    AnyOfBuilder::new()
        .item(date())
        .item(
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .pattern(Some(format!("{DATE}{TIME}")))
                .build(),
        )
        .build()
        .into()
}

/// A decimal amount: a string such as `"15000.00"`, or a JSON number with at most two decimals.
pub fn amount_value() -> Schema {
    AnyOfBuilder::new()
        .item(
            string()
                .pattern(Some(AMOUNT))
                .examples(["15000.00"])
                .build(),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0))
                .maximum(Some(999_999_999_999.99))
                .multiple_of(Some(0.01))
                .build(),
        )
        .build()
        .into()
}

/// A machine word: 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`.
pub fn tag() -> Object {
    string()
        .pattern(Some("^[a-z0-9_.-]{1,64}$"))
        .examples(["call_log"])
        .build()
}

pub fn cursor() -> Object {
    string()
        .pattern(Some(CURSOR))
        .description(Some("`nextCursor` of the previous page"))
        .build()
}

pub fn number_cursor() -> Object {
    string()
        .pattern(Some(NUMBER_CURSOR))
        .description(Some("`nextCursor` of the previous page"))
        .build()
}

/// A connector's base URL: a webhook URL without user information or query.
fn connector_url_pattern() -> String {
    WEB_URL
        .replace(
            r"(?:(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*@)?",
            "",
        )
        .replace(
            r"(?:\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
            "",
        )
}

pub fn connector_url() -> Object {
    string()
        .pattern(Some(connector_url_pattern()))
        .max_length(Some(2000))
        .build()
}

/// What [`connector_url`] describes: checked the same way as a webhook's URL, with no user
/// information and no query.
pub fn base_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or_default();
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    url.len() <= 2000
        && super::webhooks::web_url(url)
        && !authority.contains('@')
        && !url.contains('?')
}

pub fn connector_type() -> Object {
    words(
        crate::domain::connector::ConnectorType::ALL
            .iter()
            .map(|k| k.as_str()),
    )
}

/// The settings an update may change: any type's (the connector's own type decides).
pub fn connector_settings_patch() -> Object {
    let mut o = ObjectBuilder::new().additional_properties(Some(
        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
    ));
    let mut seen = std::collections::HashSet::new();
    for kind in crate::domain::connector::ConnectorType::ALL {
        let own = settings_of(*kind, false).build();
        for (name, schema) in own.properties {
            if seen.insert(name.clone()) {
                o = o.property(name, schema);
            }
        }
    }
    or_null(o.build())
}

pub fn web_url() -> Object {
    string()
        .pattern(Some(WEB_URL))
        .max_length(Some(2000))
        .examples(["https://hooks.example.com/parley"])
        .build()
}

/// A problem's `code`: one of the stable words clients branch on.
pub fn problem_code() -> Object {
    words(crate::domain::code::Code::ALL.iter().map(|c| c.as_str()))
}

/// Page size: `1..=max`.
pub fn limit(max: i64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(max))
        .build()
}

// ---------------------------------------------------------------------------------------------
// The fields of the request bodies and queries, for `#[schema(schema_with = ...)]` and
// `#[param(schema_with = ...)]`.

/// Text in a note: 1 to 20 000 characters, not blank, no NUL.
const NOTE: &str = "^[^\\x00]*[^\\x00\\x09-\\x0d\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00]*$";

/// At most 1000 characters, no control characters but trailing line feeds.
const REASON: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*\\n*$";

/// `HH:MM`, 24-hour clock.
const CLOCK: &str = "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$";

fn array(items: Object) -> utoipa::openapi::schema::ArrayBuilder {
    utoipa::openapi::schema::ArrayBuilder::new().items(items)
}

fn any_of_or_null(schema: Schema) -> Schema {
    let Schema::AnyOf(mut any) = schema else {
        return schema;
    };
    any.items
        .push(ObjectBuilder::new().schema_type(Type::Null).build().into());
    Schema::AnyOf(any)
}

pub fn name() -> Object {
    text(200)
}
pub fn name_or_null() -> Object {
    or_null(text(200))
}
pub fn title() -> Object {
    text(200)
}
pub fn case_number_or_null() -> Object {
    or_null(text(64))
}
pub fn invoice_number_or_null() -> Object {
    or_null(text(100))
}
pub fn reference_or_null() -> Object {
    or_null(text(200))
}
pub fn email_or_null() -> Object {
    or_null(email())
}
pub fn phone_or_null() -> Object {
    or_null(phone())
}
pub fn language_or_null() -> Object {
    or_null(language())
}
/// The time zone (the `TimeZone` component, defined once: its names, such as `GMT0` and
/// `GMT+0`, are many and some differ only in signs a generated client cannot name), or null.
pub fn timezone_or_null() -> Schema {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("TimeZone"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}
pub fn date_or_null() -> Object {
    or_null(date())
}
pub fn instant_or_null() -> Schema {
    any_of_or_null(instant())
}
/// A payment's amount: `{"value", "currency"}` in the case's currency, or the value alone.
pub fn payment_amount() -> Schema {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("AmountInput"))
        .item(amount_value())
        .build()
        .into()
}
pub fn case_status() -> Object {
    words(crate::domain::CaseStatus::ALL.iter().map(|s| s.as_str()))
}
pub fn case_status_or_null() -> Object {
    or_null(case_status())
}
pub fn note() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(20_000))
        .pattern(Some(NOTE))
        .build()
}
pub fn visibility_or_null() -> Object {
    or_null(words(["internal", "private"]))
}
pub fn tag_or_null() -> Object {
    or_null(tag())
}
pub fn tags() -> utoipa::openapi::schema::Array {
    array(tag()).max_items(Some(20)).build()
}
pub fn channel_or_null() -> Object {
    or_null(words(
        crate::domain::message::Channel::ALL
            .iter()
            .map(|c| c.as_str()),
    ))
}
pub fn categories_or_null() -> utoipa::openapi::schema::Array {
    let mut a = array(words(
        crate::domain::message::Category::ALL
            .iter()
            .map(|c| c.as_str()),
    ))
    .build();
    a.schema_type = SchemaType::Array(vec![Type::Array, Type::Null]);
    a
}
pub fn reason_or_null() -> Object {
    or_null(
        string()
            .max_length(Some(1000))
            .pattern(Some(REASON))
            .build(),
    )
}
pub fn clock() -> Object {
    string().pattern(Some(CLOCK)).build()
}
pub fn events() -> utoipa::openapi::schema::Array {
    array(words(
        crate::domain::event::EventType::ALL
            .iter()
            .map(|e| e.as_str()),
    ))
    .min_items(Some(1))
    .build()
}
pub fn document_type() -> Object {
    words([
        "invoice",
        "contract",
        "correspondence",
        "payment_proof",
        "settlement",
        "legal",
        "other",
    ])
}
pub fn channel() -> Object {
    words(
        crate::domain::message::Channel::ALL
            .iter()
            .map(|c| c.as_str()),
    )
}
pub fn job_state() -> Object {
    words(
        crate::domain::message::JobState::ALL
            .iter()
            .map(|c| c.as_str()),
    )
}
pub fn message_type() -> Object {
    words(
        crate::domain::message::MessageType::ALL
            .iter()
            .map(|c| c.as_str()),
    )
}
pub fn direction() -> Object {
    words(
        crate::domain::message::Direction::ALL
            .iter()
            .map(|d| d.as_str()),
    )
}
pub fn message_status() -> Object {
    words(
        crate::domain::message::MessageStatus::ALL
            .iter()
            .map(|s| s.as_str()),
    )
}
pub fn priority_or_null() -> Object {
    or_null(words(
        crate::domain::message::Priority::ALL
            .iter()
            .map(|p| p.as_str()),
    ))
}
pub fn category_or_null() -> Object {
    or_null(words(
        crate::domain::message::Category::ALL
            .iter()
            .map(|c| c.as_str()),
    ))
}
/// A template id: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
pub fn template_id() -> Object {
    string()
        .pattern(Some("^[a-z0-9][a-z0-9._-]{0,63}$"))
        .build()
}
pub fn template_id_or_null() -> Object {
    or_null(template_id())
}
pub fn limit_200() -> Object {
    limit(200)
}
pub fn limit_1000() -> Object {
    limit(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enum_words(o: Object) -> Vec<String> {
        o.enum_values
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn every_word_in_the_document_is_one_the_handlers_take() {
        for w in enum_words(document_type()) {
            assert!(
                crate::domain::document::DocumentType::parse(&w).is_ok(),
                "{w}"
            );
        }
        for w in enum_words(visibility_or_null()) {
            assert!(crate::domain::NoteVisibility::parse(&w).is_ok(), "{w}");
        }
    }

    #[test]
    fn the_time_zone_is_one_component_referred_to_where_it_is_used() {
        let text = crate::http::openapi_json();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc["components"]["schemas"]["TimeZone"]["enum"].is_array());
        assert_eq!(
            text.matches("\"Europe/Copenhagen\"").count(),
            1,
            "listed once"
        );
        assert!(text.matches("#/components/schemas/TimeZone").count() >= 3);
    }

    #[test]
    fn every_operation_has_an_id_of_its_own_and_every_named_one_exists() {
        let doc: Value = serde_json::from_str(&crate::http::openapi_json()).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(
                    !id.is_empty()
                        && !id.contains('_')
                        && id.chars().next().unwrap().is_lowercase(),
                    "{method} {path}: {id:?} is not a camelCase operation id"
                );
                if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                    panic!("{id} names both {other} and {method} {path}");
                }
            }
        }
        for (method, path, id) in OPERATION_IDS {
            assert_eq!(
                doc["paths"][path][method]["operationId"], *id,
                "{method} {path} is in OPERATION_IDS but not in the document"
            );
        }
    }

    #[test]
    fn every_operation_declares_its_problems_once_and_its_parameters_where_they_are() {
        let doc: Value = serde_json::from_str(&crate::http::openapi_json()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    assert_eq!(
                        p["in"] == "path",
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: parameter {name} is declared in {}",
                        p["in"]
                    );
                }
                let responses = op["responses"].as_object().unwrap();
                for (status, response) in responses {
                    if status.as_str() >= "400" {
                        assert!(
                            response.get("$ref").is_some(),
                            "{method} {path}: {status} is not a shared problem response"
                        );
                    }
                }
                assert!(responses.contains_key("503"), "{method} {path}: no 503");
            }
        }
    }

    #[test]
    fn every_timezone_in_the_document_parses() {
        for v in timezone().enum_values.unwrap_or_default() {
            let name = v.as_str().unwrap_or_default();
            assert!(crate::domain::case::parse_timezone(name).is_ok(), "{name}");
        }
    }
}
