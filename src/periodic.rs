//! Work that comes round on a timer rather than from a queue, each in one process at a time
//! (its [`Singleton`]; another process takes it over when that one dies): the deadline
//! scanner, which announces deadlines coming due, and the retention sweeper, which erases
//! restricted data subjects whose retention ended; the partition keeper (PostgreSQL's
//! monthly partitions of the history, `store::partitions`); and the connectors' syncs (built
//! in `lib.rs`, woken early when a sync is asked for).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tracing::Instrument;

use crate::app::Services;
use crate::store::Store;
use crate::store::singleton::{Singleton, Work};

/// How often a process looks for work of each kind.
pub const EVERY: Duration = Duration::from_secs(10);
/// How often the partition keeper looks (it makes months ahead, so this is no deadline).
pub const PARTITIONS_EVERY: Duration = Duration::from_secs(3_600);

type Task = Box<dyn Fn() -> BoxFuture<'static, anyhow::Result<usize>> + Send + Sync>;

/// One kind of periodic work, run where its singleton is held.
pub struct Periodic {
    singleton: Singleton,
    every: Duration,
    task: Task,
    /// Wakes it before its time (a connector's sync asked for).
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Periodic {
    pub fn new(store: &Store, work: Work, every: Duration, task: Task) -> Self {
        Self {
            singleton: Singleton::new(store, work),
            every,
            task,
            wake: None,
        }
    }

    /// Runs also whenever `wake` is notified.
    pub fn woken_by(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn work(&self) -> Work {
        self.singleton.work()
    }

    /// Does the work once if this process holds it: `Some(items)` it handled, `None` when
    /// another process holds it. Tests drive periodic work with this.
    pub async fn run_once(&self) -> anyhow::Result<Option<usize>> {
        let work = self.work().name();
        if !crate::telemetry::LEADS.record(work, self.singleton.held().await) {
            return Ok(None);
        }
        let span = tracing::info_span!("periodic", work);
        (self.task)().instrument(span).await.map(Some)
    }

    /// Runs every `every` until `stop` says so.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::warn!(
                    work = self.work().name(),
                    error = format!("{e:#}"),
                    "periodic work failed"
                );
            }
            let woken = async {
                match &self.wake {
                    Some(wake) => wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = woken => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// The periodic work of an application: the deadline scanner, the retention sweeper, the
/// inbox's sweeper and, on PostgreSQL, the partition keeper.
pub fn all(
    store: &Store,
    services: &Services,
    deadline_warning: Duration,
    history_retention: Option<Duration>,
) -> Vec<Arc<Periodic>> {
    let messaging = services.messaging.clone();
    let subjects = services.subjects.clone();
    let inbound = services.inbound.clone();
    let mut all = vec![
        Arc::new(Periodic::new(
            store,
            Work::DeadlineScanner,
            EVERY,
            Box::new(move || {
                let messaging = messaging.clone();
                Box::pin(async move { Ok(messaging.announce_deadlines(deadline_warning).await?) })
            }),
        )),
        Arc::new(Periodic::new(
            store,
            Work::RetentionSweeper,
            EVERY,
            Box::new(move || {
                let subjects = subjects.clone();
                Box::pin(async move { Ok(subjects.sweep().await?) })
            }),
        )),
        Arc::new(Periodic::new(
            store,
            Work::InboxSweeper,
            Duration::from_secs(60),
            Box::new(move || {
                let inbound = inbound.clone();
                Box::pin(async move { Ok(inbound.sweep_inbox().await?) })
            }),
        )),
    ];
    if store.backend() == crate::store::Backend::Postgres {
        let system = store.system();
        all.push(Arc::new(Periodic::new(
            store,
            Work::PartitionKeeper,
            PARTITIONS_EVERY,
            Box::new(move || {
                let system = system.clone();
                Box::pin(async move {
                    let kept = system
                        .keep_partitions(system.now(), history_retention)
                        .await?;
                    if !kept.made.is_empty() || !kept.dropped.is_empty() {
                        tracing::info!(
                            made = kept.made.len(),
                            moved = kept.moved,
                            dropped = kept.dropped.len(),
                            "history partitions kept"
                        );
                    }
                    Ok(kept.made.len() + kept.dropped.len())
                })
            }),
        )));
    }
    all
}
