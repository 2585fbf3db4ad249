//! Storage: the only place with SQL. One interface of domain verbs over two backends,
//! SQLite (the default) and PostgreSQL, chosen by the URL's scheme. Queries are written once
//! in the SQL both dialects share (`$n` parameters, `RETURNING`, `ON CONFLICT`) and checked at
//! run time; each backend has its own migrations folder.
//!
//! Tenancy is enforced here, in the `WHERE` clause: every case-scoped verb takes the acting
//! party and finds only the cases that party may see.

mod archive;
mod audit;
mod cases;
mod connect;
mod connectors;
mod crm;
mod documents;
mod drives;
mod idempotency;
mod ids;
mod inbound;
mod inbox;
mod jobs;
mod journal;
mod messages;
mod notes;
pub mod operators;
mod parties;
pub mod partitions;
mod payments;
mod pipeline;
mod plans;
mod policy;
mod preferences;
pub mod queue;
mod rekey;
mod review;
pub mod singleton;
mod subject_keys;
mod subjects;
pub mod system;
mod templates;
mod threads;
mod webhooks;
mod writes;

use crate::domain::CaseId;
use std::sync::Arc;

use anyhow::Context;
use sqlx::AnyConnection;
use sqlx::AnyPool;

pub use archive::{SentCopy, ToArchive};
pub use audit::AuditEntry;
pub use cases::{CaseHold, CasePatch, CaseView, ListCases, NewCase, SendingFacts};
pub use connectors::{Connector, ConnectorChange, NewConnector, SyncEnd};
pub use crm::{ActivityKind, CrmActivity, DueActivity, Outcome as CrmOutcome};
pub use documents::{DocumentView, NewDocument};
pub use drives::{DriveFolder, Mirror, RemoteFile, ToMirror};
pub use idempotency::Replay;
pub use inbound::{Checked, InboundSms, Ingested, MailboxProgress, UnmatchedFilter, UnmatchedMail};
pub use inbox::{Awaiting, InboxFilter, InboxItem, InboxPage, Unreviewable};
pub use jobs::{AttemptRecord, Delivered, Delivering, DeliveryAttempt, Outgoing};
pub use messages::{
    Access, AttachmentView, Envelope, IdempotencyRecord, MessageFilter, MessageView, NewMessage,
    Queued, StatusEvent,
};
pub use notes::{NewNote, Note, NoteFilter};
pub use parties::TokenInfo;
pub use payments::{Deadline, NewDeadline, NewPayment, Payment};
pub use policy::{Scope as SuppressionScope, Suppression};
pub use preferences::StoredPreferences;
pub use subjects::{Erased, SubjectCase};
pub use templates::{Template, TemplateContent};
pub use threads::{ThreadMessage, ThreadView};
pub use webhooks::{DeliveryView, DueDelivery, Webhook};

use crate::crypto::KeyRing;
use crate::domain::audit::AuditAction;
use crate::domain::code::Code;
use crate::domain::event::EventType;
use crate::domain::party::Actor;
use crate::domain::time::Micros;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors a caller can act on; everything else is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(Code),
    #[error("{detail}")]
    Invalid { code: Code, detail: String },
    /// A stored value this build cannot read (a word no enum knows): never guessed at.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
    #[error("database unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// The request's token was revoked or expired since this process last verified it.
    #[error("unknown, revoked or expired token")]
    TokenGone,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // The database cannot be reached right now: worth trying again, not a bug.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(anyhow::Error::new(e)),
            // The server going away under a connection: shutting down (57P01..57P03, class
            // 57), the connection broken (class 08), out of resources (class 53).
            // Text PostgreSQL cannot hold (a NUL character): bad input, not a fault.
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| c == "22021" || c == "22P05") =>
            {
                Self::Invalid {
                    code: Code::ValidationFailed,
                    detail: "the request holds text with a NUL or otherwise unstorable character"
                        .into(),
                }
            }
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| {
                    c.starts_with("57") || c.starts_with("08") || c.starts_with("53")
                }) =>
            {
                Self::Unavailable(anyhow::Error::new(e))
            }
            e => Self::Internal(anyhow::Error::new(e)),
        }
    }
}

