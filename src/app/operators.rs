//! What operators do to the delivery queue: list its work, retry a failed message, cancel a
//! queued one. A change that makes work wakes the delivery worker.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{AppError, AppResult};
use crate::domain::clock::SharedClock;
use crate::domain::message::JobState;
use crate::domain::party::Actor;
use crate::domain::{CaseId, MessageId};
use crate::store::operators::{JobView, NotNow};
use crate::store::{MessageView, Page, Store};

/// A change's outcome as the store reports it: `None` for nothing the actor may see,
/// `Err(NotNow)` for a state the change does not apply to.
pub fn settled(
    outcome: Option<Result<(), NotNow>>,
    what: &'static str,
    refusal: &str,
) -> AppResult<()> {
    match outcome {
        None => Err(AppError::NotFound(what)),
        Some(Err(n)) => Err(not_now(refusal, n)),
        Some(Ok(())) => Ok(()),
    }
}

/// 409 `invalid_state`: what cannot be done, and the state it is in.
pub fn not_now(refusal: &str, n: NotNow) -> AppError {
    let NotNow::State(status) = n;
    AppError::InvalidState(format!("{refusal}; it is {status}"))
}

#[derive(Clone)]
pub struct Operators {
    messages: crate::store::Messages,
    queue: crate::store::Queue,
    clock: SharedClock,
    /// Wakes the delivery worker when a message is queued again.
    wake: Arc<Notify>,
}

impl Operators {
    pub fn new(store: &Store, clock: SharedClock, wake: Arc<Notify>) -> Self {
        Self {
            messages: store.messages(),
            queue: store.queue(),
            clock,
            wake,
        }
    }

    /// Delivery work in `state`, newest first, with every attempt.
    #[tracing::instrument(skip_all)]
    pub async fn jobs(
        &self,
        state: JobState,
        case: Option<&CaseId>,
        cursor: Option<&str>,
        limit: i64,
    ) -> AppResult<Page<JobView>> {
        Ok(self
            .queue
            .list_jobs(state, case, cursor, limit, self.clock.now())
            .await?)
    }

    /// Queues a `failed` message again, with the same `Message-ID`.
    #[tracing::instrument(skip_all)]
    pub async fn retry(&self, actor: &Actor, id: &MessageId) -> AppResult<MessageView> {
        let outcome = self
            .queue
            .retry_message(actor, id.as_str(), self.clock.now())
            .await?;
        settled(outcome, "message", "only a failed message can be retried")?;
        self.wake.notify_one();
        self.message(actor, id).await
    }

    /// Stops a `queued` message: it ends `cancelled`.
    #[tracing::instrument(skip_all)]
    pub async fn cancel(&self, actor: &Actor, id: &MessageId) -> AppResult<MessageView> {
        let outcome = self
            .queue
            .cancel_message(actor, id.as_str(), self.clock.now())
            .await?;
        settled(outcome, "message", "only a queued message can be cancelled")?;
        self.message(actor, id).await
    }

    async fn message(&self, actor: &Actor, id: &MessageId) -> AppResult<MessageView> {
        self.messages
            .get_message(actor, id)
            .await?
            .ok_or(AppError::NotFound("message"))
    }
}
