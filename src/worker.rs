//! The one queue engine. A [`Worker`] claims due items of one queue with a lease, hands each
//! to its [`Job`] handler, renews the lease while the attempt runs (a slow peer never lets
//! another worker claim the same item), and sleeps until the next item is due or it is
//! woken. An attempt holds one of the worker's slots until its peer has answered
//! ([`free_slot`]); its outcome is committed after that, the item still leased. Message deliveries and webhook deliveries both run on it; they differ only in
//! what one attempt does. Retries follow a [`Backoff`] schedule with jitter. Time comes from
//! the injected clock, so tests can stand it still or move it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::domain::clock::SharedClock;
use crate::domain::time::{Micros, duration_micros as micros};
use crate::store::Store;
use crate::store::queue::{Claim, QueueTable};

tokio::task_local! {
    /// The worker slot the current attempt holds.
    static SLOT: std::cell::RefCell<Option<tokio::sync::OwnedSemaphorePermit>>;
}

/// Gives the current attempt's slot back to its worker. A job calls it once its peer has
/// answered: the worker then claims more while this attempt's outcome is committed (the item
/// stays leased until it is). Outside a running worker (`run_once`) it does nothing.
pub fn free_slot() {
    let _ = SLOT.try_with(|slot| slot.borrow_mut().take());
}

/// What one queue does with a claimed item.
pub trait Job: Send + Sync + 'static {
    /// The queue's table.
    const QUEUE: QueueTable;
    /// For logs.
    const NAME: &'static str;

    /// Work to do before each claim (the webhook dispatcher turns new events into items).
    fn prepare(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Reads what the claimed items need, all at once, before each is attempted (one query
    /// for the batch instead of one per item); an item it misses reads its own.
    fn preload(&self, _claims: &[Claim]) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Attempts the item and records where it goes next. `Err` leaves the item leased: its
    /// lease runs out and it is attempted again.
    fn handle(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a job read for a claim's items at once ([`Job::preload`]), by item id, until each
/// item's attempt takes its own.
pub struct Preloaded<T> {
    items: std::sync::Mutex<std::collections::HashMap<String, T>>,
    /// Attempts that found theirs here.
    taken: std::sync::atomic::AtomicUsize,
}

impl<T> Default for Preloaded<T> {
    fn default() -> Self {
        Self {
            items: std::sync::Mutex::default(),
            taken: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl<T> Preloaded<T> {
    pub fn keep(&self, items: impl IntoIterator<Item = (String, T)>) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(items);
    }

    /// The item's preloaded value, once.
    pub fn take(&self, id: &str) -> Option<T> {
        let found = self
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if found.is_some() {
            self.taken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }

    /// How many attempts found theirs preloaded (for tests).
    pub fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How a worker runs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Items attempted at once.
    pub concurrency: usize,
    /// How long a claim holds; renewed every third of it while an attempt runs.
    pub lease: Duration,
    /// The longest sleep when idle.
    pub idle: Duration,
}

pub struct Worker<J: Job> {
    job: Arc<J>,
    queue: crate::store::Queue,
    clock: SharedClock,
    settings: WorkerSettings,
    owner: String,
    wake: Arc<Notify>,
}

impl<J: Job> Worker<J> {
    pub fn new(
        job: J,
        store: &Store,
        clock: SharedClock,
        settings: WorkerSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            job: Arc::new(job),
            queue: store.queue(),
            clock,
            settings: WorkerSettings {
                concurrency: settings.concurrency.max(1),
                ..settings
            },
            owner: crate::domain::prefixed_id("worker"),
            wake,
        }
    }

    pub fn job(&self) -> &J {
        &self.job
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<Claim>> {
        self.job.prepare().await?;
        let now = self.clock.now();
        let claims = self
            .queue
            .claim(
                J::QUEUE,
                &self.owner,
                i64::try_from(limit).unwrap_or(i64::MAX),
                now,
                now + micros(self.settings.lease),
            )
            .await?;
        if claims.len() > 1 {
            self.job.preload(&claims).await;
        }
        Ok(claims)
    }

    /// Claims what is due now (up to the concurrency) and attempts it; returns how many
    /// items it handled. Tests drive a queue with this instead of waiting for the loop.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let claims = self.claim(self.settings.concurrency).await?;
        let n = claims.len();
        futures_util::future::join_all(claims.into_iter().map(|c| self.attempt(c))).await;
        Ok(n)
    }

    /// One attempt, with its lease renewed until the handler is done.
    async fn attempt(&self, claim: Claim) {
        let span = tracing::info_span!(
            "attempt",
            queue = J::NAME,
            item = %claim.id,
            attempt = claim.attempts,
            otel.name = %format!("{} {}", J::NAME, claim.kind),
            otel.kind = "consumer",
        );
        crate::telemetry::continue_trace(&span, claim.trace_parent.as_deref());
        self.attempt_in_span(claim).instrument(span).await;
    }

    async fn attempt_in_span(&self, claim: Claim) {
        let handled = self.job.handle(&claim);
        tokio::pin!(handled);
        let every = (self.settings.lease / 3).max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let result = loop {
            tokio::select! {
                r = &mut handled => break r,
                _ = ticks.tick() => {
                    let until = self.clock.now() + micros(self.settings.lease);
                    match self.queue.renew_leases(J::QUEUE, &self.owner, std::slice::from_ref(&claim.id), until).await {
                        Ok(0) => tracing::warn!("lease lost while attempting"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = format!("{e}"), "renewing a lease failed"),
                    }
                }
            }
        };
        if let Err(e) = result {
            // The lease runs out and the item is attempted again.
            tracing::error!(error = format!("{e:#}"), "recording an attempt failed");
        }
    }

    /// Runs until `stop` turns true, then lets the attempts in flight finish.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut set: JoinSet<()> = JoinSet::new();
        tracing::info!(queue = J::NAME, worker = %self.owner, concurrency = self.settings.concurrency, "worker started");
        // Claims are taken in batches: with attempts in flight, the worker waits until a
        // quarter of its slots are free, so one claiming transaction serves several items.
        let batch = (self.settings.concurrency / 4).max(1);
        while !*stop.borrow() {
            while set.try_join_next().is_some() {}
            let free = slots.available_permits();
            // Attempts whose peers have answered and whose outcomes are being written hold no
            // slot, but they are bounded too: at most as many again as there are slots.
            let room = (2 * self.settings.concurrency).saturating_sub(set.len());
            if (free < batch || room < batch) && !set.is_empty() {
                // Slots come back when attempts end or when their peers have answered.
                let wanted = u32::try_from(batch).unwrap_or(u32::MAX);
                tokio::select! {
                    _ = set.join_next() => {},
                    _ = stop.changed() => {},
                    Ok(permits) = slots.clone().acquire_many_owned(wanted), if room >= batch => drop(permits),
                }
                continue;
            }
            let free = free.min(room);
            let claimed = if free == 0 {
                Vec::new()
            } else {
                self.claim(free).await.unwrap_or_else(|e| {
                    tracing::error!(queue = J::NAME, error = format!("{e:#}"), "claiming failed");
                    Vec::new()
                })
            };
            if claimed.is_empty() {
                let idle = self.idle_wait().await;
                tokio::select! {
                    () = self.wake.notified() => {},
                    () = tokio::time::sleep(idle) => {},
                    _ = stop.changed() => {},
                    Some(_) = set.join_next(), if !set.is_empty() => {},
                }
                continue;
            }
            for claim in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                set.spawn(
                    SLOT.scope(std::cell::RefCell::new(Some(permit)), async move {
                        this.attempt(claim).await;
                    }),
                );
            }
        }
        tracing::info!(queue = J::NAME, in_flight = set.len(), "worker stopping");
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while set.join_next().await.is_some() {}
        })
        .await;
    }

    /// How long to wait for work: until the next item is due, at most `idle`.
    async fn idle_wait(&self) -> Duration {
        let max = self.settings.idle;
        match self.queue.next_due(J::QUEUE).await {
            Ok(Some(due)) => {
                Duration::from_micros(u64::try_from(due - self.clock.now()).unwrap_or(0))
                    .clamp(Duration::from_millis(5), max)
            }
            _ => max,
        }
    }
}

/// When to try again after a failed attempt: the schedule's delay for that attempt, ±20 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: Vec<Duration>,
}

