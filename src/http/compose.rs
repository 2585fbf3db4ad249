//! From a send request to a message ready to queue: recipients parsed, template rendered,
//! send policy checked.

use super::AppState;
use super::messages::{OneOrMany, SendMessageRequest};
use super::problem::{ApiError, ApiResult};
use crate::domain::message::{Category, Channel, Priority};
use crate::domain::party::Actor;
use crate::domain::policy::{Preferences, SendContext, decide};
use crate::domain::sms::segments;
use crate::domain::time::{from_micros, now_micros, parse_instant, to_micros};
use crate::domain::{EmailAddress, PhoneNumber, prefixed_id};
use crate::store::{CaseView, Envelope, NewMessage};

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable("validation_failed", detail)
}

fn has_header_breaking(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

/// Turns a request into a message ready to queue: recipients parsed, template rendered,
/// send policy checked.
pub async fn compose(
    state: &AppState,
    actor: &Actor,
    case: &CaseView,
    req: SendMessageRequest,
) -> ApiResult<NewMessage> {
    let channel = Channel::parse(&req.message_type)?;
    let priority = req
        .priority
        .as_deref()
        .map(Priority::parse)
        .transpose()?
        .unwrap_or(Priority::Normal);
    let category = req
        .category
        .as_deref()
        .map(Category::parse)
        .transpose()?
        .unwrap_or(Category::General);
    let language = req
        .language
        .as_deref()
        .map(crate::domain::case::parse_language)
        .transpose()?;
    let preferences = state.store.preferences_for_sending(&case.id).await?;
    let to = recipients(channel, req.to.clone(), case, &preferences)?;
    let cc = match channel {
        Channel::Email => req
            .cc
            .iter()
            .map(|c| {
                EmailAddress::parse(c)
                    .map(|a| a.to_string())
                    .map_err(|e| ApiError::unprocessable("invalid_recipient", e.0))
            })
            .collect::<ApiResult<Vec<_>>>()?,
        Channel::Sms if !req.cc.is_empty() => return Err(invalid("cc is for email only")),
        Channel::Sms => Vec::new(),
    };
    if req.subject.as_deref().is_some_and(has_header_breaking) {
        return Err(invalid("subject must not contain CR, LF or NUL"));
    }
    let now = now_micros();
    let scheduled_at = req
        .scheduled_at
        .as_deref()
        .map(|s| {
            parse_instant(s)
                .map(to_micros)
                .ok_or_else(|| invalid(format!("scheduledAt {s:?} is not an RFC 3339 date-time")))
        })
        .transpose()?
        .filter(|t| *t > now);

    let rendered = super::templates::render_for(
        state,
        case,
        channel,
        &req,
        language.as_deref(),
        Some(&preferences),
    )
    .await?;
    let subject = req.subject.or(rendered.subject);
    let body = req
        .body
        .clone()
        .or(rendered.body)
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| invalid("body is required (or a templateId)"))?;
    let html = match (&req.body, req.html_body) {
        (_, Some(h)) => Some(h),
        (Some(_), None) => None,
        (None, None) => rendered.html,
    };
    if channel == Channel::Email && subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Err(invalid(
            "subject is required for email (or a templateId whose template has one)",
        ));
    }
    if subject.as_deref().is_some_and(has_header_breaking) {
        return Err(invalid("the rendered subject contains CR, LF or NUL"));
    }

    // The send policy: preferences, frequency cap, contact hours; then the suppression list.
    let cap = state.config.frequency_cap;
    let recent = match cap {
        Some(cap) => {
            let window = i64::try_from(cap.window.as_micros()).unwrap_or(i64::MAX);
            state
                .store
                .recent_outbound(&case.id, channel.as_str(), now.saturating_sub(window))
                .await?
        }
        None => 0,
    };
    let context = SendContext {
        channel,
        category,
        now: from_micros(now),
        wanted: scheduled_at.map(from_micros),
        default_hours: state.config.default_contact_hours,
        debtor_timezone: case.debtor.timezone.as_deref(),
        recent,
        cap,
    };
    let scheduled_for = decide(&preferences, &context)
        .map_err(|r| ApiError::unprocessable(r.code, r.detail))?
        .map(to_micros);
    let all: Vec<&str> = to.iter().chain(cc.iter()).map(String::as_str).collect();
    if state
        .store
        .suppressed(channel.as_str(), &all)
        .await?
        .is_some()
    {
        return Err(ApiError::unprocessable(
            "recipient_suppressed",
            "a recipient has unsubscribed or is on the suppression list",
        ));
    }

    let id = prefixed_id("msg");
    let (from, rfc_message_id, in_reply_to, segment_count) = match channel {
        Channel::Email => {
            let domain = state
                .config
                .email_from
                .rsplit_once('@')
                .map_or("localhost", |(_, d)| d);
            let parent = match req.in_reply_to.as_deref() {
                None => None,
                Some(parent) => {
                    let m = state
                        .store
                        .get_message(actor, parent)
                        .await?
                        .filter(|m| m.case_id.as_deref() == Some(case.id.as_str()));
                    let m = m.ok_or_else(|| {
                        invalid(format!(
                            "inReplyTo {parent:?} is not a message of this case"
                        ))
                    })?;
                    m.rfc_message_id
                }
            };
            (
                state.config.email_from.clone(),
                Some(format!("<{id}@{domain}>")),
                parent,
                None,
            )
        }
        Channel::Sms => {
            let from = state
                .config
                .sms_from
                .clone()
                .unwrap_or_else(|| "parley".into());
            (from, None, None, Some(i64::from(segments(&body).1)))
        }
    };
    Ok(NewMessage {
        id,
        case_id: case.id.clone(),
        channel,
        priority,
        category,
        template_id: rendered.template_id,
        language: rendered.language.or(language),
        envelope: Envelope { from, to, cc },
        subject: if channel == Channel::Email {
            subject
        } else {
            None
        },
        body,
        html: if channel == Channel::Email {
            html
        } else {
            None
        },
        rfc_message_id,
        in_reply_to,
        segments: segment_count,
        run_at: scheduled_for.unwrap_or(now),
        scheduled_for,
    })
}

