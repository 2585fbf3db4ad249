//! Connectors: parley's ways in and out through the systems agencies already use. One
//! module per service, each behind the small traits below ([`MailboxSource`]: "what is new
//! since this cursor, give me its MIME"; [`MailTransport`]: "send these exact bytes").
//! [`Runtime`] syncs the connectors that are due (one process at a time: the periodic work
//! `connectors`), hands what they bring in to `app::connectors` (the same matching as SMTP
//! and IMAP), and carries the outbound mail of the cases a mailbox serves.

pub mod box_com;
pub mod crm;
pub mod drives;
pub mod dropbox;
pub mod dynamics;
pub mod gmail;
pub mod google_drive;
pub mod graph;
pub mod hubspot;
pub mod oauth;
pub mod salesforce;
pub mod sharepoint;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::app::connectors::{Connectors, Handover, MailboxRoutes, Route};
use crate::domain::clock::SharedClock;
use crate::domain::connector::ConnectorType;
use crate::domain::time::{Micros, duration_micros};
use crate::domain::{ConnectorId, PartyId};
use crate::store::{Connector, SyncEnd};
use web::Failure;

/// How often a connector's mailbox is read when nothing asks for it sooner.
pub const POLL_EVERY: Duration = Duration::from_secs(60);
/// The most mail one sync of a connector takes; the next round goes on from there.
const ROUND: usize = 1_000;
/// Mails of a page read from the service at once (Graph allows four requests at a time per
/// mailbox); each is at most 64 MiB.
const FETCH_AHEAD: usize = 4;
/// The most pages one sync of a connector reads.
const MAX_PAGES: usize = 100;
/// How long the list of connectors serving outbound mail is kept before it is read again.
const ROUTES_KEPT: Duration = Duration::from_secs(5);

/// What is new in a mailbox since a cursor.
#[derive(Debug, Default)]
pub struct Changes {
    /// The service's ids of the new mail, oldest first where the service says.
    pub ids: Vec<String>,
    /// Where the next call goes on from.
    pub cursor: Option<String>,
    /// More is waiting beyond this page.
    pub more: bool,
}

/// A mailbox parley reads.
pub trait MailboxSource {
    /// What is new since `cursor` (none: since the connector was made).
    fn changes(&self, cursor: Option<&str>) -> impl Future<Output = Result<Changes, Failure>>;
    /// The exact RFC 5322 bytes of one mail.
    fn fetch(&self, id: &str) -> impl Future<Output = Result<Vec<u8>, Failure>>;
}

/// A mailbox parley sends through.
pub trait MailTransport {
    /// Sends these exact bytes; the service's id of the sent mail where it gives one.
    fn send(&self, raw: &[u8]) -> impl Future<Output = Result<Option<String>, Failure>>;
}

/// A connector's client, built from its settings.
pub(crate) enum Client {
    Graph(graph::Graph),
    Gmail(gmail::Gmail),
    Sharepoint(sharepoint::Sharepoint),
    GoogleDrive(google_drive::GoogleDrive),
    Box(box_com::BoxCom),
    Dropbox(dropbox::Dropbox),
}