impl Backoff {
    pub fn new(schedule: Vec<Duration>) -> Self {
        Self { schedule }
    }

    /// The time of the next attempt after attempt number `attempt` (1 for the first) failed
    /// at `now`: the peer's `Retry-After` where it gave one, else the schedule's step with
    /// jitter. `None` once the schedule is used up.
    pub fn next(&self, attempt: i32, now: Micros, retry_after: Option<Duration>) -> Option<Micros> {
        let index = usize::try_from(attempt - 1).ok()?;
        let base = self.schedule.get(index)?;
        let delay =
            retry_after.unwrap_or_else(|| base.mul_f64(rand::thread_rng().gen_range(0.8..1.2)));
        Some(now.saturating_add(micros(delay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_with_jitter_and_ends() {
        let b = Backoff::new(vec![Duration::from_secs(10), Duration::from_secs(100)]);
        for _ in 0..50 {
            let first = b.next(1, 0, None).unwrap();
            assert!((8_000_000..=12_000_000).contains(&first), "{first}");
            let second = b.next(2, 0, None).unwrap();
            assert!((80_000_000..=120_000_000).contains(&second), "{second}");
        }
        assert_eq!(b.next(3, 0, None), None);
        assert_eq!(
            b.next(1, 5, Some(Duration::from_secs(1))),
            Some(1_000_005),
            "a peer's Retry-After wins"
        );
    }
}
