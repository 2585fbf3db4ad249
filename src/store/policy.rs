//! What the send policy reads: a case's communication preferences and the suppression list.
//! Suppressed addresses are kept as blind indexes, never in the clear.

use super::{Messages, Policy, Sibling, StoreInner, StoreResult};
use crate::domain::CaseId;
use crate::domain::MessageId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::prefixed_id;

/// The context a suppressed address is sealed under.
pub(super) fn address_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("suppression:{id}:address")
}

/// One entry of the suppression list.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub id: String,
    pub channel: String,
    /// The address or number; `None` for entries made before addresses were kept.
    pub address: Option<String>,
    pub reason: String,
    pub case_id: Option<CaseId>,
    /// The message whose bounce, complaint or unsubscribe caused it.
    pub message_id: Option<MessageId>,
    /// The creditor whose sends it stops; `None`: every tenant's (a fact about the address).
    pub creditor_id: Option<String>,
    pub created_at: i64,
}

/// What goes on the suppression list, and why.
pub(crate) struct NewSuppression<'a> {
    pub channel: &'a str,
    pub value: &'a str,
    pub reason: &'a str,
    pub case_id: Option<&'a CaseId>,
    /// The message whose bounce, complaint or unsubscribe caused it.
    pub message_id: Option<&'a MessageId>,
    /// Whose sends it stops: every tenant's, or one creditor's.
    pub scope: Scope<'a>,
}

/// Whose sends a suppression stops. A person's own answer (an unsubscribe, a STOP, a spam
/// complaint) concerns the creditor whose message was answered; a hard bounce or a provider's
/// drop is a fact about the address, for every tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Everyone,
    Creditor(&'a str),
}

impl<'a> Scope<'a> {
    /// The creditor's, where one is known; else every tenant's.
    pub fn of(creditor: Option<&'a str>) -> Self {
        creditor.map_or(Scope::Everyone, Scope::Creditor)
    }

