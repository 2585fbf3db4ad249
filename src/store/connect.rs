//! Opening the store: the PostgreSQL path and the SQLite path, each with its pools, its
//! group-commit lanes and its key store of data subjects.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection, Executor};

use super::{Backend, Store, StoreInner, cases, jobs, messages, pipeline, subject_keys, webhooks};
use crate::crypto::KeyRing;

/// How long a PostgreSQL connection may have been idle and still be taken without asking the
/// server first whether it is there.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Whether a pooled PostgreSQL connection may be used: one used less than [`TRUSTED_IDLE`] ago
/// is taken as it is; one idle for longer is pinged first (a server or a firewall may have
/// dropped it meanwhile). Under load that spares a round trip a query; after a pause it is the
/// same check as ever. The group commit's batches, whose failure after a delivery would repeat
/// it, ask their connection every time (`pipeline::Lane::live_connection`).
fn ping_when_idle(
    conn: &mut AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> BoxFuture<'_, sqlx::Result<bool>> {
    Box::pin(async move {
        if meta.idle_for < TRUSTED_IDLE {
            return Ok(true);
        }
        // One that does not answer is closed, and another taken.
        Ok(conn.ping().await.is_ok())
    })
}

impl Store {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        keys: Arc<KeyRing>,
    ) -> anyhow::Result<Self> {
        Self::connect_with_subject_keys(url, max_connections, keys, None).await
    }

    /// Opens the database at `url` and the key store of data subjects at `subject_keys_url`
    /// (by default beside a SQLite database, or in the PostgreSQL database itself).
    pub async fn connect_with_subject_keys(
        url: &str,
        max_connections: u32,
        keys: Arc<KeyRing>,
        subject_keys_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(keys_url) = subject_keys_url {
            let file = |u: &str| {
                u.strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .map(|rest| rest.split('?').next().unwrap_or_default().to_string())
            };
            anyhow::ensure!(
                keys_url != url && (file(keys_url).is_none() || file(keys_url) != file(url)),
                "PARLEY_SUBJECT_KEYS_URL names the database itself: give the key store a database of its own"
            );
        }
        let explicit = match subject_keys_url {
            Some(u) => Some(subject_keys::KeyStore::connect(u).await?),
            None => None,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres(url, max_connections, keys, explicit).await
        } else {
            sqlite(url, max_connections, keys, explicit).await
        }
    }
}

/// PostgreSQL: one pool for reads and writes, a small one for reads inside a writer's
/// transaction, lanes that overlap their commits. The key store is the database itself
/// unless named (with a warning).
async fn postgres(
    url: &str,
    max_connections: u32,
    keys: Arc<KeyRing>,
    explicit: Option<subject_keys::KeyStore>,
) -> anyhow::Result<Store> {
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(ping_when_idle)
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    // Lanes overlap their commits; a quarter of the connections, the rest for reads.
    let lanes = usize::try_from(max_connections / 4)
        .unwrap_or(1)
        .clamp(1, 8);
    let side = AnyPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(ping_when_idle)
        .connect_lazy(url)
        .context("connecting to PostgreSQL")?;
    Ok(Store(Arc::new(StoreInner {
        side,
        sending_reads: pipeline::Batcher::start(
            pool.clone(),
            Backend::Postgres,
            1,
            pipeline::Mode::Reads,
            cases::read_sending_batch,
        ),
        queued: pipeline::Batcher::start(
            pool.clone(),
            Backend::Postgres,
            lanes,
            pipeline::Mode::NewWork,
            messages::queue_batch,
        ),
        finishes: pipeline::Batcher::start(
            pool.clone(),
            Backend::Postgres,
            lanes,
            pipeline::Mode::Outcomes,
            jobs::finish_batch,
        ),
        webhook_outcomes: pipeline::Batcher::start(
            pool.clone(),
            Backend::Postgres,
            lanes,
            pipeline::Mode::Outcomes,
            webhooks::webhook_outcome_batch,
        ),
        subject_keys: match explicit {
            Some(k) => k,
            None => {
                tracing::warn!(
                    "PARLEY_SUBJECT_KEYS_URL is not set: data subjects' keys are kept in the database itself, so a backup of it can still be read after an erasure"
                );
                subject_keys::KeyStore::connect(url).await?
            }
        },
        writer: pool.clone(),
        pool,
        known_tokens: Arc::default(),
        known_threads: Arc::default(),
        clock: std::sync::OnceLock::new(),
        promise_deadlines: std::sync::atomic::AtomicBool::new(false),
        backend: Backend::Postgres,
        sqlite_file: None,
        keys,
    })))
}

