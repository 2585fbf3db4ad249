//! Operability: whether the database answers, and the figures of the queues.

use crate::domain::clock::SharedClock;
use crate::domain::time::Micros;
use crate::store::Store;
use crate::store::operators::QueueFigures;

#[derive(Clone)]
pub struct Health {
    queue: crate::store::Queue,
    system: crate::store::System,
    clock: SharedClock,
}

/// The queues as read at `now`, with the database pool's use (connections, idle).
pub struct Figures {
    pub now: Micros,
    pub queues: QueueFigures,
    pub pool: (u32, usize),
}

impl Health {
    pub fn new(store: &Store, clock: SharedClock) -> Self {
        Self {
            queue: store.queue(),
            system: store.system(),
            clock,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.system.ping().await
    }

    #[tracing::instrument(skip_all)]
    pub async fn figures(&self) -> super::AppResult<Figures> {
        let now = self.clock.now();
        Ok(Figures {
            now,
            queues: self.queue.queue_figures(now).await?,
            pool: self.queue.pool_use(),
        })
    }
}
