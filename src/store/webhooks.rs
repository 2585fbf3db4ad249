//! Webhooks: subscriptions, the fan-out of outbox events to them, and their deliveries.

use super::BindBatch;
use crate::domain::CaseId;
use crate::domain::{DeliveryId, WebhookId};
use serde_json::Value;

use super::queue::{Transition, WEBHOOK_DELIVERIES, transition};
use super::{StoreError, StoreResult, Webhooks, audit_as};
use crate::domain::audit::AuditAction;
use crate::domain::event::{EventType, WebhookDeliveryStatus};
use crate::domain::party::Actor;
use crate::domain::prefixed_id;
use crate::domain::time::Micros;

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<EventType>,
    pub created_at: Micros,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: WebhookId,
    url: String,
    events: String,
    created_at: i64,
}

impl WebhookRow {
    fn into_view(self) -> StoreResult<Webhook> {
        Ok(Webhook {
            events: parse_events(&self.events)?,
            id: self.id,
            url: self.url,
            created_at: self.created_at,
        })
    }
}

/// A subscription's stored event list (a JSON array of event names).
fn parse_events(stored: &str) -> StoreResult<Vec<EventType>> {
    let words: Vec<String> =
        serde_json::from_str(stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    words
        .iter()
        .map(|w| EventType::parse(w).map_err(|e| StoreError::Corrupt(e.0)))
        .collect()
}

#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub event_id: i64,
    pub event_type: EventType,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<Micros>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: Micros,
    pub delivered_at: Option<Micros>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: DeliveryId,
    event_id: i64,
    event_type: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl DeliveryRow {
    fn into_view(self) -> StoreResult<DeliveryView> {
        let corrupt = |e: crate::domain::Invalid| StoreError::Corrupt(e.0);
        Ok(DeliveryView {
            event_type: EventType::parse(&self.event_type).map_err(corrupt)?,
            status: WebhookDeliveryStatus::parse(&self.status).map_err(corrupt)?,
            id: self.id,
            event_id: self.event_id,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_status: self.last_status,
            last_error: self.last_error,
            created_at: self.created_at,
            delivered_at: self.delivered_at,
        })
    }
}

/// A delivery claimed for sending, with everything the request needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub url: String,
    pub secret: String,
    pub event_id: i64,
    pub event_type: EventType,
    pub case_id: Option<CaseId>,
    pub payload: Value,
    /// Whether the webhook's owner may see the event now (its case, or an admin's any
    /// event) and the webhook is still there: access can end after the event was fanned
    /// out, and a resend or a recovery must not outlive it.
    pub allowed: bool,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: DeliveryId,
    webhook_id: WebhookId,
    url: String,
    secret_sealed: Vec<u8>,
    event_id: i64,
    event_type: String,
    case_id: Option<CaseId>,
    payload: String,
    allowed: i64,
}

pub(super) fn secret_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("webhook:{id}:secret")
}

/// A case's creditor and partner, who may see its events.
#[derive(sqlx::FromRow)]
struct CaseParties {
    id: CaseId,
    creditor_id: String,
    partner_id: Option<String>,
}

/// The parties of every case named, in one query.
async fn case_parties<'a>(
    tx: &mut sqlx::AnyConnection,
    backend: super::Backend,
    case_ids: impl Iterator<Item = &'a CaseId>,
) -> StoreResult<std::collections::HashMap<CaseId, CaseParties>> {
    let mut case_ids: Vec<&CaseId> = case_ids.collect();
    case_ids.sort_unstable();
    case_ids.dedup();
    if case_ids.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT id, creditor_id, partner_id FROM cases WHERE id IN ({})",
        super::batch_list(backend, 1, "TEXT")
    );
    Ok(sqlx::query_as::<_, CaseParties>(&sql)
        .bind(super::list_param(backend, &case_ids)?)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect())
}

