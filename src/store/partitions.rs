//! The history's monthly partitions on PostgreSQL (migration 0030): a message's events and a
//! job's attempts by the month of their message's or job's id (a UUIDv7 after its prefix, so
//! a month is a range of ids), the audit log by the month of its time.
//!
//! The partition keeper makes each month before it comes ([`AHEAD`] months ahead), so rows
//! land in their month's partition. A row no month holds yet (the first round after the
//! migration, a keeper that did not run for months, a clock set wrong) lands in the DEFAULT
//! partition; when the keeper makes that row's month it moves the row there in the same
//! transaction. With a history retention set, a month that ended longer ago than it is
//! dropped whole. SQLite keeps one table each and has nothing to keep.
//!
//! A round makes a table's missing months in one transaction, holding the DEFAULT
//! partition's lock for it: every month's rows are moved out of DEFAULT, then the months are
//! attached (each attachment checks DEFAULT for rows of its range, so a backlog is read
//! once rather than once a month). The lock is held as long as that takes: milliseconds for
//! the empty months ahead, the time of the copy for a backlog. The transactions that make or
//! drop months give up waiting for their lock after [`LOCK_WAIT`] rather than queue the
//! application's reads and writes behind a long transaction; what a round did not make it
//! makes in the next. (Its other statements, reads and the retention's delete from DEFAULT,
//! take no lock that the application's statements hold.)

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};

use super::{Backend, StoreResult, System};
use crate::domain::time::Micros;

/// Months made ahead of the current one.
pub const AHEAD: i32 = 3;
/// Rows in the DEFAULT partition further than this many months from now stay there: a
/// clock set decades wrong makes no hundreds of empty months.
const REACH: i32 = 120;
/// How long the keeper waits for a lock before it leaves the month for its next round.
const LOCK_WAIT: &str = "500ms";

/// How a table's rows are sorted into months.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// A prefixed UUIDv7 (`msg_…`): the month of its first 48 bits, milliseconds.
    Id(&'static str),
    /// Microseconds since the epoch.
    Time,
}

/// A partitioned table of the history.
#[derive(Debug, Clone, Copy)]
struct History {
    table: &'static str,
    column: &'static str,
    key: Key,
}

const HISTORY: [History; 3] = [
    History {
        table: "message_events",
        column: "message_id",
        key: Key::Id("msg"),
    },
    History {
        table: "job_attempts",
        column: "job_id",
        key: Key::Id("job"),
    },
    History {
        table: "audit_log",
        column: "at",
        key: Key::Time,
    },
];

/// A calendar month (UTC), counted from year 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month(i32);

impl Month {
    fn of_millis(ms: i64) -> Option<Self> {
        let t = Utc.timestamp_millis_opt(ms).single()?;
        Some(Self(t.year() * 12 + t.month0() as i32))
    }

    fn start_millis(self) -> i64 {
        let (year, month0) = (self.0.div_euclid(12), self.0.rem_euclid(12));
        Utc.with_ymd_and_hms(year, month0 as u32 + 1, 1, 0, 0, 0)
            .single()
            .map_or(0, |t| t.timestamp_millis())
    }

    fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The partition's name: `message_events_2026_12`.
    fn partition(self, table: &str) -> String {
        format!(
            "{table}_{:04}_{:02}",
            self.0.div_euclid(12),
            self.0.rem_euclid(12) + 1
        )
    }
}

impl Key {
    /// The month's first value, as an SQL literal. Months before 1970 do not occur (the
    /// keeper reaches [`REACH`] months back at most).
    fn bound(self, month: Month) -> String {
        let ms = month.start_millis().max(0);
        match self {
            Self::Id(prefix) => format!("'{prefix}_{ms:012x}'"),
            Self::Time => (ms * 1000).to_string(),
        }
    }

    fn month_of_id(self, id: &str) -> Option<Month> {
        let Self::Id(prefix) = self else { return None };
        let hex = id.strip_prefix(prefix)?.strip_prefix('_')?.get(..12)?;
        Month::of_millis(i64::from_str_radix(hex, 16).ok()?)
    }
}

/// What one round of the keeper did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Partitions made (`message_events_2026_12`).
    pub made: Vec<String>,
    /// Rows moved out of the DEFAULT partitions into the months made.
    pub moved: u64,
    /// Partitions dropped by the history retention.
    pub dropped: Vec<String>,
}

