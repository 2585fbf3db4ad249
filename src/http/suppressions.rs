//! The suppression list (admin): every address and number parley will not write to, why, and
//! lifting an entry. The debtor's own entries are also shown with a case's preferences.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Path, Query};
use super::problem::{ApiResult, ProblemBody};
use crate::domain::time::rfc3339;
use crate::store::Suppression;

/// One address or number on the suppression list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionResponse {
    pub suppression_id: String,
    /// `email` or `sms`.
    pub channel: String,
    /// The address or number (absent for entries made before addresses were kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `unsubscribed`, `stop word`, `hard bounce`, `spam report`, `dropped by the provider`.
    pub reason: String,
    /// The message whose bounce, complaint or unsubscribe put it there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The creditor whose sends it stops (the person answered that creditor's message);
    /// `null`: every tenant's (a hard bounce, a provider's drop, or an entry made before
    /// suppressions were scoped).
    pub creditor_id: Option<String>,
    pub created_at: String,
}

impl From<Suppression> for SuppressionResponse {
    fn from(s: Suppression) -> Self {
        Self {
            suppression_id: s.id,
            channel: s.channel,
            address: s.address,
            reason: s.reason,
            message_id: s.message_id.map(Into::into),
            creditor_id: s.creditor_id,
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionList {
    pub suppressions: Vec<SuppressionResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionQuery {
    /// Only the entries of this email address or phone number.
    #[param(pattern = "^[^\\x00]*$")]
    pub address: Option<String>,
    /// Page size, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/suppressions", tag = "suppressions", params(SuppressionQuery),
    responses((status = 200, body = SuppressionList), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<SuppressionQuery>,
) -> ApiResult<axum::Json<SuppressionList>> {
    super::extract::require_admin(&actor, "the suppression list is kept by admins")?;
    let limit = super::extract::page_limit(q.limit)?;
    let address = q
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let page = state
        .app
        .policy
        .suppressions(address, q.cursor.as_deref(), limit)
        .await?;
    Ok(axum::Json(SuppressionList {
        suppressions: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(delete, path = "/api/suppressions/{suppressionId}", tag = "suppressions",
    params(("suppressionId" = String, Path)),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn lift(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    super::extract::require_admin(&actor, "the suppression list is kept by admins")?;
    state.app.policy.lift(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
