//! Reading the audit log. Entries are written by `super::audit` inside each change's
//! transaction.

use sqlx::Row;

use super::{Page, Store, StoreError, StoreResult};
use crate::domain::party::Actor;
use crate::domain::time::Micros;

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_party_id: Option<String>,
    pub actor_name: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub at: Micros,
}

impl Store {
    /// The case's audit log, oldest first.
    pub async fn list_audit(
        &self,
        actor: &Actor,
        case_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> StoreResult<Option<Page<AuditEntry>>> {
        let mut conn = self.pool.acquire().await?;
        if !Self::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let after: i64 = match cursor {
            None => 0,
            Some(c) => super::decode_cursor(c)?.parse().map_err(|_| {
                StoreError::invalid("invalid_cursor", "cursor is not one this API issued")
            })?,
        };
        let rows = sqlx::query(
            "SELECT id, actor_party_id, actor_name, action, target_type, target_id, at FROM audit_log \
             WHERE case_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(case_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    actor_party_id: r.try_get(1)?,
                    actor_name: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target_type: r.try_get(4)?,
                    target_id: r.try_get(5)?,
                    at: r.try_get(6)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let limit = usize::try_from(limit).unwrap_or(0);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|e| super::encode_cursor(&e.id.to_string()))
        } else {
            None
        };
        Ok(Some(Page { items, next_cursor }))
    }
}
