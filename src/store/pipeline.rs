//! Group commit: writes of concurrent requests share one database transaction.
//!
//! Writes of one kind (queueing a message, recording a delivery outcome) are submitted to a
//! [`Batcher`] as items, prepared beforehand (sealed, indexed) so that writing them needs
//! nothing but a connection. A lane takes the first item that arrives, then every item that
//! has arrived meanwhile (while the previous batch was being committed), writes them all
//! with one call of the kind's batch writer (multi-row statements: one for all their
//! messages, one for all their jobs, …) in a single transaction, and commits once. Only
//! then does each caller get its result: a response is never sent before its own data is
//! durable.
//!
//! An item whose write cannot happen (an invisible case, an idempotency key already taken)
//! decides so from reads before anything is written, and writes nothing. When a batch fails
//! with an error, it is rolled back and its items are written again one transaction each,
//! so one bad item costs only its own caller.
//!
//! SQLite has one writer, so it gets one lane; PostgreSQL gets several, each on its own
//! connection, so batches overlap with each other's commits.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, StoreError, StoreResult};

/// Items in one transaction at most.
const MAX_BATCH: usize = 256;
/// Items waiting for a lane at most; submitters wait beyond that (backpressure).
const QUEUE: usize = 4096;

/// Writes a batch of items on a connection inside the batch's transaction: one output per
/// item, in order.
pub(crate) type WriteBatch<I, O> =
    for<'c> fn(&'c mut AnyConnection, Backend, &'c [I]) -> BoxFuture<'c, StoreResult<Vec<O>>>;

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
        write: WriteBatch<I, O>,
    ) -> Self {
        let (queue, incoming) = mpsc::channel::<Pending<I, O>>(QUEUE);
        let incoming = Arc::new(Mutex::new(incoming));
        for _ in 0..lanes.max(1) {
            let lane = Lane {
                writer: writer.clone(),
                backend,
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
    write: WriteBatch<I, O>,
    incoming: Arc<Mutex<mpsc::Receiver<Pending<I, O>>>>,
}

impl<I: Send + Sync + 'static, O: Send + 'static> Lane<I, O> {
    async fn run(self) {
        loop {
            let batch = {
                let mut incoming = self.incoming.lock().await;
                let Some(first) = incoming.recv().await else {
                    return;
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
            match self.transaction(&items).await {
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
                        let alone = self.transaction(std::slice::from_ref(item)).await.and_then(
                            |mut outputs| {
                                outputs.pop().ok_or_else(|| {
                                    StoreError::Internal(anyhow::anyhow!(
                                        "a batch writer gave no output"
                                    ))
                                })
                            },
                        );
                        let _ = reply.send(alone);
                    }
                }
            }
        }
    }

    async fn transaction(&self, items: &[I]) -> StoreResult<Vec<O>> {
        let mut conn = self.live_connection().await?;
        let mut tx = match self.backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        let outputs = (self.write)(&mut tx, self.backend, items).await?;
        tx.commit().await?;
        Ok(outputs)
    }

    /// A connection the server still answers on. The pool pings only connections idle for a
    /// while; a batch asks every time, once for all its items: a batch that failed on a
    /// connection the server had just dropped would fail the outcomes of mail already sent,
    /// and that mail would go again. A connection that does not answer is closed and
    /// another taken.
    async fn live_connection(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
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
        let batcher = Batcher::start(pool.clone(), Backend::Sqlite, 1, write);
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