impl Client {
    /// The client of a mailbox or a document system; none for an archive (its work is
    /// `app::archive`'s).
    fn new(http: reqwest::Client, c: &Connector) -> Option<Self> {
        let since = c.created_at / 1_000_000 - 3600;
        match c.kind {
            ConnectorType::Microsoft365Mail => Some(Self::Graph(graph::Graph::new(
                http,
                &c.settings,
                chrono::DateTime::from_timestamp(since, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            ))),
            ConnectorType::Gmail => Some(Self::Gmail(gmail::Gmail::new(http, &c.settings, since))),
            ConnectorType::Sharepoint => Some(Self::Sharepoint(sharepoint::Sharepoint::new(
                http,
                &c.settings,
            ))),
            ConnectorType::GoogleDrive => Some(Self::GoogleDrive(google_drive::GoogleDrive::new(
                http,
                &c.settings,
            ))),
            ConnectorType::Box => Some(Self::Box(box_com::BoxCom::new(http, &c.settings))),
            ConnectorType::Dropbox => Some(Self::Dropbox(dropbox::Dropbox::new(http, &c.settings))),
            // An archive's work is `app::archive`'s, a CRM's `connectors::crm`'s.
            ConnectorType::Archive
            | ConnectorType::Salesforce
            | ConnectorType::Dynamics365
            | ConnectorType::Hubspot => None,
        }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes, Failure> {
        match self {
            Self::Graph(g) => g.changes(cursor).await,
            Self::Gmail(g) => g.changes(cursor).await,
            Self::Sharepoint(_) | Self::GoogleDrive(_) | Self::Box(_) | Self::Dropbox(_) => {
                Err(not_a_mailbox())
            }
        }
    }

    async fn fetch(&self, id: &str) -> Result<Vec<u8>, Failure> {
        match self {
            Self::Graph(g) => g.fetch(id).await,
            Self::Gmail(g) => g.fetch(id).await,
            Self::Sharepoint(_) | Self::GoogleDrive(_) | Self::Box(_) | Self::Dropbox(_) => {
                Err(not_a_mailbox())
            }
        }
    }

    async fn send(&self, raw: &[u8]) -> Result<Option<String>, Failure> {
        match self {
            Self::Graph(g) => g.send(raw).await,
            Self::Gmail(g) => g.send(raw).await,
            Self::Sharepoint(_) | Self::GoogleDrive(_) | Self::Box(_) | Self::Dropbox(_) => {
                Err(not_a_mailbox())
            }
        }
    }
}

fn not_a_mailbox() -> Failure {
    Failure::Permanent("the connector is a document system, not a mailbox".into())
}

/// What one sync of one connector did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Mail taken in (new to parley, or a duplicate of what it had by Message-ID).
    pub taken: usize,
    /// Mail seen before by this connector and skipped.
    pub skipped: usize,
    /// It stopped at the round's limit with more waiting.
    pub more: bool,
}

pub struct Runtime {
    connectors: Connectors,
    /// The document systems' folders and files.
    drives: crate::app::drives::Drives,
    http: reqwest::Client,
    clock: SharedClock,
    /// Each connector's client (and with it its token), rebuilt when its settings change.
    clients: std::sync::Mutex<HashMap<ConnectorId, (Micros, Arc<Client>)>>,
    /// The connectors that carry outbound mail, read again every few seconds.
    routes: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Vec<Connector>>)>>,
    /// One sync of a connector at a time in this process.
    syncing: tokio::sync::Mutex<()>,
    /// The CRMs' clients: a sync tries their credentials, an erasure deletes their
    /// activities.
    crms: Arc<crm::Crms>,
}