/// The deliveries of a fan-out, and its events marked dispatched: one statement each.
async fn write_fan_out(
    tx: &mut sqlx::AnyConnection,
    backend: super::Backend,
    deliveries: &[(String, &str, i64)],
    events: &[i64],
    now: Micros,
) -> StoreResult<()> {
    if !deliveries.is_empty() {
        // `WHERE true`: SQLite reads an `ON CONFLICT` after a bare `FROM` as a join's.
        let sql = format!(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, status, attempts, next_attempt_at, created_at) \
             SELECT id, webhook_id, event_id, 'pending', 0, $1, $1 FROM ({}) v WHERE true \
             ON CONFLICT (webhook_id, event_id) DO NOTHING",
            super::batch_rows(
                backend,
                2,
                &[
                    ("id", "TEXT"),
                    ("webhook_id", "TEXT"),
                    ("event_id", "BIGINT")
                ]
            )
        );
        sqlx::query(&sql)
            .bind(now)
            .bind_batch(super::batch_params(backend, 3, &deliveries)?)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!(
        "UPDATE events SET dispatched_at = $1 WHERE id IN ({})",
        super::batch_list(backend, 2, "BIGINT")
    ))
    .bind(now)
    .bind(super::list_param(backend, events)?)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The most rows of each table one round of [`Webhooks::forget_finished`] removes: a round
/// every 10 s keeps up with 1,000 a second, twice the busiest hour of docs/SCALE.md.
pub const FORGET_BATCH: i64 = 10_000;

impl Webhooks {
    pub async fn create_webhook(
        &self,
        actor: &Actor,
        url: &str,
        events: &[EventType],
        secret: &str,
    ) -> StoreResult<Webhook> {
        let id = WebhookId::new();
        let now = self.now();
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO webhooks (id, owner_party_id, url, events, secret_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(actor.party_id.as_str())
            .bind(url)
            .bind(serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).map_err(anyhow::Error::from)?)
            .bind(self.keys.seal_str(&secret_context(&id), secret))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit_as(
            &mut tx,
            None,
            (Some(actor.party_id.as_str()), &actor.name),
            AuditAction::WebhookCreated,
            "webhook",
            &id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Webhook {
            id,
            url: url.to_string(),
            events: events.to_vec(),
            created_at: now,
        })
    }

