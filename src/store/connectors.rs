//! Connectors: their settings (the secret ones sealed together), where each stands, its
//! sync cursor and counters, and what each has taken in by the remote system's id.

use crate::domain::connector::{ConnectorStatus, ConnectorType, Settings};
use crate::domain::event::EventType;
use crate::domain::party::{Actor, PartyKind};
use crate::domain::time::Micros;
use crate::domain::{ConnectorId, PartyId};

use super::{Connectors, StoreError, StoreResult, audit_as, emit};
use crate::domain::audit::AuditAction;
use crate::domain::code::Code;

/// A connector as it is stored, its secrets opened.
#[derive(Debug, Clone)]
pub struct Connector {
    pub id: ConnectorId,
    pub kind: ConnectorType,
    pub name: String,
    /// Whose cases it serves; none: every case.
    pub creditor_id: Option<PartyId>,
    pub settings: Settings,
    pub status: ConnectorStatus,
    pub last_error: Option<String>,
    pub last_sync_at: Option<Micros>,
    pub last_attempt_at: Option<Micros>,
    pub sync_requested_at: Option<Micros>,
    pub cursor: Option<String>,
    pub syncs: i64,
    pub items: i64,
    pub failures: i64,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// A CRM's messages by where they stand (`pending`, `logged`, `failed`, `unlinked`, …);
    /// filled only where an admin reads connectors.
    pub activities: Vec<(String, i64)>,
}

#[derive(sqlx::FromRow)]
struct ConnectorRow {
    id: ConnectorId,
    connector_type: String,
    name: String,
    creditor_id: Option<PartyId>,
    settings: String,
    secrets_sealed: Vec<u8>,
    status: String,
    last_error: Option<String>,
    last_sync_at: Option<i64>,
    last_attempt_at: Option<i64>,
    sync_requested_at: Option<i64>,
    sync_cursor: Option<String>,
    syncs: i64,
    items: i64,
    failures: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, connector_type, name, creditor_id, settings, secrets_sealed, status, \
     last_error, last_sync_at, last_attempt_at, sync_requested_at, sync_cursor, syncs, items, \
     failures, created_at, updated_at";

fn secrets_context(id: &ConnectorId) -> String {
    format!("connector:{id}:secrets")
}

/// A connector to create, its settings checked.
#[derive(Debug, Clone)]
pub struct NewConnector {
    pub kind: ConnectorType,
    pub name: String,
    pub creditor_id: Option<PartyId>,
    pub settings: Settings,
}

/// What an update changes; `restart` forgets the sync cursor (another mailbox).
#[derive(Debug, Clone)]
pub struct ConnectorChange {
    pub name: String,
    pub creditor_id: Option<PartyId>,
    pub settings: Settings,
    pub restart: bool,
}

/// How a sync ended.
#[derive(Debug, Clone)]
pub enum SyncEnd {
    /// It took `items` new things and reached `cursor`; `more` is waiting beyond it (the
    /// next round comes at once).
    Done {
        cursor: Option<String>,
        items: i64,
        more: bool,
    },
    /// It stopped at `status` for `error` (having taken `items` before it did).
    Failed {
        status: ConnectorStatus,
        error: String,
        items: i64,
    },
}

impl Connectors {
    fn open(&self, row: ConnectorRow) -> StoreResult<Connector> {
        let corrupt = |e: crate::domain::Invalid| StoreError::Corrupt(e.0);
        let secrets = self
            .keys
            .open(&secrets_context(&row.id), &row.secrets_sealed)
            .map_err(|e| StoreError::Corrupt(format!("connector secrets: {e}")))?;
        let json = |bytes: &[u8]| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                .map_err(|e| StoreError::Corrupt(format!("connector settings: {e}")))
        };
        Ok(Connector {
            kind: ConnectorType::parse(&row.connector_type).map_err(corrupt)?,
            status: ConnectorStatus::parse(&row.status).map_err(corrupt)?,
            settings: Settings {
                public: json(row.settings.as_bytes())?,
                secrets: json(&secrets)?,
            },
            id: row.id,
            name: row.name,
            creditor_id: row.creditor_id,
            last_error: row.last_error,
            last_sync_at: row.last_sync_at,
            last_attempt_at: row.last_attempt_at,
            sync_requested_at: row.sync_requested_at,
            cursor: row.sync_cursor,
            syncs: row.syncs,
            items: row.items,
            failures: row.failures,
            created_at: row.created_at,
            updated_at: row.updated_at,
            activities: Vec::new(),
        })
    }

