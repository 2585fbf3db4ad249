//! Sending a message: a [`SendMessage`] command becomes a queued message, or a refusal.
//! Recipients, template, send policy and the answered message are settled here; the store
//! writes the message, its job, its audit entry and its idempotency record in one
//! transaction.

use std::sync::Arc;

use tokio::sync::Notify;

use super::policy::{Question, SendPolicy};
use super::render::{TemplateChoice, render};
use super::{AppError, AppResult};
use crate::domain::MessageId;
use crate::domain::clock::SharedClock;
use crate::domain::code::Code;
use crate::domain::message::{Category, Channel, MessageStatus, MessageType, Priority};
use crate::domain::party::Actor;
use crate::domain::policy::Preferences;
use crate::domain::sms::segments;
use crate::domain::time::Micros;
use crate::domain::{CaseId, EmailAddress, PhoneNumber};
use crate::store::{
    Access, AttachmentView, CaseView, Envelope, IdempotencyRecord, MessageView, NewMessage, Queued,
    Replay, SendingFacts, Store,
};

/// Who a message goes to, as the sender named them. `None` in [`SendMessage::to`]: the
/// debtor, by the address or number in the preferences, else the case's.
#[derive(Debug, Clone)]
pub enum Recipients {
    Email(Vec<EmailAddress>),
    Sms(PhoneNumber),
}

/// A request to send one message about a case, parsed.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub channel: Channel,
    pub to: Option<Recipients>,
    pub cc: Vec<EmailAddress>,
    pub subject: Option<String>,
    /// Plain text; replaces a template's text and HTML.
    pub body: Option<String>,
    pub html_body: Option<String>,
    pub priority: Priority,
    pub category: Category,
    pub template: Option<TemplateChoice>,
    pub language: Option<String>,
    /// When delivery may start, if later than now.
    pub scheduled_at: Option<Micros>,
    /// A `messageId` of this case that this email answers.
    pub in_reply_to: Option<String>,
    /// Documents of the case to attach (email only).
    pub attachments: Vec<String>,
}

/// What a send's request says of its text.
struct RequestText {
    subject: Option<String>,
    body: Option<String>,
    html: Option<String>,
    template: Option<TemplateChoice>,
    language: Option<String>,
}

/// What a message says, its template's text under the request's own.
struct Text {
    template_id: Option<String>,
    language: Option<String>,
    subject: Option<String>,
    body: String,
    html: Option<String>,
}

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// The result of a send.
#[derive(Debug)]
pub struct Sent {
    /// The message as it was queued.
    pub message: MessageView,
    /// The same request was made before: nothing new was queued.
    pub replayed: bool,
}

/// Addresses of outbound mail and SMS (`PARLEY_EMAIL_FROM`, `PARLEY_SMS_FROM`), and what
/// an email may carry (`PARLEY_MAX_ATTACHMENT_BYTES`).
#[derive(Debug, Clone)]
pub struct Senders {
    pub email_from: String,
    pub sms_from: Option<String>,
    pub max_attachment_bytes: u64,
}

impl Senders {
    /// The `Message-ID` of an outbound email, in the sender's domain.
    pub fn message_id(&self, id: &str) -> String {
        let domain = self
            .email_from
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d);
        format!("<{id}@{domain}>")
    }

    /// The sender of an SMS.
    pub fn sms_sender(&self) -> String {
        self.sms_from.clone().unwrap_or_else(|| "parley".into())
    }
}

#[derive(Clone)]
pub struct Messaging {
    pub(super) audit: crate::store::Audit,
    pub(super) cases: crate::store::Cases,
    pub(super) documents: crate::store::Documents,
    pub(super) messages: crate::store::Messages,
    pub(super) templates: crate::store::Templates,
    pub(super) parties: crate::store::Parties,
    pub(super) system: crate::store::System,
    pub(super) policy: SendPolicy,
    pub(super) senders: Senders,
    pub(super) clock: SharedClock,
    /// Wakes the delivery worker when a message is queued.
    pub(super) wake: Arc<Notify>,
}

fn invalid(detail: impl Into<String>) -> AppError {
    AppError::refused(Code::ValidationFailed, detail)
}