impl StoreError {
    pub fn invalid(code: Code, detail: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            detail: detail.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page of a list and the cursor of the next one.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The database, shared: a clone is one more handle on the same pools, keys and commit
/// pipelines (cloned for every request, so one reference count).
#[derive(Clone)]
pub struct Store(Arc<StoreInner>);

impl std::ops::Deref for Store {
    type Target = StoreInner;

    fn deref(&self) -> &StoreInner {
        &self.0
    }
}

pub struct StoreInner {
    /// Readers. On PostgreSQL also the writers.
    pool: AnyPool,
    /// Writers. On SQLite one connection, so writers queue in the process instead of
    /// failing with SQLITE_BUSY when two transactions both want the write lock.
    writer: AnyPool,
    /// Reads made while a writer's transaction is open (whether a case's debtor was erased,
    /// before a value is sealed under its key). On PostgreSQL a pool of their own: a
    /// transaction that waited for a second connection of the pool it holds one of would,
    /// with every connection so held, wait for ever. On SQLite the readers.
    side: AnyPool,
    backend: Backend,
    /// The SQLite database's file, beside which the locks of once-only work are kept.
    sqlite_file: Option<std::path::PathBuf>,
    keys: Arc<KeyRing>,
    /// The keys of data subjects, apart from the database.
    subject_keys: subject_keys::KeyStore,
    /// Sends' reads of their cases, several in one statement.
    sending_reads: pipeline::Batcher<cases::SendingRead, Option<cases::SendingRow>>,
    /// Group commit of queued messages.
    queued: pipeline::Batcher<messages::QueueItem, Queued>,
    /// Group commit of delivery outcomes.
    finishes: pipeline::Batcher<jobs::Finish, ()>,
    /// Group commit of webhook attempts' outcomes.
    webhook_outcomes: pipeline::Batcher<webhooks::WebhookOutcome, ()>,
    /// Tokens this process has verified, for the send path.
    known_tokens: Arc<parties::KnownTokens>,
    /// Threads this process has read, for the send path.
    known_threads: Arc<threads::KnownThreads>,
    /// Where the times it records come from: the application's clock once it is given one
    /// ([`Store::use_clock`]), the system's until then.
    clock: std::sync::OnceLock<crate::domain::clock::SharedClock>,
    /// A reply's promise with a date becomes a deadline of its case
    /// (`PARLEY_PROMISE_DEADLINES`).
    promise_deadlines: std::sync::atomic::AtomicBool,
}

/// What every handle is: one more reference to the shared inner. Inside the store, a verb of
/// one aggregate that writes another's rows in the same transaction asks for that aggregate's
/// handle (`self.sibling::<Messages>()`) rather than reaching into its tables itself.
trait Sibling: Sized {
    fn inner(&self) -> &Arc<StoreInner>;
    fn from_inner(inner: Arc<StoreInner>) -> Self;
    fn sibling<H: Sibling>(&self) -> H {
        H::from_inner(Arc::clone(self.inner()))
    }
}

/// A narrow handle on the store: the verbs of one aggregate over the shared inner (pools,
/// keys, commit lanes). Services hold the handles they use and nothing else.
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<StoreInner>);

        impl std::ops::Deref for $name {
            type Target = StoreInner;

            fn deref(&self) -> &StoreInner {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("backend", &self.backend)
                    .finish_non_exhaustive()
            }
        }

        impl Store {
            pub fn $accessor(&self) -> $name {
                $name(Arc::clone(&self.0))
            }
        }

        impl Sibling for $name {
            fn inner(&self) -> &Arc<StoreInner> {
                &self.0
            }
            fn from_inner(inner: Arc<StoreInner>) -> Self {
                Self(inner)
            }
        }
    };
}

