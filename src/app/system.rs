//! System messages: the case's own notifications of four events (a status change, a
//! payment, a document upload, a deadline coming due). Each event's transaction queues a
//! `system_message` job beside it (`store::emit`); the job renders the editable
//! `system-<event>` template and writes one message per event, delivered to the debtor by the
//! preferred channel through the same queue and policy when the event addresses them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::messaging::{Messaging, recipients};
use super::policy::Question;
use super::render::{Given, TemplateChoice, render};
use super::{AppError, AppResult};
use crate::domain::CaseStatus;
use crate::domain::code::Code;
use crate::domain::message::{Channel, MessageStatus, MessageType, Priority, SystemEvent};
use crate::domain::party::Actor;
use crate::domain::policy::{Evidence, Preferences};
use crate::domain::sms::segments;
use crate::domain::time::{Micros, duration_micros, from_micros};
use crate::domain::{DocumentId, MessageId};
use crate::store::system::Occurrence;
use crate::store::{Access, CaseView, Envelope, NewMessage, Queued};

/// What a system message says, rendered.
struct Text {
    template_id: Option<String>,
    language: Option<String>,
    subject: String,
    body: String,
    html: Option<String>,
}

impl Messaging {
    /// Announces the deadlines that fall due within `warning` (`PARLEY_DEADLINE_WARNING`):
    /// each once, across all processes on the database.
    #[tracing::instrument(skip_all)]
    pub async fn announce_deadlines(&self, warning: Duration) -> AppResult<usize> {
        let now = self.clock.now();
        Ok(self
            .system
            .announce_deadlines(now + duration_micros(warning), now)
            .await?)
    }

    /// Writes the system message of the outbox event `event_id`. Its key is the event, so a
    /// retried job finds it written and writes nothing; an event that is gone, or whose case
    /// is, or whose case's debtor was erased (nothing more is recorded about them), makes
    /// nothing.
    #[tracing::instrument(skip_all)]
    pub async fn make_system_message(&self, event_id: &str) -> AppResult<()> {
        let Some(occurrence) = self.system.occurrence(event_id).await? else {
            return Ok(());
        };
        let system = Actor::system();
        let Some(case) = self
            .cases
            .get_case(&system, &occurrence.case_id)
            .await?
            .filter(|c| c.erased_at.is_none())
        else {
            return Ok(());
        };
        let preferences = self.policy.preferences(&case.id).await?;
        let variables = self.variables(&system, &case, &occurrence).await?;
        let text = self
            .system_text(&case, occurrence.event, variables, &preferences)
            .await?;

        let now = self.clock.now();
        let id = MessageId::new();
        let to_debtor = addresses_debtor(&occurrence);
        let delivery = if to_debtor {
            debtor_channel(&case, &preferences)
        } else {
            None
        };
        let (status, evidence, scheduled_for) = self
            .system_decision(&case, &occurrence, &preferences, delivery.as_ref(), now)
            .await?;
        let channel = delivery.as_ref().map(|(c, _)| *c);
        let envelope = self.system_envelope(delivery.as_ref());
        let sms = channel == Some(Channel::Sms);
        let new = NewMessage {
            case_id: case.id,
            message_type: MessageType::System,
            channel,
            status,
            system: Some((occurrence.event, occurrence.key.clone())),
            evidence,
            attachments: Vec::new(),
            priority: Priority::Normal,
            category: occurrence.event.category(),
            template_id: text.template_id,
            language: text.language,
            envelope,
            subject: (!sms).then_some(text.subject),
            segments: sms.then(|| i64::from(segments(&text.body).1)),
            html: if channel == Some(Channel::Email) {
                text.html
            } else {
                None
            },
            body: text.body,
            rfc_message_id: (channel == Some(Channel::Email))
                .then(|| self.senders.message_id(id.as_str())),
            in_reply_to: None,
            run_at: scheduled_for.unwrap_or(now),
            scheduled_for,
            // The system job's attempt: the event's delivery continues its trace.
            trace_parent: crate::telemetry::current_traceparent(),
            id,
        };
        match self
            .messages
            .queue_message(&system, new, None, Access::ToCheck, now)
            .await?
        {
            Queued::Created(m) => {
                if m.status == MessageStatus::Queued {
                    self.wake.notify_one();
                }
                Ok(())
            }
            Queued::KeyTaken | Queued::NoCase => Ok(()),
        }
    }