fn has_header_breaking(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

impl Messaging {
    pub fn new(
        store: &Store,
        policy: SendPolicy,
        senders: Senders,
        clock: SharedClock,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            audit: store.audit(),
            cases: store.cases(),
            documents: store.documents(),
            messages: store.messages(),
            templates: store.templates(),
            parties: store.parties(),
            system: store.system(),
            policy,
            senders,
            clock,
            wake,
        }
    }

    /// What an earlier request with this key did: the message it queued (as it was then), or
    /// a refusal when the key came with another request.
    async fn replay(&self, actor: &Actor, idem: &Idempotency) -> AppResult<Option<Sent>> {
        let now = self.clock.now();
        match self
            .parties
            .idempotent_replay(actor.party_id.as_str(), &idem.key, &idem.request_hash, now)
            .await?
        {
            None => Ok(None),
            Some(Replay::Mismatch) => Err(AppError::refused(
                Code::IdempotencyConflict,
                "this Idempotency-Key was used with a different request within the last 24 hours",
            )),
            Some(Replay::Queued { message_id }) => {
                let message = self
                    .messages
                    .get_message(actor, &message_id)
                    .await?
                    .ok_or(AppError::NotFound("message"))?;
                Ok(Some(Sent {
                    message: as_queued(message),
                    replayed: true,
                }))
            }
        }
    }

    /// Sends `cmd` about a case the actor may see: answers the first result again for a
    /// repeated idempotency key, else queues the message (or refuses it).
    #[tracing::instrument(skip_all)]
    pub async fn send(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        cmd: SendMessage,
        idempotency: Option<Idempotency>,
    ) -> AppResult<Sent> {
        if let Some(idem) = &idempotency
            && let Some(sent) = self.replay(actor, idem).await?
        {
            return Ok(sent);
        }
        let now = self.clock.now();
        let facts = self.read_for_sending(actor, case_id, &cmd, now).await?;
        let new = self.compose(actor, &facts, cmd, now).await?;
        let record = idempotency.as_ref().map(|i| IdempotencyRecord {
            key: i.key.clone(),
            request_hash: i.request_hash.clone(),
        });
        match self
            .messages
            .queue_message(actor, new, record, Access::Checked, now)
            .await?
        {
            Queued::Created(view) => {
                self.wake.notify_one();
                Ok(Sent {
                    message: *view,
                    replayed: false,
                })
            }
            Queued::NoCase => Err(AppError::NotFound("case")),
            Queued::KeyTaken => match &idempotency {
                Some(idem) => self.replay(actor, idem).await?.ok_or_else(|| {
                    AppError::Store(crate::store::StoreError::Internal(anyhow::anyhow!(
                        "idempotency record vanished"
                    )))
                }),
                None => Err(AppError::Store(crate::store::StoreError::Internal(
                    anyhow::anyhow!("a key conflict without a key"),
                ))),
            },
        }
    }

    /// What a send would queue — rendered text, recipients and the policy's decision — with
    /// nothing stored or sent. Its refusals are the send's, and a refusal by the send policy
    /// is audited as the send's would be: asking whether an address is suppressed leaves the
    /// same trace either way.
    #[tracing::instrument(skip_all)]
    pub async fn preview(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        cmd: SendMessage,
    ) -> AppResult<NewMessage> {
        let now = self.clock.now();
        let facts = self.read_for_sending(actor, case_id, &cmd, now).await?;
        self.compose(actor, &facts, cmd, now).await
    }

    /// What a send reads about its case, in one statement: the case (one the actor may
    /// see), its preferences, the messages counted against the frequency cap, and whether
    /// a recipient the request names is suppressed.
    async fn read_for_sending(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        cmd: &SendMessage,
        now: Micros,
    ) -> AppResult<SendingFacts> {
        // The recipients are known before the case is read only when the request names them.
        let named: Vec<String> = match &cmd.to {
            Some(Recipients::Email(list)) => list
                .iter()
                .chain(&cmd.cc)
                .map(ToString::to_string)
                .collect(),
            Some(Recipients::Sms(n)) => vec![n.to_string()],
            None => Vec::new(),
        };
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        self.cases
            .case_for_sending(
                actor,
                case_id,
                cmd.channel,
                &named,
                self.policy.recent_since(now),
            )
            .await?
            .ok_or(AppError::NotFound("case"))
    }

    /// A message ready to queue: recipients settled, template rendered, send policy checked.
    async fn compose(
        &self,
        actor: &Actor,
        facts: &SendingFacts,
        cmd: SendMessage,
        now: Micros,
    ) -> AppResult<NewMessage> {
        let case = &facts.case;
        let channel = cmd.channel;
        self.refuse_if_restricted(actor, case).await?;
        let preferences = &facts.preferences;
        // The suppressions read with the case are those of the request's own recipients.
        let suppressed = facts.suppressed.filter(|_| cmd.to.is_some());
        let to = recipients(channel, cmd.to, case, preferences)?;
        if channel == Channel::Sms && !cmd.cc.is_empty() {
            return Err(invalid("cc is for email only"));
        }
        let cc: Vec<String> = cmd.cc.iter().map(ToString::to_string).collect();
        if cmd.subject.as_deref().is_some_and(has_header_breaking) {
            return Err(invalid("subject must not contain CR, LF or NUL"));
        }
        let scheduled_at = cmd.scheduled_at.filter(|t| *t > now);
        let text = self
            .text(
                case,
                channel,
                preferences,
                RequestText {
                    subject: cmd.subject,
                    body: cmd.body,
                    html: cmd.html_body,
                    template: cmd.template,
                    language: cmd.language,
                },
            )
            .await?;
        let attachments = self.attachments(channel, &case.id, cmd.attachments).await?;
        let all: Vec<&str> = to.iter().chain(cc.iter()).map(String::as_str).collect();
        let question = Question {
            case_id: &case.id,
            channel,
            category: cmd.category,
            case_status: case.status,
            awaiting_review: case.hold.is_some(),
            recipients: &all,
            now,
            wanted: scheduled_at,
            debtor_timezone: Some(case.debtor.timezone.as_deref()),
            count_recent: true,
            restricted: case.restricted_at.is_some() || case.erased_at.is_some(),
            recent: facts.recent,
            suppressed,
        };
        let allowed = self.allowed(actor, preferences, &question).await?;
        let scheduled_for = allowed.not_before;
        let id = MessageId::new();
        let (from, rfc_message_id, in_reply_to, segment_count) = self
            .addressing(
                actor,
                case,
                channel,
                id.as_str(),
                cmd.in_reply_to.as_deref(),
                &text.body,
            )
            .await?;
        let email = channel == Channel::Email;
        Ok(NewMessage {
            id,
            case_id: case.id,
            message_type: MessageType::from(channel),
            channel: Some(channel),
            status: MessageStatus::Queued,
            system: None,
            evidence: Some(allowed.evidence),
            attachments,
            priority: cmd.priority,
            category: cmd.category,
            template_id: text.template_id,
            language: text.language,
            envelope: Envelope { from, to, cc },
            subject: if email { text.subject } else { None },
            body: text.body,
            html: if email { text.html } else { None },
            rfc_message_id,
            in_reply_to,
            segments: segment_count,
            run_at: scheduled_for.unwrap_or(now),
            scheduled_for,
            trace_parent: crate::telemetry::current_traceparent(),
        })
    }

    /// A debtor who asked for erasure gets nothing more, whatever else the send says: the
    /// refusal is audited.
    async fn refuse_if_restricted(&self, actor: &Actor, case: &CaseView) -> AppResult<()> {
        if case.restricted_at.is_none() && case.erased_at.is_none() {
            return Ok(());
        }
        self.audit
            .audit_refusal(actor, &case.id, Code::Restricted.as_str())
            .await?;
        Err(AppError::refused(
            Code::Restricted,
            "the debtor asked for their personal data to be erased: processing is restricted and nothing more is sent",
        ))
    }

    /// What the message says: the request's own subject, body and HTML over its
    /// template's, checked (a body; an email's subject, without CR, LF or NUL).
    async fn text(
        &self,
        case: &CaseView,
        channel: Channel,
        preferences: &Preferences,
        given: RequestText,
    ) -> AppResult<Text> {
        let rendered = render(
            &self.templates,
            case,
            channel,
            given.template.as_ref(),
            super::render::Given {
                subject: given.subject.is_some(),
                body: given.body.is_some(),
            },
            given.language.as_deref(),
            Some(preferences),
        )
        .await?;
        let subject = given.subject.or(rendered.subject);
        let html = match (&given.body, given.html) {
            (_, Some(h)) => Some(h),
            (Some(_), None) => None,
            (None, None) => rendered.html,
        };
        let body = given
            .body
            .or(rendered.body)
            .filter(|b| !crate::domain::is_blank(b))
            .ok_or_else(|| invalid("body is required (or a templateId)"))?;
        if channel == Channel::Email && subject.as_deref().is_none_or(crate::domain::is_blank) {
            return Err(invalid(
                "subject is required for email (or a templateId whose template has one)",
            ));
        }
        if subject.as_deref().is_some_and(has_header_breaking) {
            return Err(invalid("the rendered subject contains CR, LF or NUL"));
        }
        Ok(Text {
            template_id: rendered.template_id,
            language: rendered.language.or(given.language),
            subject,
            body,
            html,
        })
    }

    /// The send policy's answer; a refusal by policy is evidence too, kept in the case's
    /// audit log without the message's content.
    async fn allowed(
        &self,
        actor: &Actor,
        preferences: &Preferences,
        question: &Question<'_>,
    ) -> AppResult<super::policy::Allowed> {
        match self.policy.decide(preferences, question).await {
            Err(AppError::Refused {
                code,
                detail,
                extra,
            }) if code.is_policy() => {
                self.audit
                    .audit_refusal(actor, question.case_id, code.as_str())
                    .await?;
                Err(AppError::Refused {
                    code,
                    detail,
                    extra,
                })
            }
            other => other,
        }
    }

    /// Who the message is from, its `Message-ID` and the one it answers (email), or its
    /// segment count (SMS).
    async fn addressing(
        &self,
        actor: &Actor,
        case: &CaseView,
        channel: Channel,
        id: &str,
        in_reply_to: Option<&str>,
        body: &str,
    ) -> AppResult<(String, Option<String>, Option<String>, Option<i64>)> {
        Ok(match channel {
            Channel::Email => {
                let parent = match in_reply_to {
                    None => None,
                    Some(parent) => {
                        let m = match MessageId::parse(parent) {
                            Some(parent) => self.messages.get_message(actor, &parent).await?,
                            None => None,
                        }
                        .filter(|m| m.case_id.as_ref() == Some(&case.id));
                        let m = m.ok_or_else(|| {
                            invalid(format!(
                                "inReplyTo {parent:?} is not a message of this case"
                            ))
                        })?;
                        m.rfc_message_id
                    }
                };
                (
                    self.senders.email_from.clone(),
                    Some(self.senders.message_id(id)),
                    parent,
                    None,
                )
            }
            Channel::Sms => (
                self.senders.sms_sender(),
                None,
                None,
                Some(i64::from(segments(body).1)),
            ),
        })
    }
}

