//! Delivery events from providers: Twilio-style SMS status callbacks and SendGrid-style email
//! event webhooks. They authenticate with an admin token, as Bearer or as the password of
//! HTTP basic auth (what a provider can put in a callback URL); Twilio's form callbacks also
//! with their `X-Twilio-Signature`, so no admin token needs to sit in Twilio's settings.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::extract::{AuthAttempt, Form, Json};
use super::problem::{ApiError, ApiResult};
use crate::app::providers::{EmailEvent, Outcome};
use crate::domain::PartyKind;
use crate::domain::code::Code;

/// An admin, by bearer token or basic-auth password.
pub struct ProviderAuth;

impl FromRequestParts<AppState> for ProviderAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (scheme, rest) = value.split_once(' ').unwrap_or(("", ""));
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            Some(rest.trim().to_string())
        } else if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()))
        } else {
            None
        };
        let actor = AuthAttempt::start(parts, state)?
            .actor(token.as_deref(), "missing credentials")
            .await?;
        if actor.kind != PartyKind::Admin {
            return Err(ApiError::forbidden(
                "provider callbacks need an admin token",
            ));
        }
        Ok(Self)
    }
}

/// A Twilio form callback, authenticated by its `X-Twilio-Signature` (HMAC-SHA1 under
/// `PARLEY_SMS_TOKEN` over the public URL and the sorted parameters; a wrong one is 403) or,
/// without one, by an admin token as [`ProviderAuth`].
pub struct TwilioForm<T>(pub T);

/// The largest form a provider callback may send.
const MAX_CALLBACK_BYTES: usize = 64 * 1024;

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for TwilioForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signature = parts
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(body, MAX_CALLBACK_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::PayloadTooLarge,
                    "a provider callback is at most 64 KiB",
                )
            })?;
        match signature {
            Some(signature) => {
                let attempt = AuthAttempt::start(&parts, state)?;
                let token = state.config.sms.token.as_ref().ok_or_else(|| {
                    ApiError::forbidden("no PARLEY_SMS_TOKEN to check a Twilio signature with")
                })?;
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let url = format!("{}{path}", state.config.http.public_url);
                if !twilio_signature_valid(token.expose(), &url, &bytes, &signature) {
                    attempt.failed();
                    return Err(ApiError::forbidden("the X-Twilio-Signature does not match"));
                }
            }
            None => {
                ProviderAuth::from_request_parts(&mut parts, state).await?;
            }
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Form(value) = Form::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Twilio's request signature: base64 of HMAC-SHA1 under the account's auth token over the
/// URL followed by every POST parameter's name and value, sorted by name.
pub fn twilio_signature(token: &str, url: &str, form: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(form)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params.sort();
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(token.as_bytes()).expect("any key");
    mac.update(url.as_bytes());
    for (k, v) in &params {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn twilio_signature_valid(token: &str, url: &str, form: &[u8], given: &str) -> bool {
    let expected = twilio_signature(token, url, form);
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SmsStatus {
    #[serde(rename = "MessageSid")]
    #[schema(pattern = "^[^\\x00]*$")]
    sid: String,
    /// `sent`, `delivered`, `undelivered` or `failed` move the message; others are ignored.
    #[serde(rename = "MessageStatus")]
    #[schema(pattern = "^[^\\x00]*$")]
    status: String,
    #[serde(rename = "ErrorCode")]
    #[schema(nullable = false, pattern = "^[^\\x00]*$")]
    error_code: Option<String>,
}

/// Twilio-style status callback (form-encoded `MessageSid`, `MessageStatus`, `ErrorCode`).
#[utoipa::path(post, path = "/api/providers/sms/status", tag = "providers",
    request_body(content_type = "application/x-www-form-urlencoded", content = SmsStatus),
    responses((status = 204, description = "recorded, or ignored (an unknown message or status)"),
        (status = 401, body = super::problem::ProblemBody), (status = 403, body = super::problem::ProblemBody)),
    security(("bearer" = []), ("basic" = [])))]
pub async fn sms_status(
    State(state): State<AppState>,
    TwilioForm(f): TwilioForm<SmsStatus>,
) -> ApiResult<StatusCode> {
    if [Some(&f.sid), Some(&f.status), f.error_code.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.contains('\0'))
    {
        return Err(ApiError::unprocessable(
            Code::InvalidBody,
            "a form field holds a NUL character",
        ));
    }
    state
        .app
        .providers
        .sms_status(&f.sid, &f.status, f.error_code.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// SendGrid-style event webhook: a JSON array of events matched by `smtp-id`.
#[utoipa::path(post, path = "/api/providers/email/events", tag = "providers", request_body = Vec<serde_json::Value>,
    responses((status = 200, description = "how many events were recorded and ignored"), (status = 401, body = super::problem::ProblemBody),
        (status = 403, body = super::problem::ProblemBody)),
    security(("bearer" = []), ("basic" = [])))]
pub async fn email_events(
    State(state): State<AppState>,
    _: ProviderAuth,
    Json(events): Json<Vec<Value>>,
) -> ApiResult<axum::Json<Value>> {
    let (mut recorded, mut ignored) = (0, 0);
    for e in &events {
        // Nothing a provider sends holds a NUL; such an event is not one of ours.
        if e.to_string().contains("\\u0000") {
            ignored += 1;
            continue;
        }
        let event = EmailEvent {
            kind: e["event"].as_str().unwrap_or_default(),
            smtp_id: e["smtp-id"].as_str().unwrap_or_default(),
            event_id: match e["sg_event_id"].as_str() {
                Some(s) => format!("email:{s}"),
                None => format!("email:{}", hex::encode(Sha256::digest(e.to_string()))),
            },
            at: e["timestamp"].as_i64().map(|s| s.saturating_mul(1_000_000)),
            reason: e["reason"]
                .as_str()
                .or(e["response"].as_str())
                .map(|r| r.chars().take(300).collect::<String>()),
            email: e["email"].as_str(),
            bounce_type: e["type"].as_str(),
        };
        let fresh = state.app.providers.email_event(event).await? == Outcome::Recorded;
        if fresh {
            recorded += 1;
        } else {
            ignored += 1;
        }
    }
    Ok(axum::Json(
        json!({"recorded": recorded, "ignored": ignored}),
    ))
}