/// SQLite: one writer connection (writers queue in the process), a pool of readers; the key
/// store a file beside the database unless named.
async fn sqlite(
    url: &str,
    max_connections: u32,
    keys: Arc<KeyRing>,
    explicit: Option<subject_keys::KeyStore>,
) -> anyhow::Result<Store> {
    let url = sqlite_url(url)?;
    let sqlite_file = url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.split('?').next())
        .filter(|p| !p.is_empty() && !p.starts_with(':'))
        .map(std::path::PathBuf::from);
    let options = |n: u32| {
        AnyPoolOptions::new()
            .max_connections(n)
            .acquire_timeout(Duration::from_secs(30))
            // A file, not a peer: nothing drops a connection while it is idle.
            .test_before_acquire(false)
            .after_connect(|conn: &mut AnyConnection, _| {
                Box::pin(async move {
                    // `secure_delete = FAST`: what an erasure clears is overwritten in the
                    // pages it writes anyway, not left in their free space.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                         PRAGMA secure_delete = FAST;",
                    )
                    .await?;
                    Ok(())
                })
            })
    };
    let writer = options(1)
        .connect(&url)
        .await
        .context("opening the SQLite database")?;
    let pool = options(max_connections.max(2))
        .connect(&url)
        .await
        .context("opening the SQLite database")?;
    let subject_keys = match (explicit, &sqlite_file) {
        (Some(k), _) => k,
        (None, Some(file)) => {
            let mut name = file.file_name().unwrap_or_default().to_os_string();
            name.push(".subject-keys");
            let beside = file.with_file_name(name);
            subject_keys::KeyStore::connect(&format!("sqlite://{}", beside.display())).await?
        }
        (None, None) => subject_keys::KeyStore::connect(&url).await?,
    };
    Ok(Store(Arc::new(StoreInner {
        subject_keys,
        sending_reads: pipeline::Batcher::start(
            pool.clone(),
            Backend::Sqlite,
            1,
            pipeline::Mode::Reads,
            cases::read_sending_batch,
        ),
        queued: pipeline::Batcher::start(
            writer.clone(),
            Backend::Sqlite,
            1,
            pipeline::Mode::NewWork,
            messages::queue_batch,
        ),
        finishes: pipeline::Batcher::start(
            writer.clone(),
            Backend::Sqlite,
            1,
            pipeline::Mode::Outcomes,
            jobs::finish_batch,
        ),
        webhook_outcomes: pipeline::Batcher::start(
            writer.clone(),
            Backend::Sqlite,
            1,
            pipeline::Mode::Outcomes,
            webhooks::webhook_outcome_batch,
        ),
        side: pool.clone(),
        pool,
        writer,
        known_tokens: Arc::default(),
        known_threads: Arc::default(),
        clock: std::sync::OnceLock::new(),
        promise_deadlines: std::sync::atomic::AtomicBool::new(false),
        backend: Backend::Sqlite,
        sqlite_file,
        keys,
    })))
}

/// `sqlite://PATH` with the folder created and `mode=rwc`, so a new install starts empty.
pub(super) fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| anyhow::anyhow!("not a SQLite URL"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let query = if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        query.to_string()
    };
    Ok(format!("sqlite://{path}?{query}"))
}
