//! Webhooks: subscriptions, the fan-out of outbox events to them, and their deliveries.

use serde_json::Value;
use sqlx::Row;

use super::{Backend, Store, StoreResult, audit_as};
use crate::domain::party::Actor;
use crate::domain::prefixed_id;
use crate::domain::time::{Micros, now_micros};

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: Micros,
}

#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Micros>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Micros,
    pub delivered_at: Option<Micros>,
}

/// A delivery claimed for sending, with everything the request needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret: String,
    pub event_id: i64,
    pub event_type: String,
    pub case_id: Option<String>,
    pub payload: Value,
    /// 1 on the first attempt.
    pub attempt: i64,
}

fn secret_context(id: &str) -> String {
    format!("webhook:{id}:secret")
}

impl Store {
    pub async fn create_webhook(
        &self,
        actor: &Actor,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> StoreResult<Webhook> {
        let id = prefixed_id("wh");
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO webhooks (id, owner_party_id, url, events, secret_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(actor.party_id.as_str())
            .bind(url)
            .bind(serde_json::to_string(events).map_err(anyhow::Error::from)?)
            .bind(self.keys.seal_str(&secret_context(&id), secret))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit_as(
            &mut tx,
            None,
            Some(actor.party_id.as_str()),
            &actor.name,
            "webhook.created",
            "webhook",
            &id,
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
        let rows = sqlx::query("SELECT id, url, events, created_at FROM webhooks WHERE owner_party_id = $1 AND deleted_at IS NULL ORDER BY id")
            .bind(actor.party_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let events: String = r.try_get(2)?;
                Ok(Webhook {
                    id: r.try_get(0)?,
                    url: r.try_get(1)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// `false` when the actor has no such webhook.
    pub async fn delete_webhook(&self, actor: &Actor, id: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE webhooks SET deleted_at = $3 WHERE id = $1 AND owner_party_id = $2 AND deleted_at IS NULL")
            .bind(id)
            .bind(actor.party_id.as_str())
            .bind(now_micros())
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
            Some(actor.party_id.as_str()),
            &actor.name,
            "webhook.deleted",
            "webhook",
            id,
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
        let owned: Option<String> =
            sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1 AND owner_party_id = $2")
                .bind(id)
                .bind(actor.party_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.event_type, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, \
             d.delivered_at FROM webhook_deliveries d JOIN events e ON e.id = d.event_id WHERE d.webhook_id = $1 ORDER BY d.id DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryView {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    event_type: r.try_get(2)?,
                    status: r.try_get(3)?,
                    attempts: i64::from(r.try_get::<i32, _>(4)?),
                    next_attempt_at: r.try_get(5)?,
                    last_status: r.try_get::<Option<i32>, _>(6)?.map(i64::from),
                    last_error: r.try_get(7)?,
                    created_at: r.try_get(8)?,
                    delivered_at: r.try_get(9)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    /// Turns new outbox events into deliveries for every webhook that subscribed to the
    /// event and whose owner can see its case; returns how many events it took.
    pub async fn fan_out_events(&self, limit: i64) -> StoreResult<usize> {
        let mut tx = self.write_tx().await?;
        let events = sqlx::query("SELECT id, event_type, case_id FROM events WHERE dispatched_at IS NULL ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let hooks = sqlx::query(
            "SELECT w.id, w.events, w.owner_party_id, p.kind FROM webhooks w JOIN parties p ON p.id = w.owner_party_id WHERE w.deleted_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let now = now_micros();
        for e in &events {
            let event_id: i64 = e.try_get(0)?;
            let event_type: String = e.try_get(1)?;
            let case_id: Option<String> = e.try_get(2)?;
            let case_parties: Option<(String, Option<String>)> = match &case_id {
                Some(c) => sqlx::query("SELECT creditor_id, partner_id FROM cases WHERE id = $1")
                    .bind(c)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()?,
                None => None,
            };
            for h in &hooks {
                let events: Vec<String> =
                    serde_json::from_str(&h.try_get::<String, _>(1)?).unwrap_or_default();
                if !events.iter().any(|x| x == &event_type) {
                    continue;
                }
                let owner: String = h.try_get(2)?;
                let kind: String = h.try_get(3)?;
                let sees = kind == "admin"
                    || case_parties.as_ref().is_some_and(|(creditor, partner)| {
                        *creditor == owner || partner.as_deref() == Some(owner.as_str())
                    });
                if !sees {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event_id, status, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(prefixed_id("whd"))
                .bind(h.try_get::<String, _>(0)?)
                .bind(event_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE events SET dispatched_at = $2 WHERE id = $1")
                .bind(event_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    /// Claims due deliveries for `lease` microseconds (a crashed sender's claims come due
    /// again after it).
    pub async fn claim_webhook_deliveries(
        &self,
        limit: i64,
        lease: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let now = now_micros();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let claimed = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = 'sending', attempts = attempts + 1, next_attempt_at = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'sending') AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $3{lock}) RETURNING id, webhook_id, event_id, attempts"
        ))
        .bind(now)
        .bind(now + lease)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        let mut due = Vec::with_capacity(claimed.len());
        for c in &claimed {
            let webhook_id: String = c.try_get(1)?;
            let event_id: i64 = c.try_get(2)?;
            let row = sqlx::query(
                "SELECT w.url, w.secret_sealed, e.event_type, e.case_id, e.payload FROM webhooks w, events e \
                 WHERE w.id = $1 AND e.id = $2",
            )
            .bind(&webhook_id)
            .bind(event_id)
            .fetch_one(&self.pool)
            .await?;
            let sealed: Vec<u8> = row.try_get(1)?;
            let payload: String = row.try_get(4)?;
            due.push(DueDelivery {
                id: c.try_get(0)?,
                url: row.try_get(0)?,
                secret: self
                    .keys
                    .open_string(&secret_context(&webhook_id), &sealed)?,
                webhook_id,
                event_id,
                event_type: row.try_get(2)?,
                case_id: row.try_get(3)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                attempt: i64::from(c.try_get::<i32, _>(3)?),
            });
        }
        Ok(due)
    }

    /// Records the outcome of an attempt: delivered, due again at `retry_at`, or failed.
    pub async fn finish_webhook_delivery(
        &self,
        id: &str,
        status_code: Option<u16>,
        error: Option<&str>,
        retry_at: Option<Micros>,
    ) -> StoreResult<()> {
        let now = now_micros();
        let delivered = error.is_none();
        let status = if delivered {
            "delivered"
        } else if retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, last_status = $3, last_error = $4, next_attempt_at = $5, \
             delivered_at = CASE WHEN $6 = 1 THEN $7 ELSE delivered_at END WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(status_code.map(i32::from))
        .bind(error)
        .bind(retry_at)
        .bind(i32::from(delivered))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Sender and subject of a message, for `message.received` payloads (sealed at rest, so
    /// read only when a delivery goes out).
    pub async fn message_sender_and_subject(
        &self,
        id: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        let row = sqlx::query("SELECT envelope_sealed, subject_sealed FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let envelope = self.open_envelope(id, &r.try_get::<Vec<u8>, _>(0)?)?;
        Ok(Some((
            envelope.from,
            self.open_opt(id, "subject", r.try_get(1)?)?,
        )))
    }
}
