//! The key store: one key per data subject (the debtor of a case), sealed under the master
//! key, kept apart from the database. Erasing a subject destroys its key; what the key
//! sealed, in the database, its backups and the document store, cannot be opened again.
//!
//! The store is a table `subject_keys` in a database of its own (by default a SQLite file
//! beside a SQLite database), so a backup of the database holds ciphertext and no key.

use crate::domain::CaseId;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{Backend, StoreError, StoreInner, StoreResult, Subjects};
use crate::crypto::{self, SubjectKey, SubjectKeyId};
use crate::domain::code::Code;

/// Where subject keys are kept.
#[derive(Clone)]
pub(crate) struct KeyStore {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl KeyStore {
    /// Opens the key store at `url`.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .context("connecting to the subject key store")?;
            return Ok(Self {
                pool,
                backend: Backend::Postgres,
            });
        }
        let url = super::connect::sqlite_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn: &mut sqlx::AnyConnection, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // A destroyed key's bytes are overwritten, not left in a free page.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                         PRAGMA secure_delete = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .context("opening the subject key store")?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
        })
    }

    pub(crate) async fn migrate(&self) -> anyhow::Result<()> {
        let blob = match self.backend {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS subject_keys (id TEXT PRIMARY KEY, \
             case_id TEXT NOT NULL UNIQUE, key_sealed {blob}, created_at BIGINT NOT NULL, \
             erased_at BIGINT)"
        );
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Two processes starting at once would race on the catalog otherwise (the key:
            // `parley` in ASCII, then 16, beside the singletons' keys).
            sqlx::query("SELECT pg_advisory_xact_lock(31632341464348944)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&create)
            .execute(&mut *tx)
            .await
            .context("creating the subject key store's table")?;
        tx.commit().await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    case_id: CaseId,
    key_sealed: Option<Vec<u8>>,
}

fn key_id(hex_id: &str) -> StoreResult<SubjectKeyId> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("subject key id {hex_id:?}")))
}

/// A case whose personal data was erased: nothing more is sealed for it.
fn erased_case() -> StoreError {
    StoreError::invalid(
        Code::Restricted,
        "this case's personal data was erased; nothing more can be recorded about its debtor",
    )
}

/// What lists and threads show in place of an erased value.
pub const ERASED: &str = "[erased]";

impl StoreInner {
    /// A sealed value opened (its subject key looked up by `unlock` first); `None` when its
    /// data subject was erased.
    pub(crate) fn open_kept(&self, context: &str, sealed: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.keys.open(context, sealed) {
            Ok(plain) => Ok(Some(plain)),
            Err(crypto::CryptoError::Erased) => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).into()),
        }
    }

    /// A sealed text opened; `[erased]` when its data subject was erased.
    pub(crate) fn open_text(&self, context: &str, sealed: &[u8]) -> StoreResult<String> {
        match self.open_kept(context, sealed)? {
            Some(bytes) => Ok(String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("sealed text is not UTF-8"))?),
            None => Ok(ERASED.to_string()),
        }
    }

    /// The key that seals the personal data of a case's debtor, created on first use.
    pub(crate) async fn case_key(&self, case_id: &CaseId) -> StoreResult<Arc<SubjectKey>> {
        if let Some(key) = self.keys.cached_case_key(case_id) {
            return Ok(key);
        }
        let select = "SELECT id, case_id, key_sealed FROM subject_keys WHERE case_id = $1";
        let found: Option<KeyRow> = sqlx::query_as(select)
            .bind(case_id)
            .fetch_optional(&self.subject_keys.pool)
            .await?;
        let row = match found {
            Some(row) => row,
            None => {
                // The first for this case (another process may make it at the same moment:
                // the one stored first is the key).
                let (id, raw) = crypto::new_subject_key();
                sqlx::query(
                    "INSERT INTO subject_keys (id, case_id, key_sealed, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (case_id) DO NOTHING",
                )
                .bind(hex::encode(id))
                .bind(case_id)
                .bind(self.keys.wrap_subject_key(&id, &raw))
                .bind(self.now())
                .execute(&self.subject_keys.pool)
                .await?;
                sqlx::query_as(select)
                    .bind(case_id)
                    .fetch_one(&self.subject_keys.pool)
                    .await?
            }
        };
        let id = key_id(&row.id)?;
        let Some(wrapped) = row.key_sealed else {
            self.keys.remember_subject(id, None, Some(case_id));
            return Err(erased_case());
        };
        let key = Arc::new(
            self.keys
                .unwrap_subject_key(&id, &wrapped)
                .map_err(|e| anyhow::anyhow!("subject key of a case: {e}"))?,
        );
        self.keys
            .remember_subject(id, Some(key.clone()), Some(case_id));
        Ok(key)
    }

    /// The key of a case for recording more about its debtor: refused (`restricted`) once
    /// the debtor was erased, whatever another process still holds in its cache.
    pub(crate) async fn live_case_key(&self, case_id: &CaseId) -> StoreResult<Arc<SubjectKey>> {
        let erased: Option<Option<i64>> =
            sqlx::query_scalar("SELECT erased_at FROM cases WHERE id = $1")
                .bind(case_id)
                .fetch_optional(&self.side)
                .await?;
        if matches!(erased, Some(Some(_))) {
            return Err(erased_case());
        }
        self.case_key(case_id).await
    }

    /// The key of a case, or `None` when its debtor was erased.
    pub(crate) async fn key_unless_erased(
        &self,
        case_id: &CaseId,
    ) -> StoreResult<Option<Arc<SubjectKey>>> {
        match self.live_case_key(case_id).await {
            Ok(key) => Ok(Some(key)),
            Err(StoreError::Invalid {
                code: Code::Restricted,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks up the subject keys these sealed values need, so they open (or are known to be
    /// erased). Values under the master key need nothing.
    pub(crate) async fn unlock<'a>(
        &self,
        sealed: impl IntoIterator<Item = &'a [u8]>,
    ) -> StoreResult<()> {
        let wanted = self.keys.subject_keys_to_load(sealed);
        for chunk in wanted.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, case_id, key_sealed FROM subject_keys WHERE id IN ({})",
                params.join(", ")
            );
            let mut query = sqlx::query_as::<_, KeyRow>(&sql);
            for id in chunk {
                query = query.bind(hex::encode(id));
            }
            let rows = query.fetch_all(&self.subject_keys.pool).await?;
            for id in chunk {
                // Erased keys leave their row (without the key): a key that is not there at
                // all means a key store that is not this database's (lost, or an older copy).
                let row = rows.iter().find(|r| r.id == hex::encode(id)).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the subject key store has no key {}: is PARLEY_SUBJECT_KEYS_URL this database's key store?",
                        hex::encode(id)
                    ))
                })?;
                let key = match row.key_sealed.as_deref() {
                    Some(wrapped) => Some(Arc::new(
                        self.keys
                            .unwrap_subject_key(id, wrapped)
                            .map_err(|e| anyhow::anyhow!("subject key: {e}"))?,
                    )),
                    None => None,
                };
                self.keys.remember_subject(*id, key, Some(&row.case_id));
            }
        }
        Ok(())
    }
}

