//! `Idempotency-Key`: a repeat within 24 hours gets the result of the first request.

use super::{Store, StoreResult};
use crate::domain::time::Micros;

pub const KEEP_MICROS: i64 = 24 * 3600 * 1_000_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// The same request was made before: it queued this message.
    Queued { message_id: String },
    /// The key was used with another request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Record {
    request_hash: String,
    result: String,
}

impl Store {
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
            message_id: message_of(&r.result),
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
