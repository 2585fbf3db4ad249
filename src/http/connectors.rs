//! `/api/connectors`: an admin's connectors to mailboxes and other systems. Secret settings
//! are never answered (`"***"`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::AppState;
use super::cases::nullable;
use super::extract::{Auth, Json, Path, require_admin};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::connectors::ConnectorPatch;
use crate::domain::code::Code;
use crate::domain::connector::{ConnectorStatus, ConnectorType, Kind};
use crate::domain::time::rfc3339;
use crate::domain::{ConnectorId, PartyId};
use crate::store::Connector;

const ADMINS_ONLY: &str = "only an admin manages connectors";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConnectorRequest {
    /// What it connects to; `settings` are that type's (see the README).
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::connector_type)]
    pub kind: String,
    #[schema(schema_with = super::openapi::name)]
    pub name: String,
    /// Serve this creditor's cases only; absent or null: every case.
    #[schema(schema_with = super::openapi::party_id_or_null)]
    pub creditor_id: Option<String>,
    pub settings: Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConnectorRequest {
    #[schema(schema_with = super::openapi::name_or_null)]
    pub name: Option<String>,
    /// A creditor party id, or `null` to serve every case.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::party_id_or_null)]
    pub creditor_id: Option<Option<String>>,
    /// Settings to change; the others stay. A secret given as `"***"` stays as it is.
    #[schema(schema_with = super::openapi::connector_settings_patch)]
    pub settings: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorCounts {
    /// Syncs that worked.
    pub syncs: i64,
    /// Items taken in.
    pub items: i64,
    /// Syncs that failed.
    pub failures: i64,
    /// A CRM's messages by where they stand: `pending`, `logging`, `logged`, `failed`,
    /// `unlinked` (no record holds the case number and no contact the debtor's email).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activities: Option<std::collections::BTreeMap<String, i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorResponse {
    pub connector_id: String,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
    pub name: String,
    pub creditor_id: Option<String>,
    pub status: ConnectorStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When a sync last worked.
    pub last_sync_at: Option<String>,
    /// Secret settings show as `"***"`.
    pub settings: Map<String, Value>,
    pub counts: ConnectorCounts,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Connector> for ConnectorResponse {
    fn from(c: Connector) -> Self {
        Self {
            connector_id: c.id.into(),
            kind: c.kind,
            name: c.name,
            creditor_id: c.creditor_id.map(Into::into),
            status: c.status,
            last_error: c.last_error.filter(|_| c.status != ConnectorStatus::Active),
            last_sync_at: c.last_sync_at.map(rfc3339),
            settings: c.settings.shown(),
            counts: ConnectorCounts {
                syncs: c.syncs,
                items: c.items,
                failures: c.failures,
                activities: c.kind.is_crm().then(|| c.activities.into_iter().collect()),
            },
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<ConnectorResponse>,
}

fn connector_id(raw: &str) -> ApiResult<ConnectorId> {
    ConnectorId::parse(raw).ok_or_else(|| ApiError::not_found("connector"))
}

fn creditor(raw: Option<String>) -> ApiResult<Option<PartyId>> {
    raw.map(|id| {
        PartyId::parse(&id).ok_or_else(|| {
            ApiError::unprocessable(Code::InvalidParty, "creditorId is not a party id")
        })
    })
    .transpose()
}

/// The URL settings are base URLs: what a webhook URL may be, without user or query.
fn base_urls(kind: ConnectorType, settings: &Map<String, Value>) -> ApiResult<()> {
    for f in kind.fields() {
        let url = match (f.kind, settings.get(f.name)) {
            (Kind::Url, Some(Value::String(url))) => url.as_str(),
            (Kind::ServiceAccount, Some(Value::Object(key))) => {
                match key.get("token_uri").and_then(Value::as_str) {
                    Some(url) => url,
                    None => continue,
                }
            }
            _ => continue,
        };
        if !super::openapi::base_url(url) {
            return Err(ApiError::unprocessable(
                Code::ValidationFailed,
                format!(
                    "settings.{}: a URL must be http(s)://, a host name or IPv4 address, an \
                     optional port and path; no user, query or fragment",
                    f.name
                ),
            ));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/connectors", tag = "connectors", request_body = CreateConnectorRequest,
    responses((status = 201, body = ConnectorResponse), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateConnectorRequest>,
) -> ApiResult<(StatusCode, axum::Json<ConnectorResponse>)> {
    require_admin(&actor, ADMINS_ONLY)?;
    let kind = ConnectorType::parse(&req.kind)?;
    base_urls(kind, &req.settings)?;
    let created = state
        .app
        .connectors
        .create(
            &actor,
            kind,
            &req.name,
            creditor(req.creditor_id)?,
            &req.settings,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

#[utoipa::path(get, path = "/api/connectors", tag = "connectors",
    responses((status = 200, body = ConnectorList), (status = 403, body = ProblemBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<axum::Json<ConnectorList>> {
    require_admin(&actor, ADMINS_ONLY)?;
    let all = state.app.connectors.list(&actor).await?;
    Ok(axum::Json(ConnectorList {
        connectors: all.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/api/connectors/{connectorId}", tag = "connectors", params(("connectorId" = String, Path)),
    responses((status = 200, body = ConnectorResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ConnectorResponse>> {
    require_admin(&actor, ADMINS_ONLY)?;
    let found = state
        .app
        .connectors
        .get(&actor, &connector_id(&id)?)
        .await?;
    Ok(axum::Json(found.into()))
}

#[utoipa::path(patch, path = "/api/connectors/{connectorId}", tag = "connectors", params(("connectorId" = String, Path)),
    request_body = UpdateConnectorRequest,
    responses((status = 200, body = ConnectorResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<UpdateConnectorRequest>,
) -> ApiResult<axum::Json<ConnectorResponse>> {
    require_admin(&actor, ADMINS_ONLY)?;
    let id = connector_id(&id)?;
    let connectors = &state.app.connectors;
    if let Some(settings) = &req.settings {
        base_urls(connectors.get(&actor, &id).await?.kind, settings)?;
    }
    let patch = ConnectorPatch {
        name: req.name,
        creditor_id: req.creditor_id.map(creditor).transpose()?,
        settings: req.settings,
    };
    Ok(axum::Json(
        connectors.update(&actor, &id, patch).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/api/connectors/{connectorId}", tag = "connectors", params(("connectorId" = String, Path)),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&actor, ADMINS_ONLY)?;
    state
        .app
        .connectors
        .delete(&actor, &connector_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a sync now: the answer is the connector as it stands when the sync is asked for;
/// its `lastSyncAt`, `status` and `counts` show the outcome once it ran.
#[utoipa::path(post, path = "/api/connectors/{connectorId}/sync", tag = "connectors", params(("connectorId" = String, Path)),
    responses((status = 202, body = ConnectorResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn sync(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<ConnectorResponse>)> {
    require_admin(&actor, ADMINS_ONLY)?;
    let asked = state
        .app
        .connectors
        .request_sync(&actor, &connector_id(&id)?)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(asked.into())))
}
