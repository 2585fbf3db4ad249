//! Group commit: writes of concurrent requests share one database transaction.
//!
//! A write is submitted as a unit of work, a function that runs its statements on the
//! connection it is given. A lane takes the first unit that arrives, then every unit that
//! has arrived meanwhile (while the previous batch was being committed), runs them one after
//! another in a single transaction and commits once. Only then does each caller get its
//! result: a response is never sent before its own data is durable.
//!
//! A unit either writes everything or nothing of its own (it decides what to do from reads
//! before its first write), so a batch never needs to undo one unit alone. When a unit fails
//! with an error, the batch is rolled back and its units are run again one transaction each,
//! so one bad write costs only its own caller.
//!
//! SQLite has one writer, so it gets one lane; PostgreSQL gets several, each on its own
//! connection, so batches overlap with each other's commits.
//!
//! A [`Batcher`] goes one step further for writes of one kind: the items of a batch are
//! written together, by one function, with multi-row statements (recording delivery
//! outcomes: one statement for all their attempts, one for all their messages, …).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, StoreError, StoreResult};

/// Units in one transaction at most.
const MAX_BATCH: usize = 256;
/// Units waiting for a lane at most; submitters wait beyond that (backpressure).
const QUEUE: usize = 4096;

/// A unit of work as a lane sees it.
trait Unit: Send {
    /// Runs the unit's statements on `conn` (inside the batch's transaction) and keeps its
    /// result for later.
    fn apply<'c>(&'c mut self, conn: &'c mut AnyConnection) -> BoxFuture<'c, StoreResult<()>>;
    /// Hands the kept result to the caller (after the commit), or `error`.
    fn finish(self: Box<Self>, error: Option<StoreError>);
}

struct Pending<T, F> {
    work: F,
    result: Option<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Unit for Pending<T, F>
where
    T: Send,
    F: for<'c> FnMut(&'c mut AnyConnection) -> BoxFuture<'c, StoreResult<T>> + Send,
{
    fn apply<'c>(&'c mut self, conn: &'c mut AnyConnection) -> BoxFuture<'c, StoreResult<()>> {
        Box::pin(async move {
            let value = (self.work)(conn).await?;
            self.result = Some(value);
            Ok(())
        })
    }

    fn finish(self: Box<Self>, error: Option<StoreError>) {
        let outcome = match (error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(StoreError::Internal(anyhow::anyhow!(
                "a committed unit of work kept no result"
            ))),
        };
        // A caller that gave up (its request was dropped) no longer listens.
        let _ = self.reply.send(outcome);
    }
}

/// The commit pipeline of one store.
#[derive(Clone)]
pub(crate) struct Pipeline {
    queue: mpsc::Sender<Box<dyn Unit>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts `lanes` lanes writing through `writer`. They stop when the last handle of the
    /// pipeline is dropped.
    pub(crate) fn start(writer: AnyPool, backend: Backend, lanes: usize) -> Self {
        let (queue, incoming) = mpsc::channel::<Box<dyn Unit>>(QUEUE);
        let incoming = Arc::new(Mutex::new(incoming));
        for _ in 0..lanes.max(1) {
            let lane = Lane {
                writer: writer.clone(),
                backend,
                incoming: incoming.clone(),
            };
            tokio::spawn(lane.run());
        }
        Self { queue }
    }

    /// Runs `work` in the next batch; its result once that batch is committed. `work` may
    /// run more than once (a batch that failed is run again unit by unit), so it must build
    /// its writes from what it captured, and write all of them or none.
    pub(crate) async fn submit<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut AnyConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let unit = Box::new(Pending {
            work,
            result: None,
            reply,
        });
        self.queue
            .send(unit)
            .await
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("the commit pipeline stopped")))?;
        result
            .await
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("the commit pipeline stopped")))?
    }
}

struct Lane {
    writer: AnyPool,
    backend: Backend,
    incoming: Arc<Mutex<mpsc::Receiver<Box<dyn Unit>>>>,
}

impl Lane {
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
                        Ok(unit) => batch.push(unit),
                        Err(_) => break,
                    }
                }
                batch
            };
            self.commit(batch).await;
        }
    }

    async fn commit(&self, mut batch: Vec<Box<dyn Unit>>) {
        match self.transaction(&mut batch).await {
            Ok(()) => batch.into_iter().for_each(|u| u.finish(None)),
            Err(e) if batch.len() == 1 => {
                if let Some(unit) = batch.pop() {
                    unit.finish(Some(e));
                }
            }
            Err(_) => {
                for unit in batch {
                    let mut alone = vec![unit];
                    let error = self.transaction(&mut alone).await.err();
                    if let Some(unit) = alone.pop() {
                        unit.finish(error);
                    }
                }
            }
        }
    }

    async fn transaction(&self, units: &mut [Box<dyn Unit>]) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = match self.backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        for unit in units.iter_mut() {
            unit.apply(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Group commit of writes of one kind: the items gathered into a batch are written by one
/// call of the batch's writer function, in one transaction.
pub(crate) struct Batcher<I> {
    queue: mpsc::Sender<(I, oneshot::Sender<StoreResult<()>>)>,
}

impl<I> Clone for Batcher<I> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I> std::fmt::Debug for Batcher<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Writes a batch of items on a connection inside the batch's transaction.
pub(crate) type WriteBatch<I> =
    for<'c> fn(&'c mut AnyConnection, Backend, &'c [I]) -> BoxFuture<'c, StoreResult<()>>;

impl<I: Send + Sync + 'static> Batcher<I> {
    /// One lane writing batches with `write` through `writer`; it stops when the last
    /// handle is dropped.
    pub(crate) fn start(writer: AnyPool, backend: Backend, write: WriteBatch<I>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(I, oneshot::Sender<StoreResult<()>>)>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                match write_in_transaction(&writer, backend, write, &items).await {
                    Ok(()) => {
                        for reply in replies {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Err(e) if items.len() == 1 => {
                        if let Some(reply) = replies.into_iter().next() {
                            let _ = reply.send(Err(e));
                        }
                    }
                    // One bad item costs only its own caller: each again, alone.
                    Err(_) => {
                        for (item, reply) in items.iter().zip(replies) {
                            let alone = std::slice::from_ref(item);
                            let _ = reply
                                .send(write_in_transaction(&writer, backend, write, alone).await);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Writes `item` in the next batch; returns once that batch is committed.
    pub(crate) async fn submit(&self, item: I) -> StoreResult<()> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Internal(anyhow::anyhow!("the commit pipeline stopped"));
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn write_in_transaction<I>(
    writer: &AnyPool,
    backend: Backend,
    write: WriteBatch<I>,
    items: &[I],
) -> StoreResult<()> {
    let mut conn = writer.acquire().await?;
    let mut tx = match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    };
    write(&mut tx, backend, items).await?;
    tx.commit().await?;
    Ok(())
}
