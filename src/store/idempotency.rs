//! `Idempotency-Key`: a repeat within 24 hours gets the result of the first request.

use super::{Parties, StoreResult};
use crate::domain::MessageId;
use crate::domain::time::Micros;

pub const KEEP_MICROS: i64 = 24 * 3600 * 1_000_000;

/// The most keys one round of the retention sweeper forgets (a round every 10 s: 1,000 a
/// second).
const FORGET_BATCH: i64 = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// The same request was made before: it queued this message.
    Queued { message_id: MessageId },
    /// The key was used with another request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Record {
    request_hash: String,
    result: String,
}

/// The mark of a key stored as a keyed hash (records written before were kept as sent).
const HASHED: &str = "h1:";

impl Parties {
    /// What is stored of a client's `Idempotency-Key`: a keyed hash.
    pub fn idempotency_key_hash(&self, key: &str) -> String {
        format!("{HASHED}{}", self.keys.blind_index("idempotency-key", key))
    }

    /// What is stored of a request's SHA-256 (hex): a keyed hash of it.
    pub fn idempotency_request_hash(&self, sha256_hex: &str) -> String {
        self.keys.blind_index("idempotency-request", sha256_hex)
    }

    /// Forgets keys past their 24 hours (no repeat is answered from them any more), at most
    /// [`FORGET_BATCH`] of them, oldest first; how many went.
    pub async fn forget_expired_keys(&self, now: Micros) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (party_id, idem_key) IN \
             (SELECT party_id, idem_key FROM idempotency_keys WHERE created_at < $1 \
             ORDER BY created_at LIMIT $2)",
        )
        .bind(now - KEEP_MICROS)
        .bind(FORGET_BATCH)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records written before keys were hashed: those past their 24 hours go, the others are
    /// hashed in place. Run at start, after the key of blind indexes is loaded, and only
    /// once for a database: the migration that began hashing left a `pending_work` row,
    /// which the process that does the work takes (another process waits for it, then finds
    /// nothing to do).
    pub(super) async fn hash_idempotency_keys(&self, now: Micros) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let pending = sqlx::query("DELETE FROM pending_work WHERE name = 'hash-idempotency-keys'")
            .execute(&mut *tx)
            .await?;
        if pending.rows_affected() == 0 {
            return Ok(());
        }
        // `substr`, not `LIKE`: SQLite's LIKE ignores case, and a client's key may start `H1:`.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1 AND substr(idem_key, 1, 3) <> 'h1:'",
        )
        .bind(now - KEEP_MICROS)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT party_id, idem_key, request_hash FROM idempotency_keys WHERE substr(idem_key, 1, 3) <> 'h1:'",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (party, key, request_hash) in rows {
            sqlx::query(
                "UPDATE idempotency_keys SET idem_key = $3, request_hash = $4 WHERE party_id = $1 AND idem_key = $2",
            )
            .bind(&party)
            .bind(&key)
            .bind(self.idempotency_key_hash(&key))
            .bind(self.idempotency_request_hash(&request_hash))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if self.backend == super::Backend::Sqlite {
            // The rows' clear versions are still in the log: written over into the database
            // file, and the log emptied.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.writer)
                .await?;
        }
        Ok(())
    }

    /// What an earlier request with this key did, if one was made within 24 hours of `now`.
    pub async fn idempotent_replay(
        &self,
        party_id: &str,
        key: &str,
        request_hash: &str,
        now: Micros,
    ) -> StoreResult<Option<Replay>> {
        let row = sqlx::query_as::<_, Record>(
            "SELECT request_hash, result FROM idempotency_keys \
             WHERE party_id = $1 AND idem_key = $2 AND created_at >= $3",
        )
        .bind(party_id)
        .bind(key)
        .bind(now - KEEP_MICROS)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        if r.request_hash != request_hash {
            return Ok(Some(Replay::Mismatch));
        }
        Ok(Some(Replay::Queued {
            message_id: MessageId::from_stored(message_of(&r.result)),
        }))
    }
}

/// The message a stored result names: the id itself, or, in records written before results
/// were ids, the `messageId` of the stored response.
fn message_of(result: &str) -> String {
    serde_json::from_str::<serde_json::Value>(result)
        .ok()
        .and_then(|v| v.get("messageId")?.as_str().map(str::to_string))
        .unwrap_or_else(|| result.to_string())
}

#[cfg(test)]
mod tests {
    use super::message_of;

    #[test]
    fn a_result_is_a_message_id_or_an_old_response_naming_one() {
        assert_eq!(message_of("msg_1"), "msg_1");
        assert_eq!(
            message_of(r#"{"messageId":"msg_2","status":"queued"}"#),
            "msg_2"
        );
    }
}
