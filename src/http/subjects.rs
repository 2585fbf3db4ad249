//! Data subjects (admin): `GET /api/data-subjects/export?email=…|phone=…`, everything held
//! about one person as one JSON document, streamed case by case and message page by message
//! page, so a person with many messages needs no memory for all of them; and `POST
//! /api/data-subjects/erase`, erasure where no retention rule holds, restriction where one
//! does.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Auth, Query};
use super::messages::MessageResponse;
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::export::{CaseParts, ExportPart, ExportSink, ExportedMessage, Subject};
use crate::domain::code::Code;
use crate::domain::time::rfc3339;
use crate::domain::{EmailAddress, PhoneNumber};

/// An erasure request: exactly one of `email` and `phone`, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The person's email address.
    #[schema(schema_with = super::openapi::email_or_null)]
    pub email: Option<String>,
    /// The person's phone number, E.164.
    #[schema(schema_with = super::openapi::phone_or_null)]
    pub phone: Option<String>,
    /// Why (for example the request's reference); answered back, not stored.
    #[schema(schema_with = super::openapi::reason_text)]
    pub reason: String,
}

/// The person's email or phone, checked: exactly one of them.
fn subject_of(
    email: Option<&str>,
    phone: Option<&str>,
) -> ApiResult<(Option<String>, Option<String>)> {
    let invalid = |detail: String| ApiError::unprocessable(Code::ValidationFailed, detail);
    match (email, phone) {
        (Some(e), None) => Ok((
            Some(
                EmailAddress::parse(e.trim())
                    .map_err(|e| invalid(e.0))?
                    .to_string(),
            ),
            None,
        )),
        (None, Some(p)) => Ok((
            None,
            Some(
                PhoneNumber::parse(p.trim())
                    .map_err(|e| invalid(e.0))?
                    .to_string(),
            ),
        )),
        _ => Err(invalid("give exactly one of email and phone".into())),
    }
}

/// Erases the person's personal data in every case where no retention rule holds (its key
/// is destroyed: every copy, backups included, becomes unreadable), and restricts it where
/// one does: an open case, or one that ended less than `PARLEY_RETENTION` ago. Restricted
/// cases take no more messages (422 `restricted`) and are erased by parley when their
/// retention ends. Answers `erased` and `retained` (with `rule` and `retainedUntil`),
/// `unmatchedErased`: how many of the person's mails and SMS that matched no case were
/// removed, and `remoteCopies`: the erased cases' folders on document systems
/// (`{connectorId, type, caseId, status}`, `status` `deleted` or `failed`; a failed one is
/// tried again every round until it is deleted, and its connector shows why).
#[utoipa::path(post, path = "/api/data-subjects/erase", tag = "data subjects",
    request_body = EraseRequest,
    responses((status = 200, description = "what was erased, and what was kept and why"),
        (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Auth(actor): Auth,
    super::extract::Json(body): super::extract::Json<EraseRequest>,
) -> ApiResult<Response> {
    super::extract::require_admin(&actor, "data subjects are answered by admins")?;
    let reason = body.reason.trim();
    if reason.is_empty()
        || body.reason.chars().count() > 500
        || body.reason.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            "reason must be 1 to 500 characters, without control characters",
        ));
    }
    let (email, phone) = subject_of(body.email.as_deref(), body.phone.as_deref())?;
    let done = state
        .app
        .subjects
        .erase(&actor, email.as_deref(), phone.as_deref())
        .await?;
    let mut answer = serde_json::to_value(&done).map_err(ApiError::internal)?;
    answer["subject"] = json!({"email": email, "phone": phone});
    answer["reason"] = json!(reason);
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

/// Whom an export is about: exactly one of `email` and `phone`, as query parameters
/// (`?email=…` or `?phone=…`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The person's email address.
    #[schema(schema_with = super::openapi::email)]
    pub email: Option<String>,
    /// The person's phone number, E.164.
    #[schema(schema_with = super::openapi::phone)]
    pub phone: Option<String>,
}

