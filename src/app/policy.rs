//! The send policy as a service: gathers the facts a decision needs (preferences, the
//! debtor's time zone, recent messages, the suppression list) and asks
//! `domain::policy::decide`. The send path and the delivery worker decide the same way.

use super::{AppError, AppResult};
use crate::domain::CaseId;
use crate::domain::CaseStatus;
use crate::domain::code::Code;
use crate::domain::message::{Category, Channel};
use crate::domain::policy::{Evidence, Preferences, SendContext, decide};
use crate::domain::time::{Micros, duration_micros, from_micros, to_micros};
use crate::store::Store;

/// The policy's settings (`PARLEY_FREQUENCY_CAP`, `PARLEY_DEFAULT_CONTACT_HOURS`).
pub use crate::config::PolicyConfig as PolicySettings;

/// The moment of the decision and what it is about.
pub struct Question<'a> {
    pub case_id: &'a CaseId,
    pub channel: Channel,
    pub category: Category,
    /// The case's status at the moment of the check.
    pub case_status: CaseStatus,
    /// A reply on the case awaits review (the case names the reply that holds it).
    pub awaiting_review: bool,
    /// Every address or number the message goes to.
    pub recipients: &'a [&'a str],
    pub now: Micros,
    /// `scheduledAt`, if the sender asked for a later time.
    pub wanted: Option<Micros>,
    /// The debtor's time zone when the caller has the case at hand (`Some(None)`: it has
    /// none); `None` to look it up.
    pub debtor_timezone: Option<Option<&'a str>>,
    /// Count recent messages against the frequency cap (at queueing; a queued message was
    /// counted when it was accepted).
    pub count_recent: bool,
    /// The debtor asked for erasure while a retention rule holds (or was erased): nothing
    /// more goes to them.
    pub restricted: bool,
    /// The messages counted against the frequency cap, when the caller read them with the
    /// case (from [`SendPolicy::recent_since`]); `None` to count them here.
    pub recent: Option<u32>,
    /// Whether one of `recipients` is suppressed, when the caller read it with the case;
    /// `None` to look it up here.
    pub suppressed: Option<bool>,
}

/// A send the policy allows: now, or not before a time; with the evidence to keep.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub not_before: Option<Micros>,
    pub evidence: Evidence,
}

#[derive(Clone)]
pub struct SendPolicy {
    cases: crate::store::Cases,
    policy: crate::store::Policy,
    settings: PolicySettings,
}

impl SendPolicy {
    pub fn new(store: &Store, settings: PolicySettings) -> Self {
        Self {
            cases: store.cases(),
            policy: store.policy(),
            settings,
        }
    }

    /// Where the frequency cap's window starts at `now`; `None` without a cap.
    pub fn recent_since(&self, now: Micros) -> Option<Micros> {
        self.settings
            .frequency_cap
            .map(|cap| now.saturating_sub(duration_micros(cap.window)))
    }

    /// The case's preferences, for the caller that also needs them (recipients, language).
    #[tracing::instrument(skip_all)]
    pub async fn preferences(&self, case_id: &CaseId) -> AppResult<Preferences> {
        Ok(self.cases.preferences_for_sending(case_id).await?)
    }

    /// Decides a send under `preferences`: `not_before` `None` to send now, `Some(t)` not
    /// before `t` (the time asked for, or the next opening of the contact window). Refusals
    /// are [`AppError::Refused`] with the rule's code: `restricted`, `case_not_contactable`,
    /// `do_not_contact`, `channel_not_allowed`, `frequency_cap_exceeded`,
    /// `recipient_suppressed`.
    #[tracing::instrument(skip_all)]
    pub async fn decide(&self, preferences: &Preferences, q: &Question<'_>) -> AppResult<Allowed> {
        if q.restricted {
            return Err(AppError::refused(
                Code::Restricted,
                "the debtor asked for their personal data to be erased: processing is restricted and nothing more is sent",
            ));
        }
        let cap = self.settings.frequency_cap.filter(|_| q.count_recent);
        let recent = match (cap, q.recent) {
            (Some(_), Some(known)) => known,
            (Some(cap), None) => {
                let window = duration_micros(cap.window);
                self.cases
                    .recent_outbound(
                        q.case_id,
                        q.channel.as_str(),
                        q.now.saturating_sub(window),
                        false,
                    )
                    .await?
            }
            (None, _) => 0,
        };
        let timezone = match q.debtor_timezone {
            Some(known) => known.map(str::to_string),
            None => self.cases.case_timezone(q.case_id).await?,
        };
        let context = SendContext {
            channel: q.channel,
            category: q.category,
            case_status: q.case_status,
            awaiting_review: q.awaiting_review,
            now: from_micros(q.now),
            wanted: q.wanted.map(from_micros),
            default_hours: self.settings.default_contact_hours,
            debtor_timezone: timezone.as_deref(),
            recent,
            cap,
            closed_days: Some(&self.settings.closed_days),
        };
        let verdict =
            decide(preferences, &context).map_err(|r| AppError::refused(r.code, r.detail))?;
        // Every creditor's messages to this person, when the operator caps those too.
        if let Some(cap) = self
            .settings
            .person_frequency_cap
            .filter(|_| q.count_recent)
        {
            let since = q.now.saturating_sub(duration_micros(cap.window));
            let everyone = self
                .cases
                .recent_outbound(q.case_id, q.channel.as_str(), since, true)
                .await?;
            if everyone >= cap.count {
                // How many, and from whom, is other tenants' business: not said.
                return Err(AppError::refused(
                    Code::FrequencyCapExceeded,
                    format!(
                        "this person has received as many {} messages within {} s as the operator allows from all senders together",
                        q.channel.as_str(),
                        cap.window.as_secs()
                    ),
                ));
            }
        }
        let suppressed = match q.suppressed {
            Some(known) => known,
            None => self
                .policy
                .suppressed(q.channel.as_str(), q.recipients, q.case_id)
                .await?
                .is_some(),
        };
        if suppressed {
            return Err(AppError::refused(
                Code::RecipientSuppressed,
                "a recipient has unsubscribed or is on the suppression list",
            ));
        }
        Ok(Allowed {
            not_before: verdict.not_before.map(to_micros),
            evidence: verdict.evidence(context.now),
        })
    }
}

impl SendPolicy {
    /// The suppression list, newest first, a page at a time; with `address`, the entries of
    /// that address or number only.
    #[tracing::instrument(skip_all)]
    pub async fn suppressions(
        &self,
        address: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> AppResult<crate::store::Page<crate::store::Suppression>> {
        Ok(self
            .policy
            .list_suppressions(address, cursor, limit)
            .await?)
    }

    /// Lifts an entry of the suppression list, audited.
    #[tracing::instrument(skip_all)]
    pub async fn lift(&self, actor: &crate::domain::party::Actor, id: &str) -> AppResult<()> {
        if self.policy.lift_suppression(actor, id).await? {
            Ok(())
        } else {
            Err(super::AppError::NotFound("suppression"))
        }
    }
}
