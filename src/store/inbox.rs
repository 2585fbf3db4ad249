//! What a reply asks of a person. A reply read as a dispute, a wrong person or a request to
//! stop holds its case's collection messages (`cases.hold_*` names the reply) until a case
//! worker confirms it (status `disputed`, or doNotContact) or corrects the reading; every
//! announced reply waits in the inbox until someone answers on the case or marks it done.

use super::cases::visible;
use super::messages::{MESSAGE_COLUMNS_WITH_BODY, MessageWithBody, context, review_column};
use super::{Inbound, MessageView, StoreInner, StoreResult, admin_flag, audit, audit_as, emit};
use crate::domain::CaseId;
use crate::domain::MessageId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::party::Actor;
use crate::domain::time::{Micros, rfc3339};
use crate::domain::understanding::{Intent, Review, Understanding};

/// Who holds a case when a reading does (the audit log's actor).
const READER: &str = "reply understanding";

/// An outbound message on the case after the reply `m`, written by a party (not a system
/// message) and not refused, cancelled or failed: the reply is answered (while the answer
/// waits in the queue too; should it fail, the reply is back).
const ANSWERED: &str = "EXISTS (SELECT 1 FROM messages o WHERE o.case_id = m.case_id AND o.id > m.id \
     AND o.direction = 'outbound' AND o.party_id IS NOT NULL \
     AND o.status NOT IN ('refused', 'cancelled', 'failed'))";

/// [`ANSWERED`] by an answer that went out: what the sweeper takes a reply out for good on.
const ANSWERED_FOR_GOOD: &str = "EXISTS (SELECT 1 FROM messages o WHERE o.case_id = m.case_id AND o.id > m.id \
     AND o.direction = 'outbound' AND o.party_id IS NOT NULL \
     AND o.status IN ('sent', 'delivered', 'opened', 'clicked'))";

/// Which replies of the inbox are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// Replies that hold their case until reviewed.
    Review,
    /// Replies not yet answered (and not awaiting review).
    Answer,
}

pub struct InboxFilter {
    /// Only these intents (any when empty).
    pub intents: Vec<Intent>,
    pub awaiting: Option<Awaiting>,
    /// Only replies received at or before this time (`olderThan`).
    pub received_before: Option<Micros>,
    /// The last message id of the previous page.
    pub cursor: Option<String>,
    pub limit: i64,
}

/// A reply in the inbox: the message with its body and reading, its case's number, and why
/// it is there.
pub struct InboxItem {
    pub message: MessageView,
    pub case_number: String,
    pub awaiting: Awaiting,
}

pub struct InboxPage {
    pub items: Vec<InboxItem>,
    pub next_cursor: Option<MessageId>,
    pub total: i64,
}

#[derive(sqlx::FromRow)]
struct InboxRow {
    #[sqlx(flatten)]
    message: MessageWithBody,
    case_number: String,
    review_state: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ReplyRow {
    case_id: CaseId,
    intent: Option<String>,
    review: Option<String>,
    inbox: Option<i32>,
}

impl ReplyRow {
    /// What a reply's review reads of it (`m`, the message).
    const COLUMNS: &str = "m.case_id, m.intent, m.review, m.inbox";
}

/// Why a correction or a `done` is refused.
pub enum Unreviewable {
    /// The message is not a received reply with a reading.
    NotUnderstood,
    /// The reply holds its case: confirm or correct it first.
    AwaitingReview,
}

/// The conditions of the inbox over `messages m JOIN cases c`: `$1`/`$2` the actor, `$3`
/// the time bound, then the intents from `$4`.
fn inbox_conditions(f: &InboxFilter) -> String {
    let intents = if f.intents.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = (0..f.intents.len())
            .map(|i| format!("${}", 4 + i))
            .collect();
        format!(" AND m.intent IN ({})", list.join(", "))
    };
    let awaiting = match f.awaiting {
        None => format!("(m.review = 'pending' OR NOT {ANSWERED})"),
        Some(Awaiting::Review) => "m.review = 'pending'".to_string(),
        Some(Awaiting::Answer) => {
            format!("(m.review IS NULL OR m.review <> 'pending') AND NOT {ANSWERED}")
        }
    };
    format!(
        "m.inbox = 1 AND {} AND ($3 IS NULL OR m.received_at <= $3){intents} AND {awaiting}",
        visible(1, 2)
    )
}

