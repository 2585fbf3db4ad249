//! Work that runs in one process at a time (IMAP polling, the deadline scanner, the
//! retention sweeper): on
//! PostgreSQL the process that holds a session advisory lock does it. The lock lives as long
//! as its connection: when the process dies, PostgreSQL sees the connection close and frees
//! the lock, and the next process that asks takes it over. On SQLite the lock is a file lock
//! beside the database file (`parley.db.imap.lock`), which the system frees when its process
//! dies.

use sqlx::Connection;

use super::{Backend, Store, System};

/// A piece of work that runs once across processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    ImapPolling,
    DeadlineScanner,
    RetentionSweeper,
    /// The syncs of the connectors (their mailboxes).
    ConnectorSync,
    /// Answered replies taken out of the inbox's index.
    InboxSweeper,
    /// The history's monthly partitions made ahead and dropped past their retention.
    PartitionKeeper,
}

impl Work {
    pub fn name(self) -> &'static str {
        match self {
            Self::ImapPolling => "imap",
            Self::DeadlineScanner => "deadlines",
            Self::RetentionSweeper => "retention",
            Self::ConnectorSync => "connectors",
            Self::InboxSweeper => "inbox",
            Self::PartitionKeeper => "partitions",
        }
    }

    /// The advisory lock's key: `parley` in ASCII, then the work's number.
    fn key(self) -> i64 {
        let base = 0x7061_726c_6579_i64 << 8;
        base + match self {
            Self::ImapPolling => 1,
            Self::DeadlineScanner => 2,
            Self::RetentionSweeper => 3,
            Self::ConnectorSync => 4,
            Self::InboxSweeper => 5,
            Self::PartitionKeeper => 6,
        }
    }
}

/// Whether this process holds a [`Work`]: asked before each round of it.
pub struct Singleton {
    store: System,
    work: Work,
    held: tokio::sync::Mutex<Option<Holder>>,
}

/// What holds the lock: a connection (PostgreSQL), or a locked file (SQLite).
enum Holder {
    Connection(sqlx::AnyConnection),
    File(#[allow(dead_code)] std::fs::File),
}

impl Singleton {
    pub fn new(store: &Store, work: Work) -> Self {
        Self {
            store: store.system(),
            work,
            held: tokio::sync::Mutex::new(None),
        }
    }

    pub fn work(&self) -> Work {
        self.work
    }

    /// `true` when this process holds the work now: it keeps the lock while its connection
    /// answers, and takes the lock when no other process holds it.
    pub async fn held(&self) -> bool {
        let mut held = self.held.lock().await;
        match held.as_mut() {
            Some(Holder::File(_)) => return true,
            Some(Holder::Connection(conn)) => {
                if conn.ping().await.is_ok() {
                    return true;
                }
                // The connection is gone, and the lock with it: another process may hold it.
                tracing::warn!(
                    work = self.work.name(),
                    "lost the connection holding the work"
                );
                *held = None;
            }
            None => {}
        }
        if self.store.backend == Backend::Sqlite {
            let Some(db) = &self.store.sqlite_file else {
                return true;
            };
            let path = format!("{}.{}.lock", db.display(), self.work.name());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path);
            return match file {
                Ok(f) if f.try_lock().is_ok() => {
                    tracing::info!(work = self.work.name(), "this process holds the work");
                    *held = Some(Holder::File(f));
                    true
                }
                _ => false,
            };
        }
        let Ok(conn) = self.store.writer.acquire().await else {
            return false;
        };
        let mut conn = conn.detach();
        let taken: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.work.key())
            .fetch_one(&mut conn)
            .await;
        match taken {
            Ok(true) => {
                tracing::info!(work = self.work.name(), "this process holds the work");
                *held = Some(Holder::Connection(conn));
                true
            }
            _ => {
                let _ = conn.close().await;
                false
            }
        }
    }
}

impl System {
    /// Takes the next send slot of `sender` (slots `interval` apart, shared by every process
    /// on the database) if it comes within `max_wait` of `now`: its time. Otherwise takes
    /// nothing: `Err` with how long until the next slot is free.
    pub async fn reserve_send_slot(
        &self,
        sender: &str,
        interval: i64,
        max_wait: i64,
        now: i64,
    ) -> super::StoreResult<Result<i64, i64>> {
        let mut tx = self.write_tx().await?;
        let fresh = sqlx::query(
            "INSERT INTO sms_pace (sender, next_at) VALUES ($1, $2) ON CONFLICT (sender) DO NOTHING",
        )
        .bind(sender)
        .bind(now + interval)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 1 {
            tx.commit().await?;
            return Ok(Ok(now));
        }
        let taken: Option<i64> = sqlx::query_scalar(
            "UPDATE sms_pace SET next_at = (CASE WHEN next_at > $2 THEN next_at ELSE $2 END) + $3 \
             WHERE sender = $1 AND next_at <= $2 + $4 RETURNING next_at",
        )
        .bind(sender)
        .bind(now)
        .bind(interval)
        .bind(max_wait)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match taken {
            Some(next) => Ok(next - interval),
            None => {
                let next: i64 =
                    sqlx::query_scalar("SELECT next_at FROM sms_pace WHERE sender = $1")
                        .bind(sender)
                        .fetch_one(&mut *tx)
                        .await?;
                Err((next - now).max(0))
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}
