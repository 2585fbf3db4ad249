//! The months of the tables PostgreSQL keeps by month (migration 0029): `audit_log` by its
//! entries' time, `events` by the month an event was written, `webhook_deliveries` by its
//! event's month (`event_at`), so an event and every delivery of it share one month. The
//! retention sweeper keeps the months from the clock's to [`MONTHS_AHEAD`] ahead made, and
//! drops a month of the outbox (never of the audit log, which is kept) that ended before the
//! retention's start and holds nothing the row-by-row rules would keep: no delivery still
//! owed or sent again, none made since, no event undispatched or dispatched since, no system
//! message still to be written from one. What a month keeps, and what lands in the default
//! partition, the row-by-row sweep ([`Webhooks::forget_finished`]) removes as before.
//! SQLite has no partitions: nothing here runs there.

use chrono::{Datelike, NaiveDate};

use super::{Backend, StoreResult, Webhooks};
use crate::domain::time::Micros;

/// How many months past the clock's own are made ahead of their first event.
pub const MONTHS_AHEAD: u32 = 2;

/// The tables partitioned by month, a referenced one before those that reference it.
const TABLES: [&str; 3] = ["audit_log", "events", "webhook_deliveries"];

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// The month `at` falls in; `None` for a time chrono cannot hold.
    pub fn of(at: Micros) -> Option<Month> {
        let t = chrono::DateTime::from_timestamp_micros(at)?;
        Some(Month {
            year: t.year(),
            month: t.month(),
        })
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Its first microsecond.
    pub fn start(self) -> Micros {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(Micros::MAX, |t| t.and_utc().timestamp_micros())
    }

    /// The name of its partition of `table`: `events_y2026m12`.
    pub fn partition(self, table: &str) -> String {
        format!("{table}_y{:04}m{:02}", self.year, self.month)
    }

    /// The month a partition of `table` is named after.
    fn of_partition(table: &str, name: &str) -> Option<Month> {
        let rest = name.strip_prefix(table)?.strip_prefix("_y")?;
        let (year, month) = rest.split_once('m')?;
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        (1..=12).contains(&month).then_some(Month { year, month })
    }
}

impl Webhooks {
    /// Makes the months from `now`'s to [`MONTHS_AHEAD`] ahead that are missing;
    /// returns how many partitions it made. A month whose rows already sit in the default
    /// partition (a clock that was far off) cannot be made: it is left to the default.
    pub async fn keep_months(&self, now: Micros) -> StoreResult<usize> {
        let Some(mut month) = Month::of(now).filter(|_| self.backend == Backend::Postgres) else {
            return Ok(0);
        };
        let mut made = 0;
        for _ in 0..=MONTHS_AHEAD {
            for table in TABLES {
                let name = month.partition(table);
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT CAST(to_regclass($1) AS TEXT)")
                        .bind(&name)
                        .fetch_one(&self.writer)
                        .await?;
                if exists.is_some() {
                    continue;
                }
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({}) TO ({})",
                    month.start(),
                    month.next().start()
                );
                match sqlx::query(&sql).execute(&self.writer).await {
                    Ok(_) => made += 1,
                    Err(e) => {
                        tracing::warn!(partition = %name, error = %e, "a month of the outbox could not be made; its rows stay in the default partition")
                    }
                }
            }
            month = month.next();
        }
        Ok(made)
    }

    /// Drops each month of the outbox that ended before `before` and holds nothing the
    /// row-by-row rules would keep (module docs); returns how many months went.
    /// A month whose tables are busy is left for the next round (a lock it cannot take at
    /// once is not waited for, so no other work waits behind it).
    pub async fn drop_finished_months(&self, before: Micros) -> StoreResult<u64> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = CAST('events' AS regclass) ORDER BY c.relname",
        )
        .fetch_all(&self.writer)
        .await?;
        let mut months: Vec<Month> = names
            .iter()
            .filter_map(|n| Month::of_partition("events", n))
            .filter(|m| m.next().start() <= before)
            .collect();
        months.sort();
        let mut dropped = 0;
        for month in months {
            match self.drop_month(month, before).await {
                Ok(true) => dropped += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(month = %month.partition("events"), error = %e, "a month of the outbox is left for the next round");
                }
            }
        }
        Ok(dropped)
    }

    /// Drops one month if nothing in it is kept; whether it did.
    async fn drop_month(&self, month: Month, before: Micros) -> StoreResult<bool> {
        let (deliveries, events) = (
            month.partition("webhook_deliveries"),
            month.partition("events"),
        );
        // An event whose system message is still to be written stays (`ref_id` is its id).
        // Those jobs are made with their events, so none can appear for a month that is over:
        // this is read before the locks.
        let (lowest, highest): (Option<i64>, Option<i64>) =
            sqlx::query_as(&format!("SELECT MIN(id), MAX(id) FROM {events}"))
                .fetch_one(&self.writer)
                .await?;
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT ref_id FROM jobs WHERE kind = 'system_message' AND status IN ('pending', 'running')",
        )
        .fetch_all(&self.writer)
        .await?;
        if let (Some(lowest), Some(highest)) = (lowest, highest)
            && waiting
                .iter()
                .filter_map(|r| r.parse::<i64>().ok())
                .any(|id| (lowest..=highest).contains(&id))
        {
            return Ok(false);
        }
        let until = format!("whd_{:012x}", (before / 1000).max(0));
        let mut tx = self.writer.begin().await?;
        // The parents, in the order every other statement takes them: the drop needs them
        // both, and a check made under these locks cannot be overtaken (a delivery sent
        // again meanwhile). Every check reads an index.
        sqlx::query("SET LOCAL lock_timeout = '200ms'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("LOCK TABLE events, webhook_deliveries IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let kept: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {deliveries} WHERE status IN ('pending', 'sending')) \
             OR EXISTS (SELECT 1 FROM {deliveries} WHERE id >= $1) \
             OR EXISTS (SELECT 1 FROM {events} WHERE dispatched_at IS NULL) \
             OR EXISTS (SELECT 1 FROM {events} WHERE dispatched_at >= $2)"
        ))
        .bind(&until)
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        if kept {
            return Ok(false);
        }
        for sql in [
            format!("DROP TABLE {deliveries}"),
            format!("ALTER TABLE events DETACH PARTITION {events}"),
            format!("DROP TABLE {events}"),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::info!(month = %events, "a month of the outbox dropped");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar_in_utc() {
        // 2026-12-31T23:59:59.999999Z and a microsecond later.
        let last = 1_798_761_599_999_999;
        let december = Month::of(last).unwrap();
        assert_eq!(december.partition("events"), "events_y2026m12");
        assert_eq!(december.next().start(), last + 1);
        assert_eq!(december.next().partition("events"), "events_y2027m01");
        assert_eq!(Month::of(last + 1), Some(december.next()));
        assert_eq!(
            Month::of_partition("events", "events_y2026m12"),
            Some(december)
        );
        assert_eq!(Month::of_partition("events", "events_default"), None);
        assert_eq!(Month::of_partition("events", "events_y2026m13"), None);
    }
}