    fn sealed(&self, id: &ConnectorId, settings: &Settings) -> StoreResult<(String, Vec<u8>)> {
        let public = serde_json::to_string(&settings.public).map_err(anyhow::Error::from)?;
        let secrets = serde_json::to_vec(&settings.secrets).map_err(anyhow::Error::from)?;
        Ok((public, self.keys.seal(&secrets_context(id), &secrets)))
    }

    async fn require_creditor(
        conn: &mut sqlx::AnyConnection,
        creditor: Option<&PartyId>,
    ) -> StoreResult<()> {
        let Some(id) = creditor else {
            return Ok(());
        };
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM parties WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if kind.as_deref() == Some(PartyKind::Creditor.as_str()) {
            Ok(())
        } else {
            Err(StoreError::invalid(
                Code::InvalidParty,
                format!("creditorId {id:?} is not a creditor party"),
            ))
        }
    }

    /// Creates a connector (audited); its first sync is asked for at once.
    pub async fn create_connector(
        &self,
        actor: &Actor,
        new: NewConnector,
    ) -> StoreResult<Connector> {
        let id = ConnectorId::new();
        let now = self.now();
        let (public, secrets) = self.sealed(&id, &new.settings)?;
        let mut tx = self.write_tx().await?;
        Self::require_creditor(&mut tx, new.creditor_id.as_ref()).await?;
        sqlx::query(
            "INSERT INTO connectors (id, connector_type, name, creditor_id, settings, secrets_sealed, \
             status, sync_requested_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7, $7)",
        )
        .bind(&id)
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(new.creditor_id.as_ref())
        .bind(public)
        .bind(secrets)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.audit_connector(&mut tx, actor, AuditAction::ConnectorCreated, &id)
            .await?;
        tx.commit().await?;
        self.connector(&id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a created connector is gone").into())
    }

    async fn audit_connector(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        action: AuditAction,
        id: &ConnectorId,
    ) -> sqlx::Result<()> {
        audit_as(
            tx,
            None,
            (Some(actor.party_id.as_str()), &actor.name),
            action,
            "connector",
            id,
            self.now(),
        )
        .await
    }

    pub async fn connector(&self, id: &ConnectorId) -> StoreResult<Option<Connector>> {
        let row: Option<ConnectorRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM connectors WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| self.open(r)).transpose()
    }