    /// The actor's own webhooks.
    pub async fn list_webhooks(&self, actor: &Actor) -> StoreResult<Vec<Webhook>> {
        let rows = sqlx::query_as::<_, WebhookRow>("SELECT id, url, events, created_at FROM webhooks WHERE owner_party_id = $1 AND deleted_at IS NULL ORDER BY id")
            .bind(actor.party_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(WebhookRow::into_view).collect()
    }

    /// `false` when the actor has no such webhook.
    pub async fn delete_webhook(&self, actor: &Actor, id: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE webhooks SET deleted_at = $3 WHERE id = $1 AND owner_party_id = $2 AND deleted_at IS NULL")
            .bind(id)
            .bind(actor.party_id.as_str())
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled' WHERE webhook_id = $1 AND status IN ('pending', 'sending')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit_as(
            &mut tx,
            None,
            (Some(actor.party_id.as_str()), &actor.name),
            AuditAction::WebhookDeleted,
            "webhook",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The deliveries of one of the actor's webhooks, newest first; `None` when it is not theirs.
    pub async fn webhook_deliveries(
        &self,
        actor: &Actor,
        id: &str,
        limit: i64,
    ) -> StoreResult<Option<Vec<DeliveryView>>> {
        let owned: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE id = $1 AND owner_party_id = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(actor.party_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, DeliveryRow>(
            "SELECT d.id, d.event_id, e.event_type, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, \
             d.delivered_at FROM webhook_deliveries d JOIN events e ON e.id = d.event_id WHERE d.webhook_id = $1 ORDER BY d.id DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(DeliveryRow::into_view)
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    /// Turns new outbox events into deliveries for every webhook that subscribed to the
    /// event and whose owner can see its case; returns how many events it took.
    pub async fn fan_out_events(&self, limit: i64, now: Micros) -> StoreResult<usize> {
        #[derive(sqlx::FromRow)]
        struct NewEvent {
            id: i64,
            event_type: String,
            case_id: Option<CaseId>,
        }
        #[derive(sqlx::FromRow)]
        struct Subscriber {
            id: String,
            events: String,
            owner_party_id: String,
            kind: String,
        }
        let mut tx = self.write_tx().await?;
        let events = sqlx::query_as::<_, NewEvent>(
            "SELECT id, event_type, case_id FROM events WHERE dispatched_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let hooks = sqlx::query_as::<_, Subscriber>(
            "SELECT w.id, w.events, w.owner_party_id, p.kind FROM webhooks w JOIN parties p ON p.id = w.owner_party_id \
             WHERE w.deleted_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        // A subscription this build cannot read subscribes to nothing.
        let subscribed: Vec<Vec<EventType>> = hooks
            .iter()
            .map(|h| parse_events(&h.events).unwrap_or_default())
            .collect();
        // An admin's webhook hears of every case.
        let admins: Vec<bool> = hooks
            .iter()
            .map(|h| {
                h.kind
                    .parse::<crate::domain::PartyKind>()
                    .is_ok_and(|k| k == crate::domain::PartyKind::Admin)
            })
            .collect();
        let parties = case_parties(
            &mut tx,
            self.backend,
            events.iter().filter_map(|e| e.case_id.as_ref()),
        )
        .await?;
        let mut deliveries: Vec<(String, &str, i64)> = Vec::new();
        for e in &events {
            let case_parties = e.case_id.as_ref().and_then(|c| parties.get(c));
            for ((h, wants), admin) in hooks.iter().zip(&subscribed).zip(&admins) {
                if !wants.iter().any(|x| x.as_str() == e.event_type) {
                    continue;
                }
                let sees = *admin
                    || case_parties.is_some_and(|c| {
                        c.creditor_id == h.owner_party_id
                            || c.partner_id.as_deref() == Some(h.owner_party_id.as_str())
                    });
                if sees {
                    deliveries.push((prefixed_id("whd"), h.id.as_str(), e.id));
                }
            }
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        write_fan_out(&mut tx, self.backend, &deliveries, &ids, now).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// A claimed delivery with everything its request needs; `None` when it is gone.
    pub async fn due_delivery(&self, id: &str) -> StoreResult<Option<DueDelivery>> {
        Ok(self.due_deliveries(&[id]).await?.pop())
    }

    /// The claimed deliveries of `ids` with everything their requests need, in one query;
    /// those that are gone are left out.
    pub async fn due_deliveries(&self, ids: &[&str]) -> StoreResult<Vec<DueDelivery>> {
        if ids.len() > 500 {
            let mut all = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                all.extend(Box::pin(self.due_deliveries(chunk)).await?);
            }
            return Ok(all);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT d.id, d.webhook_id, w.url, w.secret_sealed, d.event_id, e.event_type, e.case_id, e.payload, \
               CASE WHEN w.deleted_at IS NULL AND (p.kind = 'admin' OR c.creditor_id = w.owner_party_id \
                 OR c.partner_id = w.owner_party_id) THEN 1 ELSE 0 END AS allowed \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id \
             JOIN parties p ON p.id = w.owner_party_id LEFT JOIN cases c ON c.id = e.case_id \
             WHERE d.id IN ({placeholders})"
        );
        let mut q = sqlx::query_as::<_, DueRow>(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| self.due_from_row(r))
            .collect()
    }

    fn due_from_row(&self, r: DueRow) -> StoreResult<DueDelivery> {
        Ok(DueDelivery {
            secret: self
                .keys
                .open_string(&secret_context(&r.webhook_id), &r.secret_sealed)?,
            id: r.id,
            webhook_id: r.webhook_id,
            url: r.url,
            event_id: r.event_id,
            event_type: EventType::parse(&r.event_type).map_err(|e| StoreError::Corrupt(e.0))?,
            case_id: r.case_id,
            payload: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
            allowed: r.allowed != 0,
        })
    }

    /// Records the outcome of an attempt: the peer's status and error, and where the
    /// delivery goes next (delivered, due again, failed).
    pub async fn finish_webhook_delivery(
        &self,
        id: &DeliveryId,
        status_code: Option<u16>,
        next: Transition,
        now: Micros,
    ) -> StoreResult<()> {
        self.webhook_outcomes
            .submit(WebhookOutcome {
                id: id.to_string(),
                status_code,
                next,
                now,
            })
            .await
    }

    /// Forgets webhook work that is over and older than `before`: deliveries delivered,
    /// failed or cancelled; then outbox events dispatched before it with no delivery left and
    /// no system message still to be written from them. At most [`FORGET_BATCH`] rows of
    /// each a call, oldest first; returns how many went.
    pub async fn forget_finished(&self, before: Micros) -> StoreResult<u64> {
        // A delivery's id begins with the millisecond it was made (a UUIDv7): the primary key
        // holds the oldest first, and the range ends at `before`. (`status || ''` keeps SQLite,
        // which has no statistics, from reading them by status instead: most are delivered.)
        // The outer conditions again: a delivery sent again meanwhile (`resend`) stays.
        let until = format!("whd_{:012x}", (before / 1000).max(0));
        let mut tx = self.write_tx().await?;
        let deliveries = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE id < $1 AND created_at < $2 AND status || '' IN ('delivered', 'failed', 'cancelled') \
             ORDER BY id LIMIT $3) \
             AND created_at < $2 AND status || '' IN ('delivered', 'failed', 'cancelled')",
        )
        .bind(&until)
        .bind(before)
        .bind(FORGET_BATCH)
        .execute(&mut *tx)
        .await?;
        let events = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e \
             WHERE e.dispatched_at IS NOT NULL AND e.dispatched_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.ref_id = CAST(e.id AS TEXT) \
             AND j.kind = 'system_message' AND j.status IN ('pending', 'running')) \
             ORDER BY e.dispatched_at LIMIT $2) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id)",
        )
        .bind(before)
        .bind(FORGET_BATCH)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deliveries.rows_affected() + events.rows_affected())
    }

