//! Payments and deadlines of a case.

use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::payload;

use super::{Cases, StoreError, StoreInner, StoreResult, audit, emit};
use crate::domain::code::Code;
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{Money, prefixed_id};

pub struct NewPayment {
    pub amount_minor: i64,
    pub paid_at: Micros,
    pub reference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub case_id: CaseId,
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
    pub case_id: CaseId,
    pub title: String,
    pub due_at: Micros,
    pub created_by: String,
    pub created_at: Micros,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: String,
    case_id: CaseId,
    amount_minor: i64,
    currency: String,
    paid_at: i64,
    /// Clear only in rows from before references were sealed.
    reference: Option<String>,
    reference_sealed: Option<Vec<u8>>,
    created_by: String,
    created_at: i64,
}

pub(super) fn reference_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("pay:{id}:reference")
}

pub(crate) fn title_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("ddl:{id}:title")
}

impl Cases {
    fn payment_from_row(&self, r: PaymentRow) -> StoreResult<Payment> {
        Ok(Payment {
            case_id: r.case_id,
            amount: Money {
                minor: r.amount_minor,
                currency: crate::domain::case::parse_currency(&r.currency)
                    .map_err(|e| anyhow::anyhow!(e))?,
            },
            paid_at: r.paid_at,
            reference: match r.reference_sealed {
                Some(sealed) => Some(self.open_text(&reference_context(&r.id), &sealed)?),
                None => r.reference,
            },
            created_by: r.created_by,
            created_at: r.created_at,
            id: r.id,
        })
    }

    fn deadline_from_row(&self, r: DeadlineRow) -> StoreResult<Deadline> {
        Ok(Deadline {
            title: match r.title_sealed {
                Some(sealed) => self.open_text(&title_context(&r.id), &sealed)?,
                None => r.title,
            },
            id: r.id,
            case_id: r.case_id,
            due_at: r.due_at,
            created_by: r.created_by,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeadlineRow {
    id: String,
    case_id: CaseId,
    /// Clear only in rows from before titles were sealed.
    title: String,
    title_sealed: Option<Vec<u8>>,
    due_at: i64,
    created_by: String,
    created_at: i64,
}

impl Cases {
    pub async fn add_payment(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        new: NewPayment,
    ) -> StoreResult<Option<Payment>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let currency: String = sqlx::query_scalar("SELECT currency FROM cases WHERE id = $1")
            .bind(case_id)
            .fetch_one(&mut *tx)
            .await?;
        crate::domain::case::check_decimals(new.amount_minor, &currency)
            .map_err(|e| StoreError::invalid(Code::ValidationFailed, e.0))?;
        // The sum of a case's payments stays within what one amount may be, so no sum
        // overflows when it is read.
        let paid: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM payments WHERE case_id = $1",
        )
        .bind(case_id)
        .fetch_one(&mut *tx)
        .await?;
        if paid
            .checked_add(new.amount_minor)
            .is_none_or(|total| total > crate::domain::case::MAX_MINOR)
        {
            return Err(StoreError::invalid(
                Code::AmountOutOfRange,
                "the payments of this case would exceed 999999999999.99 in total",
            ));
        }
        // The reference may name the debtor: sealed under their key (an erased debtor's
        // payment is booked without one).
        let key = match new.reference {
            Some(_) => Some(self.live_case_key(case_id).await?),
            None => None,
        };
        let payment = Payment {
            id: prefixed_id("pay"),
            case_id: *case_id,
            amount: Money::parse(
                &crate::domain::case::format_minor(new.amount_minor),
                &currency,
            )
            .map_err(|e| StoreError::invalid(Code::ValidationFailed, e.0))?,
            paid_at: new.paid_at,
            reference: new.reference,
            created_by: actor.name.clone(),
            created_at: self.now(),
        };
        sqlx::query(
            "INSERT INTO payments (id, case_id, amount_minor, currency, paid_at, reference_sealed, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&payment.id)
        .bind(case_id)
        .bind(payment.amount.minor)
        .bind(&currency)
        .bind(payment.paid_at)
        .bind(
            key.as_ref()
                .zip(payment.reference.as_deref())
                .map(|(key, r)| key.seal_str(&reference_context(&payment.id), r)),
        )
        .bind(&payment.created_by)
        .bind(payment.created_at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::PaymentRecorded,
            "payment",
            &payment.id,
            self.now(),
        )
        .await?;
        let payload = payload::PaymentReceived {
            case_id,
            payment_id: &payment.id,
            amount: payload::Amount {
                value: payment.amount.value(),
                currency: &currency,
            },
        };
        emit(
            &mut tx,
            EventType::PaymentReceived,
            Some(case_id),
            &payload,
            self.now(),
        )
        .await?;
        super::crm::enqueue_record(&mut tx, case_id, self.now()).await?;
        tx.commit().await?;
        Ok(Some(payment))
    }

    pub async fn list_payments(
        &self,
        actor: &Actor,
        case_id: &CaseId,
    ) -> StoreResult<Option<Vec<Payment>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, PaymentRow>(
            "SELECT id, case_id, amount_minor, currency, paid_at, reference, reference_sealed, created_by, created_at \
             FROM payments WHERE case_id = $1 ORDER BY id",
        )
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        self.unlock(rows.iter().filter_map(|r| r.reference_sealed.as_deref()))
            .await?;
        let payments = rows
            .into_iter()
            .map(|r| self.payment_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(payments))
    }

    pub async fn add_deadline(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        new: NewDeadline,
    ) -> StoreResult<Option<Deadline>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let key = self.live_case_key(case_id).await?;
        let deadline = Deadline {
            id: prefixed_id("ddl"),
            case_id: *case_id,
            title: new.title,
            due_at: new.due_at,
            created_by: actor.name.clone(),
            created_at: self.now(),
        };
        sqlx::query(
            "INSERT INTO deadlines (id, case_id, title, title_sealed, due_at, created_by, created_at) \
             VALUES ($1, $2, '', $3, $4, $5, $6)",
        )
        .bind(&deadline.id)
        .bind(case_id)
        .bind(key.seal_str(&title_context(&deadline.id), &deadline.title))
        .bind(deadline.due_at)
        .bind(&deadline.created_by)
        .bind(deadline.created_at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::DeadlineCreated,
            "deadline",
            &deadline.id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(deadline))
    }

    pub async fn list_deadlines(
        &self,
        actor: &Actor,
        case_id: &CaseId,
    ) -> StoreResult<Option<Vec<Deadline>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, DeadlineRow>(
            "SELECT id, case_id, title, title_sealed, due_at, created_by, created_at FROM deadlines \
             WHERE case_id = $1 ORDER BY due_at, id",
        )
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        self.unlock(rows.iter().filter_map(|r| r.title_sealed.as_deref()))
            .await?;
        rows.into_iter()
            .map(|r| self.deadline_from_row(r))
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }
}
