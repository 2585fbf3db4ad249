//! `/api/message-templates` and the rendering of a template for a send.

use crate::domain::code::Code;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auth, Json, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::case::parse_language;
use crate::domain::message::Channel;
use crate::domain::template;
use crate::domain::{PartyKind, has_control_chars, prefixed_id};
use crate::store::{Template, TemplateContent};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSummary {
    pub template_id: String,
    pub name: String,
    /// `email` or `sms`
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Derived from the placeholders, in order of first appearance.
    pub variables: Vec<String>,
    pub default_language: String,
    pub languages: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateText {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[schema(schema_with = super::openapi::template_body)]
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::template_html_or_null)]
    pub html_body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateResponse {
    #[serde(flatten)]
    pub summary: TemplateSummary,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    /// The texts in languages other than the default.
    pub translations: BTreeMap<String, TemplateText>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateSummary>,
}

fn summary(t: &Template) -> TemplateSummary {
    let texts = t
        .contents
        .iter()
        .flat_map(|c| {
            [
                c.subject.as_deref(),
                Some(c.body.as_str()),
                c.html_body.as_deref(),
            ]
        })
        .flatten();
    TemplateSummary {
        template_id: t.id.clone(),
        name: t.name.clone(),
        kind: t.channel.as_str().to_string(),
        subject: t.default_content().and_then(|c| c.subject.clone()),
        variables: template::variables(texts),
        default_language: t.default_language.clone(),
        languages: t.languages(),
    }
}

fn full(t: &Template) -> TemplateResponse {
    let default = t.default_content();
    TemplateResponse {
        summary: summary(t),
        body: default.map(|c| c.body.clone()).unwrap_or_default(),
        html_body: default.and_then(|c| c.html_body.clone()),
        translations: t
            .contents
            .iter()
            .filter(|c| c.language != t.default_language)
            .map(|c| {
                (
                    c.language.clone(),
                    TemplateText {
                        subject: c.subject.clone(),
                        body: c.body.clone(),
                        html_body: c.html_body.clone(),
                    },
                )
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRequest {
    /// Lower-case letters, digits, `-`, `_`, `.`; generated when absent (POST only).
    #[schema(schema_with = super::openapi::template_id_or_null)]
    pub template_id: Option<String>,
    #[schema(schema_with = super::openapi::name)]
    pub name: String,
    /// `email` or `sms`
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::channel)]
    pub kind: String,
    /// Default `en`.
    #[schema(schema_with = super::openapi::language_or_null)]
    pub default_language: Option<String>,
    pub subject: Option<String>,
    #[schema(schema_with = super::openapi::template_body)]
    pub body: String,
    #[schema(schema_with = super::openapi::template_html_or_null)]
    pub html_body: Option<String>,
    /// Texts in further languages, by language tag.
    #[serde(default)]
    pub translations: BTreeMap<String, TemplateText>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(Code::ValidationFailed, detail)
}

fn parse_template(id: String, req: TemplateRequest) -> ApiResult<Template> {
    let channel = Channel::parse(&req.kind)?;
    if req.name.trim().is_empty() || req.name.chars().count() > 200 || has_control_chars(&req.name)
    {
        return Err(invalid("name must be 1 to 200 printable characters"));
    }
    let default_language = parse_language(req.default_language.as_deref().unwrap_or("en"))?;
    let mut contents = vec![TemplateContent {
        language: default_language.clone(),
        subject: req.subject,
        body: req.body,
        html_body: req.html_body,
    }];
    for (lang, text) in req.translations {
        let language = parse_language(&lang)?;
        if contents.iter().any(|c| c.language == language) {
            return Err(invalid(format!("language {language} is given twice")));
        }
        contents.push(TemplateContent {
            language,
            subject: text.subject,
            body: text.body,
            html_body: text.html_body,
        });
    }
    for c in &contents {
        let lang = &c.language;
        if crate::domain::is_blank(&c.body) {
            return Err(invalid(format!("{lang}: body is required")));
        }
        // Kept in the clear: a NUL is text no database column holds alike.
        if [Some(&c.body), c.subject.as_ref(), c.html_body.as_ref()]
            .into_iter()
            .flatten()
            .any(|t| t.contains('\0'))
        {
            return Err(invalid(format!("{lang}: a template's text has no NUL")));
        }
        match channel {
            Channel::Email if c.subject.as_deref().is_none_or(crate::domain::is_blank) => {
                return Err(invalid(format!(
                    "{lang}: an email template needs a subject"
                )));
            }
            Channel::Sms if c.subject.is_some() || c.html_body.is_some() => {
                return Err(invalid(format!(
                    "{lang}: an SMS template has no subject or HTML"
                )));
            }
            _ => {}
        }
        if c.subject
            .as_deref()
            .is_some_and(|s| s.contains(['\r', '\n', '\0']))
        {
            return Err(invalid(format!(
                "{lang}: subject must not contain CR, LF or NUL"
            )));
        }
        for text in [
            c.subject.as_deref(),
            Some(c.body.as_str()),
            c.html_body.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            template::validate(text).map_err(|e| invalid(format!("{lang}: {}", e.0)))?;
        }
    }
    Ok(Template {
        id,
        name: req.name.trim().to_string(),
        channel,
        default_language,
        contents,
    })
}

fn template_id(s: &str) -> ApiResult<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "templateId must be 1 to 64 of a-z, 0-9, '-', '_', '.'",
        ))
    }
}

