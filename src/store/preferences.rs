//! Communication preferences of a case, and the counts the send policy needs.

use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use sqlx::AnyConnection;

use super::{Cases, StoreInner, StoreResult, audit, emit};
use crate::domain::party::Actor;
use crate::domain::policy::Preferences;
use crate::domain::time::Micros;

pub(super) fn contact_context(case_id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("case:{case_id}:preferences")
}

/// Preferences with who changed them last.
#[derive(Debug, Clone)]
pub struct StoredPreferences {
    pub preferences: Preferences,
    pub updated_at: Option<Micros>,
    pub updated_by: Option<String>,
}

/// A `preferences` row, still sealed.
#[derive(sqlx::FromRow)]
pub(super) struct PreferencesRow {
    pub(super) preferred_channel: Option<String>,
    pub(super) allow_email: i32,
    pub(super) allow_sms: i32,
    pub(super) do_not_contact: i32,
    pub(super) dnc_reason_sealed: Option<Vec<u8>>,
    pub(super) dnc_effective_date: Option<String>,
    pub(super) dnc_exceptions: Option<String>,
    pub(super) preferred_language: Option<String>,
    pub(super) contact_start: Option<String>,
    pub(super) contact_end: Option<String>,
    pub(super) contact_timezone: Option<String>,
    pub(super) contact_sealed: Option<Vec<u8>>,
    pub(super) updated_at: i64,
    pub(super) updated_by: String,
}

/// The columns of [`JoinedPreferences`], from `preferences pr` joined to a case.
pub(super) const PREFERENCE_COLUMNS: &str = "pr.preferred_channel, pr.allow_email, pr.allow_sms, pr.do_not_contact, \
     pr.dnc_reason_sealed, pr.dnc_effective_date, pr.dnc_exceptions, pr.preferred_language, pr.contact_start, \
     pr.contact_end, pr.contact_timezone, pr.contact_sealed, pr.updated_at AS pref_updated_at, \
     pr.updated_by AS pref_updated_by";

/// A `preferences` row read through a left join ([`PREFERENCE_COLUMNS`]): every column null
/// where the case has none.
#[derive(sqlx::FromRow)]
pub(super) struct JoinedPreferences {
    preferred_channel: Option<String>,
    allow_email: Option<i32>,
    allow_sms: Option<i32>,
    do_not_contact: Option<i32>,
    dnc_reason_sealed: Option<Vec<u8>>,
    dnc_effective_date: Option<String>,
    dnc_exceptions: Option<String>,
    preferred_language: Option<String>,
    contact_start: Option<String>,
    contact_end: Option<String>,
    contact_timezone: Option<String>,
    contact_sealed: Option<Vec<u8>>,
    pref_updated_at: Option<i64>,
    pref_updated_by: Option<String>,
}

impl JoinedPreferences {
    /// The row, when the case has one.
    pub(super) fn into_row(self) -> Option<PreferencesRow> {
        let (Some(allow_email), Some(allow_sms), Some(do_not_contact)) =
            (self.allow_email, self.allow_sms, self.do_not_contact)
        else {
            return None;
        };
        Some(PreferencesRow {
            preferred_channel: self.preferred_channel,
            allow_email,
            allow_sms,
            do_not_contact,
            dnc_reason_sealed: self.dnc_reason_sealed,
            dnc_effective_date: self.dnc_effective_date,
            dnc_exceptions: self.dnc_exceptions,
            preferred_language: self.preferred_language,
            contact_start: self.contact_start,
            contact_end: self.contact_end,
            contact_timezone: self.contact_timezone,
            contact_sealed: self.contact_sealed,
            updated_at: self.pref_updated_at.unwrap_or_default(),
            updated_by: self.pref_updated_by.unwrap_or_default(),
        })
    }
}

