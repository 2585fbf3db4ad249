//! Storing inbound mail: matched to its case (by `In-Reply-To`/`References`, then a per-case
//! address, then a case number in the subject), joined to its thread, announced in the
//! outbox; kept sealed and listed when it matches nothing. Bounces mark the original message.

use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::mail::Source;
use crate::domain::message::Channel;
use crate::domain::{MessageId, ThreadId};
use serde_json::json;

use super::messages::{Envelope, apply_event, context};
use super::{Inbound, Messages, Policy, Sibling, StoreInner, StoreResult, audit_as, emit};
use crate::domain::mail::InboundMail;
use crate::domain::matching::{MatchedBy, addressed_cases, is_stop_word, single, subject_numbers};
use crate::domain::message::MessageStatus;
use crate::domain::party::Actor;
use crate::domain::prefixed_id;
use crate::domain::time::{Micros, rfc3339};

/// What became of an inbound mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Matched {
        message_id: MessageId,
        case_id: CaseId,
        thread_id: ThreadId,
    },
    /// Kept, waiting for someone to sort it.
    Unmatched { inbound_id: String },
    /// A bounce of one of our messages, which is now `bounced`.
    Bounce { message_id: MessageId },
    /// Its `Message-ID` was received before.
    Duplicate { message_id: MessageId },
    /// A journal report of mail sent around parley that belongs to no case: not kept.
    Journaled { message_id: Option<MessageId> },
}

#[derive(Debug, Clone)]
pub struct UnmatchedMail {
    pub id: String,
    pub source: Source,
    pub received_at: Micros,
    pub raw: Vec<u8>,
    /// Cases it could belong to, when it matched more than one.
    pub candidates: Vec<CaseId>,
    /// What checking its sender found, and its spam verdict (none when not checked).
    pub authentication: Option<crate::domain::authentication::Authentication>,
    pub spam: Option<crate::domain::authentication::SpamCheck>,
}

/// Which unmatched mail a list or a bulk dismissal takes: every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct UnmatchedFilter {
    pub source: Option<Source>,
    /// The sender's address or number, as written (compared by blind index, ignoring case).
    pub sender: Option<String>,
    /// Received at or after.
    pub since: Option<Micros>,
    /// Received before.
    pub before: Option<Micros>,
}

/// A row of `inbound_raw`, still sealed.
#[derive(sqlx::FromRow)]
struct RawRow {
    id: String,
    source: String,
    received_at: i64,
    raw_sealed: Vec<u8>,
    candidates: Option<String>,
    authentication: Option<String>,
    spam: Option<String>,
}

/// What sorting an unmatched item into a case reads of it.
#[derive(sqlx::FromRow)]
struct UnsortedRow {
    source: String,
    raw_sealed: Vec<u8>,
    authentication: Option<String>,
    spam: Option<String>,
}

/// A received SMS as a Twilio-style webhook reports it; `from` is E.164.
pub struct InboundSms<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub sid: Option<&'a str>,
}

/// What was found out about a received mail before it was stored: its sender
/// authentication and its spam filter's verdict (each none when not checked).
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked<'a> {
    pub authentication: Option<&'a crate::domain::authentication::Authentication>,
    pub spam: Option<&'a crate::domain::authentication::SpamCheck>,
    /// The creditor whose cases alone it may find (a connector serving one creditor);
    /// none: any case.
    pub scope: Option<&'a crate::domain::PartyId>,
    /// The connector that took it and its id there: recorded as taken in the same
    /// transaction as the mail, so a crash never leaves one without the other.
    pub origin: Option<(&'a crate::domain::ConnectorId, &'a str)>,
    /// The IMAP mailbox it came from and the progress its UID makes there: recorded in the
    /// same transaction as the mail, so a process killed between the two never leaves a
    /// stored mail to be fetched and stored again by the process that takes over.
    pub progress: Option<(&'a str, MailboxProgress)>,
}

impl Checked<'_> {
    /// The two as the JSON kept in the `authentication` and `spam` columns.
    fn columns(&self) -> StoreResult<(Option<String>, Option<String>)> {
        let authentication = self.authentication.map(serde_json::to_string).transpose();
        let spam = self.spam.map(serde_json::to_string).transpose();
        Ok((
            authentication.map_err(anyhow::Error::from)?,
            spam.map_err(anyhow::Error::from)?,
        ))
    }

    /// Nothing may act on the mail before a case worker accepts it, however it found its
    /// case: its `From:` domain says it is forged (DMARC failed), or the filter calls it
    /// spam.
    fn holds(&self) -> bool {
        self.authentication.is_some_and(|a| a.forged()) || self.spam.is_some_and(|s| s.marked)
    }

    /// The `From:` address may be believed: its domain is proven, or nothing was checked
    /// (`PARLEY_DNS_RESOLVER=off`).
    fn sender_proven(&self) -> bool {
        self.authentication.is_none_or(|a| a.from_verified)
    }
}