fn require_admin(actor: &crate::domain::party::Actor) -> ApiResult<()> {
    if actor.kind == PartyKind::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("templates are managed by admins"))
    }
}

#[utoipa::path(get, path = "/api/message-templates", tag = "templates", responses((status = 200, body = TemplateList)), security(("bearer" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    Auth(_): Auth,
) -> ApiResult<axum::Json<TemplateList>> {
    let templates = state.app.templates.list().await?;
    Ok(axum::Json(TemplateList {
        templates: templates.iter().map(summary).collect(),
    }))
}

#[utoipa::path(post, path = "/api/message-templates", tag = "templates", request_body = TemplateRequest,
    responses((status = 201, body = TemplateResponse), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn create_template(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<TemplateRequest>,
) -> ApiResult<(StatusCode, axum::Json<TemplateResponse>)> {
    require_admin(&actor)?;
    let id = match &req.template_id {
        Some(id) => template_id(id)?,
        None => prefixed_id("tpl"),
    };
    let t = parse_template(id, req)?;
    state.app.templates.create(&actor, &t).await?;
    Ok((StatusCode::CREATED, axum::Json(full(&t))))
}

#[utoipa::path(get, path = "/api/message-templates/{templateId}", tag = "templates", params(("templateId" = String, Path)),
    responses((status = 200, body = TemplateResponse), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn get_template(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TemplateResponse>> {
    let t = state.app.templates.get(&id).await?;
    Ok(axum::Json(full(&t)))
}

#[utoipa::path(put, path = "/api/message-templates/{templateId}", tag = "templates", params(("templateId" = String, Path)), request_body = TemplateRequest,
    responses((status = 200, body = TemplateResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn replace_template(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(req): Json<TemplateRequest>,
) -> ApiResult<axum::Json<TemplateResponse>> {
    require_admin(&actor)?;
    if req.template_id.as_deref().is_some_and(|given| given != id) {
        return Err(invalid(
            "templateId in the body differs from the one in the path",
        ));
    }
    let t = parse_template(id, req)?;
    state.app.templates.replace(&actor, &t).await?;
    Ok(axum::Json(full(&t)))
}

#[utoipa::path(delete, path = "/api/message-templates/{templateId}", tag = "templates", params(("templateId" = String, Path)),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn delete_template(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&actor)?;
    state.app.templates.delete(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