impl Cases {
    /// A case's preferences; the defaults where none were set.
    pub(crate) async fn load_preferences(
        &self,
        conn: &mut AnyConnection,
        case_id: &CaseId,
    ) -> StoreResult<StoredPreferences> {
        let row = sqlx::query_as::<_, PreferencesRow>(
            "SELECT preferred_channel, allow_email, allow_sms, do_not_contact, dnc_reason_sealed, dnc_effective_date, dnc_exceptions, \
             preferred_language, contact_start, contact_end, contact_timezone, contact_sealed, updated_at, updated_by \
             FROM preferences WHERE case_id = $1",
        )
        .bind(case_id)
        .fetch_optional(&mut *conn)
        .await?;
        self.stored_preferences(case_id, row).await
    }

    /// The preferences of a row (the defaults without one), opened.
    pub(super) async fn stored_preferences(
        &self,
        case_id: &CaseId,
        row: Option<PreferencesRow>,
    ) -> StoreResult<StoredPreferences> {
        let Some(r) = row else {
            return Ok(StoredPreferences {
                preferences: Preferences::default(),
                updated_at: None,
                updated_by: None,
            });
        };
        let ctx = contact_context(case_id);
        self.unlock(
            [r.contact_sealed.as_deref(), r.dnc_reason_sealed.as_deref()]
                .into_iter()
                .flatten(),
        )
        .await?;
        let contact = match &r.contact_sealed {
            Some(sealed) => self.open_kept(&ctx, sealed)?,
            None => None,
        };
        let (email_address, phone_number): (Option<String>, Option<String>) = match contact {
            Some(json) => serde_json::from_slice(&json).map_err(anyhow::Error::from)?,
            None => (None, None),
        };
        let preferences = Preferences {
            preferred_channel: r.preferred_channel,
            allow_email: r.allow_email != 0,
            allow_sms: r.allow_sms != 0,
            do_not_contact: r.do_not_contact != 0,
            reason: r
                .dnc_reason_sealed
                .map(|s| self.open_text(&format!("{ctx}:reason"), &s))
                .transpose()?,
            effective_date: r.dnc_effective_date,
            exceptions: r
                .dnc_exceptions
                .and_then(|e| serde_json::from_str(&e).ok())
                .unwrap_or_default(),
            preferred_language: r.preferred_language,
            contact_hours: r
                .contact_start
                .zip(r.contact_end)
                .map(|(s, e)| (s, e, r.contact_timezone)),
            email_address,
            phone_number,
        };
        Ok(StoredPreferences {
            preferences,
            updated_at: Some(r.updated_at),
            updated_by: Some(r.updated_by),
        })
    }

