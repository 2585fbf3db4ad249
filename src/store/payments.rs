//! Payments and deadlines of a case.

use serde_json::json;
use sqlx::Row;

use super::{Store, StoreResult, audit, emit};
use crate::domain::party::Actor;
use crate::domain::time::{Micros, now_micros};
use crate::domain::{Money, prefixed_id};

pub struct NewPayment {
    pub amount_minor: i64,
    pub paid_at: Micros,
    pub reference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub case_id: String,
    pub amount: Money,
    pub paid_at: Micros,
    pub reference: Option<String>,
    pub created_by: String,
    pub created_at: Micros,
}

pub struct NewDeadline {
    pub title: String,
    pub due_at: Micros,
}

#[derive(Debug, Clone)]
pub struct Deadline {
    pub id: String,
    pub case_id: String,
    pub title: String,
    pub due_at: Micros,
    pub created_by: String,
    pub created_at: Micros,
}

impl Store {
    pub async fn add_payment(
        &self,
        actor: &Actor,
        case_id: &str,
        new: NewPayment,
    ) -> StoreResult<Option<Payment>> {
        let mut tx = self.write_tx().await?;
        if !Self::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let currency: String = sqlx::query_scalar("SELECT currency FROM cases WHERE id = $1")
            .bind(case_id)
            .fetch_one(&mut *tx)
            .await?;
        let payment = Payment {
            id: prefixed_id("pay"),
            case_id: case_id.to_string(),
            amount: Money::parse(
                &crate::domain::case::format_minor(new.amount_minor),
                &currency,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
            paid_at: new.paid_at,
            reference: new.reference,
            created_by: actor.name.clone(),
            created_at: now_micros(),
        };
        sqlx::query(
            "INSERT INTO payments (id, case_id, amount_minor, currency, paid_at, reference, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&payment.id)
        .bind(case_id)
        .bind(payment.amount.minor)
        .bind(&currency)
        .bind(payment.paid_at)
        .bind(payment.reference.as_deref())
        .bind(&payment.created_by)
        .bind(payment.created_at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            "payment.recorded",
            "payment",
            &payment.id,
        )
        .await?;
        let payload = json!({"caseId": case_id, "paymentId": payment.id, "amount": {"value": payment.amount.value(), "currency": currency}});
        emit(&mut tx, "payment.received", Some(case_id), &payload).await?;
        tx.commit().await?;
        Ok(Some(payment))
    }

    pub async fn list_payments(
        &self,
        actor: &Actor,
        case_id: &str,
    ) -> StoreResult<Option<Vec<Payment>>> {
        let mut conn = self.pool.acquire().await?;
        if !Self::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, case_id, amount_minor, currency, paid_at, reference, created_by, created_at FROM payments \
             WHERE case_id = $1 ORDER BY id",
        )
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                let currency: String = r.try_get(3)?;
                Ok(Payment {
                    id: r.try_get(0)?,
                    case_id: r.try_get(1)?,
                    amount: Money {
                        minor: r.try_get(2)?,
                        currency: crate::domain::case::parse_currency(&currency)
                            .map_err(|e| anyhow::anyhow!(e))?,
                    },
                    paid_at: r.try_get(4)?,
                    reference: r.try_get(5)?,
                    created_by: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    pub async fn add_deadline(
        &self,
        actor: &Actor,
        case_id: &str,
        new: NewDeadline,
    ) -> StoreResult<Option<Deadline>> {
        let mut tx = self.write_tx().await?;
        if !Self::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let deadline = Deadline {
            id: prefixed_id("ddl"),
            case_id: case_id.to_string(),
            title: new.title,
            due_at: new.due_at,
            created_by: actor.name.clone(),
            created_at: now_micros(),
        };
        sqlx::query(
            "INSERT INTO deadlines (id, case_id, title, due_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&deadline.id)
        .bind(case_id)
        .bind(&deadline.title)
        .bind(deadline.due_at)
        .bind(&deadline.created_by)
        .bind(deadline.created_at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            "deadline.created",
            "deadline",
            &deadline.id,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(deadline))
    }

    pub async fn list_deadlines(
        &self,
        actor: &Actor,
        case_id: &str,
    ) -> StoreResult<Option<Vec<Deadline>>> {
        let mut conn = self.pool.acquire().await?;
        if !Self::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, case_id, title, due_at, created_by, created_at FROM deadlines WHERE case_id = $1 ORDER BY due_at, id",
        )
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Deadline {
                    id: r.try_get(0)?,
                    case_id: r.try_get(1)?,
                    title: r.try_get(2)?,
                    due_at: r.try_get(3)?,
                    created_by: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }
}