/// In the transaction that announces a reply: it enters the inbox, and a reading that holds
/// puts its case on hold (unless the case is already disputed or its debtor asked not to be
/// contacted: then the reading is confirmed by that). A promise with a date becomes a
/// deadline of the case when `deadlines` says so. Answers what the reply was read as.
pub(super) async fn on_announced(
    store: &StoreInner,
    tx: &mut sqlx::AnyConnection,
    key: &crate::crypto::SubjectKey,
    (id, case_id): (&MessageId, &CaseId),
    at: Micros,
) -> StoreResult<Option<Intent>> {
    let sealed: Option<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT intent, understanding_sealed FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (intent, sealed) = sealed.unwrap_or_default();
    let intent = intent.as_deref().and_then(|i| Intent::parse(i).ok());
    let review = match intent {
        Some(i) if i.holds() => Some(if settled(store, tx, case_id, at).await? {
            Review::Confirmed
        } else {
            Review::Pending
        }),
        _ => None,
    };
    sqlx::query("UPDATE messages SET inbox = 1, review = $2 WHERE id = $1")
        .bind(id)
        .bind(review.map(Review::as_str))
        .execute(&mut *tx)
        .await?;
    if review == Some(Review::Pending) {
        hold(
            tx,
            case_id,
            Some((id, intent.map_or("", Intent::as_str), at)),
        )
        .await?;
        audit_as(
            &mut *tx,
            Some(case_id),
            (None, READER),
            AuditAction::CaseHeld,
            "message",
            id,
            at,
        )
        .await?;
    }
    if intent == Some(Intent::PaymentPromise) && store.promise_deadlines() {
        let reading: Option<Understanding> = match sealed {
            Some(s) => key
                .open(&context(id, "understanding"), &s)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok()),
            None => None,
        };
        if let Some(date) = reading.and_then(|r| r.promised_date) {
            promise_deadline(tx, key, case_id, date).await?;
        }
    }
    Ok(intent)
}

/// Whether the case holds its collection messages already, so that a reply that would hold
/// it is confirmed by that: it is disputed, or its debtor's request not to be contacted is
/// in force without an exception for a collection category. Locks the case's row for the
/// rest of the transaction (on PostgreSQL), so that a review of another reply on the case
/// waits for this one's hold.
async fn settled(
    store: &StoreInner,
    tx: &mut sqlx::AnyConnection,
    case_id: &CaseId,
    at: Micros,
) -> StoreResult<bool> {
    let today = crate::domain::time::from_micros(at)
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let status: Option<String> = sqlx::query_scalar(&format!(
        "SELECT status FROM cases WHERE id = $1{}",
        store.backend.for_update()
    ))
    .bind(case_id)
    .fetch_optional(&mut *tx)
    .await?;
    if status.as_deref() == Some("disputed") {
        return Ok(true);
    }
    let opted_out: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM preferences WHERE case_id = $1 AND do_not_contact = 1 \
         AND (dnc_effective_date IS NULL OR dnc_effective_date <= $2) \
         AND (dnc_exceptions IS NULL OR (dnc_exceptions NOT LIKE '%payment_reminders%' \
           AND dnc_exceptions NOT LIKE '%settlement_offers%' AND dnc_exceptions NOT LIKE '%deadline_alerts%'))",
    )
    .bind(case_id)
    .bind(today)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(opted_out.is_some())
}

