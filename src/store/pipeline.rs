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
//! sends' reads on both ([`Mode::Reads`]).

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
/// On PostgreSQL, how long a caller's item (a send, a send's read) may wait for its batch
/// before it is answered 503 unwritten: while the database is away, a request gets its
/// answer in seconds instead of waiting out the batches ahead of it, one timeout each.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(8);
/// On PostgreSQL, how long a lane of callers' items waits for a connection before its
/// batch is answered 503 (nothing of it written). Lanes of outcomes wait the pool's own
/// timeout: their work is done already and must be recorded.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

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

type Pending<I, O> = (I, oneshot::Sender<StoreResult<O>>, tokio::time::Instant);

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
        let waits = match (backend, mode) {
            (Backend::Postgres, Mode::NewWork | Mode::Reads) => Some((PATIENCE, CONNECTION_WAIT)),
            _ => None,
        };
        Self::start_waiting(writer, backend, lanes, (mode, write), waits)
    }

    /// `start`, with the callers' patience and the lanes' wait for a connection given.
    fn start_waiting(
        writer: AnyPool,
        backend: Backend,
        lanes: usize,
        (mode, write): (Mode, WriteBatch<I, O>),
        waits: Option<(std::time::Duration, std::time::Duration)>,
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
                waits,
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
            .send((item, reply, tokio::time::Instant::now()))
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
    /// Callers' patience and the wait for a connection; `None`: the pool's timeout alone.
    waits: Option<(std::time::Duration, std::time::Duration)>,
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
            let (items, replies) = self.within_patience(batch);
            if items.is_empty() {
                continue;
            }
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

    /// The batch's items whose callers are still within their patience; the others are
    /// answered 503 here, unwritten.
    fn within_patience(
        &self,
        batch: Vec<Pending<I, O>>,
    ) -> (Vec<I>, Vec<oneshot::Sender<StoreResult<O>>>) {
        let mut kept = (
            Vec::with_capacity(batch.len()),
            Vec::with_capacity(batch.len()),
        );
        for (item, reply, since) in batch {
            match self.waits {
                Some((patience, _)) if since.elapsed() > patience => {
                    let _ = reply.send(Err(StoreError::Unavailable(anyhow::anyhow!(
                        "waited {patience:?} for the database"
                    ))));
                }
                _ => {
                    kept.0.push(item);
                    kept.1.push(reply);
                }
            }
        }
        kept
    }

    /// A connection of the pool, within the lane's wait for one.
    async fn acquire(&self) -> StoreResult<PoolConnection<sqlx::Any>> {
        match self.waits {
            Some((_, wait)) => match tokio::time::timeout(wait, self.writer.acquire()).await {
                Ok(conn) => Ok(conn?),
                Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
            },
            None => Ok(self.writer.acquire().await?),
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
            None => self.acquire().await?,
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
        let wait = self.waits.map_or_else(
            || self.writer.options().get_acquire_timeout(),
            |(_, wait)| wait,
        );
        match tokio::time::timeout(wait, find).await {
            Ok(found) => Ok(found?),
            Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;

    /// The slow item's batch has begun.
    static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Inserts each item as a row; the item 13 writes into a table that does not exist, the
    /// item 99 takes 400 ms.
    fn write<'c>(
        conn: &'c mut AnyConnection,
        _: Backend,
        items: &'c [i64],
    ) -> BoxFuture<'c, StoreResult<Vec<i64>>> {
        Box::pin(async move {
            for item in items {
                if *item == 99 {
                    // A slow batch: the database answering late.
                    SLOW_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                }
                let table = if *item == 13 { "missing" } else { "rows" };
                sqlx::query(&format!("INSERT INTO {table} (n) VALUES ($1)"))
                    .bind(*item)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(items.iter().map(|i| i * 10).collect())
        })
    }

    /// A SQLite database of one connection with the table `rows`.
    async fn rows_table() -> (tempfile::TempDir, AnyPool) {
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
        (dir, pool)
    }

    #[tokio::test]
    async fn one_bad_item_fails_alone_and_every_other_is_written_once() {
        let (_dir, pool) = rows_table().await;
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

    #[tokio::test]
    async fn callers_past_their_patience_are_answered_unavailable_and_nothing_of_theirs_is_written()
    {
        let (_dir, pool) = rows_table().await;
        let waits = Some((
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        ));
        let batcher = Batcher::start_waiting(
            pool.clone(),
            Backend::Sqlite,
            1,
            (Mode::NewWork, write),
            waits,
        );
        let slow = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(99).await })
        };
        // Once the slow batch is being written, these wait behind it, past their patience.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the slow batch began");
            tokio::task::yield_now().await;
        }
        let late = futures_util::future::join_all((1..=5).map(|i| batcher.submit(i))).await;
        assert_eq!(slow.await.unwrap().unwrap(), 990);
        for answer in &late {
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        }
        // A caller that comes when the lane is free is written as ever.
        assert_eq!(batcher.submit(7).await.unwrap(), 70);
        let written: Vec<i64> = sqlx::query_scalar("SELECT n FROM rows ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(written, [7, 99]);
    }
}