/// The given recipients, else the debtor's: the address or number in the preferences,
/// else the case's.
fn recipients(
    channel: Channel,
    to: Option<OneOrMany>,
    case: &CaseView,
    preferences: &Preferences,
) -> ApiResult<Vec<String>> {
    let given = to.map(OneOrMany::into_vec).unwrap_or_default();
    let list = if given.is_empty() {
        let fallback = match channel {
            Channel::Email => preferences
                .email_address
                .clone()
                .or_else(|| case.debtor.email.clone()),
            Channel::Sms => preferences
                .phone_number
                .clone()
                .or_else(|| case.debtor.phone.clone()),
        };
        vec![fallback.ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_recipient",
                format!(
                    "no recipient given and the debtor has no {}",
                    channel.as_str()
                ),
            )
        })?]
    } else {
        given
    };
    let bad = |e: crate::domain::Invalid| ApiError::unprocessable("invalid_recipient", e.0);
    match channel {
        Channel::Email => {
            if list.len() > 50 {
                return Err(ApiError::unprocessable(
                    "invalid_recipient",
                    "at most 50 recipients",
                ));
            }
            list.iter()
                .map(|a| EmailAddress::parse(a).map(|a| a.to_string()).map_err(bad))
                .collect()
        }
        Channel::Sms => {
            if list.len() != 1 {
                return Err(ApiError::unprocessable(
                    "invalid_recipient",
                    "an SMS goes to exactly one number",
                ));
            }
            list.iter()
                .map(|n| PhoneNumber::parse(n).map(|n| n.to_string()).map_err(bad))
                .collect()
        }
    }
}
