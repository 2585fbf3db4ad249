//! Receiving: mail from the SMTP server, the IMAP poller and the HTTP endpoint, SMS from the
//! provider's webhook, and the sorting of what matched no case. Every way in reads the mail
//! the same way (`domain::mail`) and stores it with the same store verb.

use super::operators::{not_now, settled};
use super::sender_auth::{SenderAuth, SmtpClient};
use super::tracking::bounced_message;
use super::{AppError, AppResult};
use crate::domain::authentication::SpamCheck;
use crate::domain::code::Code;
use crate::domain::mail::Source;
use crate::domain::mail::{self, InboundMail};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{CaseId, MessageId, PhoneNumber};
use crate::store::{InboundSms, Ingested, MailboxProgress, Store, UnmatchedFilter};

/// An SMS as the provider reported it.
#[derive(Debug, Clone)]
pub struct ReceivedSms {
    pub from: PhoneNumber,
    pub to: String,
    pub body: String,
    pub provider_id: Option<String>,
}

/// What the way in knows of a mail besides its bytes.
#[derive(Debug, Default)]
pub struct Arrival<'a> {
    /// The SMTP envelope's recipients, which name per-case addresses a Bcc hides from the
    /// headers.
    pub recipients: &'a [String],
    /// The SMTP client it came from (SPF is checked for it); none off SMTP.
    pub client: Option<SmtpClient>,
    /// What the spam filter said, when one was asked.
    pub spam: Option<SpamCheck>,
    /// The creditor whose cases alone it may find (a connector serving one creditor).
    pub scope: Option<crate::domain::PartyId>,
    /// The connector that took it, and the mail's id there (recorded with the mail).
    pub origin: Option<(crate::domain::ConnectorId, String)>,
    /// The IMAP mailbox it came from and the progress its UID makes (recorded with the mail).
    pub progress: Option<(String, MailboxProgress)>,
}

/// The most unmatched mails one bulk dismissal takes; the answer says how many it did.
pub const BULK_DISMISS: i64 = 10_000;

/// A page of the unmatched inbox and how many it holds in all under its filter.
#[derive(Debug)]
pub struct UnmatchedPage {
    pub items: Vec<Unmatched>,
    pub total: i64,
    pub next_cursor: Option<String>,
}

/// An unmatched mail or SMS, as an admin sees it in the list.
#[derive(Debug, Clone)]
pub struct Unmatched {
    pub inbound_id: String,
    pub source: Source,
    pub received_at: Micros,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Its `Message-ID` header.
    pub message_id: Option<String>,
    /// The cases it could belong to, when it matched more than one.
    pub candidate_case_ids: Vec<CaseId>,
    /// What checking its sender found, and its spam verdict.
    pub authentication: Option<crate::domain::authentication::Authentication>,
    pub spam: Option<SpamCheck>,
}

#[derive(Clone)]
pub struct Inbound {
    inbound: crate::store::Inbound,
    messages: crate::store::Messages,
    /// The domain of per-case reply addresses (`PARLEY_INBOUND_DOMAIN`).
    domain: String,
    /// parley's own sender address (`PARLEY_EMAIL_FROM`): mail claiming to be from it proves
    /// nothing.
    own_sender: String,
    /// Checks who sent a mail; none: `PARLEY_DNS_RESOLVER=off`, the `From:` is believed.
    sender_auth: Option<SenderAuth>,
    /// Wakes the delivery worker when work for it was queued (the documents of accepted mail).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// Where the agency's mail server journals mail sent around parley; none: not taken.
    journal: Option<crate::config::JournalConfig>,
}

impl Inbound {
    pub fn new(
        store: &Store,
        domain: String,
        own_sender: String,
        sender_auth: Option<SenderAuth>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        // `Name <address>` or a bare address: the address.
        let own_sender = match (own_sender.find('<'), own_sender.rfind('>')) {
            (Some(start), Some(end)) if start < end => {
                own_sender[start + 1..end].trim().to_string()
            }
            _ => own_sender.trim().to_string(),
        };
        Self {
            inbound: store.inbound(),
            messages: store.messages(),
            domain,
            own_sender,
            sender_auth,
            wake,
            journal: None,
        }
    }

