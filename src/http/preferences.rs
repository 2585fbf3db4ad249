//! `/api/cases/{caseId}/communication-preferences`: the seed's preferences and opt-out.

use crate::domain::CaseId;
use crate::domain::code::Code;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::cases::{case_id, nullable};
use super::extract::{Auth, Json, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::cases::PreferencesView;
use crate::domain::case::{parse_language, parse_timezone};
use crate::domain::message::{Category, Channel};
use crate::domain::policy::{ContactWindow, PreferencesPatch};
use crate::domain::time::{parse_date, rfc3339};
use crate::domain::{EmailAddress, PhoneNumber, has_control_chars};
use crate::store::StoredPreferences;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactHours {
    /// `HH:MM`
    #[schema(schema_with = super::openapi::clock)]
    pub start: String,
    /// `HH:MM`, not `start`; before `start` for a window over midnight.
    #[schema(schema_with = super::openapi::clock)]
    pub end: String,
    /// IANA zone; the debtor's time zone when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::timezone_or_null)]
    pub timezone: Option<String>,
}

/// Every field is optional: what is left out keeps its current value, `null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesRequest {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::channel_or_null)]
    pub preferred_channel: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::email_or_null)]
    pub email_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::phone_or_null)]
    pub phone_number: Option<Option<String>>,
    pub allow_sms: Option<bool>,
    pub allow_email: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::language_or_null)]
    pub preferred_language: Option<Option<String>>,
    pub do_not_contact: Option<bool>,
    /// At most 1000 characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::reason_or_null)]
    pub reason: Option<Option<String>>,
    /// `YYYY-MM-DD`
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::date_or_null)]
    pub effective_date: Option<Option<String>>,
    /// Categories still allowed under an opt-out, e.g. `legal_notices`.
    #[schema(schema_with = super::openapi::categories_or_null)]
    pub exceptions: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ContactHours>)]
    pub contact_hours: Option<Option<ContactHours>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesResponse {
    #[schema(value_type = String)]
    pub case_id: CaseId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    pub allow_sms: bool,
    pub allow_email: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<String>,
    pub do_not_contact: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
    pub exceptions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_hours: Option<ContactHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// The debtor's addresses and numbers on the suppression list (unsubscribed, `STOP`,
    /// bounced, complained): why a send to them is refused.
    pub suppressions: Vec<super::suppressions::SuppressionResponse>,
}

/// The preferences with the debtor's entries on the suppression list.
pub(super) fn response(v: PreferencesView) -> PreferencesResponse {
    view(
        v.case_id,
        v.stored,
        v.suppressions.into_iter().map(Into::into).collect(),
    )
}

fn view(
    case_id: CaseId,
    s: StoredPreferences,
    suppressions: Vec<super::suppressions::SuppressionResponse>,
) -> PreferencesResponse {
    let p = s.preferences;
    PreferencesResponse {
        case_id,
        preferred_channel: p.preferred_channel,
        email_address: p.email_address,
        phone_number: p.phone_number,
        allow_sms: p.allow_sms,
        allow_email: p.allow_email,
        preferred_language: p.preferred_language,
        do_not_contact: p.do_not_contact,
        reason: p.reason,
        effective_date: p.effective_date,
        exceptions: p.exceptions,
        contact_hours: p.contact_hours.map(|(start, end, timezone)| ContactHours {
            start,
            end,
            timezone,
        }),
        updated_at: s.updated_at.map(rfc3339),
        updated_by: s.updated_by,
        suppressions,
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(Code::ValidationFailed, detail)
}

/// Applies a request to the current preferences, checking every value it brings.
/// The request, checked, as a change of the current preferences.
fn patch(r: PreferencesRequest) -> ApiResult<PreferencesPatch> {
    let reason = r.reason;
    if reason.as_ref().is_some_and(|reason| {
        reason.as_deref().is_some_and(|t| {
            t.chars().count() > 1000 || has_control_chars(t.trim_end_matches('\n'))
        })
    }) {
        return Err(invalid("reason must be at most 1000 printable characters"));
    }
    if let Some(Some(d)) = &r.effective_date {
        parse_date(d)
            .ok_or_else(|| invalid(format!("effectiveDate {d:?} is not a date (YYYY-MM-DD)")))?;
    }
    Ok(PreferencesPatch {
        preferred_channel: r
            .preferred_channel
            .map(|c| {
                c.map(|c| Channel::parse(&c).map(|c| c.as_str().to_string()))
                    .transpose()
            })
            .transpose()?,
        email_address: r
            .email_address
            .map(|e| {
                e.map(|e| EmailAddress::parse(&e).map(|a| a.to_string()))
                    .transpose()
            })
            .transpose()?,
        phone_number: r
            .phone_number
            .map(|n| {
                n.map(|n| PhoneNumber::parse(&n).map(|n| n.to_string()))
                    .transpose()
            })
            .transpose()?,
        allow_sms: r.allow_sms,
        allow_email: r.allow_email,
        preferred_language: r
            .preferred_language
            .map(|l| l.as_deref().map(parse_language).transpose())
            .transpose()?,
        do_not_contact: r.do_not_contact,
        reason,
        effective_date: r.effective_date,
        exceptions: r
            .exceptions
            .map(|ex| {
                ex.iter()
                    .map(|e| Category::parse(e).map(|c| c.as_str().to_string()))
                    .collect::<Result<_, _>>()
            })
            .transpose()?,
        contact_hours: r.contact_hours.map(contact_hours).transpose()?,
    })
}

fn contact_hours(
    hours: Option<ContactHours>,
) -> ApiResult<Option<(String, String, Option<String>)>> {
    let Some(h) = hours else { return Ok(None) };
    ContactWindow::parse(&format!("{}-{}", h.start, h.end))
        .map_err(|e| invalid(format!("contactHours: {e}")))?;
    let tz = h.timezone.as_deref().map(parse_timezone).transpose()?;
    Ok(Some((h.start, h.end, tz)))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/communication-preferences", tag = "preferences", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = PreferencesResponse), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn get_preferences(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<PreferencesResponse>> {
    let id = case_id(&raw)?;
    let v = state.app.cases.preferences(&actor, &id).await?;
    Ok(axum::Json(response(v)))
}

#[utoipa::path(put, path = "/api/cases/{caseId}/communication-preferences", tag = "preferences", params(("caseId" = uuid::Uuid, Path)),
    request_body = PreferencesRequest,
    responses((status = 200, body = PreferencesResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn put_preferences(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(req): Json<PreferencesRequest>,
) -> ApiResult<axum::Json<PreferencesResponse>> {
    let id = case_id(&raw)?;
    let patch = patch(req)?;
    let v = state
        .app
        .cases
        .change_preferences(&actor, &id, patch)
        .await?;
    Ok(axum::Json(response(v)))
}
