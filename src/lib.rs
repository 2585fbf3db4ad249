//! parley: a Communication Center for debt-collection cases.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod connectors;
pub mod crypto;
pub mod delivery;
pub mod documents;
pub mod domain;
pub mod http;
pub mod inbound;
pub mod periodic;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod wire;
pub mod worker;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::app::Services;
use crate::config::Config;
use crate::crypto::KeyRing;
use crate::delivery::DeliveryJob;
use crate::domain::clock::{self, SharedClock};
use crate::store::Store;
use crate::webhooks::WebhookJob;
use crate::worker::{Worker, WorkerSettings};

/// The queue engine running message deliveries.
pub type DeliveryWorker = Worker<DeliveryJob>;
/// The queue engine running webhook deliveries.
pub type WebhookWorker = Worker<WebhookJob>;
/// The queue engine logging messages in the CRMs.
pub type CrmWorker = Worker<connectors::crm::CrmJob>;

/// A built application: configuration checked, database migrated, ready to serve.
pub struct App {
    config: Arc<Config>,
    store: Store,
    services: Services,
    clock: SharedClock,
    wake: Arc<Notify>,
    /// The connectors' syncs and their outbound mail.
    connectors: Arc<connectors::Runtime>,
    /// The CRMs' clients.
    crms: Arc<connectors::crm::Crms>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, clock::system()).await
    }

    /// An application whose rules read the time from `clock` (tests set and move it).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        // Reply understanding's model is trained beside the start, not in the first reply's
        // transaction; on a thread of its own, which a process that stops does not wait for
        // (a first reply read meanwhile waits for the training to finish).
        std::thread::spawn(domain::understanding::warm_up);
        let store = open_store(&config).await?;
        store.use_clock(clock.clone());
        store.set_promise_deadlines(config.policy.promise_deadlines);
        store.migrate().await?;
        let wake = Arc::new(Notify::new());
        let files =
            documents::store::DocumentStore::from_config(&config, store.documents().keys_arc())?;
        let services = Services::new(&store, &config, clock.clone(), files, wake.clone())?;
        let crms = Arc::new(connectors::crm::Crms::new(&store, clock.clone())?);
        let connectors = Arc::new(connectors::Runtime::new(
            services.connectors.clone(),
            services.drives.clone(),
            crms.clone(),
            clock.clone(),
        )?);
        services.subjects.with_document_systems(connectors.clone());
        Ok(Self {
            config: Arc::new(config),
            store,
            services,
            clock,
            wake,
            connectors,
            crms,
        })
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The connectors' runtime: syncs (`sync_due` drives one round in tests) and the
    /// mailboxes outbound mail leaves through.
    pub fn connectors(&self) -> Arc<connectors::Runtime> {
        self.connectors.clone()
    }

    /// The delivery worker of this application, for driving the queue one step at a time.
    pub fn delivery(&self) -> anyhow::Result<DeliveryWorker> {
        let c = &self.config;
        let setup = delivery::DeliverySetup {
            delivery: c.delivery.clone(),
            mail: c.mail.clone(),
            sms: c.sms.clone(),
            public_url: c.http.public_url.clone(),
            outbox: c.storage.data_dir.join("outbox"),
        };
        let job = DeliveryJob::new(
            &self.store,
            self.services.policy.clone(),
            self.services.messaging.clone(),
            (
                self.services.documents.clone(),
                self.services.archive.clone(),
            ),
            setup,
            self.clock.clone(),
        )?
        .with_mailboxes(self.connectors.clone())
        .with_document_systems(self.connectors.clone());
        Ok(Worker::new(
            job,
            &self.store,
            self.clock.clone(),
            WorkerSettings {
                concurrency: self.config.delivery.concurrency,
                lease: self.config.delivery.lease,
                idle: std::time::Duration::from_secs(1),
            },
            self.wake.clone(),
        ))
    }

    /// The periodic work of this application (the deadline scanner, the retention sweeper,
    /// the connectors' syncs),
    /// for driving it one step at a time.
    pub fn periodic(&self) -> Vec<Arc<periodic::Periodic>> {
        let mut all = periodic::all(
            &self.store,
            &self.services,
            self.config.policy.deadline_warning,
            self.config.policy.history_retention,
        );
        let runtime = self.connectors.clone();
        let wake = runtime.wake();
        all.push(Arc::new(
            periodic::Periodic::new(
                &self.store,
                store::singleton::Work::ConnectorSync,
                periodic::EVERY,
                Box::new(move || {
                    let runtime = runtime.clone();
                    Box::pin(async move { runtime.sync_due().await })
                }),
            )
            .woken_by(wake),
        ));
        all
    }

    /// The CRM worker of this application (the activities of the CRM connectors), for
    /// driving it one step at a time.
    pub fn crm(&self) -> CrmWorker {
        Worker::new(
            connectors::crm::CrmJob::new(self.crms.clone(), &self.store),
            &self.store,
            self.clock.clone(),
            WorkerSettings {
                // A process that runs no CRM worker can still be driven a step at a time.
                concurrency: match self.config.delivery.crm_concurrency {
                    0 => connectors::crm::CONCURRENCY,
                    n => n,
                },
                lease: connectors::crm::LEASE,
                idle: std::time::Duration::from_secs(1),
            },
            Arc::new(Notify::new()),
        )
    }

    /// The webhook worker of this application, for driving it one step at a time.
    pub fn webhooks(&self) -> anyhow::Result<WebhookWorker> {
        let job = WebhookJob::new(
            &self.store,
            self.config.webhooks.clone(),
            self.clock.clone(),
        )?;
        Ok(Worker::new(
            job,
            &self.store,
            self.clock.clone(),
            WorkerSettings {
                // A process that runs no webhook worker can still be driven a step at a time.
                concurrency: match self.config.webhooks.concurrency {
                    0 => webhooks::CONCURRENCY,
                    n => n,
                },
                lease: webhooks::LEASE,
                idle: std::time::Duration::from_secs(1),
            },
            Arc::new(Notify::new()),
        ))
    }

    /// Serves on `listener` until `shutdown` resolves, then lets requests and deliveries in
    /// flight finish. Runs the delivery worker unless `delivery_concurrency` is 0, and the
    /// webhook worker unless `webhook_concurrency` is 0: each on its own setting.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = if self.config.delivery.concurrency > 0 {
            let delivery = Arc::new(self.delivery()?);
            Some(tokio::spawn(delivery.run(stop_rx.clone())))
        } else {
            None
        };
        // The processes that deliver log the messages in the CRMs too.
        let crm = (self.config.delivery.concurrency > 0
            && self.config.delivery.crm_concurrency > 0)
            .then(|| tokio::spawn(Arc::new(self.crm()).run(stop_rx.clone())));
        // The processes that deliver take part in the periodic work (what it makes is
        // delivery work); each kind runs where its singleton is held.
        let periodic: Vec<_> = if self.config.delivery.concurrency > 0 {
            self.periodic()
                .into_iter()
                .map(|p| tokio::spawn(p.run(stop_rx.clone())))
                .collect()
        } else {
            Vec::new()
        };
        let dispatcher = if self.config.webhooks.concurrency > 0 {
            Some(tokio::spawn(
                Arc::new(self.webhooks()?).run(stop_rx.clone()),
            ))
        } else {
            None
        };
        let smtp = match self.config.mail.inbound_smtp_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("PARLEY_INBOUND_SMTP_ADDR: binding {addr}"))?;
                Some(tokio::spawn(inbound::smtp::serve(
                    listener,
                    self.services.inbound.clone(),
                    inbound::smtp::Settings::new(&self.config.mail, &self.config.storage.data_dir),
                    stop_rx.clone(),
                )))
            }
            None => None,
        };
        let imap = match &self.config.mail.imap_url {
            Some(url) => {
                let mut target = inbound::imap::ImapTarget::parse(url.expose())?;
                if let Some(token) = &self.config.mail.imap_oauth2 {
                    target = target.with_oauth2(match token {
                        config::ImapToken::File(path) => {
                            inbound::imap::TokenSource::File(path.clone())
                        }
                        config::ImapToken::Command(command) => {
                            inbound::imap::TokenSource::Command(command.expose().to_string())
                        }
                    });
                }
                let interval = self.config.mail.imap_poll_interval;
                Some(tokio::spawn(inbound::imap::run(
                    target,
                    interval,
                    self.services.inbound.clone(),
                    store::singleton::Singleton::new(
                        &self.store,
                        store::singleton::Work::ImapPolling,
                    ),
                    stop_rx.clone(),
                )))
            }
            None => None,
        };
        let router = http::router(self.config.clone(), self.services.clone());
        tracing::info!(addr = %listener.local_addr()?, backend = ?self.store.backend(), "serving");
        let limits = http::server::ServerLimits {
            header_timeout: self.config.http.header_timeout,
            request_timeout: self.config.http.request_timeout,
            max_connections: self.config.http.max_connections,
        };
        let served = http::server::serve(listener, router, limits, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
        .context("serving HTTP");
        for task in [worker, crm, dispatcher, smtp, imap]
            .into_iter()
            .flatten()
            .chain(periodic)
        {
            let _ = task.await;
        }
        served?;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the database named by the configuration, with the key ring for sealed columns.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let storage = &config.storage;
    let older: Vec<[u8; 32]> = storage
        .old_master_keys
        .iter()
        .map(|k| *k.expose())
        .collect();
    let keys = KeyRing::load(
        storage.master_key.map(|k| *k.expose()),
        &older,
        &storage.data_dir,
    )?;
    Store::connect_with_subject_keys(
        config.storage.database_url.expose(),
        config.storage.database_max_connections,
        Arc::new(keys),
        config.storage.subject_keys_url.as_ref().map(|u| u.expose()),
    )
    .await
}

/// `parley rekey`: seals everything held under an earlier master key again under the
/// current one.
pub async fn rekey(config: &Config) -> anyhow::Result<app::rekey::Rekeyed> {
    let store = open_store(config).await?;
    store.migrate().await?;
    let files = documents::store::DocumentStore::from_config(config, store.documents().keys_arc())?;
    app::rekey::rekey(&store, &files).await
}

/// `parley serve`: bind, build, serve until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding {}", config.http.addr))?;
    let app = App::build(config).await?;
    app.run(listener, shutdown_signal()).await
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
