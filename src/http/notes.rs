//! `/api/cases/{caseId}/notes` and `/api/cases/{caseId}/audit-log`.

use crate::domain::CaseId;
use crate::domain::code::Code;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::cases::case_id;
use super::extract::{Auth, Json, Path, Query, number_cursor, page_cursor, page_limit};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::time::rfc3339;
use crate::domain::{NoteVisibility, Tag};
use crate::store::{AuditEntry, NewNote, Note, NoteFilter};

const MAX_NOTE_CHARS: usize = 20_000;
const MAX_TAGS: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateNoteRequest {
    /// 1 to 20 000 characters, not blank.
    #[schema(schema_with = super::openapi::note)]
    pub note: String,
    /// `internal` (default): the case's creditor, partner and admins; `private`: your party only.
    #[schema(schema_with = super::openapi::visibility_or_null)]
    pub visibility: Option<String>,
    /// e.g. `call_log`
    #[schema(schema_with = super::openapi::tag_or_null)]
    pub category: Option<String>,
    /// At most 20 words of `a-z`, `0-9`, `_`, `-`, `.`.
    #[serde(default)]
    #[schema(schema_with = super::openapi::tags)]
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoteResponse {
    pub note_id: String,
    #[schema(value_type = String)]
    pub case_id: CaseId,
    pub note: String,
    pub visibility: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub created_at: String,
    pub created_by: String,
}

impl From<Note> for NoteResponse {
    fn from(n: Note) -> Self {
        Self {
            note_id: n.id.into(),
            case_id: n.case_id,
            note: n.note,
            visibility: n.visibility.as_str().to_string(),
            category: n.category,
            tags: n.tags,
            created_at: rfc3339(n.created_at),
            created_by: n.created_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoteList {
    pub notes: Vec<NoteResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct NoteQuery {
    /// Only notes of this category.
    #[param(schema_with = super::openapi::tag)]
    pub category: Option<String>,
    /// Only notes with this tag.
    #[param(schema_with = super::openapi::tag)]
    pub tag: Option<String>,
    /// Page size, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/cases/{caseId}/notes", tag = "notes", params(("caseId" = uuid::Uuid, Path)), request_body = CreateNoteRequest,
    responses((status = 201, body = NoteResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = [])))]
pub async fn create_note(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(req): Json<CreateNoteRequest>,
) -> ApiResult<(StatusCode, axum::Json<NoteResponse>)> {
    let id = case_id(&raw)?;
    if req.note.trim().is_empty()
        || req.note.chars().count() > MAX_NOTE_CHARS
        || req.note.contains('\0')
    {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            format!("note must be 1 to {MAX_NOTE_CHARS} characters"),
        ));
    }
    if req.tags.len() > MAX_TAGS {
        return Err(ApiError::unprocessable(
            Code::ValidationFailed,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let new = NewNote {
        note: req.note,
        visibility: req
            .visibility
            .as_deref()
            .map(NoteVisibility::parse)
            .transpose()?
            .unwrap_or(NoteVisibility::Internal),
        category: req
            .category
            .as_deref()
            .map(|c| Tag::parse("category", c))
            .transpose()?,
        tags: req
            .tags
            .iter()
            .map(|t| Tag::parse("tag", t))
            .collect::<Result<_, _>>()?,
    };
    let note = state.app.cases.add_note(&actor, &id, new).await?;
    Ok((StatusCode::CREATED, axum::Json(note.into())))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/notes", tag = "notes", params(("caseId" = uuid::Uuid, Path), NoteQuery),
    responses((status = 200, body = NoteList), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn list_notes(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Query(q): Query<NoteQuery>,
) -> ApiResult<axum::Json<NoteList>> {
    let id = case_id(&raw)?;
    let filter = NoteFilter {
        every_party: false,
        category: filter_word("category", q.category)?,
        tag: filter_word("tag", q.tag)?,
        cursor: page_cursor(q.cursor)?,
        limit: page_limit(q.limit)?,
    };
    let page = state.app.cases.notes(&actor, &id, filter).await?;
    Ok(axum::Json(NoteList {
        notes: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A filter names a category or tag as notes carry them; another word is 400 `invalid_query`.
fn filter_word(what: &str, word: Option<String>) -> ApiResult<Option<String>> {
    word.map(|w| {
        Tag::parse(what, &w)
            .map(Tag::into_string)
            .map_err(|e| ApiError::bad_request(Code::InvalidQuery, e.0))
    })
    .transpose()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryResponse {
    pub entry_id: i64,
    /// e.g. `case.created`, `note.created`, `document.downloaded`
    pub action: String,
    /// The acting party's name (its token's label where set).
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_party_id: Option<String>,
    pub target_type: String,
    pub target_id: String,
    pub at: String,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(e: AuditEntry) -> Self {
        Self {
            entry_id: e.id,
            action: e.action,
            actor: e.actor_name,
            actor_party_id: e.actor_party_id,
            target_type: e.target_type,
            target_id: e.target_id,
            at: rfc3339(e.at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditLog {
    pub entries: Vec<AuditEntryResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 200 when absent.
    #[param(schema_with = super::openapi::limit_1000)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::number_cursor)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/cases/{caseId}/audit-log", tag = "audit", params(("caseId" = uuid::Uuid, Path), AuditQuery),
    responses((status = 200, body = AuditLog), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn audit_log(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditLog>> {
    let id = case_id(&raw)?;
    let limit = match q.limit {
        None => 200,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                Code::InvalidQuery,
                "limit must be between 1 and 1000",
            ));
        }
    };
    let cursor = number_cursor(q.cursor)?;
    let page = state
        .app
        .cases
        .audit_log(&actor, &id, cursor.as_deref(), limit)
        .await?;
    Ok(axum::Json(AuditLog {
        entries: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