    /// Takes journal reports at `journal`'s address.
    pub fn with_journal(mut self, journal: Option<crate::config::JournalConfig>) -> Self {
        self.journal = journal;
        self
    }

    /// Stores a received mail: matched to a case, a bounce, a duplicate, or kept unmatched.
    /// Its sender is authenticated first (see `sender_auth`): a mail whose `From:` is not
    /// proven does not count as its debtor's. Not a mail at all: refused with `invalid_mail`.
    #[tracing::instrument(skip_all)]
    pub async fn receive_email(
        &self,
        source: Source,
        raw: &[u8],
        arrival: Arrival<'_>,
    ) -> AppResult<Ingested> {
        let mut parsed = mail::parse(raw).ok_or_else(|| {
            AppError::refused(Code::InvalidMail, "the body is not an RFC 5322 mail")
        })?;
        if let Some(journal) = &self.journal
            && arrival
                .recipients
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&journal.address))
        {
            return self.receive_journal(journal, raw, &parsed, arrival).await;
        }
        parsed
            .delivered_to
            .extend(arrival.recipients.iter().cloned());
        let authentication = match &self.sender_auth {
            Some(checker) => Some(checker.check(raw, arrival.client.as_ref()).await),
            None => None,
        };
        // A bounce is believed only when it comes back to a message's own bounce address.
        let returned = parsed
            .to
            .iter()
            .chain(&parsed.cc)
            .chain(&parsed.delivered_to)
            .find_map(|a| bounced_message(self.inbound.keys(), a, &self.domain));
        Ok(self
            .inbound
            .ingest_email(
                source,
                raw,
                &parsed,
                (&self.domain, &self.own_sender),
                returned
                    .as_ref()
                    .map(|r| (r.message_id.as_str(), r.recipient)),
                crate::store::Checked {
                    authentication: authentication.as_ref(),
                    spam: arrival.spam.as_ref(),
                    scope: arrival.scope.as_ref(),
                    origin: arrival
                        .origin
                        .as_ref()
                        .map(|(connector, remote)| (connector, remote.as_str())),
                    progress: arrival
                        .progress
                        .as_ref()
                        .map(|(mailbox, progress)| (mailbox.as_str(), *progress)),
                },
            )
            .await?)
    }

    /// A journal report (Exchange Online: the original attached as `message/rfc822`) or a
    /// compliance copy (Gmail: the original itself) of mail one of the agency's people sent
    /// around parley. Taken only when the report's sender is proven and of the agency's
    /// domains, about mail from the agency's domains; the mail is filed on its case as sent
    /// (`sentBy` its sender), once, or dropped when it belongs to no case.
    async fn receive_journal(
        &self,
        journal: &crate::config::JournalConfig,
        raw: &[u8],
        report: &InboundMail,
        arrival: Arrival<'_>,
    ) -> AppResult<Ingested> {
        let ours = |address: Option<&str>| {
            address
                .and_then(mail::domain_of)
                .is_some_and(|d| journal.domains.contains(&d))
        };
        if !ours(report.from.as_deref()) {
            return Err(AppError::Forbidden(
                "journal reports are taken from the agency's own domains only",
            ));
        }
        // Without sender checks (`PARLEY_DNS_RESOLVER=off`) nothing proves who sent it.
        let Some(checker) = &self.sender_auth else {
            return Err(AppError::Forbidden(
                "journal reports need sender checks (PARLEY_DNS_RESOLVER is off)",
            ));
        };
        if !checker
            .check(raw, arrival.client.as_ref())
            .await
            .from_verified
        {
            return Err(AppError::Forbidden(
                "the journal report's sender is not proven (SPF, DKIM, DMARC)",
            ));
        }
        let sent = match mail::journaled(raw) {
            Some(mail::Journaled::Copy) => report.clone(),
            Some(mail::Journaled::Report {
                original,
                internal: true,
            }) => mail::parse(&original).ok_or_else(|| {
                AppError::refused(Code::InvalidMail, "the enclosed message is not a mail")
            })?,
            // Mail that came in from outside, journaled too: not the agency's.
            Some(mail::Journaled::Report { .. }) => {
                return Err(AppError::Forbidden(
                    "the journaled mail was not sent from inside the organisation",
                ));
            }
            Some(mail::Journaled::Empty) | None => {
                return Err(AppError::refused(
                    Code::InvalidMail,
                    "the journal report encloses no message",
                ));
            }
        };
        if !ours(sent.from.as_deref()) {
            return Err(AppError::Forbidden(
                "the journaled mail is not from the agency's own domains",
            ));
        }
        Ok(self.inbound.file_journaled(&sent, &self.domain).await?)
    }

    /// How far IMAP polling has read a mailbox (named by a digest, see `inbound::imap`).
    #[tracing::instrument(skip_all)]
    pub async fn mailbox_progress(&self, mailbox: &str) -> AppResult<Option<MailboxProgress>> {
        Ok(self.inbound.mailbox_progress(mailbox).await?)
    }

    /// Records IMAP polling's progress, once what it names is stored and removed.
    #[tracing::instrument(skip_all)]
    pub async fn record_mailbox_progress(
        &self,
        mailbox: &str,
        progress: MailboxProgress,
    ) -> AppResult<()> {
        Ok(self
            .inbound
            .record_mailbox_progress(mailbox, progress)
            .await?)
    }

    /// Stores a received SMS: in the case of the debtor with that number, or unmatched.
    #[tracing::instrument(skip_all)]
    pub async fn receive_sms(&self, sms: &ReceivedSms) -> AppResult<Ingested> {
        Ok(self
            .inbound
            .ingest_sms(&InboundSms {
                from: sms.from.as_str(),
                to: &sms.to,
                body: &sms.body,
                sid: sms.provider_id.as_deref(),
            })
            .await?)
    }

    /// What matched no case, oldest first.
    #[tracing::instrument(skip_all)]
    pub async fn unmatched(
        &self,
        filter: &UnmatchedFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> AppResult<UnmatchedPage> {
        let (page, total) = self.inbound.unmatched_page(filter, cursor, limit).await?;
        let items = page
            .items
            .into_iter()
            .map(|m| {
                let parsed = if m.source == Source::Sms {
                    let v: serde_json::Value = serde_json::from_slice(&m.raw).unwrap_or_default();
                    InboundMail {
                        from: v["from"].as_str().map(str::to_string),
                        ..Default::default()
                    }
                } else {
                    mail::parse(&m.raw).unwrap_or_default()
                };
                Unmatched {
                    candidate_case_ids: m.candidates,
                    authentication: m.authentication,
                    spam: m.spam,
                    inbound_id: m.id,
                    source: m.source,
                    received_at: m.received_at,
                    from: parsed.from,
                    subject: parsed.subject,
                    message_id: parsed.message_id,
                }
            })
            .collect();
        Ok(UnmatchedPage {
            items,
            total,
            next_cursor: page.next_cursor,
        })
    }

    /// Dismisses an unmatched mail (audited); 404 when there is none.
    #[tracing::instrument(skip_all)]
    pub async fn dismiss(&self, actor: &Actor, inbound_id: &str) -> AppResult<()> {
        if self.inbound.dismiss_unmatched(actor, inbound_id).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("inbound mail"))
        }
    }

    /// Dismisses the unmatched mail `filter` takes, up to [`BULK_DISMISS`] a call; how many.
    #[tracing::instrument(skip_all)]
    pub async fn dismiss_where(&self, actor: &Actor, filter: &UnmatchedFilter) -> AppResult<u64> {
        Ok(self
            .inbound
            .dismiss_unmatched_where(actor, filter, BULK_DISMISS)
            .await?)
    }

    /// Accepts a received mail held for review (see `store::review`); the delivery worker
    /// is woken for its attachments.
    #[tracing::instrument(skip_all)]
    pub async fn accept(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> AppResult<crate::store::MessageView> {
        let outcome = self.inbound.accept_received(actor, id).await?;
        settled(
            outcome,
            "message",
            "only a message held for review can be accepted",
        )?;
        self.wake.notify_one();
        self.messages
            .get_message(actor, id)
            .await?
            .ok_or(AppError::NotFound("message"))
    }

    /// Received mail held for review on the cases the actor sees, oldest first.
    #[tracing::instrument(skip_all)]
    pub async fn awaiting_review(
        &self,
        actor: &Actor,
        limit: i64,
    ) -> AppResult<Vec<crate::store::MessageView>> {
        Ok(self.inbound.held_for_review(actor, limit).await?)
    }

    /// Rejects a received mail held for review: back to the unmatched list.
    /// Answers the mail's id on the unmatched list.
    #[tracing::instrument(skip_all)]
    pub async fn reject(&self, actor: &Actor, id: &MessageId) -> AppResult<String> {
        match self.inbound.reject_received(actor, id).await? {
            None => Err(AppError::NotFound("message")),
            Some(Err(n)) => Err(not_now("only a message held for review can be rejected", n)),
            Some(Ok(inbound_id)) => Ok(inbound_id),
        }
    }

    /// Sorts an unmatched mail or SMS into a case the actor can see.
    #[tracing::instrument(skip_all)]
    pub async fn assign(
        &self,
        actor: &Actor,
        inbound_id: &str,
        case_id: &CaseId,
    ) -> AppResult<Ingested> {
        self.inbound
            .assign_unmatched(actor, inbound_id, case_id)
            .await?
            .ok_or(AppError::NotFound("unmatched message"))
    }

    /// A case worker's reading of a received reply: its intent from now on (the machine's
    /// kept beside it). Answers the message as it reads now; held collection messages of a
    /// case no longer held are woken.
    #[tracing::instrument(skip_all)]
    pub async fn correct_understanding(
        &self,
        actor: &Actor,
        id: &MessageId,
        intent: crate::domain::understanding::Intent,
    ) -> AppResult<crate::store::MessageView> {
        let outcome = self
            .inbound
            .correct_understanding(actor, id, intent)
            .await?;
        unreviewable(outcome)?;
        self.wake.notify_one();
        self.messages
            .get_message(actor, id)
            .await?
            .ok_or(AppError::NotFound("message"))
    }

    /// Takes a reply out of the inbox: answered elsewhere, or nothing to answer.
    #[tracing::instrument(skip_all)]
    pub async fn mark_done(&self, actor: &Actor, id: &MessageId) -> AppResult<()> {
        unreviewable(self.inbound.mark_done(actor, id).await?)
    }

    /// Takes answered replies out of the inbox's index; how many.
    pub async fn sweep_inbox(&self) -> AppResult<usize> {
        let swept = self.inbound.sweep_answered().await?;
        Ok(usize::try_from(swept).unwrap_or(usize::MAX))
    }

    /// A page of the inbox: the replies on the actor's cases that await an answer or a
    /// review, oldest first.
    #[tracing::instrument(skip_all)]
    pub async fn inbox(
        &self,
        actor: &Actor,
        filter: &crate::store::InboxFilter,
    ) -> AppResult<crate::store::InboxPage> {
        Ok(self.inbound.inbox(actor, filter).await?)
    }
}

/// 404 for a reply the actor does not see; 409 for one parley did not read; 422
/// `awaiting_review` for a reply that holds its case.
fn unreviewable(outcome: Option<Result<(), crate::store::Unreviewable>>) -> AppResult<()> {
    use crate::store::Unreviewable;
    match outcome {
        None => Err(AppError::NotFound("message")),
        Some(Err(Unreviewable::NotUnderstood)) => Err(AppError::InvalidState(
            "only a received email or SMS that parley read can be corrected".into(),
        )),
        Some(Err(Unreviewable::AwaitingReview)) => Err(AppError::refused(
            Code::AwaitingReview,
            "this reply holds its case: confirm it (status disputed, or doNotContact) or correct its intent first",
        )),
        Some(Ok(())) => Ok(()),
    }
}
