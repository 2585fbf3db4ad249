//! RFC 9457 problem responses: every error this API gives, with a stable `code`.

use crate::domain::code::Code;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::app::AppError;
use crate::store::StoreError;

/// The body of every error response (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody {
    /// `urn:parley:problem:<code>`
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:parley:problem:[a-z_]+$")]
    pub kind: String,
    /// The status's reason phrase, e.g. `Not Found`.
    pub title: String,
    /// The response's status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What was wrong, for people.
    pub detail: String,
    /// Stable machine-readable reason, e.g. `not_found`, `malformed_json`.
    #[schema(schema_with = super::openapi::problem_code)]
    pub code: String,
}

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Code,
    pub detail: String,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

/// The error type of every handler.
#[derive(Debug)]
pub enum ApiError {
    Problem(Box<Problem>),
    /// Opaque to the client; logged once, with its cause chain, when the response is built.
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        Self::Problem(Box::new(Problem {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }))
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("{what} not found"),
        )
    }
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::Forbidden, detail)
    }
    pub fn unprocessable(code: Code, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn bad_request(code: Code, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many requests for this token; retry later",
        );
        if let Self::Problem(p) = &mut e {
            p.retry_after = Some(retry_after);
        }
        e
    }
    /// Adds a member to the problem body (e.g. the list of missing variables).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        if let Self::Problem(p) = &mut self {
            p.extra.insert(key.to_string(), value);
        }
        self
    }
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(code) => {
                Self::new(StatusCode::CONFLICT, code, code.as_str().replace('_', " "))
            }
            e @ StoreError::Corrupt(_) => Self::Internal(anyhow::Error::new(e)),
            StoreError::Invalid { code, detail } => Self::unprocessable(code, detail),
            StoreError::Unavailable(e) => {
                tracing::error!(error = format!("{e:#}"), "database unavailable");
                let mut p = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::ServiceUnavailable,
                    "the database is not reachable; try again shortly",
                );
                if let Self::Problem(p) = &mut p {
                    p.retry_after = Some(5);
                }
                p
            }
            StoreError::TokenGone => Self::unauthorized("unknown, revoked or expired token"),
            StoreError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(what) => Self::not_found(what),
            AppError::Refused {
                code,
                detail,
                extra,
            } => {
                let e = Self::unprocessable(code, detail);
                match extra {
                    Some((key, value)) => e.with(key, value),
                    None => e,
                }
            }
            AppError::Forbidden(detail) => Self::forbidden(detail),
            AppError::InvalidState(detail) => {
                Self::new(StatusCode::CONFLICT, Code::InvalidState, detail)
            }
            AppError::TooLarge(detail) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge, detail)
            }
            AppError::Malformed(detail) => Self::bad_request(Code::InvalidBody, detail),
            AppError::Store(e) => e.into(),
        }
    }
}

impl From<crate::domain::Invalid> for ApiError {
    fn from(e: crate::domain::Invalid) -> Self {
        Self::unprocessable(Code::ValidationFailed, e.0)
    }
}

pub fn problem_response(
    status: StatusCode,
    code: Code,
    detail: &str,
    extra: Map<String, Value>,
) -> Response {
    let mut body = Map::new();
    body.insert(
        "type".into(),
        Value::String(format!("urn:parley:problem:{code}")),
    );
    body.insert(
        "title".into(),
        Value::String(status.canonical_reason().unwrap_or("Error").to_string()),
    );
    body.insert("status".into(), Value::from(status.as_u16()));
    body.insert("detail".into(), Value::String(detail.to_string()));
    body.insert("code".into(), Value::String(code.to_string()));
    body.extend(extra);
    let mut response = (
        status,
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Problem(p) => {
                let mut response = problem_response(p.status, p.code, &p.detail, p.extra);
                if let Some(secs) = p.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                if p.status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                response
            }
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                problem_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::InternalError,
                    "the server failed to handle this request; it has been logged",
                    Map::new(),
                )
            }
        }
    }
}