impl Subjects {
    /// Destroys the keys of these cases: their debtors' personal data is erased wherever it
    /// is kept. Returns how many keys were destroyed.
    pub(crate) async fn destroy_case_keys(&self, case_ids: &[CaseId]) -> StoreResult<u64> {
        let mut destroyed = 0;
        for case_id in case_ids {
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM subject_keys WHERE case_id = $1")
                    .bind(case_id)
                    .fetch_all(&self.subject_keys.pool)
                    .await?;
            let done = sqlx::query(
                "UPDATE subject_keys SET key_sealed = NULL, erased_at = $2 \
                 WHERE case_id = $1 AND key_sealed IS NOT NULL",
            )
            .bind(case_id)
            .bind(self.now())
            .execute(&self.subject_keys.pool)
            .await?;
            destroyed += done.rows_affected();
            // A case that never had a key gets an erased entry, so none is made for it later.
            sqlx::query(
                "INSERT INTO subject_keys (id, case_id, key_sealed, created_at, erased_at) \
                 VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (case_id) DO NOTHING",
            )
            .bind(hex::encode(crypto::new_subject_key().0))
            .bind(case_id)
            .bind(self.now())
            .execute(&self.subject_keys.pool)
            .await?;
            for id in ids {
                self.keys
                    .remember_subject(key_id(&id)?, None, Some(case_id));
            }
        }
        self.wipe_destroyed_keys().await;
        Ok(destroyed)
    }

    /// Makes the destroyed keys' old bytes leave the key store's files. On PostgreSQL their
    /// dead row versions are vacuumed away. On SQLite the log is checkpointed into the file
    /// (whose pages were rewritten with `secure_delete`) and emptied, and the frames that
    /// held the keys go with it. Best effort: a failure is logged, and the keys are destroyed
    /// either way.
    async fn wipe_destroyed_keys(&self) {
        let pool = &self.subject_keys.pool;
        let done: Result<(), sqlx::Error> = async {
            match self.subject_keys.backend {
                Backend::Postgres => {
                    sqlx::query("VACUUM subject_keys").execute(pool).await?;
                }
                Backend::Sqlite => {
                    let (busy, _, _): (i64, i64, i64) =
                        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                            .fetch_one(pool)
                            .await?;
                    if busy != 0 {
                        tracing::warn!(
                            "the key store's log could not be emptied after an erasure (another process was reading); the next erasure empties it"
                        );
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "wiping the key store after an erasure failed");
        }
    }

    /// Wraps every live subject key again under the current master key (`parley rekey`).
    pub(crate) async fn rewrap_subject_keys(&self) -> anyhow::Result<u64> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, case_id, key_sealed FROM subject_keys WHERE key_sealed IS NOT NULL",
        )
        .fetch_all(&self.subject_keys.pool)
        .await?;
        let mut rewrapped = 0;
        for row in rows {
            let id = key_id(&row.id)?;
            let Some(wrapped) = row.key_sealed else {
                continue;
            };
            let fresh = self
                .keys
                .rewrap_subject_key(&id, &wrapped)
                .map_err(|e| anyhow::anyhow!("subject key {}: {e}", row.id))?;
            if let Some(fresh) = fresh {
                rewrapped += sqlx::query(
                    "UPDATE subject_keys SET key_sealed = $1 WHERE id = $2 AND key_sealed = $3",
                )
                .bind(fresh)
                .bind(&row.id)
                .bind(&wrapped)
                .execute(&self.subject_keys.pool)
                .await?
                .rows_affected();
            }
        }
        Ok(rewrapped)
    }
}
