//! Group commit: writes of concurrent requests share one commit; reads of concurrent
//! requests, one statement.
//!
//! Writes of one kind (queueing a message, recording a delivery outcome) are submitted to a
//! [`Batcher`] as items, prepared beforehand (sealed, indexed) so that writing them needs
//! nothing but a connection. A lane takes the first item that arrives, then every item that
//! has arrived meanwhile (while the previous batch was being written), and writes them all
//! with one call of the kind's batch writer (multi-row statements: one for all their
//! messages, one for all their jobs, …), committed once: in a transaction of the lane's for
//! outcomes, or as the writer decides for new work ([`Mode`]; on PostgreSQL a batch of
//! sends is often one statement, which commits on its own). Only then does each caller get
//! its result: a response is never sent before its own data is durable.
//!
//! An item whose write cannot happen (an invisible case, an idempotency key already taken)
//! writes nothing, and the others of its batch are written. When a batch fails
//! with an error, nothing of it stays (rolled back, or a single statement that failed whole)
//! and its items are written again one at a time, so one bad item costs only its own caller.
//!
//! SQLite has one writer, so it gets one lane; PostgreSQL gets several, each on its own
//! connection, so batches overlap with each other's commits. The same engine batches the
//! sends' reads on PostgreSQL ([`Mode::Reads`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, StoreError, StoreResult};

/// Items in one transaction at most.
const MAX_BATCH: usize = 256;
/// Items waiting for a lane at most; submitters wait beyond that (backpressure).
const QUEUE: usize = 4096;

/// Writes a batch of items on a connection: one output per item, in order. Inside the
/// lane's transaction, or in the writer's own (see [`Mode`]).
pub(crate) type WriteBatch<I, O> =
    for<'c> fn(&'c mut AnyConnection, Backend, &'c [I]) -> BoxFuture<'c, StoreResult<Vec<O>>>;

/// How a lane runs the batches of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Outcomes of work done outside the database (mail sent, webhooks delivered): in a
    /// transaction of the lane's, on a connection asked first whether the server still
    /// answers. A batch that failed would do that work again.
    Outcomes,
    /// New work (sends): the writer opens a transaction only when its statements need one
    /// (see [`begin`]), since on PostgreSQL a single statement commits on its own, in the
    /// same round trip. A batch that fails loses nothing (no caller has been answered:
    /// each item is tried again alone, or all are answered 503 when the database cannot be
    /// reached), so the connection is not asked first.
    NewWork,
    /// Reads: no transaction, and nothing lost when a batch fails (each is read again
    /// alone).
    Reads,
}

/// A transaction on `conn` that can write at once: on SQLite it takes the write lock when
/// it begins, so it never fails half-way for want of it.
pub(crate) async fn begin(
    conn: &mut AnyConnection,
    backend: Backend,
) -> sqlx::Result<sqlx::Transaction<'_, sqlx::Any>> {
    match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => conn.begin().await,
    }
}

type Pending<I, O> = (I, oneshot::Sender<StoreResult<O>>);

/// Group commit of writes of one kind.
pub(crate) struct Batcher<I, O> {
    queue: mpsc::Sender<Pending<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<I: Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// `lanes` lanes writing batches with `write` through `writer`; they stop when the last
    /// handle is dropped.
    pub(crate) fn start(
        writer: AnyPool,
        backend: Backend,
        lanes: usize,
        mode: Mode,
        write: WriteBatch<I, O>,
    ) -> Self {
        let (queue, incoming) = mpsc::channel::<Pending<I, O>>(QUEUE);
        let incoming = Arc::new(Mutex::new(incoming));
        for _ in 0..lanes.max(1) {
            let lane = Lane {
                writer: writer.clone(),
                backend,
                mode,
                write,
                incoming: incoming.clone(),
            };
            tokio::spawn(lane.run());
        }
        Self { queue }
    }

