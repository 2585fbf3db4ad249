//! Webhooks: a party's subscriptions to events, their deliveries, and sending deliveries
//! again. A target is checked where it points before it is taken (no private or local
//! address unless `PARLEY_WEBHOOK_ALLOW_PRIVATE`), and again at each send.

use super::operators::settled;
use super::webhook_target as target;
use super::{AppError, AppResult};
use crate::domain::clock::SharedClock;
use crate::domain::code::Code;
use crate::domain::event::EventType;
use crate::domain::party::Actor;
use crate::domain::signing;
use crate::domain::time::Micros;
use crate::domain::{DeliveryId, WebhookId};
use crate::store::{DeliveryView, Store, Webhook};

/// Deliveries listed per webhook, newest first.
const DELIVERIES_LISTED: i64 = 200;

#[derive(Clone)]
pub struct Webhooks {
    queue: crate::store::Queue,
    webhooks: crate::store::Webhooks,
    clock: SharedClock,
    /// `PARLEY_WEBHOOK_ALLOW_PRIVATE`.
    allow_private: bool,
}

impl Webhooks {
    pub fn new(store: &Store, clock: SharedClock, allow_private: bool) -> Self {
        Self {
            queue: store.queue(),
            webhooks: store.webhooks(),
            clock,
            allow_private,
        }
    }

    /// Subscribes `url` to `events`; answers the webhook and its signing secret, which is
    /// shown this once.
    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        actor: &Actor,
        url: &str,
        events: &[EventType],
    ) -> AppResult<(Webhook, String)> {
        target::check(url, self.allow_private)
            .await
            .map_err(|e| AppError::refused(Code::WebhookUrlNotAllowed, e))?;
        let secret = signing::new_secret();
        let hook = self
            .webhooks
            .create_webhook(actor, url, events, &secret)
            .await?;
        Ok((hook, secret))
    }

    #[tracing::instrument(skip_all)]
    pub async fn list(&self, actor: &Actor) -> AppResult<Vec<Webhook>> {
        Ok(self.webhooks.list_webhooks(actor).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete(&self, actor: &Actor, id: &WebhookId) -> AppResult<()> {
        if self.webhooks.delete_webhook(actor, id.as_str()).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("webhook"))
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn deliveries(&self, actor: &Actor, id: &WebhookId) -> AppResult<Vec<DeliveryView>> {
        self.webhooks
            .webhook_deliveries(actor, id.as_str(), DELIVERIES_LISTED)
            .await?
            .ok_or(AppError::NotFound("webhook"))
    }

    /// Sends a delivered or failed delivery again: it is pending now.
    #[tracing::instrument(skip_all)]
    pub async fn resend(
        &self,
        actor: &Actor,
        webhook: &WebhookId,
        delivery: &DeliveryId,
    ) -> AppResult<()> {
        let outcome = self
            .queue
            .resend_webhook_delivery(actor, webhook, delivery, self.clock.now())
            .await?;
        settled(
            outcome,
            "webhook delivery",
            "only a finished delivery can be sent again",
        )
    }

    /// Sends every failed delivery created since `since` again; answers how many.
    #[tracing::instrument(skip_all)]
    pub async fn recover(
        &self,
        actor: &Actor,
        webhook: &WebhookId,
        since: Micros,
    ) -> AppResult<u64> {
        self.queue
            .recover_webhook(actor, webhook, since, self.clock.now())
            .await?
            .ok_or(AppError::NotFound("webhook"))
    }
}