impl Messaging {
    /// The documents a send names as attachments: email only, each a document of the case,
    /// together within `PARLEY_MAX_ATTACHMENT_BYTES`.
    async fn attachments(
        &self,
        channel: Channel,
        case_id: &CaseId,
        ids: Vec<String>,
    ) -> AppResult<Vec<AttachmentView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refuse = |detail: String| AppError::refused(Code::InvalidAttachment, detail);
        if channel != Channel::Email {
            return Err(refuse("attachments are for email only".into()));
        }
        if ids.len() > 20 {
            return Err(refuse("at most 20 attachments".into()));
        }
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return Err(refuse("a document is attached twice".into()));
        }
        let found = self.documents.case_documents(case_id, &ids).await?;
        if let Some(missing) = ids.iter().find(|id| !found.iter().any(|d| &d.id == *id)) {
            return Err(refuse(format!(
                "attachment {missing:?} is not a document of this case"
            )));
        }
        let total: u64 = found
            .iter()
            .map(|d| u64::try_from(d.size).unwrap_or(0))
            .sum();
        if total > self.senders.max_attachment_bytes {
            return Err(refuse(format!(
                "the attachments add up to {total} bytes; at most {} are allowed",
                self.senders.max_attachment_bytes
            )));
        }
        Ok(found
            .into_iter()
            .map(|d| AttachmentView {
                document_id: d.id,
                file_name: d.file_name,
                size: d.size,
                content_type: d.content_type,
            })
            .collect())
    }
}