    /// Whether a system message to the debtor goes out: queued (with the policy's evidence
    /// and when it may go) or refused with the rule, never an error; one that addresses
    /// nobody is `sent` as it is written.
    async fn system_decision(
        &self,
        case: &CaseView,
        occurrence: &Occurrence,
        preferences: &Preferences,
        delivery: Option<&(Channel, Vec<String>)>,
        now: Micros,
    ) -> AppResult<(MessageStatus, Option<Evidence>, Option<Micros>)> {
        Ok(match delivery {
            None => (MessageStatus::Sent, None, None),
            Some((channel, to)) => {
                let all: Vec<&str> = to.iter().map(String::as_str).collect();
                let decided = self
                    .policy
                    .decide(
                        preferences,
                        &Question {
                            case_id: &case.id,
                            channel: *channel,
                            category: occurrence.event.category(),
                            case_status: case.status,
                            awaiting_review: case.hold.is_some(),
                            recipients: &all,
                            now,
                            wanted: None,
                            debtor_timezone: Some(case.debtor.timezone.as_deref()),
                            count_recent: false,
                            restricted: case.restricted_at.is_some() || case.erased_at.is_some(),
                            recent: None,
                            suppressed: None,
                        },
                    )
                    .await;
                match decided {
                    Ok(allowed) => (
                        MessageStatus::Queued,
                        Some(allowed.evidence),
                        allowed.not_before,
                    ),
                    // Held by a reply awaiting review: queued, and the delivery worker waits
                    // for the review as it does for any held collection message.
                    Err(AppError::Refused {
                        code: Code::AwaitingReview,
                        ..
                    }) => (
                        MessageStatus::Queued,
                        Some(Evidence::deferred(Code::AwaitingReview, from_micros(now))),
                        None,
                    ),
                    // A refusal leaves the message `refused` with the rule: never an error.
                    Err(AppError::Refused { code, .. }) => (
                        MessageStatus::Refused,
                        Some(Evidence::refused(code, from_micros(now))),
                        None,
                    ),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// From parley's sender to the debtor's address or number, or from `system` to nobody.
    fn system_envelope(&self, delivery: Option<&(Channel, Vec<String>)>) -> Envelope {
        match delivery {
            Some((Channel::Email, to)) => Envelope {
                from: self.senders.email_from.clone(),
                to: to.clone(),
                cc: Vec::new(),
            },
            Some((Channel::Sms, to)) => Envelope {
                from: self.senders.sms_sender(),
                to: to.clone(),
                cc: Vec::new(),
            },
            None => Envelope {
                from: "system".into(),
                to: Vec::new(),
                cc: Vec::new(),
            },
        }
    }

    /// The variables of an event's template, besides the case's own.
    async fn variables(
        &self,
        system: &Actor,
        case: &CaseView,
        o: &Occurrence,
    ) -> AppResult<BTreeMap<String, String>> {
        let text = |key: &str| {
            o.payload
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let mut v = BTreeMap::new();
        match o.event {
            SystemEvent::CaseStatusChanged => {
                v.insert("status".into(), text("status"));
                v.insert("previousStatus".into(), text("previousStatus"));
            }
            SystemEvent::PaymentReceived => {
                let amount = &o.payload["amount"];
                v.insert(
                    "paymentAmount".into(),
                    format!(
                        "{} {}",
                        amount["value"].as_str().unwrap_or_default(),
                        amount["currency"].as_str().unwrap_or_default()
                    ),
                );
            }
            SystemEvent::DocumentUploaded => {
                let doc = match DocumentId::parse(&text("documentId")) {
                    Some(id) => self.documents.get_document(system, &id).await?,
                    None => None,
                };
                v.insert(
                    "fileName".into(),
                    doc.as_ref()
                        .map(|d| d.file_name.clone())
                        .unwrap_or_default(),
                );
                v.insert("documentType".into(), text("documentType"));
            }
            SystemEvent::DeadlineApproaching => {
                let title = self.system.deadline_title(&text("deadlineId")).await?;
                v.insert("deadlineTitle".into(), title.unwrap_or_default());
                let due = crate::domain::time::parse_instant(&text("dueAt"));
                let tz: chrono_tz::Tz = case
                    .debtor
                    .timezone
                    .as_deref()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(chrono_tz::UTC);
                v.insert(
                    "deadlineDueAt".into(),
                    due.map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| text("dueAt")),
                );
            }
        }
        Ok(v)
    }

    /// The event's template rendered for the debtor's language; if an operator removed the
    /// template or a variable it needs, a plain text that still says what happened.
    async fn system_text(
        &self,
        case: &CaseView,
        event: SystemEvent,
        variables: BTreeMap<String, String>,
        preferences: &Preferences,
    ) -> AppResult<Text> {
        let choice = TemplateChoice {
            template_id: event.template_id(),
            variables,
        };
        let rendered = render(
            &self.templates,
            case,
            Channel::Email,
            Some(&choice),
            Given {
                subject: false,
                body: false,
            },
            None,
            Some(preferences),
        )
        .await;
        match rendered {
            Ok(r) => Ok(Text {
                template_id: r.template_id,
                language: r.language,
                subject: r
                    .subject
                    .unwrap_or_else(|| format!("{} {}", case.case_number, event.as_str())),
                body: r.body.unwrap_or_default(),
                html: r.html,
            }),
            Err(AppError::Refused { .. }) => {
                let line = format!("Case {}: {}", case.case_number, event.as_str());
                Ok(Text {
                    template_id: None,
                    language: None,
                    subject: line.clone(),
                    body: line,
                    html: None,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether the event concerns the debtor: a payment, a deadline, and a status change to a
/// payment plan, paid or closed.
fn addresses_debtor(o: &Occurrence) -> bool {
    match o.event {
        SystemEvent::PaymentReceived | SystemEvent::DeadlineApproaching => true,
        SystemEvent::DocumentUploaded => false,
        SystemEvent::CaseStatusChanged => o
            .payload
            .get("status")
            .and_then(|s| s.as_str())
            .and_then(|s| CaseStatus::parse(s).ok())
            .is_some_and(|s| {
                matches!(
                    s,
                    CaseStatus::PaymentPlan | CaseStatus::Paid | CaseStatus::Closed
                )
            }),
    }
}

/// The debtor's preferred channel where they can be reached by it, else email, else SMS;
/// `None` when the case has no way to reach them.
fn debtor_channel(case: &CaseView, preferences: &Preferences) -> Option<(Channel, Vec<String>)> {
    let preferred = preferences
        .preferred_channel
        .as_deref()
        .and_then(|c| Channel::parse(c).ok());
    let order = match preferred {
        Some(Channel::Sms) => [Channel::Sms, Channel::Email],
        _ => [Channel::Email, Channel::Sms],
    };
    let allowed = |c: Channel| match c {
        Channel::Email => preferences.allow_email,
        Channel::Sms => preferences.allow_sms,
    };
    let reachable = |channel: Channel| {
        recipients(channel, None, case, preferences)
            .ok()
            .map(|to| (channel, to))
    };
    // A channel the debtor accepts first; else the preferred one, which the policy refuses
    // with its rule.
    order
        .into_iter()
        .filter(|c| allowed(*c))
        .find_map(reachable)
        .or_else(|| order.into_iter().find_map(reachable))
}