handle!(
    /// Tokens, parties and idempotency records.
    Parties,
    parties
);
handle!(
    /// The mail archive: sent emails' kept bytes, what each archive connector journaled.
    Archive,
    archive
);
handle!(
    /// The audit log: reading it, and the entries no other change writes.
    Audit,
    audit
);
handle!(
    /// Cases, their payments, deadlines, notes and the debtor's preferences.
    Cases,
    cases
);
handle!(
    /// Connectors to other systems: their settings, status, cursors and what they took in.
    Connectors,
    connectors
);
handle!(
    /// The CRMs' activities: each message to log, each record to update, each copy an
    /// erasure deletes.
    Crm,
    crm
);
handle!(
    /// Documents' metadata (their bytes are in the document store).
    Documents,
    documents
);
handle!(
    /// The document systems' copies: case folders, each document's remote file, erasures
    /// still to reach them.
    Drives,
    drives
);
handle!(
    /// Inbound mail and SMS: matching, the unmatched list, held mail, mailbox progress.
    Inbound,
    inbound
);
handle!(
    /// Messages and their threads: queuing, reading, listing, events.
    Messages,
    messages
);
handle!(
    /// Suppression lists and the rules of the contact policy kept in the database.
    Policy,
    policy
);
handle!(
    /// The queue of jobs: delivery claims and outcomes, retries, operators' views.
    Queue,
    queue
);
handle!(
    /// Data subjects: erasure, export, subject keys and rekeying.
    Subjects,
    subjects
);
handle!(
    /// Once-only work, plans, retention and the system's own records.
    System,
    system
);
handle!(
    /// Message templates.
    Templates,
    templates
);
handle!(
    /// Webhooks and their deliveries.
    Webhooks,
    webhooks
);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl StoreInner {
    /// A write transaction. On SQLite it takes the write lock at `BEGIN IMMEDIATE`, waiting
    /// out other processes (busy timeout), instead of failing later when a read would have to
    /// become a write.
    pub(crate) async fn write_tx(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Takes the times it records from `clock` from now on (once: a later call is ignored).
    pub fn use_clock(&self, clock: crate::domain::clock::SharedClock) {
        let _ = self.clock.set(clock);
    }

    /// Whether a reply's promise with a date becomes a deadline of its case.
    pub fn set_promise_deadlines(&self, on: bool) {
        self.promise_deadlines
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn promise_deadlines(&self) -> bool {
        self.promise_deadlines
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Now, by the application's clock.
    pub(crate) fn now(&self) -> Micros {
        self.clock
            .get()
            .map_or_else(crate::domain::time::now_micros, |c| c.now())
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

impl Store {
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => {
                // A migration that rebuilds a table others refer to needs foreign key
                // enforcement off, which SQLite allows only outside a transaction: the
                // migrations run on one connection with it off, checked and back on after.
                let mut conn = self.writer.acquire().await?;
                let before = applied_migrations(&mut conn).await;
                sqlx::query("PRAGMA foreign_keys = OFF")
                    .execute(&mut *conn)
                    .await?;
                let ran = SQLITE_MIGRATIONS.run(&mut *conn).await;
                // Checked only when a migration ran: the check reads every table.
                let broken: Result<Vec<(String,)>, sqlx::Error> =
                    if applied_migrations(&mut conn).await != before {
                        sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1")
                            .fetch_all(&mut *conn)
                            .await
                    } else {
                        Ok(Vec::new())
                    };
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                ran.context("applying database migrations")?;
                if let Some((table,)) = broken?.first() {
                    anyhow::bail!("after the migrations, {table} refers to a missing row");
                }
            }
            Backend::Postgres => POSTGRES_MIGRATIONS
                .run(&self.writer)
                .await
                .context("applying database migrations")?,
        }
        self.subject_keys.migrate().await?;
        self.load_index_key().await?;
        self.parties()
            .hash_idempotency_keys(self.now())
            .await
            .context("hashing earlier idempotency keys")
    }

    /// Reads the key of blind indexes (generating it on a new installation) into the key
    /// ring. A master key that cannot open it is not this database's: refused.
    async fn load_index_key(&self) -> anyhow::Result<()> {
        let context = key_context("blind-index");
        let initial = self.keys.initial_index_key();
        sqlx::query(
            "INSERT INTO key_material (purpose, sealed, created_at) VALUES ('blind-index', $1, $2) \
             ON CONFLICT (purpose) DO NOTHING",
        )
        .bind(self.keys.seal(&context, &initial))
        .bind(self.now())
        .execute(&self.writer)
        .await
        .context("storing the key of blind indexes")?;
        let sealed: Vec<u8> =
            sqlx::query_scalar("SELECT sealed FROM key_material WHERE purpose = 'blind-index'")
                .fetch_one(&self.writer)
                .await
                .context("reading the key of blind indexes")?;
        let key: [u8; 32] = self
            .keys
            .open(&context, &sealed)
            .context(
                "the master key (or PARLEY_OLD_MASTER_KEYS) does not open this database's keys",
            )?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the key of blind indexes is not 32 bytes"))?;
        self.keys.set_index_key(key);
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
        self.side.close().await;
        self.subject_keys.pool.close().await;
    }
}

/// An entry of the audit log, written in the transaction of the change it records.
pub(crate) async fn audit(
    conn: &mut AnyConnection,
    case_id: Option<&CaseId>,
    actor: &Actor,
    action: AuditAction,
    target_type: &str,
    target_id: &(impl std::fmt::Display + ?Sized),
    now: Micros,
) -> sqlx::Result<()> {
    audit_as(
        conn,
        case_id,
        (Some(actor.party_id.as_str()), &actor.name),
        action,
        target_type,
        target_id,
        now,
    )
    .await
}

impl Audit {
    /// An export of the case's debtor's data (a data subject's access request,
    /// `DataSubjectExported`) or of its messages (`MessagesExported`), audited.
    pub async fn audit_export(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        action: AuditAction,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            action,
            "case",
            &case_id.to_string(),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A send the policy refused, in the case's audit log: the rule, never the content.
    pub async fn audit_refusal(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        rule: &str,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::MessageRefused,
            "rule",
            rule,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// An audit entry for an actor without a token: a debtor following a link, a provider.
pub(crate) async fn audit_as(
    conn: &mut AnyConnection,
    case_id: Option<&CaseId>,
    (party_id, actor_name): (Option<&str>, &str),
    action: AuditAction,
    target_type: &str,
    target_id: &(impl std::fmt::Display + ?Sized),
    now: Micros,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (case_id, actor_party_id, actor_name, action, target_type, target_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(case_id)
    .bind(party_id)
    .bind(actor_name)
    .bind(action.as_str())
    .bind(target_type)
    .bind(target_id.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// An event for the outbox, written in the transaction of the change it reports.
pub(crate) async fn emit(
    conn: &mut AnyConnection,
    event_type: EventType,
    case_id: Option<&CaseId>,
    payload: &impl serde::Serialize,
    now: Micros,
) -> sqlx::Result<()> {
    let payload = serde_json::to_string(payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (event_type, case_id, payload, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(event_type.as_str())
    .bind(case_id)
    .bind(payload)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    // An event that makes a system message on its case makes it through the queue, from the
    // same transaction: it is neither lost nor made twice.
    if event_type.system_event().is_some() && case_id.is_some() {
        side_job(conn, JobKind::SystemMessage, &id.to_string(), now).await?;
    }
    Ok(())
}

use crate::domain::message::JobKind;

/// Queues a job beside the deliveries (a system message, a received mail's attachments, a
/// message to archive) in the caller's transaction: it is neither lost nor made twice.
pub(crate) async fn side_job(
    conn: &mut AnyConnection,
    kind: JobKind,
    ref_id: &str,
    at: Micros,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, ref_id, priority, status, run_at, attempts, created_at, updated_at) \
         VALUES ($1, $2, $3, 1, 'pending', $4, 0, $4, $4)",
    )
    .bind(crate::domain::prefixed_id("job"))
    .bind(kind.as_str())
    .bind(ref_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A statement for `backend`: on SQLite, `$1, $2, …` become `?` when they appear exactly in
/// that order, once each (a multi-row statement's placeholders). SQLite finds a `$n`'s
/// value by looking its name up among all the statement's names, so binding a statement of
/// a thousand of them took a million steps; a `?` takes the next value. Anything else is
/// left as it is.
pub(crate) fn positional(sql: String, backend: Backend) -> String {
    if backend != Backend::Sqlite {
        return sql;
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1u64;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return sql;
            }
            let n: u64 = match sql[i + 1..i + 1 + digits].parse() {
                Ok(n) => n,
                Err(_) => return sql,
            };
            if n != expected {
                return sql;
            }
            expected += 1;
            out.push_str(&sql[last..i]);
            out.push('?');
            i += 1 + digits;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&sql[last..]);
    out
}

/// The `VALUES` of a multi-row statement: `rows` tuples, each column of `columns` a new
/// placeholder (`""`), the previous placeholder again (`"="`), or an SQL literal.
pub(crate) fn rows_sql(rows: usize, columns: &[&str]) -> String {
    let per_row = columns.iter().filter(|c| c.is_empty()).count();
    (0..rows)
        .map(|r| {
            let mut n = r * per_row;
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match *c {
                    "" => {
                        n += 1;
                        format!("${n}")
                    }
                    "=" => format!("${n}"),
                    literal => literal.to_string(),
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the process remembers of the database to spare a read (see `KnownTokens`,
/// `KnownThreads`): at most 10,000 entries, past which it starts again empty.
#[derive(Debug)]
pub(crate) struct Remembered<K, V> {
    entries: std::sync::Mutex<std::collections::HashMap<K, V>>,
}

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Remembered<K, V> {
    const MOST: usize = 10_000;

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.lock().get(key).cloned()
    }

    pub(crate) fn keep(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= Self::MOST {
            entries.clear();
        }
        entries.insert(key, value);
    }

    /// Forgets the entries `gone` answers true for.
    pub(crate) fn forget(&self, gone: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|k, v| !gone(k, v));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A table of rows bound as a fixed number of parameters from `$param` on, whatever the
/// number of rows: on PostgreSQL an array a column (`unnest`), on SQLite one JSON array of
/// rows (`json_each`); [`batch_params`] writes them. A `VALUES` list of n rows is a new
/// statement for every n, prepared again and, on PostgreSQL, planned again with hundreds of
/// parameters; this one is prepared once a connection. `columns`: `(name, SQL type)`. For
/// `UPDATE … FROM (…) v` and `INSERT … SELECT`.
pub(crate) fn batch_rows(backend: Backend, param: usize, columns: &[(&str, &str)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    match backend {
        Backend::Postgres => {
            let arrays: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("CAST(${} AS {ty}[])", param + i))
                .collect();
            format!(
                "SELECT {} FROM unnest({}) AS u({})",
                names.join(", "),
                arrays.join(", "),
                names.join(", ")
            )
        }
        Backend::Sqlite => {
            let cells: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| format!("CAST(value->>{i} AS {ty}) AS {name}"))
                .collect();
            format!("SELECT {} FROM json_each(${param})", cells.join(", "))
        }
    }
}

/// A list of values bound as one parameter, `$param` ([`list_param`]), for `IN (…)`: one
/// statement whatever the list's length (see [`batch_rows`]).
pub(crate) fn batch_list(backend: Backend, param: usize, ty: &str) -> String {
    match backend {
        Backend::Postgres => format!("SELECT unnest(CAST(${param} AS {ty}[]))"),
        Backend::Sqlite => format!("SELECT CAST(value AS {ty}) FROM json_each(${param})"),
    }
}

/// The parameters of a [`batch_rows`] table of `columns` columns: `rows`, each a tuple (or
/// array) of its cells in the columns' order.
pub(crate) fn batch_params(
    backend: Backend,
    columns: usize,
    rows: &impl serde::Serialize,
) -> sqlx::Result<Vec<String>> {
    let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
    let value = serde_json::to_value(rows).map_err(encode)?;
    // Every row a cell a column: a row of another shape would write NULLs, or nothing.
    let rows = value
        .as_array()
        .filter(|rows| {
            rows.iter()
                .all(|row| row.as_array().is_some_and(|cells| cells.len() == columns))
        })
        .ok_or_else(|| {
            sqlx::Error::Encode(format!("a batch's rows are not rows of {columns} cells").into())
        })?;
    match backend {
        Backend::Sqlite => Ok(vec![value.to_string()]),
        Backend::Postgres => Ok((0..columns)
            .map(|c| pg_array(rows.iter().map(|row| &row[c])))
            .collect()),
    }
}

/// The parameter of a [`batch_list`].
pub(crate) fn list_param(
    backend: Backend,
    items: &[impl serde::Serialize],
) -> sqlx::Result<String> {
    let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
    match backend {
        Backend::Sqlite => serde_json::to_string(items).map_err(encode),
        Backend::Postgres => {
            let items = items
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(encode)?;
            Ok(pg_array(items.iter()))
        }
    }
}

/// Binding the parameters of a [`batch_rows`] table, in order.
pub(crate) trait BindBatch {
    fn bind_batch(self, params: Vec<String>) -> Self;
}

impl<'q> BindBatch for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    fn bind_batch(mut self, params: Vec<String>) -> Self {
        for p in params {
            self = self.bind(p);
        }
        self
    }
}

/// A PostgreSQL array literal of these values: each quoted, `"` and `\` escaped; null as
/// `NULL`.
fn pg_array<'a>(values: impl Iterator<Item = &'a serde_json::Value>) -> String {
    let mut out = String::from("{");
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = match v {
            serde_json::Value::Null => {
                out.push_str("NULL");
                continue;
            }
            serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            other => std::borrow::Cow::Owned(other.to_string()),
        };
        out.push('"');
        for ch in text.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The rows of a `VALUES` table of bound values, each placeholder cast to its column's type
/// (PostgreSQL infers none for a `VALUES` of placeholders), numbered from `first`.
pub(crate) fn cast_rows(rows: usize, types: &[&str], first: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(i, ty)| format!("CAST(${} AS {ty})", first + row * types.len() + i))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Several events of one type into the outbox in one statement (`(case id, payload)`).
pub(crate) async fn emit_many(
    conn: &mut AnyConnection,
    backend: Backend,
    event_type: EventType,
    events: &[(Option<&CaseId>, String)],
    now: Micros,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO events (event_type, case_id, payload, created_at) \
         SELECT $1, case_id, payload, $2 FROM ({}) v",
        batch_rows(backend, 3, &[("case_id", "TEXT"), ("payload", "TEXT")])
    );
    sqlx::query(&sql)
        .bind(event_type.as_str())
        .bind(now)
        .bind_batch(batch_params(backend, 2, &events)?)
        .execute(conn)
        .await?;
    Ok(())
}

/// The context a key kept in `key_material` is sealed under.
pub(super) fn key_context(purpose: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("key:{purpose}")
}

/// Cursor of keyset pagination: the last id of the page, opaque to clients.
pub fn encode_cursor(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub fn decode_cursor(cursor: &str) -> StoreResult<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            StoreError::invalid(Code::InvalidCursor, "cursor is not one this API issued")
        })
}

impl Backend {
    /// Row lock for read-modify-write on PostgreSQL; SQLite's single writer already
    /// serialises them.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// Admin flag as bound into visibility predicates.
pub(crate) fn admin_flag(actor: &Actor) -> i64 {
    i64::from(actor.is_admin())
}

/// How many migrations the database records as applied (none before the first).
async fn applied_migrations(conn: &mut sqlx::AnyConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(conn)
        .await
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{Backend, positional};

    #[test]
    fn only_placeholders_in_order_once_each_become_positional_on_sqlite() {
        let sql = "INSERT INTO t (a, b, c) VALUES ($1, 'x', $2), ($3, 'x', $4)";
        assert_eq!(
            positional(sql.to_string(), Backend::Sqlite),
            "INSERT INTO t (a, b, c) VALUES (?, 'x', ?), (?, 'x', ?)"
        );
        assert_eq!(positional(sql.to_string(), Backend::Postgres), sql);
        for kept in [
            "UPDATE t SET a = $1 WHERE b = $1",
            "SELECT $2, $1",
            "SELECT $1, $3",
            "SELECT 1",
        ] {
            assert_eq!(positional(kept.to_string(), Backend::Sqlite), kept);
        }
        assert_eq!(
            positional(
                "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11".into(),
                Backend::Sqlite
            ),
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
        );
    }
}
