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
use crate::domain::code::Code;
use crate::domain::party::Actor;
use crate::domain::time::{now_micros, rfc3339};
use crate::domain::{EmailAddress, PhoneNumber};
use crate::store::NoteFilter;

/// Messages read per round while the export streams.
const PAGE: i64 = 200;

/// An erasure request: exactly one of `email` and `phone`, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The person's email address.
    #[schema(pattern = "^[^\\x00]*$")]
    pub email: Option<String>,
    /// The person's phone number, E.164.
    #[schema(pattern = "^\\+[0-9]{8,15}$")]
    pub phone: Option<String>,
    /// Why (for example the request's reference); answered back, not stored.
    #[schema(min_length = 1, max_length = 500)]
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
/// retention ends. Answers `erased` and `retained` (with `rule` and `retainedUntil`).
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
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            "reason must be 1 to 500 characters, without control characters",
        ));
    }
    let (email, phone) = subject_of(body.email.as_deref(), body.phone.as_deref())?;
    let done = state
        .subjects
        .erase(&actor, email.as_deref(), phone.as_deref())
        .await?;
    let mut answer = serde_json::to_value(&done).map_err(ApiError::internal)?;
    answer["subject"] = json!({"email": email, "phone": phone});
    answer["reason"] = json!(reason);
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The person's email address (exactly one of `email` and `phone`).
    #[param(pattern = "^[^\\x00]*$")]
    pub email: Option<String>,
    /// The person's phone number, E.164.
    #[param(pattern = "^\\+[0-9]{8,15}$")]
    pub phone: Option<String>,
}

/// Everything held about one person: `subject`, `generatedAt`, `cases` (each with the case,
/// its preferences, payments, deadlines, notes, documents with download links, audit log and
/// messages with bodies, attachments, delivery attempts and, for received mail, the
/// original), and `suppressions` of the address or number.
#[utoipa::path(get, path = "/api/data-subjects/export", tag = "data subjects", params(ExportQuery),
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
    let cases = state
        .store
        .subject_cases(email.as_deref(), phone.as_deref())
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let writer = Writer { tx };
        if let Err(e) = write_export(&state, &actor, email, phone, cases, &writer).await {
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

struct Writer {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Writer {
    async fn raw(&self, s: impl Into<String>) -> anyhow::Result<()> {
        self.tx
            .send(Ok(Bytes::from(s.into())))
            .await
            .map_err(|_| anyhow::anyhow!("the client went away"))
    }

    async fn value(&self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        self.raw(serde_json::to_string(v)?).await
    }
}

async fn write_export(
    state: &AppState,
    actor: &Actor,
    email: Option<String>,
    phone: Option<String>,
    cases: Vec<String>,
    w: &Writer,
) -> anyhow::Result<()> {
    let subject = json!({"email": email, "phone": phone});
    w.raw(format!(
        "{{\"subject\":{subject},\"generatedAt\":\"{}\",\"cases\":[",
        rfc3339(now_micros())
    ))
    .await?;
    for (i, case_id) in cases.iter().enumerate() {
        if i > 0 {
            w.raw(",").await?;
        }
        write_case(state, actor, case_id, w).await?;
    }
    let values: Vec<&str> = email
        .iter()
        .chain(phone.iter())
        .map(String::as_str)
        .collect();
    let suppressions: Vec<super::suppressions::SuppressionResponse> = state
        .store
        .suppressions_of(&values, None)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    w.raw("],\"suppressions\":").await?;
    w.value(&suppressions).await?;
    w.raw("}").await
}

async fn write_case(
    state: &AppState,
    actor: &Actor,
    case_id: &str,
    w: &Writer,
) -> anyhow::Result<()> {
    let store = &state.store;
    let missing = || anyhow::anyhow!("case {case_id} went away during the export");
    let case = store.get_case(actor, case_id).await?.ok_or_else(missing)?;
    let preferences = match store.preferences(actor, case_id).await? {
        Some(p) => {
            let view = super::preferences::response(state, actor, case_id.to_string(), p)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            serde_json::to_value(view)?
        }
        None => Value::Null,
    };
    let payments: Vec<super::cases::PaymentResponse> = store
        .list_payments(actor, case_id)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect();
    let deadlines: Vec<super::cases::DeadlineResponse> = store
        .list_deadlines(actor, case_id)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect();
    let documents: Vec<Value> = store
        .list_documents(actor, case_id)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let url = format!("/api/documents/{}/download", d.id);
            let mut v = serde_json::to_value(super::documents::DocumentResponse::from(d))
                .unwrap_or(Value::Null);
            v["downloadUrl"] = url.into();
            v
        })
        .collect();
    w.raw("{\"case\":").await?;
    w.value(&super::cases::CaseResponse::from(case)).await?;
    w.raw(",\"preferences\":").await?;
    w.value(&preferences).await?;
    w.raw(",\"payments\":").await?;
    w.value(&payments).await?;
    w.raw(",\"deadlines\":").await?;
    w.value(&deadlines).await?;
    w.raw(",\"documents\":").await?;
    w.value(&documents).await?;

    w.raw(",\"notes\":[").await?;
    let mut cursor = None;
    let mut first = true;
    loop {
        let filter = NoteFilter {
            every_party: true,
            category: None,
            tag: None,
            cursor: cursor.take(),
            limit: PAGE,
        };
        let page = store
            .list_notes(actor, case_id, filter)
            .await?
            .ok_or_else(missing)?;
        for note in page.items {
            if !std::mem::take(&mut first) {
                w.raw(",").await?;
            }
            w.value(&super::notes::NoteResponse::from(note)).await?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }

    w.raw("],\"auditLog\":[").await?;
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let page = store
            .list_audit(actor, case_id, cursor.as_deref(), 1000)
            .await?
            .ok_or_else(missing)?;
        for entry in page.items {
            if !std::mem::take(&mut first) {
                w.raw(",").await?;
            }
            w.value(&super::notes::AuditEntryResponse::from(entry))
                .await?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }

    w.raw("],\"messages\":[").await?;
    let mut after: Option<String> = None;
    let mut first = true;
    loop {
        let page = store
            .case_messages_with_bodies(case_id, after.as_deref(), PAGE)
            .await?;
        let Some(last) = page.last().map(|m| m.id.clone()) else {
            break;
        };
        for m in page {
            // Attempts are made for outbound mail only, the original kept for inbound only.
            let (attempts, original) = if m.direction == crate::domain::message::Direction::Inbound
            {
                let original = store
                    .received_original(&m.id)
                    .await?
                    .map(|(_, _, raw)| String::from_utf8_lossy(&raw).into_owned());
                (Vec::new(), original)
            } else {
                (store.delivery_attempts(&m.id).await?, None)
            };
            let mut v = serde_json::to_value(MessageResponse::from(m))?;
            if !attempts.is_empty() {
                v["deliveryAttempts"] = attempts
                    .into_iter()
                    .map(|a| json!({"attempt": a.attempt, "outcome": a.outcome, "error": a.error}))
                    .collect();
            }
            if let Some(o) = original {
                v["original"] = o.into();
            }
            if !std::mem::take(&mut first) {
                w.raw(",").await?;
            }
            w.value(&v).await?;
        }
        after = Some(last);
    }
    w.raw("]}").await?;
    store.audit_export(actor, case_id).await?;
    Ok(())
}
