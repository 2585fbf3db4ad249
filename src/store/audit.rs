//! Reading the audit log. Entries are written by `super::audit` inside each change's
//! transaction.

use super::{Audit, Page, StoreError, StoreInner, StoreResult};
use crate::domain::CaseId;
use crate::domain::code::Code;
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

/// A row of `audit_log` as the list reads it.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    actor_party_id: Option<String>,
    actor_name: String,
    action: String,
    target_type: String,
    target_id: String,
    at: i64,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            actor_party_id: r.actor_party_id,
            actor_name: r.actor_name,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            at: r.at,
        }
    }
}

impl Audit {
    /// The case's audit log, oldest first. An entry about a private note is shown only to
    /// those who see the note: its author's party, and admins.
    pub async fn list_audit(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        cursor: Option<&str>,
        limit: i64,
    ) -> StoreResult<Option<Page<AuditEntry>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let after: i64 = match cursor {
            None => 0,
            Some(c) => super::decode_cursor(c)?.parse().map_err(|_| {
                StoreError::invalid(Code::InvalidCursor, "cursor is not one this API issued")
            })?,
        };
        let mut items: Vec<AuditEntry> = sqlx::query_as::<_, AuditRow>(
            "SELECT a.id, a.actor_party_id, a.actor_name, a.action, a.target_type, a.target_id, a.at FROM audit_log a \
             WHERE a.case_id = $1 AND a.id > $2 \
             AND ($5 = 1 OR a.target_type <> 'note' OR NOT EXISTS (SELECT 1 FROM notes n \
               WHERE n.id = a.target_id AND n.visibility = 'private' AND n.author_party_id <> $4)) \
             ORDER BY a.id LIMIT $3",
        )
        .bind(case_id)
        .bind(after)
        .bind(limit + 1)
        .bind(actor.party_id.as_str())
        .bind(super::admin_flag(actor))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(AuditEntry::from)
        .collect();
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
