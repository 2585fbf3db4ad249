//! Connectors to the systems agencies already use: an admin creates, changes, deletes and
//! syncs them; the connectors' own code (`src/connectors/`, the ways in and out) reads what
//! is due, hands what it brings in to [`Inbound`], and records how each sync ended. Mail of
//! the cases a mailbox connector serves leaves through it ([`MailboxRoutes`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use super::inbound::{Arrival, Inbound};
use super::{AppError, AppResult};
use crate::domain::code::Code;
use crate::domain::connector::{Carrier, ConnectorType, Kind, Settings};
use crate::domain::mail::Source;
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{ConnectorId, MessageId, PartyId};
use crate::store::{Connector, ConnectorChange, Ingested, NewConnector, Store, SyncEnd};

/// The longest name a connector may have.
const MAX_NAME: usize = 200;

/// A change an admin asks for; what is not given stays.
#[derive(Debug, Default)]
pub struct ConnectorPatch {
    pub name: Option<String>,
    /// `Some(None)`: serve every creditor's cases from now on.
    pub creditor_id: Option<Option<PartyId>>,
    pub settings: Option<Map<String, Value>>,
}

#[derive(Clone)]
pub struct Connectors {
    connectors: crate::store::Connectors,
    /// The CRMs' activities, counted on a CRM connector's answer.
    crm: crate::store::Crm,
    inbound: Inbound,
    /// Wakes the connectors' runner when a sync is asked for.
    wake: Arc<tokio::sync::Notify>,
}

fn admin_only(actor: &Actor) -> AppResult<()> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden("only an admin manages connectors"))
    }
}

fn checked_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::refused(
            Code::ValidationFailed,
            format!("name must be 1 to {MAX_NAME} characters, none of them control characters"),
        ));
    }
    Ok(name.to_string())
}

impl Connectors {
    pub fn new(store: &Store, inbound: Inbound) -> Self {
        Self {
            connectors: store.connectors(),
            crm: store.crm(),
            inbound,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What the runner waits on between rounds: a sync asked for wakes it.
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        actor: &Actor,
        kind: ConnectorType,
        name: &str,
        creditor_id: Option<PartyId>,
        settings: &Map<String, Value>,
    ) -> AppResult<Connector> {
        admin_only(actor)?;
        let new = NewConnector {
            kind,
            name: checked_name(name)?,
            creditor_id,
            settings: Settings::check(kind, settings, None)?,
        };
        let created = self.connectors.create_connector(actor, new).await?;
        self.wake.notify_one();
        Ok(created)
    }

    #[tracing::instrument(skip_all)]
    pub async fn list(&self, actor: &Actor) -> AppResult<Vec<Connector>> {
        admin_only(actor)?;
        let mut all = self.connectors.connectors().await?;
        for c in all.iter_mut().filter(|c| c.kind.is_crm()) {
            c.activities = self.crm.activity_counts(&c.id).await?;
        }
        Ok(all)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, actor: &Actor, id: &ConnectorId) -> AppResult<Connector> {
        admin_only(actor)?;
        let mut c = self
            .connectors
            .connector(id)
            .await?
            .ok_or(AppError::NotFound("connector"))?;
        if c.kind.is_crm() {
            c.activities = self.crm.activity_counts(&c.id).await?;
        }
        Ok(c)
    }

    /// Changes a connector: settings merged into what it has (a secret given as `"***"`
    /// stays); another mailbox starts its sync from the beginning. It is tried again at once.
    #[tracing::instrument(skip_all)]
    pub async fn update(
        &self,
        actor: &Actor,
        id: &ConnectorId,
        patch: ConnectorPatch,
    ) -> AppResult<Connector> {
        let before = self.get(actor, id).await?;
        let settings = match &patch.settings {
            Some(given) => Settings::check(before.kind, given, Some(&before.settings))?,
            None => before.settings.clone(),
        };
        // Another mailbox, tenant or service: its cursor means nothing there.
        let restart = before.kind.fields().iter().any(|f| {
            (f.kind == Kind::Url || f.name == before.kind.mailbox_field() || f.name == "tenantId")
                && settings.text(f.name) != before.settings.text(f.name)
        });
        let change = ConnectorChange {
            name: match &patch.name {
                Some(n) => checked_name(n)?,
                None => before.name.clone(),
            },
            creditor_id: patch.creditor_id.unwrap_or(before.creditor_id),
            restart,
            settings,
        };
        let changed = self
            .connectors
            .update_connector(actor, id, change)
            .await?
            .ok_or(AppError::NotFound("connector"))?;
        self.wake.notify_one();
        Ok(changed)
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete(&self, actor: &Actor, id: &ConnectorId) -> AppResult<()> {
        admin_only(actor)?;
        if self.connectors.delete_connector(actor, id).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("connector"))
        }
    }

    /// Asks for a sync now: the runner takes it at once where it runs.
    #[tracing::instrument(skip_all)]
    pub async fn request_sync(&self, actor: &Actor, id: &ConnectorId) -> AppResult<Connector> {
        admin_only(actor)?;
        if !self.connectors.request_sync(actor, id).await? {
            return Err(AppError::NotFound("connector"));
        }
        self.wake.notify_one();
        self.get(actor, id).await
    }

    /// The connectors whose sync is due at `now`: asked for, never tried, or last tried
    /// `every` ago or longer.
    pub async fn due(&self, now: Micros, every: Micros) -> AppResult<Vec<Connector>> {
        Ok(self
            .connectors
            .connectors()
            .await?
            .into_iter()
            .filter(|c| {
                c.sync_requested_at.is_some()
                    || c.last_attempt_at.is_none()
                    // A CRM's round only tries its credentials: when it is new or asked.
                    || (!c.kind.is_crm() && c.last_attempt_at.is_some_and(|at| at + every <= now))
            })
            .filter(|c| c.kind.is_mailbox() || c.kind.is_drive() || c.kind.is_crm())
            .collect())
    }

