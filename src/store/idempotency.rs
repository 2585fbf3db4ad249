//! `Idempotency-Key`: a repeat within 24 hours returns the first response.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::domain::time::now_micros;

pub const KEEP_MICROS: i64 = 24 * 3600 * 1_000_000;

pub enum Replay {
    /// The same request was answered before: answer the same again.
    Stored { status: u16, body: String },
    /// The key was used with another request.
    Mismatch,
}

impl Store {
    pub async fn idempotent_replay(
        &self,
        party_id: &str,
        key: &str,
        request_hash: &str,
    ) -> StoreResult<Option<Replay>> {
        let row = sqlx::query(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys \
             WHERE party_id = $1 AND idem_key = $2 AND created_at >= $3",
        )
        .bind(party_id)
        .bind(key)
        .bind(now_micros() - KEEP_MICROS)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        if r.try_get::<String, _>(0)? != request_hash {
            return Ok(Some(Replay::Mismatch));
        }
        let status: i32 = r.try_get(1)?;
        Ok(Some(Replay::Stored {
            status: u16::try_from(status).unwrap_or(201),
            body: r.try_get(2)?,
        }))
    }
}