/// A deadline at the end of the promised day (UTC), titled for the case worker.
async fn promise_deadline(
    tx: &mut sqlx::AnyConnection,
    key: &crate::crypto::SubjectKey,
    case_id: &CaseId,
    date: chrono::NaiveDate,
) -> StoreResult<()> {
    let id = crate::domain::prefixed_id("ddl");
    let due = date
        .and_hms_opt(23, 59, 59)
        .map(|t| t.and_utc().timestamp_micros())
        .unwrap_or_default();
    let now = crate::domain::time::now_micros();
    sqlx::query(
        "INSERT INTO deadlines (id, case_id, title, title_sealed, due_at, created_by, created_at) \
         VALUES ($1, $2, '', $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(case_id)
    .bind(key.seal_str(
        &super::payments::title_context(&id),
        "Payment promised by the debtor",
    ))
    .bind(due)
    .bind(READER)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit_as(
        &mut *tx,
        Some(case_id),
        (None, READER),
        AuditAction::DeadlineCreated,
        "deadline",
        &id,
        now,
    )
    .await?;
    Ok(())
}

/// Names the reply that holds the case (the first still pending), or lifts the hold.
async fn hold(
    tx: &mut sqlx::AnyConnection,
    case_id: &CaseId,
    by: Option<(&MessageId, &str, Micros)>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE cases SET hold_message_id = $2, hold_intent = $3, hold_since = $4 \
         WHERE id = $1 AND (hold_message_id IS NULL OR $2 IS NULL)",
    )
    .bind(case_id)
    .bind(by.map(|b| b.0))
    .bind(by.map(|b| b.1))
    .bind(by.map(|b| b.2))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The case's hold named again after a review: the oldest reply still pending, or none; when
/// none is left, its held collection messages are asked again at once.
async fn rehold(tx: &mut sqlx::AnyConnection, case_id: &CaseId, now: Micros) -> StoreResult<()> {
    let next: Option<(MessageId, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT id, intent, received_at FROM messages WHERE case_id = $1 AND review = 'pending' \
         ORDER BY id LIMIT 1",
    )
    .bind(case_id)
    .fetch_optional(&mut *tx)
    .await?;
    hold(tx, case_id, None).await?;
    if let Some((id, intent, at)) = &next {
        let intent = intent.as_deref().unwrap_or_default();
        return hold(tx, case_id, Some((id, intent, at.unwrap_or(now)))).await;
    }
    wake_held(tx, case_id, now).await
}

/// The case's queued collection messages are asked again at once (those whose time has
/// come): a lifted hold lets them go, a confirmed one (the case disputed, an opt-out) ends
/// them.
async fn wake_held(tx: &mut sqlx::AnyConnection, case_id: &CaseId, now: Micros) -> StoreResult<()> {
    sqlx::query(
        "UPDATE jobs SET run_at = $2 WHERE status = 'pending' AND run_at > $2 AND ref_id IN \
         (SELECT id FROM messages WHERE case_id = $1 AND direction = 'outbound' AND status = 'queued' \
          AND (scheduled_for IS NULL OR scheduled_for <= $2) \
          AND category IN ('payment_reminders', 'settlement_offers', 'deadline_alerts'))",
    )
    .bind(case_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// In the transaction that disputes a case or records its debtor's request not to be
/// contacted: the replies that held it are confirmed by that, and the hold is lifted (the
/// case's status or the opt-out holds from now on).
pub(super) async fn confirm_holds(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    case_id: &CaseId,
    now: Micros,
) -> StoreResult<()> {
    let pending: Vec<MessageId> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE case_id = $1 AND review = 'pending' ORDER BY id",
    )
    .bind(case_id)
    .fetch_all(&mut *tx)
    .await?;
    hold(tx, case_id, None).await?;
    if pending.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE messages SET review = 'confirmed', reviewed_by = $2, reviewed_at = $3 \
         WHERE case_id = $1 AND review = 'pending'",
    )
    .bind(case_id)
    .bind(&actor.name)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    wake_held(tx, case_id, now).await?;
    for id in &pending {
        audit(
            &mut *tx,
            Some(case_id),
            actor,
            AuditAction::MessageReviewConfirmed,
            "message",
            id,
            now,
        )
        .await?;
    }
    Ok(())
}

impl Inbound {
    /// A case worker's reading of the reply `id`: its intent from now on, the machine's kept.
    /// A reply that held its case and is now read otherwise is dismissed (the hold moves to
    /// the next reply pending, or is lifted); one now read as holding holds. A correction
    /// to a promise or a payment raises `message.understood`. `None`: no such reply on a
    /// case the actor sees.
    pub async fn correct_understanding(
        &self,
        actor: &Actor,
        id: &MessageId,
        intent: Intent,
    ) -> StoreResult<Option<Result<(), Unreviewable>>> {
        let mut tx = self.write_tx().await?;
        // A reply from a proven sender only.
        let Some(row) = self
            .locked_received::<ReplyRow>(&mut tx, (actor, id), ReplyRow::COLUMNS, true)
            .await?
        else {
            return Ok(None);
        };
        let Some(before) = row.intent.as_deref().and_then(|i| Intent::parse(i).ok()) else {
            return Ok(Some(Err(Unreviewable::NotUnderstood)));
        };
        let now = self.now();
        let was = review_column(row.review.as_deref())?;
        let review = match (intent.holds(), was) {
            (true, Some(Review::Confirmed)) => Some(Review::Confirmed),
            (true, _) if settled(self, &mut tx, &row.case_id, now).await? => {
                Some(Review::Confirmed)
            }
            (true, _) => Some(Review::Pending),
            (false, Some(Review::Pending)) => Some(Review::Dismissed),
            (false, r) => r,
        };
        sqlx::query(
            "UPDATE messages SET intent = $2, corrected_by = $3, corrected_at = $4, review = $5, \
             reviewed_by = CASE WHEN $5 = 'dismissed' THEN $3 ELSE reviewed_by END, \
             reviewed_at = CASE WHEN $5 = 'dismissed' THEN $4 ELSE reviewed_at END, \
             inbox = COALESCE(inbox, CASE WHEN $5 = 'pending' THEN 1 END) WHERE id = $1",
        )
        .bind(id)
        .bind(intent.as_str())
        .bind(&actor.name)
        .bind(now)
        .bind(review.map(Review::as_str))
        .execute(&mut *tx)
        .await?;
        if was != review || before != intent {
            rehold(&mut tx, &row.case_id, now).await?;
        }
        audit(
            &mut tx,
            Some(&row.case_id),
            actor,
            AuditAction::MessageUnderstandingCorrected,
            "message",
            id,
            now,
        )
        .await?;
        if intent != before && matches!(intent, Intent::PaymentPromise | Intent::PaidAlready) {
            let case_number: String =
                sqlx::query_scalar("SELECT case_number FROM cases WHERE id = $1")
                    .bind(row.case_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let payload = crate::domain::payload::MessageUnderstood {
                message_id: id,
                case_id: &row.case_id,
                case_number: &case_number,
                intent: intent.as_str(),
                timestamp: rfc3339(now),
            };
            emit(
                &mut tx,
                EventType::MessageUnderstood,
                Some(&row.case_id),
                &payload,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// Takes the reply `id` out of the inbox (answered elsewhere, or nothing to answer). A
    /// reply that holds its case stays until it is reviewed.
    pub async fn mark_done(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> StoreResult<Option<Result<(), Unreviewable>>> {
        let mut tx = self.write_tx().await?;
        // A reply from a proven sender only.
        let Some(row) = self
            .locked_received::<ReplyRow>(&mut tx, (actor, id), ReplyRow::COLUMNS, true)
            .await?
        else {
            return Ok(None);
        };
        if review_column(row.review.as_deref())? == Some(Review::Pending) {
            return Ok(Some(Err(Unreviewable::AwaitingReview)));
        }
        if row.inbox == Some(1) {
            let now = self.now();
            sqlx::query(
                "UPDATE messages SET inbox = NULL, done_by = $2, done_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(&actor.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                Some(&row.case_id),
                actor,
                AuditAction::MessageDone,
                "message",
                id,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Ok(())))
    }

    /// A page of the inbox of the cases the actor sees, oldest first, with how many match.
    pub async fn inbox(&self, actor: &Actor, f: &InboxFilter) -> StoreResult<InboxPage> {
        let conditions = inbox_conditions(f);
        let next = 4 + f.intents.len();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS_WITH_BODY}, c.case_number, m.review AS review_state \
             FROM messages m JOIN cases c ON c.id = m.case_id \
             WHERE {conditions} AND (${next} IS NULL OR m.id > ${next}) ORDER BY m.id LIMIT ${}",
            next + 1
        );
        let mut q = sqlx::query_as::<_, InboxRow>(&sql)
            .bind(actor.party_id.as_str())
            .bind(admin_flag(actor))
            .bind(f.received_before);
        for i in &f.intents {
            q = q.bind(i.as_str());
        }
        let mut rows = q
            .bind(f.cursor.as_deref())
            .bind(f.limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let count_sql = format!(
            "SELECT COUNT(*) FROM messages m JOIN cases c ON c.id = m.case_id WHERE {conditions}"
        );
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql)
            .bind(actor.party_id.as_str())
            .bind(admin_flag(actor))
            .bind(f.received_before);
        for i in &f.intents {
            count = count.bind(i.as_str());
        }
        let total = count.fetch_one(&self.pool).await?;
        let more = rows.len() as i64 > f.limit;
        rows.truncate(usize::try_from(f.limit).unwrap_or(0));
        self.unlock(rows.iter().map(|r| r.message.sealed())).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let message = self.message_with_body(row.message)?;
            let awaiting = match review_column(row.review_state.as_deref())? {
                Some(Review::Pending) => Awaiting::Review,
                _ => Awaiting::Answer,
            };
            items.push(InboxItem {
                message,
                case_number: row.case_number,
                awaiting,
            });
        }
        let next_cursor = more
            .then(|| items.last().map(|i| i.message.id.clone()))
            .flatten();
        Ok(InboxPage {
            items,
            next_cursor,
            total,
        })
    }

    /// Takes answered replies out of the inbox flag, so its index holds what still waits
    /// (the list checks for an answer itself; this keeps it from walking old ones). How
    /// many left.
    pub async fn sweep_answered(&self) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(&format!(
            "UPDATE messages SET inbox = NULL WHERE id IN (SELECT m.id FROM messages m \
             WHERE m.inbox = 1 AND (m.review IS NULL OR m.review <> 'pending') AND {ANSWERED_FOR_GOOD} \
             ORDER BY m.id LIMIT 1000)"
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done)
    }
}