    /// As the `scope` column keeps it: empty for every tenant.
    fn column(self) -> &'a str {
        match self {
            Scope::Everyone => "",
            Scope::Creditor(id) => id,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SuppressionRow {
    id: String,
    channel: String,
    address_sealed: Option<Vec<u8>>,
    reason: String,
    case_id: Option<CaseId>,
    message_id: Option<MessageId>,
    scope: String,
    created_at: i64,
}

const SUPPRESSION_COLUMNS: &str =
    "id, channel, address_sealed, reason, case_id, message_id, scope, created_at";

/// The condition, on a suppression `s`, that it stops the sends of the creditor `creditor`
/// (an SQL expression): its own entries and those for every tenant.
pub(crate) fn applies_to(creditor: &str) -> String {
    format!("(s.scope = '' OR s.scope = {creditor})")
}

impl Policy {
    /// Adds `value` to the suppression list in the caller's transaction, its address sealed;
    /// nothing when it is there already.
    pub(crate) async fn insert_suppression(
        &self,
        conn: &mut sqlx::AnyConnection,
        new: NewSuppression<'_>,
        now: crate::domain::time::Micros,
    ) -> StoreResult<bool> {
        let NewSuppression {
            channel,
            value,
            reason,
            case_id,
            message_id,
            scope,
        } = new;
        let id = prefixed_id("sup");
        // About a case's debtor: under that debtor's key. A suppression still honours an
        // erased debtor's objection, under the master key and no longer linked to the case.
        let key = match case_id {
            Some(case_id) => self.key_unless_erased(case_id).await?,
            None => None,
        };
        let case_id = case_id.filter(|_| key.is_some());
        let address_sealed = match &key {
            Some(key) => key.seal_str(&address_context(&id), value),
            None => self.keys.seal_str(&address_context(&id), value),
        };
        let done = sqlx::query(
            "INSERT INTO suppressions (id, channel, value_index, reason, case_id, created_at, address_sealed, message_id, scope) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (channel, value_index, scope) DO NOTHING",
        )
        .bind(&id)
        .bind(channel)
        .bind(self.suppression_index(channel, value))
        .bind(reason)
        .bind(case_id)
        .bind(now)
        .bind(address_sealed)
        .bind(message_id)
        .bind(scope.column())
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    fn suppression_from_row(&self, r: SuppressionRow) -> StoreResult<Suppression> {
        let address = r
            .address_sealed
            .map(|s| self.open_text(&address_context(&r.id), &s))
            .transpose()?;
        Ok(Suppression {
            id: r.id,
            channel: r.channel,
            address,
            reason: r.reason,
            case_id: r.case_id,
            message_id: r.message_id,
            creditor_id: Some(r.scope).filter(|s| !s.is_empty()),
            created_at: r.created_at,
        })
    }

    /// The suppression list, newest first, a page at a time; with `address`, the entries of
    /// that address or number only (found by its blind index).
    pub async fn list_suppressions(
        &self,
        address: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> StoreResult<super::Page<Suppression>> {
        let cursor = cursor.map(super::decode_cursor).transpose()?;
        let (email, sms) = match address {
            Some(a) => (
                Some(self.suppression_index("email", a)),
                Some(self.suppression_index("sms", a)),
            ),
            None => (None, None),
        };
        let rows = sqlx::query_as::<_, SuppressionRow>(&format!(
            "SELECT {SUPPRESSION_COLUMNS} FROM suppressions \
             WHERE ($1 IS NULL OR (channel = 'email' AND value_index = $1) OR (channel = 'sms' AND value_index = $2)) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(email)
        .bind(sms)
        .bind(cursor.as_deref())
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        self.unlock(rows.iter().filter_map(|r| r.address_sealed.as_deref()))
            .await?;
        let mut items = rows
            .into_iter()
            .map(|r| self.suppression_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = super::cases::page_cursor(&mut items, limit, |s| s.id.clone());
        Ok(super::Page { items, next_cursor })
    }

    /// The entries for any of `values` (a debtor's addresses and numbers), in one query.
    /// With `viewer` (a case's creditor, and the party looking), as that party sees them:
    /// only the entries that stop the creditor's sends, and the source message and case only
    /// where the party sees that case.
    pub async fn suppressions_of(
        &self,
        values: &[&str],
        viewer: Option<(&str, &str)>,
    ) -> StoreResult<Vec<Suppression>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let indexes: Vec<String> = values
            .iter()
            .flat_map(|v| ["email", "sms"].map(|channel| self.suppression_index(channel, v)))
            .collect();
        let list: Vec<String> = (3..indexes.len() + 3).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT s.id, s.channel, s.address_sealed, s.reason, \
               CASE WHEN $1 IS NULL OR EXISTS (SELECT 1 FROM cases vc WHERE vc.id = s.case_id \
                 AND (vc.creditor_id = $2 OR vc.partner_id = $2)) THEN s.case_id END AS case_id, \
               CASE WHEN $1 IS NULL OR EXISTS (SELECT 1 FROM messages m JOIN cases mc ON mc.id = m.case_id \
                 WHERE m.id = s.message_id AND (mc.creditor_id = $2 OR mc.partner_id = $2)) \
                 THEN s.message_id END AS message_id, \
               s.scope, s.created_at \
             FROM suppressions s WHERE s.value_index IN ({}) AND ($1 IS NULL OR {}) ORDER BY s.id DESC",
            list.join(", "),
            applies_to("$1")
        );
        let mut q = sqlx::query_as::<_, SuppressionRow>(&sql)
            .bind(viewer.map(|(creditor, _)| creditor))
            .bind(viewer.map(|(_, party)| party));
        for index in &indexes {
            q = q.bind(index);
        }
        let rows = q.fetch_all(&self.pool).await?;
        self.unlock(rows.iter().filter_map(|r| r.address_sealed.as_deref()))
            .await?;
        rows.into_iter()
            .map(|r| self.suppression_from_row(r))
            .collect()
    }

    /// Lifts an entry, with an audit entry naming who did; `false` when there is none.
    pub async fn lift_suppression(
        &self,
        actor: &crate::domain::party::Actor,
        id: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let case_id: Option<Option<CaseId>> =
            sqlx::query_scalar("SELECT case_id FROM suppressions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(case_id) = case_id else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM suppressions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::audit(
            &mut tx,
            case_id.as_ref(),
            actor,
            AuditAction::SuppressionLifted,
            "suppression",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds an address or number to the suppression list; `false` when it was there already.
    pub async fn suppress(
        &self,
        channel: &str,
        value: &str,
        reason: &str,
        case_id: Option<&CaseId>,
        message_id: Option<&MessageId>,
        scope: Scope<'_>,
    ) -> StoreResult<bool> {
        let mut conn = self.writer.acquire().await?;
        let new = NewSuppression {
            channel,
            value,
            reason,
            case_id,
            message_id,
            scope,
        };
        self.insert_suppression(&mut conn, new, self.now()).await
    }

    /// Puts the recipient of a bounced copy (`recipient`, its place among `to` then `cc`), or
    /// every `To` recipient of a message that went out as one copy, on the suppression list,
    /// in the caller's transaction (a bounce of that message): for every tenant when the
    /// mailbox is gone (`everyone`), else for the creditor whose message it was (a refusal of
    /// that sender's mail says nothing about anyone else's). Whether a `To` recipient bounced
    /// (not only a `Cc` reader's copy).
    pub(crate) async fn suppress_recipients_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        message_id: &MessageId,
        recipient: Option<usize>,
        everyone: bool,
        now: crate::domain::time::Micros,
    ) -> StoreResult<bool> {
        #[derive(sqlx::FromRow)]
        struct Row {
            case_id: Option<CaseId>,
            message_type: String,
            envelope_sealed: Vec<u8>,
        }
        // A system message's channel is the one it went by.
        let row = sqlx::query_as::<_, Row>(
            "SELECT case_id, COALESCE(channel, message_type) AS message_type, envelope_sealed FROM messages WHERE id = $1",
        )
        .bind(message_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(false) };
        self.unlock([&row.envelope_sealed[..]]).await?;
        let envelope = self.open_envelope(message_id, &row.envelope_sealed)?;
        let addressed = recipient.is_none_or(|i| i < envelope.to.len());
        let creditor = match row.case_id.as_ref() {
            Some(case_id) if !everyone => creditor_of(conn, case_id).await?,
            _ => None,
        };
        let (reason, scope) = match creditor.as_deref() {
            Some(creditor) => ("refused by the mail server", Scope::Creditor(creditor)),
            None => ("hard bounce", Scope::Everyone),
        };
        let bounced: Vec<&String> = match recipient {
            Some(i) => envelope
                .to
                .iter()
                .chain(&envelope.cc)
                .nth(i)
                .into_iter()
                .collect(),
            None => envelope.to.iter().collect(),
        };
        for to in bounced {
            let new = NewSuppression {
                channel: &row.message_type,
                value: to,
                reason,
                case_id: row.case_id.as_ref(),
                message_id: Some(message_id),
                scope,
            };
            self.insert_suppression(conn, new, now).await?;
        }
        Ok(addressed)
    }

    /// A recipient's one-click unsubscribe from a message: the recipient the link was made
    /// for (`recipient`, its place among `to` then `cc`; every `To` address for a link made
    /// before links were per recipient) is suppressed for the sends of the creditor whose
    /// message it was, and the message and audit log record it, in one transaction. `false`
    /// for an unknown message.
    pub async fn unsubscribe(
        &self,
        message_id: &MessageId,
        recipient: Option<usize>,
    ) -> StoreResult<bool> {
        let Some((case_id, channel, envelope)) = self
            .sibling::<Messages>()
            .message_envelope(message_id)
            .await?
        else {
            return Ok(false);
        };
        let mut tx = self.write_tx().await?;
        let now = self.now();
        let creditor = match case_id.as_ref() {
            Some(case_id) => creditor_of(&mut tx, case_id).await?,
            None => None,
        };
        let scope = Scope::of(creditor.as_deref());
        let everyone: Vec<&String> = envelope.to.iter().chain(&envelope.cc).collect();
        let chosen: Vec<&String> = match recipient {
            Some(i) => everyone.get(i).copied().into_iter().collect(),
            None => envelope.to.iter().collect(),
        };
        for to in chosen {
            let new = NewSuppression {
                channel: channel.as_str(),
                value: to,
                reason: "unsubscribed",
                case_id: case_id.as_ref(),
                message_id: Some(message_id),
                scope,
            };
            self.insert_suppression(&mut tx, new, now).await?;
        }
        sqlx::query(
            "INSERT INTO message_events (message_id, event, at) VALUES ($1, 'unsubscribed', $2)",
        )
        .bind(message_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::audit_as(
            &mut tx,
            case_id.as_ref(),
            (None, "recipient"),
            AuditAction::RecipientUnsubscribed,
            "message",
            message_id,
            self.now(),
        )
        .await?;
        let payload = crate::domain::payload::RecipientUnsubscribed {
            message_id,
            case_id: case_id.as_ref(),
            channel: channel.as_str(),
        };
        super::emit(
            &mut tx,
            EventType::RecipientUnsubscribed,
            case_id.as_ref(),
            &payload,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Suppresses an address a provider reports about one of our messages, kept with the
    /// message's case: for the creditor whose message it was when the person `answered` it
    /// (a spam complaint), else for every tenant (a bounce, a drop: facts about the address).
    pub async fn suppress_reported(
        &self,
        message_id: &MessageId,
        channel: &str,
        value: &str,
        reason: &str,
        answered: bool,
    ) -> StoreResult<bool> {
        let mut conn = self.writer.acquire().await?;
        let case_id: Option<CaseId> =
            sqlx::query_scalar("SELECT case_id FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(&mut *conn)
                .await?
                .flatten();
        let creditor = match case_id.as_ref() {
            Some(case_id) if answered => creditor_of(&mut conn, case_id).await?,
            _ => None,
        };
        let new = NewSuppression {
            channel,
            value,
            reason,
            case_id: case_id.as_ref(),
            message_id: Some(message_id),
            scope: Scope::of(creditor.as_deref()),
        };
        self.insert_suppression(&mut conn, new, self.now()).await
    }

    /// The first of `values` on the suppression list for the sends of `case_id`'s creditor.
    pub async fn suppressed<'a>(
        &self,
        channel: &str,
        values: &[&'a str],
        case_id: &CaseId,
    ) -> StoreResult<Option<&'a str>> {
        if values.is_empty() {
            return Ok(None);
        }
        // One look-up for every recipient at once.
        let indexes: Vec<String> = values
            .iter()
            .map(|v| self.suppression_index(channel, v))
            .collect();
        let placeholders: Vec<String> = (3..indexes.len() + 3).map(|i| format!("${i}")).collect();
        let query = format!(
            "SELECT s.value_index FROM suppressions s WHERE s.channel = $1 AND s.value_index IN ({}) \
             AND {}",
            placeholders.join(", "),
            applies_to("(SELECT c.creditor_id FROM cases c WHERE c.id = $2)")
        );
        let mut q = sqlx::query_scalar::<_, String>(&query)
            .bind(channel)
            .bind(case_id);
        for index in &indexes {
            q = q.bind(index);
        }
        let found = q.fetch_all(&self.pool).await?;
        if let Some(i) = indexes.iter().position(|index| found.contains(index)) {
            return Ok(Some(values[i]));
        }
        Ok(None)
    }
}

/// The creditor of a case, in the caller's transaction.
pub(crate) async fn creditor_of(
    conn: &mut sqlx::AnyConnection,
    case_id: &CaseId,
) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT creditor_id FROM cases WHERE id = $1")
            .bind(case_id)
            .fetch_optional(conn)
            .await?,
    )
}

impl StoreInner {
    /// The blind index of an address or number on a suppression list.
    pub(crate) fn suppression_index(&self, channel: &str, value: &str) -> String {
        self.keys
            .blind_index(&format!("suppression:{channel}"), &value.to_lowercase())
    }
}
