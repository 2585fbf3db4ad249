//! The one queue engine's storage: claiming due work with a lease, renewing the lease while
//! an attempt runs, and moving an item to its next state. Both queues, delivery jobs and
//! webhook deliveries, are tables of the same shape (status, due time, attempts, lease
//! owner and expiry) and share this code; what differs is named in a [`QueueTable`].
//!
//! On PostgreSQL claims lock with `FOR UPDATE SKIP LOCKED`, so two processes never claim one
//! item; on SQLite the single writer makes the claiming `UPDATE` atomic. An item whose lease
//! ran out (its worker died) is due again.

use sqlx::AnyConnection;

use super::{Backend, Queue, StoreResult};
use crate::domain::time::Micros;

/// How one queue's table spells the engine's columns and states.
#[derive(Debug, Clone, Copy)]
pub struct QueueTable {
    pub table: &'static str,
    /// The column of the time an item is due.
    pub due: &'static str,
    /// The status of an item an owner holds.
    pub claimed: &'static str,
    /// The terminal status of success.
    pub done: &'static str,
    /// Claim order.
    pub order: &'static str,
    /// The index that walks pending items in claim order (SQLite is told to use it: without
    /// statistics it would rather read every due item and sort them).
    pub order_index: &'static str,
    /// The column naming what an item is about, returned with each claim.
    pub subject: &'static str,
    /// The SQL naming what kind of work an item is, returned with each claim.
    pub kind: &'static str,
    /// The SQL of the trace context an item continues (see `telemetry`), returned with each
    /// claim.
    pub trace: &'static str,
    /// Extra assignments on every change (`updated_at`), with `$now` for the time.
    pub touch: &'static str,
    /// Assignments when an item ends (the due time no longer means anything).
    pub on_end: &'static str,
}

pub const DELIVERY_JOBS: QueueTable = QueueTable {
    table: "jobs",
    due: "run_at",
    claimed: "running",
    done: "done",
    order: "priority, run_at",
    order_index: "jobs_ready",
    subject: "ref_id",
    kind: "kind",
    trace: "trace_parent",
    touch: ", updated_at = $now",
    on_end: "",
};

pub const WEBHOOK_DELIVERIES: QueueTable = QueueTable {
    table: "webhook_deliveries",
    due: "next_attempt_at",
    claimed: "sending",
    done: "delivered",
    order: "next_attempt_at",
    order_index: "webhook_deliveries_due",
    subject: "id",
    kind: "'webhook'",
    trace: "CAST(NULL AS TEXT)",
    touch: "",
    on_end: ", next_attempt_at = NULL",
};

pub const CRM_ACTIVITIES: QueueTable = QueueTable {
    table: "crm_activities",
    due: "next_attempt_at",
    claimed: "logging",
    done: "logged",
    order: "next_attempt_at",
    order_index: "crm_activities_due",
    subject: "subject_id",
    kind: "kind",
    trace: "CAST(NULL AS TEXT)",
    touch: ", updated_at = $now",
    on_end: ", next_attempt_at = NULL",
};

/// An item held by an owner: its id and which attempt this is (1 on the first).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub id: String,
    /// What the item is about: the message of a delivery job.
    pub subject: String,
    /// What kind of work it is: `deliver_message` or `system_message` in the jobs table.
    pub kind: String,
    pub attempts: i32,
    /// The trace context of the request that queued it, if traces are exported.
    pub trace_parent: Option<String>,
}

/// Where an attempt leaves an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Done: the terminal state of success.
    Done,
    /// Not attempted (a sender's pace, closed contact hours): due again at the time, and the
    /// attempt is not counted.
    Defer(Micros),
    /// Failed for now: due again at the time.
    Retry { at: Micros, error: String },
    /// Failed for good: the terminal state of failure.
    Failed { error: String },
}

impl Transition {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Defer(_) => "deferred",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
        }
    }
}

impl Queue {
    /// Claims up to `limit` items due at `now` for `owner` until `lease_until`.
    pub async fn claim(
        &self,
        q: QueueTable,
        owner: &str,
        limit: i64,
        now: Micros,
        lease_until: Micros,
    ) -> StoreResult<Vec<Claim>> {
        let (lock, indexed) = match self.backend {
            Backend::Postgres => (" FOR UPDATE SKIP LOCKED", String::new()),
            Backend::Sqlite => ("", format!(" INDEXED BY {}", q.order_index)),
        };
        let QueueTable {
            table,
            due,
            claimed,
            order,
            subject,
            kind,
            trace,
            ..
        } = q;
        let touch = q.touch.replace("$now", "$3");
        // Two claims, each a walk along an index that stops at the limit: items whose lease
        // ran out (their worker died; few), then pending items in the queue's order. One
        // statement with an OR of both would read every pending item and sort them.
        let claim = |candidates: String| {
            format!(
                "UPDATE {table} SET status = '{claimed}', lease_owner = $1, lease_until = $2, attempts = attempts + 1{touch} \
                 WHERE id IN ({candidates}) RETURNING id, {subject} AS subject, {kind} AS kind, attempts, {trace} AS trace_parent"
            )
        };
        let expired = claim(format!(
            "SELECT id FROM {table} WHERE status = '{claimed}' AND lease_until < $3 ORDER BY lease_until LIMIT $4{lock}"
        ));
        let pending = claim(format!(
            "SELECT id FROM {table}{indexed} WHERE status = 'pending' AND {due} <= $3 ORDER BY {order} LIMIT $4{lock}"
        ));
        let mut claims = Vec::new();
        for query in [expired, pending] {
            let left = limit - i64::try_from(claims.len()).unwrap_or(limit);
            if left <= 0 {
                break;
            }
            claims.extend(
                sqlx::query_as::<_, Claim>(&query)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(left)
                    .fetch_all(&self.writer)
                    .await?,
            );
        }
        Ok(claims)
    }

