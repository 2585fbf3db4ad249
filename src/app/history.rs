//! Reading what was said on a case: its messages, their delivery reports and its threads.
//! Every read names the actor; what it may not see is `NotFound`.

use super::messaging::Messaging;
use super::{AppError, AppResult};
use crate::domain::message::MessageStatus;
use crate::domain::party::Actor;
use crate::domain::policy::Evidence;
use crate::domain::{CaseId, MessageId, ThreadId};
use crate::store::{MessageFilter, MessageView, Page, StatusEvent, ThreadMessage, ThreadView};

/// A message's status, the last policy decision on it and every recorded event.
pub struct DeliveryReport {
    pub status: MessageStatus,
    pub evidence: Option<Evidence>,
    pub events: Vec<StatusEvent>,
}

impl Messaging {
    /// A case's messages that match `filter`, a page at a time, and how many match in all.
    #[tracing::instrument(skip_all)]
    pub async fn messages(
        &self,
        actor: &Actor,
        case: &CaseId,
        filter: MessageFilter,
    ) -> AppResult<(Page<MessageView>, i64)> {
        self.messages
            .list_messages(actor, case, filter)
            .await?
            .ok_or(AppError::NotFound("case"))
    }

    /// One message with its body.
    #[tracing::instrument(skip_all)]
    pub async fn message(&self, actor: &Actor, id: &MessageId) -> AppResult<MessageView> {
        self.messages
            .get_message(actor, id)
            .await?
            .ok_or(AppError::NotFound("message"))
    }

    #[tracing::instrument(skip_all)]
    pub async fn delivery_report(
        &self,
        actor: &Actor,
        id: &MessageId,
    ) -> AppResult<DeliveryReport> {
        let (status, evidence, events) = self
            .messages
            .delivery_report(actor, id.as_str())
            .await?
            .ok_or(AppError::NotFound("message"))?;
        Ok(DeliveryReport {
            status,
            evidence,
            events,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn threads(&self, actor: &Actor, case: &CaseId) -> AppResult<Vec<ThreadView>> {
        self.messages
            .list_threads(actor, case)
            .await?
            .ok_or(AppError::NotFound("case"))
    }

    #[tracing::instrument(skip_all)]
    pub async fn thread(&self, actor: &Actor, id: &ThreadId) -> AppResult<Vec<ThreadMessage>> {
        self.messages
            .thread_messages(actor, id)
            .await?
            .ok_or(AppError::NotFound("thread"))
    }
}