    /// Every connector, oldest first.
    pub async fn connectors(&self) -> StoreResult<Vec<Connector>> {
        let rows: Vec<ConnectorRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM connectors ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| self.open(r)).collect()
    }

    /// Changes a connector (audited): it is `active` again and synced at once. `None`: no
    /// such connector.
    pub async fn update_connector(
        &self,
        actor: &Actor,
        id: &ConnectorId,
        change: ConnectorChange,
    ) -> StoreResult<Option<Connector>> {
        let now = self.now();
        let (public, secrets) = self.sealed(id, &change.settings)?;
        let mut tx = self.write_tx().await?;
        Self::require_creditor(&mut tx, change.creditor_id.as_ref()).await?;
        let done = sqlx::query(
            "UPDATE connectors SET name = $2, creditor_id = $3, settings = $4, secrets_sealed = $5, \
             status = 'active', last_error = NULL, sync_requested_at = $6, updated_at = $6, \
             sync_cursor = CASE WHEN $7 = 1 THEN NULL ELSE sync_cursor END WHERE id = $1",
        )
        .bind(id)
        .bind(&change.name)
        .bind(change.creditor_id.as_ref())
        .bind(public)
        .bind(secrets)
        .bind(now)
        .bind(i32::from(change.restart))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if change.restart {
            // Another drive or root folder: what was mirrored or learned there is not here.
            for table in ["remote_folders", "remote_files"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE connector_id = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        self.audit_connector(&mut tx, actor, AuditAction::ConnectorUpdated, id)
            .await?;
        tx.commit().await?;
        self.connector(id).await
    }

    /// Deletes a connector and what it remembers (audited); false when there was none.
    pub async fn delete_connector(&self, actor: &Actor, id: &ConnectorId) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM connector_items WHERE connector_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM connectors WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.audit_connector(&mut tx, actor, AuditAction::ConnectorDeleted, id)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Asks for a sync of the connector at the next round (audited); false when there is
    /// no such connector.
    pub async fn request_sync(&self, actor: &Actor, id: &ConnectorId) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE connectors SET sync_requested_at = $2 WHERE id = $1")
            .bind(id)
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // A CRM's activities that found no record, or failed for good, are tried again.
        sqlx::query(
            "UPDATE crm_activities SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2 \
             WHERE connector_id = $1 AND status IN ('unlinked', 'failed')",
        )
        .bind(id)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        self.audit_connector(&mut tx, actor, AuditAction::ConnectorSyncRequested, id)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps how far a sync has come, between its pages, unless the connector was changed
    /// since the sync read it (`version`, its `updated_at` then): another mailbox's cursor
    /// is never written back over a reset.
    pub async fn save_cursor(
        &self,
        id: &ConnectorId,
        version: Micros,
        cursor: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE connectors SET sync_cursor = $2 WHERE id = $1 AND updated_at = $3")
            .bind(id)
            .bind(cursor)
            .bind(version)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records how a sync ended. A connector that was working and fails raises
    /// `connector.failed` (once: a failing one failing again raises nothing more).
    pub async fn record_sync(
        &self,
        id: &ConnectorId,
        (started, version): (Micros, Micros),
        end: &SyncEnd,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        match end {
            SyncEnd::Done {
                cursor,
                items,
                more,
            } => {
                sqlx::query(
                    "UPDATE connectors SET status = 'active', last_error = NULL, last_sync_at = $2, \
                     last_attempt_at = $2, \
                     sync_cursor = CASE WHEN updated_at = $7 THEN COALESCE($3, sync_cursor) ELSE sync_cursor END, \
                     syncs = syncs + 1, items = items + $4, \
                     sync_requested_at = CASE WHEN $6 = 1 THEN $2 \
                         WHEN sync_requested_at <= $5 THEN NULL ELSE sync_requested_at END \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(cursor.as_deref())
                .bind(*items)
                .bind(started)
                .bind(i32::from(*more))
                .bind(version)
                .execute(&mut *tx)
                .await?;
            }
            SyncEnd::Failed {
                status,
                error,
                items,
            } => {
                let before: Option<(String, String)> =
                    sqlx::query_as("SELECT status, connector_type FROM connectors WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((before, kind)) = before else {
                    return Ok(());
                };
                sqlx::query(
                    "UPDATE connectors SET status = $2, last_error = $3, last_attempt_at = $4, \
                     failures = failures + 1, items = items + $5, \
                     sync_requested_at = CASE WHEN sync_requested_at <= $6 THEN NULL ELSE sync_requested_at END \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(status.as_str())
                .bind(error)
                .bind(now)
                .bind(*items)
                .bind(started)
                .execute(&mut *tx)
                .await?;
                if before != status.as_str() {
                    let payload = serde_json::json!({
                        "connectorId": id, "connectorType": kind, "status": status,
                        "error": error, "timestamp": crate::domain::time::rfc3339(now),
                    });
                    emit(&mut tx, EventType::ConnectorFailed, None, &payload, now).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the connector took in the remote item before.
    pub async fn taken(&self, id: &ConnectorId, remote_id: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT taken_at FROM connector_items WHERE connector_id = $1 AND remote_id = $2",
        )
        .bind(id)
        .bind(remote_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Records that the connector took in the remote item.
    pub async fn record_taken(&self, id: &ConnectorId, remote_id: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connector_items (connector_id, remote_id, taken_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connector_id, remote_id) DO NOTHING",
        )
        .bind(id)
        .bind(remote_id)
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records that the connector's mailbox carried the message (in or out).
    pub async fn mark_carried(
        &self,
        message: &crate::domain::MessageId,
        carrier: &crate::domain::connector::Carrier,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE messages SET carried_by = $2 WHERE id = $1")
            .bind(message)
            .bind(serde_json::to_string(carrier).map_err(anyhow::Error::from)?)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
