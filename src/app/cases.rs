//! Cases and what hangs on them: the case itself, its payments and deadlines, internal
//! notes, the audit log, and the debtor's communication preferences. Every command names
//! the acting party; a case it may not see is `NotFound`, never a hint that it exists.

use super::{AppError, AppResult};
use crate::domain::CaseId;
use crate::domain::clock::SharedClock;
use crate::domain::code::Code;
use crate::domain::party::{Actor, PartyKind};
use crate::domain::policy::PreferencesPatch;
use crate::domain::time::Micros;
use crate::store::{
    AuditEntry, CasePatch, CaseView, Deadline, ListCases, NewCase, NewDeadline, NewNote,
    NewPayment, Note, NoteFilter, Page, Payment, Store, StoredPreferences, Suppression,
};

/// A payment as a caller states it; `paid_at` is now when absent, `currency` is checked
/// against the case's when given.
pub struct PaymentCommand {
    pub amount_minor: i64,
    pub currency: Option<String>,
    pub paid_at: Option<Micros>,
    pub reference: Option<String>,
}

/// The preferences of a case with the entries of the suppression list that stop its sends.
pub struct PreferencesView {
    pub case_id: CaseId,
    pub stored: StoredPreferences,
    pub suppressions: Vec<Suppression>,
}

#[derive(Clone)]
pub struct Cases {
    audit: crate::store::Audit,
    cases: crate::store::Cases,
    policy: crate::store::Policy,
    clock: SharedClock,
}

fn case_or_404<T>(found: Option<T>) -> AppResult<T> {
    found.ok_or(AppError::NotFound("case"))
}

impl Cases {
    pub fn new(store: &Store, clock: SharedClock) -> Self {
        Self {
            audit: store.audit(),
            cases: store.cases(),
            policy: store.policy(),
            clock,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn create(&self, actor: &Actor, new: NewCase) -> AppResult<CaseView> {
        Ok(self.cases.create_case(actor, new).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn list(&self, actor: &Actor, q: ListCases) -> AppResult<(Page<CaseView>, i64)> {
        Ok(self.cases.list_cases(actor, q).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, actor: &Actor, id: &CaseId) -> AppResult<CaseView> {
        case_or_404(self.cases.get_case(actor, id).await?)
    }

    /// A partner may change a case it works but not reassign it: refused where the case is
    /// visible to it, `NotFound` elsewhere.
    #[tracing::instrument(skip_all)]
    pub async fn update(
        &self,
        actor: &Actor,
        id: &CaseId,
        patch: CasePatch,
    ) -> AppResult<CaseView> {
        if patch.partner_id.is_some() && actor.kind == PartyKind::Partner {
            self.get(actor, id).await?;
            return Err(AppError::Forbidden("a partner cannot reassign a case"));
        }
        case_or_404(self.cases.update_case(actor, id, patch).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn add_payment(
        &self,
        actor: &Actor,
        id: &CaseId,
        payment: PaymentCommand,
    ) -> AppResult<Payment> {
        if let Some(currency) = &payment.currency {
            let case = self.get(actor, id).await?;
            if case.amount.currency() != currency {
                return Err(AppError::refused(
                    Code::CurrencyMismatch,
                    format!(
                        "the case is in {}, the payment in {currency}",
                        case.amount.currency()
                    ),
                ));
            }
        }
        let new = NewPayment {
            amount_minor: payment.amount_minor,
            paid_at: payment.paid_at.unwrap_or_else(|| self.clock.now()),
            reference: payment.reference,
        };
        case_or_404(self.cases.add_payment(actor, id, new).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn payments(&self, actor: &Actor, id: &CaseId) -> AppResult<Vec<Payment>> {
        case_or_404(self.cases.list_payments(actor, id).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn add_deadline(
        &self,
        actor: &Actor,
        id: &CaseId,
        new: NewDeadline,
    ) -> AppResult<Deadline> {
        case_or_404(self.cases.add_deadline(actor, id, new).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn deadlines(&self, actor: &Actor, id: &CaseId) -> AppResult<Vec<Deadline>> {
        case_or_404(self.cases.list_deadlines(actor, id).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn add_note(&self, actor: &Actor, id: &CaseId, new: NewNote) -> AppResult<Note> {
        case_or_404(self.cases.add_note(actor, id, new).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn notes(
        &self,
        actor: &Actor,
        id: &CaseId,
        filter: NoteFilter,
    ) -> AppResult<Page<Note>> {
        case_or_404(self.cases.list_notes(actor, id, filter).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn audit_log(
        &self,
        actor: &Actor,
        id: &CaseId,
        cursor: Option<&str>,
        limit: i64,
    ) -> AppResult<Page<AuditEntry>> {
        case_or_404(self.audit.list_audit(actor, id, cursor, limit).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn preferences(&self, actor: &Actor, id: &CaseId) -> AppResult<PreferencesView> {
        let stored = case_or_404(self.cases.preferences(actor, id).await?)?;
        self.with_suppressions(actor, id, stored).await
    }

    /// Makes a change of the preferences.
    #[tracing::instrument(skip_all)]
    pub async fn change_preferences(
        &self,
        actor: &Actor,
        id: &CaseId,
        change: PreferencesPatch,
    ) -> AppResult<PreferencesView> {
        let current = case_or_404(self.cases.preferences(actor, id).await?)?;
        let next = change.apply(current.preferences);
        let stored = case_or_404(self.cases.set_preferences(actor, id, &next).await?)?;
        self.with_suppressions(actor, id, stored).await
    }

    /// The debtor's entries on the suppression list: those of the preferences' address and
    /// number and of the case's. A creditor's or partner's view shows what stops the sends
    /// on this case, no other tenant's entries and no message of a case it does not see; an
    /// admin's shows every entry.
    async fn with_suppressions(
        &self,
        actor: &Actor,
        id: &CaseId,
        stored: StoredPreferences,
    ) -> AppResult<PreferencesView> {
        let Some(case) = self.cases.get_case(actor, id).await? else {
            return Ok(PreferencesView {
                case_id: *id,
                stored,
                suppressions: Vec::new(),
            });
        };
        let creditor = (!actor.is_admin()).then(|| case.creditor_id.clone());
        let mut values: Vec<String> = [
            &stored.preferences.email_address,
            &stored.preferences.phone_number,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        values.extend(case.debtor.email.clone());
        values.extend(case.debtor.phone.clone());
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let suppressions = self
            .policy
            .suppressions_of(
                &refs,
                creditor
                    .as_deref()
                    .map(|creditor| (creditor, actor.party_id.as_str())),
            )
            .await?;
        Ok(PreferencesView {
            case_id: *id,
            stored,
            suppressions,
        })
    }
}