/// What every received message has, whatever its channel.
struct Received<'a> {
    case_id: &'a CaseId,
    thread_id: &'a ThreadId,
    channel: Channel,
    envelope: Envelope,
    subject: Option<&'a str>,
    body: &'a str,
    html: Option<&'a str>,
    rfc_message_id: Option<&'a str>,
    in_reply_to: Option<&'a str>,
    provider_id: Option<&'a str>,
    has_attachments: bool,
    source: Source,
    raw: &'a [u8],
    /// The unmatched original this message is sorted from, instead of a new raw record.
    raw_id: Option<&'a str>,
    at: Micros,
    /// `false` for mail held for review: matched only by a case number in its subject, from
    /// an address the case does not know. It is kept on the case, and nothing acts on it
    /// (its sender is no participant, its attachments no documents, no `message.received`)
    /// until a case worker accepts it.
    verified: bool,
    /// The sender authentication and spam verdict, as JSON (see [`Checked`]).
    authentication: Option<String>,
    spam: Option<String>,
}

impl<'a> Received<'a> {
    /// A received mail of `case_id`, as read from `raw`.
    fn email(
        case_id: &'a CaseId,
        thread_id: &'a ThreadId,
        mail: &'a InboundMail,
        source: Source,
        raw: &'a [u8],
        raw_id: Option<&'a str>,
        at: Micros,
    ) -> Self {
        Self {
            case_id,
            thread_id,
            channel: Channel::Email,
            envelope: Envelope {
                from: mail.from.clone().unwrap_or_default(),
                to: mail.to.clone(),
                cc: mail.cc.clone(),
            },
            subject: mail.subject.as_deref(),
            body: &mail.text,
            html: mail.html.as_deref(),
            rfc_message_id: mail.message_id.as_deref(),
            in_reply_to: mail.parents.first().map(String::as_str),
            provider_id: None,
            has_attachments: mail.attachments > 0,
            source,
            raw,
            raw_id,
            at,
            verified: true,
            authentication: None,
            spam: None,
        }
    }
}

/// A received message as it is announced (see [`Store::announce_received`]).
pub(super) struct Announced<'a> {
    pub id: &'a MessageId,
    pub case_id: &'a CaseId,
    pub thread_id: &'a ThreadId,
    pub channel: Channel,
    pub envelope: &'a Envelope,
    pub has_attachments: bool,
    pub at: Micros,
}

/// The cases a subject names by a case number, as whole words, across all creditors (at
/// most 20 a number). One of them: the mail's case; more: ambiguous, for the unmatched list.
async fn cases_named_in(
    conn: &mut sqlx::AnyConnection,
    numbers: Vec<String>,
) -> StoreResult<Vec<CaseId>> {
    let mut candidates: Vec<CaseId> = Vec::new();
    for number in numbers {
        let ids: Vec<CaseId> =
            sqlx::query_scalar("SELECT id FROM cases WHERE case_number = $1 ORDER BY id LIMIT 20")
                .bind(&number)
                .fetch_all(&mut *conn)
                .await?;
        for id in ids {
            if !candidates.contains(&id) {
                candidates.push(id);
            }
        }
    }
    Ok(candidates)
}