    /// The preferences of a case the actor may see.
    pub async fn preferences(
        &self,
        actor: &Actor,
        case_id: &CaseId,
    ) -> StoreResult<Option<StoredPreferences>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        self.load_preferences(&mut conn, case_id).await.map(Some)
    }

    /// The preferences sending reads, without an actor (the delivery worker's check).
    pub async fn preferences_for_sending(&self, case_id: &CaseId) -> StoreResult<Preferences> {
        let mut conn = self.pool.acquire().await?;
        Ok(self.load_preferences(&mut conn, case_id).await?.preferences)
    }

    /// Stores the whole set, with an audit entry and `preferences.updated` in the outbox.
    pub async fn set_preferences(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        p: &Preferences,
    ) -> StoreResult<Option<StoredPreferences>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, self.backend.for_update()).await? {
            return Ok(None);
        }
        let key = self.live_case_key(case_id).await?;
        let ctx = contact_context(case_id);
        let contact = serde_json::to_vec(&(&p.email_address, &p.phone_number))
            .map_err(anyhow::Error::from)?;
        let now = self.now();
        let (start, end, tz) = match &p.contact_hours {
            Some((s, e, t)) => (Some(s.as_str()), Some(e.as_str()), t.as_deref()),
            None => (None, None, None),
        };
        sqlx::query(
            "INSERT INTO preferences (case_id, preferred_channel, allow_email, allow_sms, do_not_contact, dnc_reason_sealed, \
             dnc_effective_date, dnc_exceptions, preferred_language, contact_start, contact_end, contact_timezone, contact_sealed, \
             updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (case_id) DO UPDATE SET preferred_channel = excluded.preferred_channel, allow_email = excluded.allow_email, \
             allow_sms = excluded.allow_sms, do_not_contact = excluded.do_not_contact, dnc_reason_sealed = excluded.dnc_reason_sealed, \
             dnc_effective_date = excluded.dnc_effective_date, dnc_exceptions = excluded.dnc_exceptions, \
             preferred_language = excluded.preferred_language, contact_start = excluded.contact_start, contact_end = excluded.contact_end, \
             contact_timezone = excluded.contact_timezone, contact_sealed = excluded.contact_sealed, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at",
        )
        .bind(case_id)
        .bind(p.preferred_channel.as_deref())
        .bind(i32::from(p.allow_email))
        .bind(i32::from(p.allow_sms))
        .bind(i32::from(p.do_not_contact))
        .bind(p.reason.as_deref().map(|r| key.seal_str(&format!("{ctx}:reason"), r)))
        .bind(p.effective_date.as_deref())
        .bind(serde_json::to_string(&p.exceptions).map_err(anyhow::Error::from)?)
        .bind(p.preferred_language.as_deref())
        .bind(start)
        .bind(end)
        .bind(tz)
        .bind(key.seal(&ctx, &contact))
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let today = crate::domain::time::from_micros(now)
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        let stops_collection = p.do_not_contact
            && p.effective_date
                .as_deref()
                .is_none_or(|d| d <= today.as_str())
            && !p.exceptions.iter().any(|e| {
                crate::domain::message::Category::parse(e).is_ok_and(|c| c.is_collection())
            });
        if stops_collection {
            // The debtor's request not to be contacted, in force for collection: the replies
            // that held the case are confirmed by it.
            super::inbox::confirm_holds(&mut tx, actor, case_id, now).await?;
        }
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::PreferencesUpdated,
            "case",
            &case_id.to_string(),
            self.now(),
        )
        .await?;
        let payload = crate::domain::payload::PreferencesUpdated {
            case_id,
            do_not_contact: p.do_not_contact,
            allow_email: p.allow_email,
            allow_sms: p.allow_sms,
        };
        emit(
            &mut tx,
            EventType::PreferencesUpdated,
            Some(case_id),
            &payload,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(StoredPreferences {
            preferences: p.clone(),
            updated_at: Some(now),
            updated_by: Some(actor.name.clone()),
        }))
    }

    /// Outbound messages of a channel to this case's debtor since `since` that did not fail:
    /// what the frequency cap counts. The debtor is recognised across cases by the blind
    /// index of the address or number the channel uses; `everyone` counts every creditor's
    /// messages to that person (`PARLEY_PERSON_FREQUENCY_CAP`), else only those of the
    /// case's own creditor (`PARLEY_FREQUENCY_CAP`).
    pub async fn recent_outbound(
        &self,
        case_id: &CaseId,
        channel: &str,
        since: Micros,
        everyone: bool,
    ) -> StoreResult<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages m WHERE m.message_type = $2 AND m.direction = 'outbound' \
             AND m.created_at >= $3 AND m.status <> 'failed' AND m.case_id IN ( \
               SELECT c2.id FROM cases c1 JOIN cases c2 ON c2.id = c1.id \
                 OR (($4 = 1 OR c2.creditor_id = c1.creditor_id) AND ( \
                   ($2 = 'email' AND c1.debtor_email_index IS NOT NULL AND c2.debtor_email_index = c1.debtor_email_index) \
                   OR ($2 = 'sms' AND c1.debtor_phone_index IS NOT NULL AND c2.debtor_phone_index = c1.debtor_phone_index))) \
               WHERE c1.id = $1)",
        )
        .bind(case_id)
        .bind(channel)
        .bind(since)
        .bind(i64::from(everyone))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The debtor's time zone of a case, for contact hours at delivery time.
    pub async fn case_timezone(&self, case_id: &CaseId) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT debtor_timezone FROM cases WHERE id = $1",
        )
        .bind(case_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }
}
