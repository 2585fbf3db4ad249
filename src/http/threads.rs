//! Conversation threads, in the seed's shapes.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::cases::case_id;
use super::extract::{Auth, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::ThreadId;
use crate::domain::time::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSummary {
    pub thread_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub participants: Vec<String>,
    pub message_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<String>,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadMessageItem {
    pub message_id: String,
    pub direction: String,
    pub message_type: String,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadMessages {
    pub thread_id: String,
    pub messages: Vec<ThreadMessageItem>,
}

#[utoipa::path(get, path = "/api/cases/{caseId}/threads", tag = "threads", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = ThreadList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn list_threads(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<ThreadList>> {
    let id = case_id(&raw)?;
    let threads = state.app.messaging.threads(&actor, &id).await?;
    Ok(axum::Json(ThreadList {
        threads: threads
            .into_iter()
            .map(|t| ThreadSummary {
                thread_id: t.id.into(),
                subject: t.subject,
                participants: t.participants,
                message_count: t.message_count,
                last_message_at: t.last_message_at.map(rfc3339),
                status: t.status,
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/threads/{threadId}/messages", tag = "threads", params(("threadId" = String, Path)),
    responses((status = 200, body = ThreadMessages), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn thread_messages(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ThreadMessages>> {
    let thread = ThreadId::parse(&id).ok_or_else(|| ApiError::not_found("thread"))?;
    let messages = state.app.messaging.thread(&actor, &thread).await?;
    Ok(axum::Json(ThreadMessages {
        thread_id: id,
        messages: messages
            .into_iter()
            .map(|m| ThreadMessageItem {
                message_id: m.id,
                direction: m.direction,
                message_type: m.channel,
                from: m.from,
                subject: m.subject,
                body: m.body,
                timestamp: rfc3339(m.at),
            })
            .collect(),
    }))
}