    /// Every connector, for the runner and the routes of outbound mail.
    pub async fn all(&self) -> AppResult<Vec<Connector>> {
        Ok(self.connectors.connectors().await?)
    }

    /// Keeps how far a sync of `connector` (as it read it) came, between pages.
    pub async fn save_cursor(&self, connector: &Connector, cursor: &str) -> AppResult<()> {
        Ok(self
            .connectors
            .save_cursor(&connector.id, connector.updated_at, cursor)
            .await?)
    }

    /// Records how a sync of `connector` (as it read it) that started at `started` ended.
    pub async fn record_sync(
        &self,
        connector: &Connector,
        started: Micros,
        end: &SyncEnd,
    ) -> AppResult<()> {
        Ok(self
            .connectors
            .record_sync(&connector.id, (started, connector.updated_at), end)
            .await?)
    }

    /// Takes in one mail a mailbox connector found (`remote_id` its id there), once: into
    /// the same matching as SMTP and IMAP, only to the cases the connector serves. `None`:
    /// it was taken in before.
    pub async fn receive(
        &self,
        connector: &Connector,
        remote_id: &str,
        raw: &[u8],
    ) -> AppResult<Option<Ingested>> {
        let source = match connector.kind {
            ConnectorType::Microsoft365Mail => Source::Microsoft365,
            ConnectorType::Gmail => Source::Gmail,
            // An archive takes nothing in.
            ConnectorType::Archive
            | ConnectorType::Sharepoint
            | ConnectorType::GoogleDrive
            | ConnectorType::Box
            | ConnectorType::Dropbox
            | ConnectorType::Salesforce
            | ConnectorType::Dynamics365
            | ConnectorType::Hubspot => {
                return Ok(None);
            }
        };
        let arrival = Arrival {
            scope: connector.creditor_id.clone(),
            origin: Some((connector.id.clone(), remote_id.to_string())),
            ..Arrival::default()
        };
        // Taken is recorded with the mail, in its transaction.
        match self.inbound.receive_email(source, raw, arrival).await {
            Ok(i) => {
                if let Ingested::Matched { message_id, .. } = &i {
                    self.carried(message_id, connector).await?;
                }
                Ok(Some(i))
            }
            // Not mail at all: nothing to keep, and nothing to try again.
            Err(AppError::Refused { .. }) => {
                self.connectors
                    .record_taken(&connector.id, remote_id)
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Records that the connector's mailbox carried the message.
    pub async fn carried(&self, message: &MessageId, connector: &Connector) -> AppResult<()> {
        let carrier = Carrier {
            connector_id: connector.id.clone(),
            kind: connector.kind,
        };
        Ok(self.connectors.mark_carried(message, &carrier).await?)
    }

    /// Whether the connector took in the remote item before.
    pub async fn taken(&self, connector: &ConnectorId, remote_id: &str) -> AppResult<bool> {
        Ok(self.connectors.taken(connector, remote_id).await?)
    }
}

/// What became of a message handed to a mailbox.
#[derive(Debug)]
pub enum Handover {
    /// Accepted; the service's id where it gives one.
    Sent { provider_id: Option<String> },
    /// Worth trying again (throttled, the service down, a token not to be had now).
    Transient {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// Will not go through this way.
    Permanent(String),
}

/// The mailbox that carries a creditor's mail, when a connector serves its cases.
#[derive(Debug, Clone)]
pub struct Route {
    pub connector: ConnectorId,
    /// The address the mail is from: the mailbox's own.
    pub from: Option<String>,
}

/// Mail of the cases a mailbox connector serves leaves through it: the delivery worker asks
/// here first, and sends by SMTP only when no connector serves the case's creditor.
pub trait MailboxRoutes: Send + Sync {
    /// The mailbox serving `creditor`'s cases (one for that creditor before one for all).
    fn route<'a>(&'a self, creditor: &'a PartyId) -> BoxFuture<'a, Option<Route>>;
    /// Sends the exact bytes of a message through the mailbox (and records that it did).
    fn send<'a>(
        &'a self,
        route: &'a Route,
        message: &'a MessageId,
        raw: &'a [u8],
    ) -> BoxFuture<'a, Handover>;
}

/// What became of a case's copies on a document system when its debtor was erased.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteCopy {
    pub connector_id: ConnectorId,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
    pub case_id: crate::domain::CaseId,
    /// `deleted`, or `failed` (tried again every round until it is deleted; the connector
    /// shows why).
    pub status: crate::domain::connector::RemoteCopyStatus,
}

/// The document systems (the drive connectors): the `mirror_document` job, and the copies
/// an erasure deletes. The connectors' runtime does it; the delivery worker runs the job
/// and the data subjects' erasure asks for the deletion.
pub trait DocumentSystems: Send + Sync {
    /// Mirrors the document to every drive connector serving its case that has no whole
    /// copy yet; an error fails the job, which the queue retries.
    fn mirror<'a>(
        &'a self,
        document: &'a crate::domain::DocumentId,
    ) -> BoxFuture<'a, AppResult<()>>;
    /// Deletes the case folders of these (erased) cases on every drive connector that has
    /// one; what failed stays to be tried again.
    fn erase<'a>(&'a self, cases: &'a [crate::domain::CaseId]) -> BoxFuture<'a, Vec<RemoteCopy>>;
}