    /// The event types written to the outbox so far, each once.
    pub async fn outbox_event_types(&self) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT event_type FROM events ORDER BY event_type")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Sender and subject of a message, for `message.received` payloads (sealed at rest, so
    /// read only when a delivery goes out).
    /// A received message's reading (`domain::understanding`), opened; none when erased.
    pub async fn message_understanding(
        &self,
        id: &str,
    ) -> StoreResult<Option<crate::domain::understanding::Understanding>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT understanding_sealed FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(Some(sealed)) = sealed else {
            return Ok(None);
        };
        self.unlock([&sealed[..]]).await?;
        Ok(self
            .open_opt(id, "understanding", Some(sealed))?
            .and_then(|json| serde_json::from_str(&json).ok()))
    }

    pub async fn message_sender_and_subject(
        &self,
        id: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            envelope_sealed: Vec<u8>,
            subject_sealed: Option<Vec<u8>>,
        }
        let row = sqlx::query_as::<_, Row>(
            "SELECT envelope_sealed, subject_sealed FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        self.unlock([&r.envelope_sealed[..]]).await?;
        let envelope = self.open_envelope(id, &r.envelope_sealed)?;
        Ok(Some((
            envelope.from,
            self.open_opt(id, "subject", r.subject_sealed)?,
        )))
    }
}

/// The outcome of one webhook attempt, waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct WebhookOutcome {
    id: String,
    status_code: Option<u16>,
    next: Transition,
    now: Micros,
}

/// The batch writer of webhook outcomes (a [`super::pipeline::Batcher`]).
pub(crate) fn webhook_outcome_batch<'c>(
    conn: &'c mut sqlx::AnyConnection,
    backend: super::Backend,
    items: &'c [WebhookOutcome],
) -> futures_util::future::BoxFuture<'c, StoreResult<Vec<()>>> {
    Box::pin(async move {
        write_webhook_outcomes(conn, backend, items).await?;
        Ok(vec![(); items.len()])
    })
}

/// Delivered ones with two statements for all of them (their status and time, then done);
/// retries, failures and deferrals one by one. A delivery put back without an attempt keeps
/// the last attempt's outcome.
async fn write_webhook_outcomes(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    items: &[WebhookOutcome],
) -> StoreResult<()> {
    let (done, other): (Vec<&WebhookOutcome>, Vec<&WebhookOutcome>) =
        items.iter().partition(|o| o.next == Transition::Done);
    if !done.is_empty() {
        let sql = format!(
            "UPDATE webhook_deliveries SET last_status = v.status, delivered_at = v.at \
             FROM ({}) v WHERE webhook_deliveries.id = v.id",
            super::batch_rows(
                backend,
                1,
                &[("id", "TEXT"), ("status", "INTEGER"), ("at", "BIGINT")]
            )
        );
        let rows: Vec<_> = done
            .iter()
            .map(|o| (o.id.as_str(), o.status_code, o.now))
            .collect();
        sqlx::query(&sql)
            .bind_batch(super::batch_params(backend, 3, &rows)?)
            .execute(&mut *conn)
            .await?;
        let ids: Vec<&str> = done.iter().map(|o| o.id.as_str()).collect();
        let now = done.iter().map(|o| o.now).max().unwrap_or_default();
        super::queue::finish_done(&mut *conn, backend, WEBHOOK_DELIVERIES, &ids, now).await?;
    }
    for o in other {
        if !matches!(o.next, Transition::Defer(_)) {
            sqlx::query("UPDATE webhook_deliveries SET last_status = $2 WHERE id = $1")
                .bind(o.id.as_str())
                .bind(o.status_code.map(i32::from))
                .execute(&mut *conn)
                .await?;
        }
        transition(&mut *conn, WEBHOOK_DELIVERIES, &o.id, &o.next, o.now).await?;
    }
    Ok(())
}