/// A message as the answer to its send showed it: what delivery changed since is left out.
fn as_queued(m: MessageView) -> MessageView {
    MessageView {
        status: MessageStatus::Queued,
        provider_id: None,
        failure_reason: None,
        sent_at: None,
        body: None,
        html: None,
        ..m
    }
}

/// The given recipients, else the debtor's: the address or number in the preferences,
/// else the case's.
pub(super) fn recipients(
    channel: Channel,
    to: Option<Recipients>,
    case: &CaseView,
    preferences: &Preferences,
) -> AppResult<Vec<String>> {
    let bad = |e: crate::domain::Invalid| AppError::refused(Code::InvalidRecipient, e.0);
    match (channel, to) {
        (Channel::Email, Some(Recipients::Email(list))) if !list.is_empty() => {
            Ok(list.iter().map(ToString::to_string).collect())
        }
        (Channel::Sms, Some(Recipients::Sms(n))) => Ok(vec![n.to_string()]),
        (_, Some(_)) => Err(AppError::refused(
            Code::InvalidRecipient,
            format!("recipients do not fit a message of type {channel}"),
        )),
        (Channel::Email, None) => {
            let a = preferences
                .email_address
                .clone()
                .or_else(|| case.debtor.email.clone())
                .ok_or_else(|| no_debtor_contact(channel))?;
            Ok(vec![EmailAddress::parse(&a).map_err(bad)?.to_string()])
        }
        (Channel::Sms, None) => {
            let n = preferences
                .phone_number
                .clone()
                .or_else(|| case.debtor.phone.clone())
                .ok_or_else(|| no_debtor_contact(channel))?;
            Ok(vec![PhoneNumber::parse(&n).map_err(bad)?.to_string()])
        }
    }
}

fn no_debtor_contact(channel: Channel) -> AppError {
    AppError::refused(
        Code::InvalidRecipient,
        format!("no recipient given and the debtor has no {channel}"),
    )
}