    /// Extends the leases `owner` holds on `ids`; returns how many it still held.
    pub async fn renew_leases(
        &self,
        q: QueueTable,
        owner: &str,
        ids: &[String],
        lease_until: Micros,
    ) -> StoreResult<u64> {
        let mut held = 0;
        let mut tx = self.write_tx().await?;
        for id in ids {
            held += sqlx::query(&format!(
                "UPDATE {} SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND status = '{}'",
                q.table, q.claimed
            ))
            .bind(id)
            .bind(owner)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(held)
    }

    /// The earliest time an item becomes due (a pending one, or a held one whose lease runs
    /// out), to sleep until then.
    pub async fn next_due(&self, q: QueueTable) -> StoreResult<Option<Micros>> {
        // Two minimums, each the first entry of an index (`*_due`, `*_lease`).
        Ok(sqlx::query_scalar(&format!(
            "SELECT MIN(t) FROM (SELECT MIN({due}) AS t FROM {table} WHERE status = 'pending' \
             UNION ALL SELECT MIN(lease_until) AS t FROM {table} WHERE status = '{claimed}') due",
            due = q.due,
            table = q.table,
            claimed = q.claimed,
        ))
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Moves an item to its next state inside the caller's transaction, releasing the lease.
pub(crate) async fn transition(
    conn: &mut AnyConnection,
    q: QueueTable,
    id: &str,
    to: &Transition,
    now: Micros,
) -> sqlx::Result<()> {
    let (table, due) = (q.table, q.due);
    // `now` is the last parameter, bound only where the table keeps a change time.
    let touch = |n: usize| q.touch.replace("$now", &format!("${n}"));
    let release = "lease_owner = NULL, lease_until = NULL";
    let sql = match to {
        Transition::Done => format!(
            "UPDATE {table} SET status = '{done}', last_error = NULL, {release}{touch}{end} WHERE id = $1",
            done = q.done,
            touch = touch(2),
            end = q.on_end,
        ),
        Transition::Defer(_) => format!(
            "UPDATE {table} SET status = 'pending', {due} = $2, attempts = attempts - 1, {release}{touch} WHERE id = $1",
            touch = touch(3),
        ),
        Transition::Retry { .. } => format!(
            "UPDATE {table} SET status = 'pending', {due} = $2, last_error = $3, {release}{touch} WHERE id = $1",
            touch = touch(4),
        ),
        Transition::Failed { .. } => format!(
            "UPDATE {table} SET status = 'failed', last_error = $2, {release}{touch}{end} WHERE id = $1",
            touch = touch(3),
            end = q.on_end,
        ),
    };
    let query = sqlx::query(&sql).bind(id);
    let query = match to {
        Transition::Done => query,
        Transition::Defer(at) => query.bind(*at),
        Transition::Retry { at, error } => query.bind(*at).bind(error.as_str()),
        Transition::Failed { error } => query.bind(error.as_str()),
    };
    let query = if q.touch.is_empty() {
        query
    } else {
        query.bind(now)
    };
    query.execute(conn).await?;
    Ok(())
}

/// Moves the items `ids` to done in one statement (the batch form of
/// [`transition`]`(Transition::Done)`).
pub(crate) async fn finish_done(
    conn: &mut AnyConnection,
    backend: Backend,
    q: QueueTable,
    ids: &[&str],
    now: Micros,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE {table} SET status = '{done}', last_error = NULL, lease_owner = NULL, lease_until = NULL{touch}{end} \
         WHERE id IN ({list})",
        table = q.table,
        done = q.done,
        touch = q.touch.replace("$now", "$1"),
        end = q.on_end,
        list = super::batch_list(backend, 2, "TEXT"),
    );
    // `$1` is bound always; a table without a change time simply does not use it.
    sqlx::query(&sql)
        .bind(now)
        .bind(super::list_param(backend, ids)?)
        .execute(conn)
        .await?;
    Ok(())
}

impl Queue {
    /// An item's status and lease expiry, for operators and tests.
    pub async fn queue_item(
        &self,
        q: QueueTable,
        id: &str,
    ) -> StoreResult<Option<(String, Option<Micros>)>> {
        #[derive(sqlx::FromRow)]
        struct Item {
            status: String,
            lease_until: Option<i64>,
        }
        let item = sqlx::query_as::<_, Item>(&format!(
            "SELECT status, lease_until FROM {} WHERE id = $1",
            q.table
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(item.map(|i| (i.status, i.lease_until)))
    }
}