impl Runtime {
    pub fn new(
        connectors: Connectors,
        drives: crate::app::drives::Drives,
        crms: Arc<crm::Crms>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            connectors,
            drives,
            crms,
            http: web::client()?,
            clock,
            clients: Default::default(),
            routes: Default::default(),
            syncing: Default::default(),
        })
    }

    /// What the periodic work waits on besides its timer: a sync asked for.
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.connectors.wake()
    }

    fn client(&self, c: &Connector) -> Option<Arc<Client>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&c.id) {
            // A reader with an older copy of the connector keeps the newer client.
            Some((version, client)) if *version >= c.updated_at => Some(client.clone()),
            _ => {
                let client = Arc::new(Client::new(self.http.clone(), c)?);
                clients.insert(c.id.clone(), (c.updated_at, client.clone()));
                Some(client)
            }
        }
    }

    /// Syncs every connector that is due; how many mails they took in.
    pub async fn sync_due(&self) -> anyhow::Result<usize> {
        let _one = self.syncing.lock().await;
        let now = self.clock.now();
        let due = self
            .connectors
            .due(now, duration_micros(POLL_EVERY))
            .await?;
        let mut taken = 0;
        let mut more = false;
        for connector in due {
            let synced = self.sync(&connector).await?;
            taken += synced.taken;
            more |= synced.more;
        }
        if more {
            // A connector stopped at its round's limit: the next round follows at once.
            self.wake().notify_one();
        }
        Ok(taken)
    }

    /// One sync of one connector, its outcome recorded on it. An error is the database's:
    /// the service's failures are the connector's status.
    async fn sync(&self, c: &Connector) -> anyhow::Result<Synced> {
        let started = self.clock.now();
        if c.kind.is_crm() {
            return self.check_crm(c, started).await;
        }
        let Some(client) = self.client(c) else {
            return Ok(Synced::default());
        };
        let mut synced = Synced::default();
        let outcome = match &*client {
            Client::Sharepoint(_)
            | Client::GoogleDrive(_)
            | Client::Box(_)
            | Client::Dropbox(_) => self.sync_drive(c, &client, &mut synced).await,
            _ => self.read_mailbox(c, &client, &mut synced).await,
        };
        let end = match outcome {
            Ok(cursor) => SyncEnd::Done {
                cursor,
                items: synced.taken as i64,
                more: synced.more,
            },
            Err(Ok(failure)) => {
                let status = failure.status();
                tracing::warn!(connector = %c.id, kind = %c.kind, status = %status, "connector sync failed");
                SyncEnd::Failed {
                    status,
                    error: failure.describe(),
                    items: synced.taken as i64,
                }
            }
            Err(Err(e)) => return Err(e),
        };
        crate::telemetry::OUTCOMES.count(
            "connector",
            c.kind.as_str(),
            match end {
                SyncEnd::Done { .. } => "synced",
                SyncEnd::Failed { .. } => "failed",
            },
        );
        self.connectors.record_sync(c, started, &end).await?;
        Ok(synced)
    }

    /// A CRM's round: its credentials tried (its activities are the queue's work).
    async fn check_crm(&self, c: &Connector, started: Micros) -> anyhow::Result<Synced> {
        let Some(client) = self.crms.client(c) else {
            return Ok(Synced::default());
        };
        let end = match client.check().await {
            Ok(()) => SyncEnd::Done {
                cursor: None,
                items: 0,
                more: false,
            },
            Err(failure) => SyncEnd::Failed {
                status: failure.status(),
                error: failure.describe(),
                items: 0,
            },
        };
        self.connectors.record_sync(c, started, &end).await?;
        Ok(Synced::default())
    }

    /// Reads the mailbox from the connector's cursor: each page's new mail taken in, then
    /// the page's cursor kept, so a crash goes on from the last page (what it took twice is
    /// skipped by its remote id). A cursor the service forgot starts again from the
    /// beginning, once. Answers the cursor reached, or why it stopped.
    async fn read_mailbox(
        &self,
        c: &Connector,
        client: &Client,
        synced: &mut Synced,
    ) -> Result<Option<String>, Result<Failure, anyhow::Error>> {
        let mut cursor = c.cursor.clone();
        let mut restarted = false;
        let mut pages = 0;
        loop {
            pages += 1;
            let changes = match client.changes(cursor.as_deref()).await {
                Ok(changes) => changes,
                Err(Failure::Resync) if !restarted => {
                    tracing::info!(connector = %c.id, "the sync state expired: reading from the beginning");
                    restarted = true;
                    cursor = None;
                    continue;
                }
                Err(f) => return Err(Ok(f)),
            };
            self.take_page(c, client, &changes.ids, synced).await?;
            if let Some(next) = &changes.cursor {
                self.connectors
                    .save_cursor(c, next)
                    .await
                    .map_err(|e| Err(e.into()))?;
            }
            cursor = changes.cursor.or(cursor);
            if !changes.more {
                return Ok(cursor);
            }
            // Pages of nothing count too: a chain of empty pages ends the round as well.
            if synced.taken + synced.skipped >= ROUND || pages >= MAX_PAGES {
                synced.more = true;
                return Ok(cursor);
            }
        }
    }

    /// Takes in a page's mail that this connector did not take before: up to
    /// [`FETCH_AHEAD`] read from the service at once, each stored in the page's order.
    async fn take_page(
        &self,
        c: &Connector,
        client: &Client,
        ids: &[String],
        synced: &mut Synced,
    ) -> Result<(), Result<Failure, anyhow::Error>> {
        use futures_util::StreamExt;
        let db = |e: crate::app::AppError| Err(anyhow::Error::from(e));
        let mut fresh = Vec::new();
        for id in ids {
            if self.connectors.taken(&c.id, id).await.map_err(db)? {
                synced.skipped += 1;
            } else {
                fresh.push(id.clone());
            }
        }
        let mut fetched = futures_util::stream::iter(fresh)
            .map(|id: String| async move {
                let raw = client.fetch(&id).await;
                (id, raw)
            })
            .buffered(FETCH_AHEAD);
        while let Some((id, raw)) = fetched.next().await {
            let raw = match raw {
                Ok(raw) => raw,
                // Gone since it was listed, or larger than parley takes: nothing to take.
                Err(Failure::Permanent(reason)) => {
                    tracing::warn!(connector = %c.id, reason, "a mail of the mailbox is left where it is");
                    Vec::new()
                }
                Err(f) => return Err(Ok(f)),
            };
            self.connectors.receive(c, &id, &raw).await.map_err(db)?;
            synced.taken += 1;
        }
        Ok(())
    }

    /// Shared, not copied: every email asks.
    async fn outbound(&self) -> Arc<Vec<Connector>> {
        let mut kept = self.routes.lock().await;
        if let Some((at, list)) = kept.as_ref()
            && at.elapsed() < ROUTES_KEPT
        {
            return list.clone();
        }
        let list: Arc<Vec<Connector>> = match self.connectors.all().await {
            Ok(all) => Arc::new(
                all.into_iter()
                    .filter(|c| c.kind.is_mailbox() && c.settings.flag("outbound"))
                    .collect(),
            ),
            Err(e) => {
                // The routes known last stay: mail of a mailbox does not slip out by SMTP.
                tracing::warn!(error = %e, "reading the connectors failed");
                return kept.as_ref().map(|(_, l)| l.clone()).unwrap_or_default();
            }
        };
        *kept = Some((std::time::Instant::now(), list.clone()));
        list
    }
}