impl System {
    /// One round of the partition keeper at `now`: makes the months from this one to
    /// [`AHEAD`] ahead and those that rows in a DEFAULT partition belong to, and, with
    /// `retention`, drops the months that ended longer ago than it. Nothing on SQLite.
    pub async fn keep_partitions(
        &self,
        now: Micros,
        retention: Option<Duration>,
    ) -> StoreResult<Kept> {
        let mut kept = Kept::default();
        if self.backend != Backend::Postgres {
            return Ok(kept);
        }
        let Some(this) = Month::of_millis(now.div_euclid(1000)) else {
            return Ok(kept);
        };
        // With a retention, the first month still kept (the one the retention's end falls
        // in): an older month is neither made nor kept, and rows of it that arrive late (an
        // event of an old message) are deleted from DEFAULT.
        // A retention reaching before any date there is (`300000y`) drops nothing.
        let kept_from = retention.and_then(|r| {
            let ended_before = now.saturating_sub(crate::domain::time::duration_micros(r));
            Month::of_millis(ended_before.div_euclid(1000))
        });
        for history in HISTORY {
            self.keep_table(history, this, kept_from, &mut kept).await?;
        }
        Ok(kept)
    }

    /// One table's round of [`System::keep_partitions`].
    async fn keep_table(
        &self,
        history: History,
        this: Month,
        kept_from: Option<Month>,
        kept: &mut Kept,
    ) -> StoreResult<()> {
        let existing = self.history_partitions(history.table).await?;
        let mut wanted: Vec<Month> = (0..=AHEAD).map(|n| Month(this.0 + n)).collect();
        if let Some((first, last)) = self.months_in_default(history, this).await? {
            let mut m = first;
            while m <= last {
                wanted.push(m);
                m = m.next();
            }
        }
        if let Some(from) = kept_from {
            wanted.retain(|m| *m >= from);
            let sql = format!(
                "DELETE FROM {t}_default WHERE {c} < {bound}",
                t = history.table,
                c = history.column,
                bound = history.key.bound(from)
            );
            sqlx::query(&sql).execute(&self.writer).await?;
        }
        wanted.sort();
        wanted.dedup();
        let names: Vec<String> = wanted.iter().map(|m| m.partition(history.table)).collect();
        let in_the_way = self.tables_in_the_way(&names, &existing).await?;
        let missing: Vec<(Month, String)> = wanted
            .into_iter()
            .zip(names)
            .filter(|(_, name)| !existing.contains(name) && !in_the_way.contains(name))
            .collect();
        for name in &in_the_way {
            tracing::warn!(
                partition = name,
                "a table of this name is not a partition: its month is left in DEFAULT"
            );
        }
        if !missing.is_empty() {
            match self.make_months(history, &missing).await {
                Ok(moved) => {
                    kept.moved += moved;
                    kept.made.extend(missing.into_iter().map(|(_, name)| name));
                }
                Err(e) if lock_not_available(&e) => {
                    tracing::info!(
                        table = history.table,
                        "a lock was busy: its months are made next round"
                    );
                }
                // Another process's keeper made one of them in the meantime: the rest next
                // round.
                Err(e) if has_code(&e, "42P07") => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(from) = kept_from else {
            return Ok(());
        };
        let expired = existing
            .iter()
            .filter(|n| month_of_partition(history, n).is_some_and(|m| m < from));
        for name in expired {
            match self.drop_month(name).await {
                Ok(()) => kept.dropped.push(name.clone()),
                Err(e) if lock_not_available(&e) => {
                    tracing::info!(
                        partition = name,
                        "a lock was busy: the month is dropped next round"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Of `names`, the tables that exist but are not among the partitions (`existing`).
    async fn tables_in_the_way(
        &self,
        names: &[String],
        existing: &[String],
    ) -> StoreResult<Vec<String>> {
        let present: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT CAST(c.relname AS TEXT) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname IN ({})",
            super::batch_list(self.backend, 1, "TEXT")
        ))
        .bind(super::list_param(self.backend, names)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(present
            .into_iter()
            .filter(|n| !existing.contains(n))
            .collect())
    }

    /// The monthly partitions of a history table, by name (not its DEFAULT partition).
    pub async fn history_partitions(&self, table: &str) -> StoreResult<Vec<String>> {
        if self.backend != Backend::Postgres {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE p.relname = $1 AND n.nspname = current_schema() \
               AND c.relname <> $1 || '_default' ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The first and last month of the rows waiting in a table's DEFAULT partition, within
    /// [`REACH`] months of `this`.
    async fn months_in_default(
        &self,
        history: History,
        this: Month,
    ) -> StoreResult<Option<(Month, Month)>> {
        let (lo, hi) = (Month(this.0 - REACH), Month(this.0 + REACH));
        let sql = format!(
            "SELECT CAST(min({c}) AS TEXT), CAST(max({c}) AS TEXT) FROM {t}_default \
             WHERE {c} >= {lo} AND {c} < {hi}",
            c = history.column,
            t = history.table,
            lo = history.key.bound(lo),
            hi = history.key.bound(hi),
        );
        let (first, last): (Option<String>, Option<String>) =
            sqlx::query_as(&sql).fetch_one(&self.pool).await?;
        let month = |v: Option<String>| -> Option<Month> {
            let v = v?;
            match history.key {
                Key::Id(_) => history.key.month_of_id(&v),
                Key::Time => Month::of_millis(v.parse::<i64>().ok()?.div_euclid(1000)),
            }
        };
        Ok(month(first).zip(month(last)))
    }

    /// Makes the months' partitions in one transaction, moving into each the rows of its
    /// month waiting in DEFAULT: how many. Every month's rows leave DEFAULT before the first
    /// month is attached, so each attachment checks only what is left there (a backlog of
    /// many months is read once, not once a month).
    async fn make_months(&self, history: History, months: &[(Month, String)]) -> sqlx::Result<u64> {
        let (t, c) = (history.table, history.column);
        let range = |month: Month| {
            let (lo, hi) = (history.key.bound(month), history.key.bound(month.next()));
            (format!("{c} >= {lo} AND {c} < {hi}"), lo, hi)
        };
        let mut tx = self.bounded_tx().await?;
        sqlx::query(&format!("LOCK TABLE {t}_default IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
        let mut moved = 0;
        for (month, name) in months {
            let (rows, _, _) = range(*month);
            sqlx::query(&format!("CREATE TABLE {name} (LIKE {t})"))
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(&format!(
                "INSERT INTO {name} SELECT * FROM {t}_default WHERE {rows}"
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                sqlx::query(&format!("DELETE FROM {t}_default WHERE {rows}"))
                    .execute(&mut *tx)
                    .await?;
            }
            moved += n;
        }
        for (month, name) in months {
            let (_, lo, hi) = range(*month);
            sqlx::query(&format!(
                "ALTER TABLE {t} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// A transaction whose statements give up waiting for a lock after [`LOCK_WAIT`].
    async fn bounded_tx(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Drops a month's partition (its rows with it).
    async fn drop_month(&self, name: &str) -> sqlx::Result<()> {
        let mut tx = self.bounded_tx().await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

/// The month a partition's name gives (`audit_log_2026_12`); `None` for DEFAULT or another
/// table's partition.
fn month_of_partition(history: History, name: &str) -> Option<Month> {
    let rest = name.strip_prefix(history.table)?.strip_prefix('_')?;
    let mut parts = rest.split('_');
    let (Some(Ok(year)), Some(Ok(month)), None) = (
        parts.next().map(str::parse::<i32>),
        parts.next().map(str::parse::<i32>),
        parts.next(),
    ) else {
        return None;
    };
    (1..=12)
        .contains(&month)
        .then_some(Month(year * 12 + month - 1))
}

/// PostgreSQL's `lock_not_available` (a lock timeout).
fn lock_not_available(e: &sqlx::Error) -> bool {
    has_code(e, "55P03")
}

fn has_code(e: &sqlx::Error, code: &str) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_a_range_of_ids_and_of_times() {
        let dec = Month::of_millis(1_796_083_200_000).unwrap(); // 2026-12-01T00:00:00Z
        assert_eq!(dec.partition("message_events"), "message_events_2026_12");
        assert_eq!(dec.next().partition("audit_log"), "audit_log_2027_01");
        assert_eq!(dec.start_millis(), 1_796_083_200_000);
        assert_eq!(Key::Time.bound(dec), "1796083200000000");
        assert_eq!(Key::Id("msg").bound(dec), "'msg_01a22ee6b000'");
        // An id made on the month's first millisecond falls in it; one made the millisecond
        // before does not.
        let id = format!("msg_{:012x}7000800000000000000a", 1_796_083_200_000_i64);
        assert_eq!(Key::Id("msg").month_of_id(&id), Some(dec));
        let before = format!("msg_{:012x}7000800000000000000a", 1_796_083_199_999_i64);
        assert_eq!(Key::Id("msg").month_of_id(&before), Some(Month(dec.0 - 1)));
        assert!(format!("'{before}'") < Key::Id("msg").bound(dec));
        assert_eq!(Key::Id("msg").month_of_id("job_0190"), None);
    }

    #[test]
    fn a_partitions_name_gives_its_month() {
        let audit = HISTORY[2];
        let dec = Month::of_millis(1_796_083_200_000).unwrap(); // 2026-12
        assert_eq!(month_of_partition(audit, "audit_log_2026_12"), Some(dec));
        assert_eq!(
            month_of_partition(audit, &dec.partition("audit_log")),
            Some(dec)
        );
        assert_eq!(month_of_partition(audit, "audit_log_default"), None);
        assert_eq!(month_of_partition(audit, "audit_log_2026_13"), None);
        assert_eq!(month_of_partition(audit, "message_events_2026_12"), None);
    }
}