/// The first case `query` finds for one of `keys`.
async fn first_case(
    conn: &mut sqlx::AnyConnection,
    query: &str,
    keys: impl Iterator<Item = String>,
) -> StoreResult<Option<CaseId>> {
    for key in keys {
        if let Some(id) = sqlx::query_scalar(query)
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Marks an unmatched mail dismissed by `actor`, with its audit entry.
async fn mark_dismissed(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    id: &str,
    now: Micros,
) -> StoreResult<()> {
    sqlx::query("UPDATE inbound_raw SET dismissed_at = $2, dismissed_by = $3 WHERE id = $1")
        .bind(id)
        .bind(now)
        .bind(actor.party_id.as_str())
        .execute(&mut *tx)
        .await?;
    super::audit(
        tx,
        None,
        actor,
        AuditAction::InboundDismissed,
        "inbound",
        id,
        now,
    )
    .await?;
    Ok(())
}

/// The message an SMS with the provider's id `sid` was stored as before, if any.
async fn sms_seen(
    tx: &mut sqlx::AnyConnection,
    sid: Option<&str>,
) -> StoreResult<Option<MessageId>> {
    let Some(sid) = sid else { return Ok(None) };
    Ok(sqlx::query_scalar(
        "SELECT id FROM messages WHERE provider_id = $1 AND direction = 'inbound'",
    )
    .bind(sid)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The cases an SMS from the number with blind index `number` may belong to: the case that
/// last sent an SMS to it; else every case whose debtor has it (at most 20). Several and none
/// of them wrote: no guess, an admin sorts it.
async fn sms_candidates(tx: &mut sqlx::AnyConnection, number: &str) -> StoreResult<Vec<CaseId>> {
    let last_writer: Option<CaseId> = sqlx::query_scalar(
        "SELECT case_id FROM messages WHERE recipient_index = $1 AND direction = 'outbound' \
         AND (message_type = 'sms' OR channel = 'sms') AND case_id IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(number)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match last_writer {
        Some(case) => vec![case],
        None => {
            sqlx::query_scalar(
                "SELECT id FROM cases WHERE debtor_phone_index = $1 ORDER BY id LIMIT 20",
            )
            .bind(number)
            .fetch_all(&mut *tx)
            .await?
        }
    })
}

pub(super) fn raw_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("inbound:{id}")
}

/// The case a received mail found (see `domain::matching`), and how.
pub(super) struct Found {
    pub(super) case_id: Option<CaseId>,
    by: Option<MatchedBy>,
    /// The thread of the message it answers.
    pub(super) parent_thread: Option<ThreadId>,
    /// The cases its subject names, when that is how it was tried.
    candidates: Vec<CaseId>,
}

impl Inbound {
    /// The message stored before with this mail's `Message-ID`, if any.
    pub(super) async fn seen_before(
        tx: &mut sqlx::AnyConnection,
        mail: &InboundMail,
    ) -> StoreResult<Option<MessageId>> {
        let Some(id) = &mail.message_id else {
            return Ok(None);
        };
        Ok(
            sqlx::query_scalar("SELECT id FROM messages WHERE rfc_message_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?,
        )
    }

    /// Records that a connector took the mail (`origin`), once.
    async fn record_origin(
        tx: &mut sqlx::AnyConnection,
        origin: Option<(&crate::domain::ConnectorId, &str)>,
        now: Micros,
    ) -> StoreResult<()> {
        if let Some((connector, remote_id)) = origin {
            sqlx::query(
                "INSERT INTO connector_items (connector_id, remote_id, taken_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (connector_id, remote_id) DO NOTHING",
            )
            .bind(connector)
            .bind(remote_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// A way in that serves one creditor (a connector's mailbox) finds only that creditor's
    /// cases: another's is no match.
    async fn within_scope(
        tx: &mut sqlx::AnyConnection,
        found: &mut Found,
        scope: Option<&crate::domain::PartyId>,
    ) -> StoreResult<()> {
        let (Some(scope), Some(case)) = (scope, found.case_id.as_ref()) else {
            return Ok(());
        };
        let creditor: Option<String> =
            sqlx::query_scalar("SELECT creditor_id FROM cases WHERE id = $1")
                .bind(case)
                .fetch_optional(&mut *tx)
                .await?;
        if creditor.as_deref() != Some(scope.as_str()) {
            found.case_id = None;
            found.candidates.clear();
        }
        Ok(())
    }

    /// Tries a mail's ways to its case in order: the message it answers, a per-case
    /// address, a case number in the subject naming exactly one case.
    pub(super) async fn find_case(
        tx: &mut sqlx::AnyConnection,
        mail: &InboundMail,
        inbound_domain: &str,
    ) -> StoreResult<Found> {
        for parent in &mail.parents {
            if let Some((_, case, thread, verified)) =
                Messages::message_by_rfc_id_in(&mut *tx, parent).await?
            {
                return Ok(Found {
                    case_id: Some(case),
                    by: Some(MatchedBy::Reply { held: !verified }),
                    parent_thread: thread,
                    candidates: Vec::new(),
                });
            }
        }
        let addressed = addressed_cases(mail, inbound_domain).into_iter();
        if let Some(case) =
            first_case(&mut *tx, "SELECT id FROM cases WHERE id = $1", addressed).await?
        {
            return Ok(Found {
                case_id: Some(case),
                by: Some(MatchedBy::Address),
                parent_thread: None,
                candidates: Vec::new(),
            });
        }
        let candidates = cases_named_in(&mut *tx, subject_numbers(mail)).await?;
        let case_id = single(&candidates);
        Ok(Found {
            by: case_id.as_ref().map(|_| MatchedBy::Subject),
            case_id,
            parent_thread: None,
            candidates,
        })
    }

    /// Stores one received mail. `ours` are the domain of per-case addresses and parley's own
    /// sender address; `returned` is the message (and the recipient of its copy, when it went to several)
    /// whose bounce address (VERP) the mail came to, checked by the caller: only then does a
    /// delivery status notification mark it bounced and suppress the address.
    pub async fn ingest_email(
        &self,
        source: Source,
        raw: &[u8],
        mail: &InboundMail,
        (inbound_domain, own_sender): (&str, &str),
        returned: Option<(&str, Option<usize>)>,
        checked: Checked<'_>,
    ) -> StoreResult<Ingested> {
        let now = self.now();
        let (authentication, spam) = checked.columns()?;
        let mut tx = self.write_tx().await?;
        Self::record_origin(&mut tx, checked.origin, now).await?;
        if let Some((mailbox, progress)) = checked.progress {
            write_progress(&mut tx, mailbox, progress).await?;
        }

        if let Some(bounce) = mail.bounce.as_ref().filter(|b| b.is_failure())
            && let Some((returned, recipient)) = returned
        {
            let original: Option<MessageId> = sqlx::query_scalar(
                "SELECT id FROM messages WHERE id = $1 AND direction = 'outbound'",
            )
            .bind(returned)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(message_id) = original {
                self.record_bounce(&mut tx, &message_id, recipient, bounce, mail, now)
                    .await?;
                tx.commit().await?;
                return Ok(Ingested::Bounce { message_id });
            }
        }
        if let Some(message_id) = Self::seen_before(&mut tx, mail).await? {
            tx.commit().await?;
            return Ok(Ingested::Duplicate { message_id });
        }

        let mut found = Self::find_case(&mut tx, mail, inbound_domain).await?;
        Self::within_scope(&mut tx, &mut found, checked.scope).await?;
        let case_id = found.case_id;
        let candidates = found.candidates;

        // A case whose debtor was erased takes nothing more: the mail waits unmatched.
        let key = match case_id.as_ref() {
            Some(id) => self.key_unless_erased(id).await?,
            None => None,
        };
        let (Some(case_id), Some(key)) = (case_id, key) else {
            let inbound_id = self
                .keep_unmatched(
                    &mut tx,
                    (source, mail.from.as_deref()),
                    raw,
                    now,
                    (&candidates, (authentication.as_deref(), spam.as_deref())),
                )
                .await?;
            tx.commit().await?;
            return Ok(Ingested::Unmatched { inbound_id });
        };
        let thread_id = self
            .sibling::<Messages>()
            .join_thread(
                &mut tx,
                &key,
                &case_id,
                found.parent_thread,
                mail.subject.as_deref(),
                now,
            )
            .await?;
        let mut record = Received::email(&case_id, &thread_id, mail, source, raw, None, now);
        record.authentication = authentication;
        record.spam = spam;
        if found.by.is_some_and(MatchedBy::needs_known_sender) {
            let from = mail.from.as_deref().unwrap_or_default();
            record.verified = checked.sender_proven()
                && self
                    .sender_known(&mut tx, &case_id, from, own_sender)
                    .await?;
        }
        if checked.holds() {
            record.verified = false;
        }
        let message_id = self.store_received(&mut tx, &key, &record).await?;
        tx.commit().await?;
        Ok(Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        })
    }

    /// A delivery status notification for `message_id` (its copy for `recipient`, when it
    /// went to several): the bounced address goes on the suppression list (for everyone when
    /// the mailbox is gone, else for the creditor whose mail was refused), and the message is
    /// `bounced` when a `To` recipient's mail came back (a `Cc` reader's copy only suppresses).
    async fn record_bounce(
        &self,
        tx: &mut sqlx::AnyConnection,
        message_id: &MessageId,
        recipient: Option<usize>,
        bounce: &crate::domain::mail::Bounce,
        mail: &InboundMail,
        now: Micros,
    ) -> StoreResult<()> {
        let everyone = bounce.mailbox_gone();
        let addressed = self
            .sibling::<Policy>()
            .suppress_recipients_in(tx, message_id, recipient, everyone, now)
            .await?;
        if addressed {
            let reason = bounce.reason();
            let event_id = mail.message_id.as_ref().map(|m| format!("dsn:{m}"));
            apply_event(
                tx,
                self.backend,
                message_id,
                (MessageStatus::Bounced, now),
                event_id.as_deref(),
                Some(&reason),
                self.now(),
            )
            .await?;
        }
        Ok(())
    }

    /// A STOP from a number that names no single case: which creditor was answered is not
    /// known, so it holds for each creditor of a case with that number (kept with that case,
    /// so that its debtor's erasure reaches it), or for everyone when no case has it.
    async fn suppress_unplaced_stop(
        &self,
        tx: &mut sqlx::AnyConnection,
        from: &str,
        candidates: &[CaseId],
        now: Micros,
    ) -> StoreResult<()> {
        let mut answered: Vec<(Option<&CaseId>, Option<String>)> = Vec::new();
        for candidate in candidates {
            let creditor = super::policy::creditor_of(tx, candidate).await?;
            answered.push((Some(candidate), creditor));
        }
        if answered.is_empty() {
            answered.push((None, None));
        }
        for (case_id, creditor) in &answered {
            let new = super::policy::NewSuppression {
                channel: Channel::Sms.as_str(),
                value: from,
                reason: "stop word",
                case_id: *case_id,
                message_id: None,
                scope: super::policy::Scope::of(creditor.as_deref()),
            };
            self.sibling::<Policy>()
                .insert_suppression(tx, new, now)
                .await?;
        }
        Ok(())
    }

    /// Whether `from` is an address the case knows: its debtor's, or a participant of one
    /// of its threads (someone parley wrote to, or whose mail was accepted on it). parley's
    /// own sender (`own_sender`, a participant of every thread it wrote in) is no one's proof.
    async fn sender_known(
        &self,
        conn: &mut sqlx::AnyConnection,
        case_id: &CaseId,
        from: &str,
        own_sender: &str,
    ) -> StoreResult<bool> {
        if from.is_empty() || from.eq_ignore_ascii_case(own_sender) {
            return Ok(false);
        }
        let from = from.to_lowercase();
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM cases WHERE id = $1 AND debtor_email_index = $2 \
             UNION ALL SELECT 1 FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
               WHERE t.case_id = $1 AND p.participant_index = $3 LIMIT 1",
        )
        .bind(case_id)
        .bind(self.keys.blind_index("email", &from))
        .bind(self.keys.blind_index("participant", &from))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(known.is_some())
    }

    /// Writes a received message of a matched case: the message (sealed), its `received`
    /// event, the raw original (sealed), and (unless held for review) what announces it.
    async fn store_received(
        &self,
        tx: &mut sqlx::AnyConnection,
        key: &crate::crypto::SubjectKey,
        r: &Received<'_>,
    ) -> StoreResult<MessageId> {
        let message_id = MessageId::new();
        let id = &message_id;
        let envelope = serde_json::to_vec(&r.envelope).map_err(anyhow::Error::from)?;
        // What the reply means, read from the debtor's own words (the rules are the
        // domain's), kept with it: the intent in the clear, the reading sealed.
        let sent = chrono::DateTime::from_timestamp_micros(r.at)
            .unwrap_or_default()
            .date_naive();
        let understood = crate::domain::understanding::understand(r.body, sent);
        let reading = serde_json::to_vec(&understood).map_err(anyhow::Error::from)?;
        sqlx::query(
            "INSERT INTO messages (id, case_id, thread_id, direction, message_type, status, status_rank, envelope_sealed, \
             subject_sealed, body_sealed, html_sealed, rfc_message_id, in_reply_to, provider_id, has_attachments, received_at, \
             created_at, updated_at, sender_verified, authentication, spam, intent, understanding_sealed) \
             VALUES ($1, $2, $3, 'inbound', $4, 'received', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $14, $15, $16, $17, $18, $19)",
        )
        .bind(id)
        .bind(r.case_id)
        .bind(r.thread_id)
        .bind(r.channel.as_str())
        .bind(MessageStatus::Received.rank())
        .bind(key.seal(&context(id, "envelope"), &envelope))
        .bind(r.subject.map(|s| key.seal_str(&context(id, "subject"), s)))
        .bind(key.seal_str(&context(id, "body"), r.body))
        .bind(r.html.map(|h| key.seal_str(&context(id, "html"), h)))
        .bind(r.rfc_message_id)
        .bind(r.in_reply_to)
        .bind(r.provider_id)
        .bind(i32::from(r.has_attachments))
        .bind(r.at)
        .bind(i32::from(r.verified))
        .bind(r.authentication.as_deref())
        .bind(r.spam.as_deref())
        .bind(understood.intent.as_str())
        .bind(key.seal(&context(id, "understanding"), &reading))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO message_events (message_id, event, at) VALUES ($1, 'received', $2)",
        )
        .bind(id)
        .bind(r.at)
        .execute(&mut *tx)
        .await?;
        if let Some(raw_id) = r.raw_id {
            // Sorted into a case: from now on under the key of the case's debtor.
            sqlx::query(
                "UPDATE inbound_raw SET matched = 1, message_id = $2, raw_sealed = $3 WHERE id = $1",
            )
            .bind(raw_id)
            .bind(id)
            .bind(key.seal(&raw_context(raw_id), r.raw))
            .execute(&mut *tx)
            .await?;
        } else {
            let inbound_id = prefixed_id("inb");
            sqlx::query(
                "INSERT INTO inbound_raw (id, source, received_at, raw_sealed, message_id, matched) VALUES ($1, $2, $3, $4, $5, 1)",
            )
            .bind(&inbound_id)
            .bind(r.source.as_str())
            .bind(r.at)
            .bind(key.seal(&raw_context(&inbound_id), r.raw))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if !r.verified {
            audit_as(
                &mut *tx,
                Some(r.case_id),
                (None, &format!("inbound {}", r.channel)),
                AuditAction::MessageHeldForReview,
                "message",
                id,
                self.now(),
            )
            .await?;
            return Ok(message_id);
        }
        let announced = Announced {
            id,
            case_id: r.case_id,
            thread_id: r.thread_id,
            channel: r.channel,
            envelope: &r.envelope,
            has_attachments: r.has_attachments,
            at: r.at,
        };
        self.announce_received(tx, key, &announced, &format!("inbound {}", r.channel))
            .await?;
        Ok(message_id)
    }

    /// What a received message does once it is trusted, in the caller's transaction: its
    /// sender and recipients become participants of the thread, its attachments are queued to
    /// become documents, and the audit log and `message.received` record it.
    pub(super) async fn announce_received(
        &self,
        tx: &mut sqlx::AnyConnection,
        key: &crate::crypto::SubjectKey,
        r: &Announced<'_>,
        actor_name: &str,
    ) -> StoreResult<()> {
        let id = r.id;
        let participants = self.sibling::<Messages>().participants_of(key, r.envelope);
        let joined: Vec<(&str, &super::threads::NewParticipant, Micros)> = participants
            .iter()
            .map(|p| (r.thread_id.as_str(), p, r.at))
            .collect();
        let mut writes = super::writes::Writes::new(self.backend);
        Messages::keep_participants(&mut writes, &joined);
        writes.run(&mut *tx).await?;
        if r.has_attachments {
            // Its attachments become documents of the case through the queue, from this
            // transaction: never lost, never stored twice.
            super::side_job(
                &mut *tx,
                crate::domain::message::JobKind::InboundAttachments,
                id.as_str(),
                r.at,
            )
            .await?;
        }
        super::archive::enqueue(&mut *tx, self.backend, &[id.as_str()], r.at).await?;
        super::crm::enqueue_messages(&mut *tx, self.backend, &[id.as_str()], r.at).await?;
        let intent = super::inbox::on_announced(self, &mut *tx, key, (id, r.case_id), r.at).await?;
        audit_as(
            &mut *tx,
            Some(r.case_id),
            (None, actor_name),
            AuditAction::MessageReceived,
            "message",
            id,
            self.now(),
        )
        .await?;
        let case_number: String = sqlx::query_scalar("SELECT case_number FROM cases WHERE id = $1")
            .bind(r.case_id)
            .fetch_one(&mut *tx)
            .await?;
        // Ids only: the dispatcher reads sender and subject from the sealed message when it sends.
        let payload = crate::domain::payload::MessageReceived {
            event: EventType::MessageReceived.as_str(),
            message_id: id,
            case_id: r.case_id,
            case_number: &case_number,
            message_type: r.channel.as_str(),
            has_attachments: r.has_attachments,
            timestamp: rfc3339(r.at),
        };
        emit(
            &mut *tx,
            EventType::MessageReceived,
            Some(r.case_id),
            &payload,
            self.now(),
        )
        .await?;
        // A promise or a payment the reply tells of, for the systems that book them.
        if let Some(intent) = intent.filter(|i| {
            matches!(
                i,
                crate::domain::understanding::Intent::PaymentPromise
                    | crate::domain::understanding::Intent::PaidAlready
            )
        }) {
            let understood = crate::domain::payload::MessageUnderstood {
                message_id: id,
                case_id: r.case_id,
                case_number: &case_number,
                intent: intent.as_str(),
                timestamp: rfc3339(r.at),
            };
            emit(
                &mut *tx,
                EventType::MessageUnderstood,
                Some(r.case_id),
                &understood,
                self.now(),
            )
            .await?;
        }
        Ok(())
    }

    async fn keep_unmatched(
        &self,
        tx: &mut sqlx::AnyConnection,
        (source, sender): (Source, Option<&str>),
        raw: &[u8],
        at: Micros,
        (candidates, (authentication, spam)): (&[CaseId], (Option<&str>, Option<&str>)),
    ) -> StoreResult<String> {
        let inbound_id = prefixed_id("inb");
        let candidates = (!candidates.is_empty())
            .then(|| serde_json::to_string(candidates))
            .transpose()
            .map_err(anyhow::Error::from)?;
        sqlx::query("INSERT INTO inbound_raw (id, source, received_at, raw_sealed, matched, candidates, sender_index, authentication, spam) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)")
            .bind(&inbound_id)
            .bind(source.as_str())
            .bind(at)
            .bind(self.keys.seal(&raw_context(&inbound_id), raw))
            .bind(candidates)
            .bind(sender.map(|s| self.unmatched_sender_index(s)))
            .bind(authentication)
            .bind(spam)
            .execute(&mut *tx)
            .await?;
        Ok(inbound_id)
    }

    /// Stores one received SMS: matched to the most recently changed case whose debtor has
    /// the sender's number, in the case's SMS thread. A stop word (`STOP`, `UNSUBSCRIBE`, …)
    /// also puts the number on the SMS suppression list.
    pub async fn ingest_sms(&self, sms: &InboundSms<'_>) -> StoreResult<Ingested> {
        let now = self.now();
        let raw = serde_json::to_vec(
            &json!({"from": sms.from, "to": sms.to, "body": sms.body, "sid": sms.sid}),
        )
        .map_err(anyhow::Error::from)?;
        let mut tx = self.write_tx().await?;
        if let Some(message_id) = sms_seen(&mut tx, sms.sid).await? {
            return Ok(Ingested::Duplicate { message_id });
        }
        let stop = is_stop_word(sms.body);
        let number = self.keys.blind_index("phone", sms.from);
        let candidates = sms_candidates(&mut tx, &number).await?;
        let placed = single(&candidates);
        if placed.is_none() && stop {
            self.suppress_unplaced_stop(&mut tx, sms.from, &candidates, now)
                .await?;
        }
        // A case whose debtor was erased takes nothing more: the SMS waits unmatched.
        let key = match &placed {
            Some(case_id) => self.key_unless_erased(case_id).await?,
            None => None,
        };
        let (Some(case_id), Some(key)) = (placed, key) else {
            let inbound_id = self
                .keep_unmatched(
                    &mut tx,
                    (Source::Sms, Some(sms.from)),
                    &raw,
                    now,
                    (&candidates, (None, None)),
                )
                .await?;
            tx.commit().await?;
            return Ok(Ingested::Unmatched { inbound_id });
        };
        let thread_id = self
            .sibling::<Messages>()
            .join_thread(&mut tx, &key, &case_id, None, None, now)
            .await?;
        let record = Received {
            case_id: &case_id,
            thread_id: &thread_id,
            channel: Channel::Sms,
            envelope: Envelope {
                from: sms.from.to_string(),
                to: vec![sms.to.to_string()],
                cc: Vec::new(),
            },
            subject: None,
            body: sms.body,
            html: None,
            rfc_message_id: None,
            in_reply_to: None,
            provider_id: sms.sid,
            has_attachments: false,
            source: Source::Sms,
            raw: &raw,
            raw_id: None,
            at: now,
            verified: true,
            authentication: None,
            spam: None,
        };
        let message_id = self.store_received(&mut tx, &key, &record).await?;
        if stop {
            // The number goes on the suppression list with the case and the message that
            // asked; the case's preferences view lists it (`suppressions`), and a send to it
            // is refused with `recipient_suppressed`. Lifting it is an admin's act.
            let creditor = super::policy::creditor_of(&mut tx, &case_id).await?;
            let new = super::policy::NewSuppression {
                channel: Channel::Sms.as_str(),
                value: sms.from,
                reason: "stop word",
                case_id: Some(&case_id),
                message_id: Some(&message_id),
                scope: super::policy::Scope::of(creditor.as_deref()),
            };
            self.sibling::<Policy>()
                .insert_suppression(&mut tx, new, now)
                .await?;
        }
        tx.commit().await?;
        Ok(Ingested::Matched {
            message_id,
            case_id,
            thread_id,
        })
    }

    /// Sorts an unmatched mail or SMS into a case the actor can see: it becomes a received
    /// message of that case as if it had matched. `None`: no such unmatched item, or the case
    /// is not visible.
    pub async fn assign_unmatched(
        &self,
        actor: &Actor,
        inbound_id: &str,
        case_id: &CaseId,
    ) -> StoreResult<Option<Ingested>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let row = sqlx::query_as::<_, UnsortedRow>(
            "SELECT source, raw_sealed, authentication, spam FROM inbound_raw WHERE id = $1 AND matched = 0",
        )
        .bind(inbound_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = self.live_case_key(case_id).await?;
        let source = Source::parse(&row.source).map_err(|e| super::StoreError::Corrupt(e.0))?;
        let raw = self
            .keys
            .open(&raw_context(inbound_id), &row.raw_sealed)
            .map_err(anyhow::Error::from)?;
        let now = self.now();
        let (sms, mail, thread_id);
        let received = if source == Source::Sms {
            sms = serde_json::from_slice::<serde_json::Value>(&raw).map_err(anyhow::Error::from)?;
            thread_id = self
                .sibling::<Messages>()
                .join_thread(&mut tx, &key, case_id, None, None, now)
                .await?;
            let text = |k: &str| sms[k].as_str().unwrap_or_default().to_string();
            Received {
                case_id,
                thread_id: &thread_id,
                channel: Channel::Sms,
                envelope: Envelope {
                    from: text("from"),
                    to: vec![text("to")],
                    cc: Vec::new(),
                },
                subject: None,
                body: sms["body"].as_str().unwrap_or_default(),
                html: None,
                rfc_message_id: None,
                in_reply_to: None,
                provider_id: sms["sid"].as_str(),
                has_attachments: false,
                source,
                raw: &raw,
                raw_id: Some(inbound_id),
                at: now,
                verified: true,
                authentication: None,
                spam: None,
            }
        } else {
            mail = crate::domain::mail::parse(&raw).unwrap_or_default();
            thread_id = self
                .sibling::<Messages>()
                .join_thread(&mut tx, &key, case_id, None, mail.subject.as_deref(), now)
                .await?;
            // Sorted by a person, who vouches for it; what the checks found stays with it.
            Received {
                authentication: row.authentication,
                spam: row.spam,
                ..Received::email(
                    case_id,
                    &thread_id,
                    &mail,
                    source,
                    &raw,
                    Some(inbound_id),
                    now,
                )
            }
        };
        let message_id = self.store_received(&mut tx, &key, &received).await?;
        super::audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::InboundAssigned,
            "message",
            &message_id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Ingested::Matched {
            message_id,
            case_id: *case_id,
            thread_id,
        }))
    }

    /// A received message's case, sender and raw original, for storing its attachments.
    pub async fn received_original(
        &self,
        message_id: &MessageId,
    ) -> StoreResult<Option<(CaseId, String, Vec<u8>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: String,
            raw_sealed: Vec<u8>,
            case_id: Option<CaseId>,
            envelope_sealed: Vec<u8>,
        }
        let row = sqlx::query_as::<_, Row>(
            "SELECT r.id, r.raw_sealed, m.case_id, m.envelope_sealed FROM inbound_raw r \
             JOIN messages m ON m.id = r.message_id WHERE r.message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let Some(case_id) = r.case_id else {
            return Ok(None);
        };
        self.unlock([&r.raw_sealed[..], &r.envelope_sealed[..]])
            .await?;
        // An erased debtor's mail is gone.
        let Some(raw) = self.open_kept(&raw_context(&r.id), &r.raw_sealed)? else {
            return Ok(None);
        };
        let from = self.open_envelope(message_id, &r.envelope_sealed)?.from;
        Ok(Some((case_id, from, raw)))
    }

    /// The `WHERE` of unmatched mail not dismissed that `f` takes, from parameter `$first`.
    fn open_unmatched(first: usize) -> String {
        format!(
            "matched = 0 AND dismissed_at IS NULL AND (${a} IS NULL OR source = ${a}) \
             AND (${b} IS NULL OR sender_index = ${b}) AND (${c} IS NULL OR received_at >= ${c}) \
             AND (${d} IS NULL OR received_at < ${d})",
            a = first,
            b = first + 1,
            c = first + 2,
            d = first + 3
        )
    }

    fn filter_values(
        &self,
        f: &UnmatchedFilter,
    ) -> (
        Option<&'static str>,
        Option<String>,
        Option<Micros>,
        Option<Micros>,
    ) {
        (
            f.source.map(|s| s.as_str()),
            f.sender.as_deref().map(|s| self.unmatched_sender_index(s)),
            f.since,
            f.before,
        )
    }

    /// A page of unmatched mail not dismissed, oldest first, after `cursor`; and how many
    /// there are in all under `f`.
    pub async fn unmatched_page(
        &self,
        f: &UnmatchedFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> StoreResult<(super::Page<UnmatchedMail>, i64)> {
        let after = cursor.map(super::decode_cursor).transpose()?;
        let (source, sender, since, before) = self.filter_values(f);
        let rows = sqlx::query_as::<_, RawRow>(&format!(
            "SELECT id, source, received_at, raw_sealed, candidates, authentication, spam FROM inbound_raw \
             WHERE {} AND ($5 IS NULL OR id > $5) ORDER BY id LIMIT $6",
            Self::open_unmatched(1)
        ))
        .bind(source)
        .bind(sender.clone())
        .bind(since)
        .bind(before)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM inbound_raw WHERE {}",
            Self::open_unmatched(1)
        ))
        .bind(source)
        .bind(sender)
        .bind(since)
        .bind(before)
        .fetch_one(&self.pool)
        .await?;
        let mut items = rows
            .into_iter()
            .map(|r| self.unmatched_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = super::cases::page_cursor(&mut items, limit, |m| m.id.clone());
        Ok((super::Page { items, next_cursor }, total))
    }

    /// Dismisses one unmatched mail (audited); `false` when there is no such unmatched mail.
    /// Dismissing it again changes nothing.
    pub async fn dismiss_unmatched(&self, actor: &Actor, id: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let now = self.now();
        let state: Option<Option<i64>> = sqlx::query_scalar(&format!(
            "SELECT dismissed_at FROM inbound_raw WHERE id = $1 AND matched = 0{}",
            self.backend.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match state {
            None => return Ok(false),
            Some(Some(_)) => return Ok(true),
            Some(None) => {}
        }
        mark_dismissed(&mut tx, actor, id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Dismisses every unmatched mail `f` takes, at most `limit` (oldest first), each
    /// audited; how many.
    pub async fn dismiss_unmatched_where(
        &self,
        actor: &Actor,
        f: &UnmatchedFilter,
        limit: i64,
    ) -> StoreResult<u64> {
        let (source, sender, since, before) = self.filter_values(f);
        let mut tx = self.write_tx().await?;
        let now = self.now();
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM inbound_raw WHERE {} ORDER BY id LIMIT $5{}",
            Self::open_unmatched(1),
            self.backend.for_update()
        ))
        .bind(source)
        .bind(sender)
        .bind(since)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            mark_dismissed(&mut tx, actor, id, now).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Removes dismissed unmatched mail dismissed before `before` (the retention sweeper);
    /// how many.
    pub async fn remove_dismissed_unmatched(&self, before: Micros) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM inbound_raw WHERE matched = 0 AND dismissed_at IS NOT NULL AND dismissed_at < $1",
        )
        .bind(before)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    fn unmatched_from_row(&self, r: RawRow) -> StoreResult<UnmatchedMail> {
        Ok(UnmatchedMail {
            raw: self
                .keys
                .open(&raw_context(&r.id), &r.raw_sealed)
                .map_err(anyhow::Error::from)?,
            candidates: r
                .candidates
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| super::StoreError::Corrupt(e.to_string()))?
                .unwrap_or_default(),
            source: Source::parse(&r.source).map_err(|e| super::StoreError::Corrupt(e.0))?,
            received_at: r.received_at,
            authentication: super::messages::json_column(r.authentication.as_deref())?,
            spam: super::messages::json_column(r.spam.as_deref())?,
            id: r.id,
        })
    }

    pub async fn unmatched_mail(&self, limit: i64) -> StoreResult<Vec<UnmatchedMail>> {
        let (page, _) = self
            .unmatched_page(&UnmatchedFilter::default(), None, limit)
            .await?;
        Ok(page.items)
    }
}

/// How far IMAP polling has read a mailbox: its UIDVALIDITY and the highest UID stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxProgress {
    pub uid_validity: u32,
    pub last_uid: u32,
}

impl Inbound {
    /// The progress recorded for `mailbox` (a digest naming server, user and mailbox).
    pub async fn mailbox_progress(&self, mailbox: &str) -> StoreResult<Option<MailboxProgress>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uid_validity, last_uid FROM imap_progress WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v, u)| MailboxProgress {
            uid_validity: u32::try_from(v).unwrap_or(0),
            last_uid: u32::try_from(u).unwrap_or(0),
        }))
    }

    /// Records that every UID up to `last_uid` of `mailbox` is stored.
    pub async fn record_mailbox_progress(
        &self,
        mailbox: &str,
        progress: MailboxProgress,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        write_progress(&mut tx, mailbox, progress).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How far IMAP polling has read `mailbox`, in the caller's transaction.
async fn write_progress(
    tx: &mut sqlx::AnyConnection,
    mailbox: &str,
    progress: MailboxProgress,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO imap_progress (mailbox, uid_validity, last_uid) VALUES ($1, $2, $3) \
         ON CONFLICT (mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, \
         last_uid = excluded.last_uid",
    )
    .bind(mailbox)
    .bind(i64::from(progress.uid_validity))
    .bind(i64::from(progress.last_uid))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl StoreInner {
    /// The blind index of an unmatched mail's or SMS's sender (its address or number,
    /// case ignored): the unmatched inbox filters by it, and an erasure finds the person's
    /// unmatched mail by it.
    pub(crate) fn unmatched_sender_index(&self, sender: &str) -> String {
        self.keys
            .blind_index("unmatched-sender", &sender.trim().to_lowercase())
    }
}