/// Everything held about one person: `subject`, `generatedAt`, `cases` (each with the case,
/// its preferences, payments, deadlines, notes, documents with download links, audit log and
/// messages with bodies, attachments, delivery attempts and, for received mail, the
/// original), and `suppressions` of the address or number.
#[utoipa::path(get, path = "/api/data-subjects/export", tag = "data subjects",
    params(("subject" = ExportQuery, Query, style = Form, explode,
        description = "`email` or `phone`: exactly one of them")),
    responses((status = 200, description = "one JSON document, streamed", content_type = "application/json"),
        (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    super::extract::require_admin(&actor, "data subjects are answered by admins")?;
    let (email, phone) = subject_of(q.email.as_deref(), q.phone.as_deref())?;
    let subject = Subject { email, phone };
    let cases = state.app.subjects.subject_cases(&subject).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut writer = Writer::new(tx, &subject);
        let exported = state
            .app
            .subjects
            .export(&actor, &subject, &cases, &mut writer)
            .await;
        if let Err(e) = exported {
            // The answer is already under way: it is cut short, which the client sees.
            tracing::error!(error = format!("{e:#}"), "a data subject export broke off");
            let _ = writer
                .tx
                .send(Err(std::io::Error::other("the export broke off")))
                .await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Writes the export's parts as one JSON document: `{"subject", "generatedAt", "cases":
/// [{"case", "preferences", "payments", "deadlines", "documents", "notes": [...],
/// "auditLog": [...], "messages": [...]}, ...], "suppressions"}`.
struct Writer {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    subject: Value,
    /// Whether the next item of the array being written is its first.
    first_case: bool,
    first_item: bool,
}

impl Writer {
    fn new(tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, s: &Subject) -> Self {
        Self {
            tx,
            subject: json!({"email": s.email, "phone": s.phone}),
            first_case: true,
            first_item: true,
        }
    }

    async fn raw(&self, s: impl Into<String>) -> anyhow::Result<()> {
        self.tx
            .send(Ok(Bytes::from(s.into())))
            .await
            .map_err(|_| anyhow::anyhow!("the client went away"))
    }

    async fn value(&self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        self.raw(serde_json::to_string(v)?).await
    }

    /// One item of an array, after a comma unless it is the first.
    async fn item(&mut self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.first_item) {
            self.raw(",").await?;
        }
        self.value(v).await
    }

    async fn case(&mut self, parts: CaseParts) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.first_case) {
            self.raw(",").await?;
        }
        let documents: Vec<Value> = parts
            .documents
            .into_iter()
            .map(|d| {
                let url = format!("/api/documents/{}/download", d.id);
                let mut v = serde_json::to_value(super::documents::DocumentResponse::from(d))
                    .unwrap_or(Value::Null);
                v["downloadUrl"] = url.into();
                v
            })
            .collect();
        let payments: Vec<super::cases::PaymentResponse> =
            parts.payments.into_iter().map(Into::into).collect();
        let deadlines: Vec<super::cases::DeadlineResponse> =
            parts.deadlines.into_iter().map(Into::into).collect();
        self.raw("{\"case\":").await?;
        self.value(&super::cases::CaseResponse::from(parts.case))
            .await?;
        self.raw(",\"preferences\":").await?;
        self.value(&parts.preferences.map(super::preferences::response))
            .await?;
        self.raw(",\"payments\":").await?;
        self.value(&payments).await?;
        self.raw(",\"deadlines\":").await?;
        self.value(&deadlines).await?;
        self.raw(",\"documents\":").await?;
        self.value(&documents).await?;
        self.first_item = true;
        self.raw(",\"notes\":[").await
    }
}

/// A message as exported: its delivery attempts (outbound) or its original (inbound).
fn exported_message(m: ExportedMessage) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(MessageResponse::from(m.message))?;
    if !m.attempts.is_empty() {
        v["deliveryAttempts"] = m
            .attempts
            .into_iter()
            .map(|a| json!({"attempt": a.attempt, "outcome": a.outcome, "error": a.error}))
            .collect();
    }
    if let Some(o) = m.original {
        v["original"] = o.into();
    }
    Ok(v)
}

impl ExportSink for Writer {
    async fn part(&mut self, part: ExportPart) -> anyhow::Result<()> {
        match part {
            ExportPart::Begin { generated_at } => {
                self.raw(format!(
                    "{{\"subject\":{},\"generatedAt\":\"{}\",\"cases\":[",
                    self.subject,
                    rfc3339(generated_at)
                ))
                .await
            }
            ExportPart::Case(parts) => self.case(*parts).await,
            ExportPart::Note(note) => self.item(&super::notes::NoteResponse::from(note)).await,
            ExportPart::AuditLog => {
                self.first_item = true;
                self.raw("],\"auditLog\":[").await
            }
            ExportPart::Audit(entry) => {
                self.item(&super::notes::AuditEntryResponse::from(entry))
                    .await
            }
            ExportPart::Messages => {
                self.first_item = true;
                self.raw("],\"messages\":[").await
            }
            ExportPart::Message(m) => self.item(&exported_message(*m)?).await,
            ExportPart::CaseEnd => self.raw("]}").await,
            ExportPart::End { suppressions } => {
                let suppressions: Vec<super::suppressions::SuppressionResponse> =
                    suppressions.into_iter().map(Into::into).collect();
                self.raw("],\"suppressions\":").await?;
                self.value(&suppressions).await?;
                self.raw("}").await
            }
        }
    }
}
