//! `/api/cases`: create, read, list, change; payments and deadlines.

use crate::domain::code::Code;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Json, Path, Query, page_cursor, page_limit};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::cases::PaymentCommand;
use crate::domain::case::{format_minor, parse_language, parse_minor, parse_name, parse_timezone};
use crate::domain::time::{parse_date, parse_instant, rfc3339, to_micros};
use crate::domain::{
    CaseId, CaseNumber, CaseStatus, Debtor, EmailAddress, Money, PartyKind, PhoneNumber,
    has_control_chars,
};
use crate::store::{CasePatch, CaseView, Deadline, ListCases, NewCase, NewDeadline, Payment};

/// A decimal amount, sent as a string (`"15000.00"`) or a JSON number.
#[derive(Debug, Clone)]
pub struct Decimal(pub String);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            serde_json::Value::Number(n) => Ok(Self(n.to_string())),
            _ => Err(serde::de::Error::custom(
                "expected a decimal amount as a string such as \"15000.00\"",
            )),
        }
    }
}

/// Absent stays `None`; `null` becomes `Some(None)`.
pub(crate) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmountInput {
    #[schema(schema_with = super::openapi::amount_value)]
    pub value: Decimal,
    /// ISO 4217 code.
    #[schema(schema_with = super::openapi::currency)]
    pub currency: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DebtorInput {
    #[schema(schema_with = super::openapi::name)]
    pub name: String,
    #[schema(schema_with = super::openapi::email_or_null)]
    pub email: Option<String>,
    /// E.164; spaces, hyphens, dots and parentheses are dropped.
    #[schema(schema_with = super::openapi::phone_or_null)]
    pub phone: Option<String>,
    #[schema(schema_with = super::openapi::language_or_null)]
    pub language: Option<String>,
    /// IANA time zone.
    #[schema(schema_with = super::openapi::timezone_or_null)]
    pub timezone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCaseRequest {
    /// Generated as `DEB-YYYY-NNNNN` when absent; unique.
    #[schema(schema_with = super::openapi::case_number_or_null)]
    pub case_number: Option<String>,
    /// A creditor party's id. Required when an admin creates the case; a creditor creates its
    /// own (leaving it out or naming itself).
    #[schema(schema_with = super::openapi::party_id)]
    pub creditor_id: Option<String>,
    /// A partner party's id.
    #[schema(schema_with = super::openapi::party_id_or_null)]
    pub partner_id: Option<String>,
    pub debtor: DebtorInput,
    pub amount: AmountInput,
    #[schema(schema_with = super::openapi::invoice_number_or_null)]
    pub invoice_number: Option<String>,
    /// `YYYY-MM-DD`
    #[schema(schema_with = super::openapi::date_or_null)]
    pub due_date: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DebtorPatch {
    #[schema(schema_with = super::openapi::name_or_null)]
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::email_or_null)]
    pub email: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::phone_or_null)]
    pub phone: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::language_or_null)]
    pub language: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::timezone_or_null)]
    pub timezone: Option<Option<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCaseRequest {
    #[schema(schema_with = super::openapi::case_status_or_null)]
    pub status: Option<String>,
    /// A partner party id, or `null` to unassign.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = super::openapi::party_id_or_null)]
    pub partner_id: Option<Option<String>>,
    pub debtor: Option<DebtorPatch>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AmountView {
    pub value: String,
    pub currency: String,
}

impl AmountView {
    fn of(minor: i64, currency: &str) -> Self {
        Self {
            value: format_minor(minor),
            currency: currency.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DebtorView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseResponse {
    #[schema(value_type = String)]
    pub case_id: CaseId,
    pub case_number: String,
    pub status: String,
    pub creditor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    pub debtor: DebtorView,
    pub amount: AmountView,
    pub amount_paid: AmountView,
    pub amount_outstanding: AmountView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Collection messages are held: a reply on the case awaits a case worker's review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
}

/// Why a case's collection messages (`payment_reminders`, `settlement_offers`,
/// `deadline_alerts`) are held.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldView {
    /// Always `awaiting_review`.
    pub reason: String,
    /// The reply that holds the case.
    pub message_id: String,
    /// What the reply was read as: `dispute`, `wrong_person` or `cease_contact`.
    pub intent: String,
    pub since: String,
}

impl From<CaseView> for CaseResponse {
    fn from(c: CaseView) -> Self {
        let currency = c.amount.currency().to_string();
        Self {
            amount_paid: AmountView::of(c.paid_minor, &currency),
            amount_outstanding: AmountView::of((c.amount.minor - c.paid_minor).max(0), &currency),
            amount: AmountView::of(c.amount.minor, &currency),
            case_id: c.id,
            case_number: c.case_number,
            status: c.status.as_str().to_string(),
            creditor_id: c.creditor_id,
            partner_id: c.partner_id,
            debtor: DebtorView {
                name: c.debtor.name,
                email: c.debtor.email,
                phone: c.debtor.phone,
                language: c.debtor.language,
                timezone: c.debtor.timezone,
            },
            invoice_number: c.invoice_number,
            due_date: c.due_date,
            hold: c.hold.map(|h| HoldView {
                reason: crate::domain::code::Code::AwaitingReview
                    .as_str()
                    .to_string(),
                message_id: h.message_id.to_string(),
                intent: h.intent,
                since: rfc3339(h.since),
            }),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseList {
    pub cases: Vec<CaseResponse>,
    pub total_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct CaseListQuery {
    #[param(schema_with = super::openapi::case_status)]
    pub status: Option<String>,
    /// The start of a case number, or a debtor's whole email address or phone number.
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub q: Option<String>,
    /// Page size, 50 when absent.
    #[param(schema_with = super::openapi::limit_200)]
    pub limit: Option<i64>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

/// A path's case id; anything that is not a UUID is a case that does not exist.
pub(crate) fn case_id(raw: &str) -> ApiResult<CaseId> {
    CaseId::parse(raw).ok_or_else(|| ApiError::not_found("case"))
}

fn printable(field: &str, s: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match s {
        Some(v) if v.trim().is_empty() || v.chars().count() > max || has_control_chars(&v) => {
            Err(ApiError::unprocessable(
                Code::ValidationFailed,
                format!("{field} must be 1 to {max} printable characters"),
            ))
        }
        other => Ok(other.map(|v| v.trim().to_string())),
    }
}

/// A party id with a NUL in it names no party (and is nothing PostgreSQL could look up).
fn party_id(field: &str, id: Option<String>) -> ApiResult<Option<String>> {
    match id {
        Some(id) if id.contains('\0') => Err(ApiError::unprocessable(
            Code::InvalidParty,
            format!("{field} is not a party id"),
        )),
        other => Ok(other),
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(Code::ValidationFailed, detail)
}

#[utoipa::path(post, path = "/api/cases", tag = "cases", request_body = CreateCaseRequest,
    responses((status = 201, body = CaseResponse), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn create_case(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<CreateCaseRequest>,
) -> ApiResult<(StatusCode, axum::Json<CaseResponse>)> {
    let creditor_id = match actor.kind {
        PartyKind::Partner => return Err(ApiError::forbidden("a partner cannot create cases")),
        PartyKind::Admin => party_id("creditorId", req.creditor_id)?
            .ok_or_else(|| invalid("creditorId is required when an admin creates a case"))?,
        PartyKind::Creditor => match req.creditor_id {
            Some(id) if id != actor.party_id.as_str() => {
                return Err(ApiError::forbidden(
                    "a creditor creates cases for itself only",
                ));
            }
            _ => actor.party_id.to_string(),
        },
    };
    let d = &req.debtor;
    let new = NewCase {
        case_number: req
            .case_number
            .as_deref()
            .map(CaseNumber::parse)
            .transpose()?,
        creditor_id,
        partner_id: party_id("partnerId", req.partner_id)?,
        debtor: Debtor::parse(
            &d.name,
            d.email.as_deref(),
            d.phone.as_deref(),
            d.language.as_deref(),
            d.timezone.as_deref(),
        )?,
        amount: Money::parse(&req.amount.value.0, &req.amount.currency)?,
        invoice_number: printable("invoiceNumber", req.invoice_number, 100)?,
        due_date: req
            .due_date
            .as_deref()
            .map(|s| {
                parse_date(s)
                    .ok_or_else(|| invalid(format!("dueDate {s:?} is not a date (YYYY-MM-DD)")))
            })
            .transpose()?,
    };
    let case = state.app.cases.create(&actor, new).await?;
    Ok((StatusCode::CREATED, axum::Json(case.into())))
}

#[utoipa::path(get, path = "/api/cases", tag = "cases", params(CaseListQuery),
    responses((status = 200, body = CaseList), (status = 422, body = ProblemBody, description = "`invalid_cursor`")),
    security(("bearer" = [])))]
pub async fn list_cases(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<CaseListQuery>,
) -> ApiResult<axum::Json<CaseList>> {
    let status = q
        .status
        .as_deref()
        .map(CaseStatus::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(Code::InvalidQuery, e.0))?;
    let (page, total_count) = state
        .app
        .cases
        .list(
            &actor,
            ListCases {
                status,
                search: q
                    .q
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if s.chars().count() > 200 || has_control_chars(&s) {
                            Err(ApiError::bad_request(
                                Code::InvalidQuery,
                                "q is at most 200 printable characters",
                            ))
                        } else {
                            Ok(s)
                        }
                    })
                    .transpose()?,
                cursor: page_cursor(q.cursor)?,
                limit: page_limit(q.limit)?,
            },
        )
        .await?;
    Ok(axum::Json(CaseList {
        cases: page.items.into_iter().map(Into::into).collect(),
        total_count,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/cases/{caseId}", tag = "cases", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = CaseResponse), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn get_case(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<CaseResponse>> {
    let id = case_id(&raw)?;
    let case = state.app.cases.get(&actor, &id).await?;
    Ok(axum::Json(case.into()))
}

#[utoipa::path(patch, path = "/api/cases/{caseId}", tag = "cases", params(("caseId" = uuid::Uuid, Path)), request_body = UpdateCaseRequest,
    responses((status = 200, body = CaseResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn update_case(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(req): Json<UpdateCaseRequest>,
) -> ApiResult<axum::Json<CaseResponse>> {
    let id = case_id(&raw)?;
    let debtor = req.debtor.unwrap_or_default();
    let patch = CasePatch {
        status: req.status.as_deref().map(CaseStatus::parse).transpose()?,
        partner_id: req
            .partner_id
            .map(|p| party_id("partnerId", p))
            .transpose()?,
        debtor_name: debtor.name.as_deref().map(parse_name).transpose()?,
        debtor_email: debtor
            .email
            .map(|e| {
                e.map(|e| EmailAddress::parse(&e).map(|a| a.as_str().to_string()))
                    .transpose()
            })
            .transpose()?,
        debtor_phone: debtor
            .phone
            .map(|p| {
                p.map(|p| PhoneNumber::parse(&p).map(|n| n.as_str().to_string()))
                    .transpose()
            })
            .transpose()?,
        debtor_language: debtor
            .language
            .map(|l| l.as_deref().map(parse_language).transpose())
            .transpose()?,
        debtor_timezone: debtor
            .timezone
            .map(|t| t.as_deref().map(parse_timezone).transpose())
            .transpose()?,
    };
    let case = state.app.cases.update(&actor, &id, patch).await?;
    Ok(axum::Json(case.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PaymentAmount {
    Object(AmountInput),
    #[schema(value_type = String)]
    Plain(Decimal),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentRequest {
    /// `"500.00"`, or `{"value": "500.00", "currency": "DKK"}` in the case's currency.
    #[schema(schema_with = super::openapi::payment_amount)]
    pub amount: PaymentAmount,
    /// Date or date-time; now when absent.
    #[schema(schema_with = super::openapi::instant_or_null)]
    pub paid_at: Option<String>,
    #[schema(schema_with = super::openapi::reference_or_null)]
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResponse {
    pub payment_id: String,
    #[schema(value_type = String)]
    pub case_id: CaseId,
    pub amount: AmountView,
    pub paid_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub created_by: String,
    pub created_at: String,
}

impl From<Payment> for PaymentResponse {
    fn from(p: Payment) -> Self {
        Self {
            amount: AmountView {
                value: p.amount.value(),
                currency: p.amount.currency().to_string(),
            },
            payment_id: p.id,
            case_id: p.case_id,
            paid_at: rfc3339(p.paid_at),
            reference: p.reference,
            created_by: p.created_by,
            created_at: rfc3339(p.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    pub payments: Vec<PaymentResponse>,
}

fn instant(field: &str, s: &str) -> ApiResult<i64> {
    parse_instant(s).map(to_micros).ok_or_else(|| {
        invalid(format!(
            "{field} {s:?} is not a date or an RFC 3339 date-time"
        ))
    })
}

#[utoipa::path(post, path = "/api/cases/{caseId}/payments", tag = "cases", params(("caseId" = uuid::Uuid, Path)), request_body = CreatePaymentRequest,
    responses((status = 201, body = PaymentResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = [])))]
pub async fn create_payment(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(req): Json<CreatePaymentRequest>,
) -> ApiResult<(StatusCode, axum::Json<PaymentResponse>)> {
    let id = case_id(&raw)?;
    let (value, currency) = match &req.amount {
        PaymentAmount::Object(a) => (&a.value.0, Some(a.currency.clone())),
        PaymentAmount::Plain(d) => (&d.0, None),
    };
    let payment = PaymentCommand {
        amount_minor: parse_minor(value)?,
        currency,
        paid_at: req
            .paid_at
            .as_deref()
            .map(|s| instant("paidAt", s))
            .transpose()?,
        reference: printable("reference", req.reference, 200)?,
    };
    let payment = state.app.cases.add_payment(&actor, &id, payment).await?;
    Ok((StatusCode::CREATED, axum::Json(payment.into())))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/payments", tag = "cases", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = PaymentList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn list_payments(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<PaymentList>> {
    let id = case_id(&raw)?;
    let payments = state.app.cases.payments(&actor, &id).await?;
    Ok(axum::Json(PaymentList {
        payments: payments.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateDeadlineRequest {
    #[schema(schema_with = super::openapi::title)]
    pub title: String,
    /// Date or RFC 3339 date-time.
    #[schema(schema_with = super::openapi::instant)]
    pub due_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineResponse {
    pub deadline_id: String,
    #[schema(value_type = String)]
    pub case_id: CaseId,
    pub title: String,
    pub due_at: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<Deadline> for DeadlineResponse {
    fn from(d: Deadline) -> Self {
        Self {
            deadline_id: d.id,
            case_id: d.case_id,
            title: d.title,
            due_at: rfc3339(d.due_at),
            created_by: d.created_by,
            created_at: rfc3339(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadlineList {
    pub deadlines: Vec<DeadlineResponse>,
}

#[utoipa::path(post, path = "/api/cases/{caseId}/deadlines", tag = "cases", params(("caseId" = uuid::Uuid, Path)), request_body = CreateDeadlineRequest,
    responses((status = 201, body = DeadlineResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = [])))]
pub async fn create_deadline(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Json(req): Json<CreateDeadlineRequest>,
) -> ApiResult<(StatusCode, axum::Json<DeadlineResponse>)> {
    let id = case_id(&raw)?;
    let title = printable("title", Some(req.title), 200)?.unwrap_or_default();
    let due_at = instant("dueAt", &req.due_at)?;
    let deadline = state
        .app
        .cases
        .add_deadline(&actor, &id, NewDeadline { title, due_at })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(deadline.into())))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/deadlines", tag = "cases", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = DeadlineList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn list_deadlines(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<DeadlineList>> {
    let id = case_id(&raw)?;
    let deadlines = state.app.cases.deadlines(&actor, &id).await?;
    Ok(axum::Json(DeadlineList {
        deadlines: deadlines.into_iter().map(Into::into).collect(),
    }))
}