impl MailboxRoutes for Runtime {
    fn route<'a>(&'a self, creditor: &'a PartyId) -> BoxFuture<'a, Option<Route>> {
        Box::pin(async move {
            let list = self.outbound().await;
            let chosen = list
                .iter()
                .find(|c| c.creditor_id.as_ref() == Some(creditor))
                .or_else(|| list.iter().find(|c| c.creditor_id.is_none()))?;
            let mailbox = chosen.settings.text(chosen.kind.mailbox_field());
            Some(Route {
                connector: chosen.id.clone(),
                from: mailbox.contains('@').then(|| mailbox.to_string()),
            })
        })
    }

    fn send<'a>(
        &'a self,
        route: &'a Route,
        message: &'a crate::domain::MessageId,
        raw: &'a [u8],
    ) -> BoxFuture<'a, Handover> {
        Box::pin(async move {
            let list = self.outbound().await;
            let Some(connector) = list.iter().find(|c| c.id == route.connector) else {
                return Handover::Transient {
                    reason: "the mailbox connector is gone; trying again".into(),
                    retry_after: None,
                };
            };
            let Some(client) = self.client(connector) else {
                return Handover::Permanent("the connector is not a mailbox".into());
            };
            match client.send(raw).await {
                Ok(provider_id) => {
                    // Only a record: the mail is sent whether or not this is written.
                    if let Err(e) = self.connectors.carried(message, connector).await {
                        tracing::warn!(error = %e, "recording the carrying mailbox failed");
                    }
                    Handover::Sent { provider_id }
                }
                Err(Failure::Permanent(reason)) => Handover::Permanent(reason),
                Err(Failure::Throttled {
                    reason,
                    retry_after,
                }) => Handover::Transient {
                    reason,
                    retry_after,
                },
                Err(other) => Handover::Transient {
                    reason: other.describe(),
                    retry_after: None,
                },
            }
        })
    }
}