    /// Writes `item` in the next batch; its output once that batch is committed.
    pub(crate) async fn submit(&self, item: I) -> StoreResult<O> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Internal(anyhow::anyhow!("the commit pipeline stopped"));
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

struct Lane<I, O> {
    writer: AnyPool,
    backend: Backend,
    mode: Mode,
    write: WriteBatch<I, O>,
    incoming: Arc<Mutex<mpsc::Receiver<Pending<I, O>>>>,
}

impl<I: Send + Sync + 'static, O: Send + 'static> Lane<I, O> {
    async fn run(self) {
        // The connection of the last batch, kept while more work is waiting (see `holds`):
        // under load the lane writes batch after batch without queueing for a connection
        // behind the requests' reads; idle, it holds none.
        let mut held: Option<PoolConnection<sqlx::Any>> = None;
        loop {
            let batch = {
                // A lane waiting its turn holds no connection: another lane is taking the
                // work meanwhile, and the pool may be closing.
                let mut incoming = match self.incoming.try_lock() {
                    Ok(incoming) => incoming,
                    Err(_) => {
                        held = None;
                        self.incoming.lock().await
                    }
                };
                let first = match incoming.try_recv() {
                    Ok(first) => first,
                    Err(_) => {
                        held = None;
                        let Some(first) = incoming.recv().await else {
                            return;
                        };
                        first
                    }
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                batch
            };
            let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
            match self.transaction(&items, &mut held).await {
                Ok(outputs) if outputs.len() == items.len() => {
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        // A caller that gave up (its request was dropped) no longer listens.
                        let _ = reply.send(Ok(output));
                    }
                }
                Ok(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Internal(anyhow::anyhow!(
                            "a batch writer gave an output count unlike its input"
                        ))));
                    }
                }
                Err(e) if items.len() == 1 => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Err(e));
                    }
                }
                // The database cannot be reached: no item is to blame, and trying each again
                // alone would keep the last caller waiting for a timeout per item.
                Err(StoreError::Unavailable(e)) => {
                    let reason = format!("{e:#}");
                    for reply in replies {
                        let _ =
                            reply.send(Err(StoreError::Unavailable(anyhow::anyhow!("{reason}"))));
                    }
                }
                // One bad item costs only its own caller: each again, alone.
                Err(_) => {
                    for (item, reply) in items.iter().zip(replies) {
                        let alone = self
                            .transaction(std::slice::from_ref(item), &mut held)
                            .await
                            .and_then(|mut outputs| {
                                outputs.pop().ok_or_else(|| {
                                    StoreError::Internal(anyhow::anyhow!(
                                        "a batch writer gave no output"
                                    ))
                                })
                            });
                        let _ = reply.send(alone);
                    }
                }
            }
        }
    }

    /// Whether the lane keeps its connection between batches: a PostgreSQL lane of new work
    /// or of reads, on a pool of at least four (the send path's two lanes then leave two or
    /// more to everything else). SQLite's one writing connection is every writer's; outcome
    /// lanes (a batch after each delivery round) leave the pool's connections to the reads
    /// that claim.
    fn holds(&self) -> bool {
        self.backend == Backend::Postgres
            && self.mode != Mode::Outcomes
            && self.writer.options().get_max_connections() >= 4
    }

    /// Writes `items` on the held connection, or one taken from the pool (and held, if the
    /// lane holds one). A connection the database could not be reached on is closed: the
    /// pool opens another. When that was the held one, which no ping checked, the batch is
    /// tried once more on a connection that answers: a connection the server dropped
    /// (a restart, a fail-over) fails at the first write, before anything ran.
    async fn transaction(
        &self,
        items: &[I],
        held: &mut Option<PoolConnection<sqlx::Any>>,
    ) -> StoreResult<Vec<O>> {
        let reused = held.is_some();
        let conn = match held.take() {
            Some(conn) => conn,
            None if self.mode == Mode::Outcomes => self.live_connection().await?,
            None => self.writer.acquire().await?,
        };
        match self.write_on(conn, items, held).await {
            Err(StoreError::Unavailable(_)) if reused => {
                let conn = self.live_connection().await?;
                self.write_on(conn, items, held).await
            }
            written => written,
        }
    }

    async fn write_on(
        &self,
        mut conn: PoolConnection<sqlx::Any>,
        items: &[I],
        held: &mut Option<PoolConnection<sqlx::Any>>,
    ) -> StoreResult<Vec<O>> {
        let written = match self.mode {
            Mode::NewWork | Mode::Reads => (self.write)(&mut conn, self.backend, items).await,
            Mode::Outcomes => {
                async {
                    let mut tx = begin(&mut conn, self.backend).await?;
                    let outputs = (self.write)(&mut tx, self.backend, items).await?;
                    tx.commit().await?;
                    Ok(outputs)
                }
                .await
            }
        };
        if let Err(StoreError::Unavailable(_)) = &written {
            let _ = conn.close().await;
        } else if self.holds() {
            *held = Some(conn);
        }
        written
    }

    /// A connection the server still answers on. The pool pings only connections idle for a
    /// while; a batch of outcomes asks every time, once for all its items: a batch that
    /// failed on a connection the server had just dropped would fail the outcomes of mail
    /// already sent, and that mail would go again. A connection that does not answer is
    /// closed and another taken.
    async fn live_connection(&self) -> StoreResult<PoolConnection<sqlx::Any>> {
        if self.backend == Backend::Sqlite {
            return Ok(self.writer.acquire().await?);
        }
        // Within the pool's own acquire timeout, however many turn out dead.
        let find = async {
            loop {
                let mut conn = self.writer.acquire().await?;
                if conn.ping().await.is_ok() {
                    return Ok::<_, sqlx::Error>(conn);
                }
                let _ = conn.close().await;
            }
        };
        match tokio::time::timeout(self.writer.options().get_acquire_timeout(), find).await {
            Ok(found) => Ok(found?),
            Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;

    /// Inserts each item as a row; the item 13 writes into a table that does not exist.
    fn write<'c>(
        conn: &'c mut AnyConnection,
        _: Backend,
        items: &'c [i64],
    ) -> BoxFuture<'c, StoreResult<Vec<i64>>> {
        Box::pin(async move {
            for item in items {
                let table = if *item == 13 { "missing" } else { "rows" };
                sqlx::query(&format!("INSERT INTO {table} (n) VALUES ($1)"))
                    .bind(*item)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(items.iter().map(|i| i * 10).collect())
        })
    }

    #[tokio::test]
    async fn one_bad_item_fails_alone_and_every_other_is_written_once() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE rows (n INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let batcher = Batcher::start(pool.clone(), Backend::Sqlite, 1, Mode::Outcomes, write);
        let results = futures_util::future::join_all((0..40).map(|i| batcher.submit(i))).await;
        for (i, result) in (0..40).zip(&results) {
            match (i, result) {
                (13, Err(_)) => {}
                (i, Ok(out)) => assert_eq!(*out, i * 10),
                (i, other) => panic!("item {i}: {other:?}"),
            }
        }
        let (count, sum): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(n) FROM rows")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 39);
        assert_eq!(sum, (0..40).sum::<i64>() - 13);
    }
}
