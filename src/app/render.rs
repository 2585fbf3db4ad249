//! Rendering a template for a send: the best language, the case's variables, strict
//! placeholders.

use std::collections::BTreeMap;

use serde_json::json;

use super::{AppError, AppResult};
use crate::domain::case::format_minor;
use crate::domain::code::Code;
use crate::domain::message::Channel;
use crate::domain::policy::Preferences;
use crate::domain::template::{self, Missing, choose_language, html_escape, plain};
use crate::store::CaseView;

/// A template named by a send, with the variables the sender gave.
#[derive(Debug, Clone)]
pub struct TemplateChoice {
    pub template_id: String,
    pub variables: BTreeMap<String, String>,
}

/// What the send already says itself, which the template does not replace.
#[derive(Debug, Clone, Copy)]
pub struct Given {
    pub subject: bool,
    pub body: bool,
}

/// What a template contributed to a message.
#[derive(Debug, Default)]
pub struct Rendered {
    pub template_id: Option<String>,
    pub language: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html: Option<String>,
}

/// Variables every template may use without the request naming them, from the case.
pub fn case_variables(case: &CaseView) -> BTreeMap<String, String> {
    let currency = case.amount.currency();
    let mut v = BTreeMap::new();
    v.insert("caseNumber".into(), case.case_number.clone());
    v.insert("debtorName".into(), case.debtor.name.clone());
    v.insert(
        "amount".into(),
        format!("{} {currency}", case.amount.value()),
    );
    v.insert(
        "amountOutstanding".into(),
        format!(
            "{} {currency}",
            format_minor((case.amount.minor - case.paid_minor).max(0))
        ),
    );
    if let Some(n) = &case.invoice_number {
        v.insert("invoiceNumber".into(), n.clone());
    }
    if let Some(d) = &case.due_date {
        v.insert("dueDate".into(), d.clone());
    }
    v
}

/// Renders the chosen template, if any, in the best language: the request's, else the
/// debtor's preferred one, else the case's debtor language, else the template's default.
/// What the sender gave (`given`) is kept and not taken from the template.
pub async fn render(
    templates: &crate::store::Templates,
    case: &CaseView,
    channel: Channel,
    choice: Option<&TemplateChoice>,
    given: Given,
    language: Option<&str>,
    preferences: Option<&Preferences>,
) -> AppResult<Rendered> {
    let Some(choice) = choice else {
        return Ok(Rendered::default());
    };
    let id = choice.template_id.as_str();
    let t = templates
        .get_template(id)
        .await?
        .ok_or_else(|| AppError::refused(Code::TemplateNotFound, format!("no template {id:?}")))?;
    if t.channel != channel {
        return Err(AppError::refused(
            Code::TemplateTypeMismatch,
            format!(
                "template {id:?} is for {}, not {}",
                t.channel,
                channel.as_str()
            ),
        ));
    }
    let languages = t.languages();
    let wanted = [
        language,
        preferences.and_then(|p| p.preferred_language.as_deref()),
        case.debtor.language.as_deref(),
        Some(t.default_language.as_str()),
    ];
    let chosen = choose_language(&languages, &wanted).map(str::to_string);
    let content = chosen
        .as_deref()
        .and_then(|l| t.content(l))
        .or(t.default_content())
        .ok_or_else(|| {
            AppError::Store(crate::store::StoreError::Corrupt(format!(
                "template {id} has no content"
            )))
        })?;

    let mut vars = case_variables(case);
    vars.extend(choice.variables.clone());
    let mut missing: Vec<String> = Vec::new();
    let mut take = |r: Result<String, Missing>| match r {
        Ok(s) => Some(s),
        Err(Missing(m)) => {
            for v in m {
                if !missing.contains(&v) {
                    missing.push(v);
                }
            }
            None
        }
    };
    let subject = match (given.subject, &content.subject) {
        (false, Some(s)) => take(template::render(s, &vars, plain)),
        _ => None,
    };
    let (body, html) = if given.body {
        (None, None)
    } else {
        let body = take(template::render(&content.body, &vars, plain));
        let html = content
            .html_body
            .as_ref()
            .and_then(|h| take(template::render(h, &vars, html_escape)));
        (body, html)
    };
    if !missing.is_empty() {
        return Err(AppError::refused(
            Code::TemplateVariablesMissing,
            format!(
                "template {id:?} needs variables that were not given: {}",
                missing.join(", ")
            ),
        )
        .with("missingVariables", json!(missing)));
    }
    // The language is the template's only where its text was used.
    let used = subject.is_some() || body.is_some();
    Ok(Rendered {
        template_id: Some(t.id.clone()),
        language: used.then(|| content.language.clone()),
        subject,
        body,
        html,
    })
}
