//! Re-sealing stored values under the current master key (`parley rekey`), so an earlier
//! key can be retired.
//!
//! Every sealed column is listed here with the context its values were sealed under. Rows
//! are read a page at a time and each changed value is written back only if the row still
//! holds what was read, so a rekey can run beside a serving process.

use std::collections::BTreeMap;

use super::{Store, StoreResult, cases, documents, inbound, messages, notes, policy, preferences};
use super::{threads, webhooks};

/// A column of sealed values, the column that names its row, and the seal's context.
struct SealedColumn {
    table: &'static str,
    key: &'static str,
    column: &'static str,
    context: fn(&str) -> String,
}

const PAGE: i64 = 500;

const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "key_material",
        key: "purpose",
        column: "sealed",
        context: super::key_context,
    },
    SealedColumn {
        table: "cases",
        key: "id",
        column: "debtor_sealed",
        context: cases::debtor_context,
    },
    SealedColumn {
        table: "notes",
        key: "id",
        column: "note_sealed",
        context: notes::note_context,
    },
    SealedColumn {
        table: "threads",
        key: "id",
        column: "subject_sealed",
        context: threads::thread_context,
    },
    SealedColumn {
        table: "documents",
        key: "id",
        column: "uploaded_by_sealed",
        context: documents::uploader_context,
    },
    SealedColumn {
        table: "thread_participants",
        key: "id",
        column: "participant_sealed",
        context: threads::participant_context,
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "envelope_sealed",
        context: |id| messages::context(id, "envelope"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "subject_sealed",
        context: |id| messages::context(id, "subject"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "body_sealed",
        context: |id| messages::context(id, "body"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "html_sealed",
        context: |id| messages::context(id, "html"),
    },
    SealedColumn {
        table: "documents",
        key: "id",
        column: "description_sealed",
        context: documents::description_context,
    },
    SealedColumn {
        table: "preferences",
        key: "case_id",
        column: "contact_sealed",
        context: preferences::contact_context,
    },
    SealedColumn {
        table: "preferences",
        key: "case_id",
        column: "dnc_reason_sealed",
        context: |id| format!("{}:reason", preferences::contact_context(id)),
    },
    SealedColumn {
        table: "webhooks",
        key: "id",
        column: "secret_sealed",
        context: webhooks::secret_context,
    },
    SealedColumn {
        table: "suppressions",
        key: "id",
        column: "address_sealed",
        context: policy::address_context,
    },
    SealedColumn {
        table: "inbound_raw",
        key: "id",
        column: "raw_sealed",
        context: inbound::raw_context,
    },
];

#[derive(sqlx::FromRow)]
struct SealedRow {
    id: String,
    sealed: Vec<u8>,
}

/// A document whose file is sealed under an earlier key.
#[derive(Debug, sqlx::FromRow)]
pub struct StaleDocument {
    pub id: String,
    pub storage_key: String,
}

impl Store {
    /// Seals every value held under an earlier master key again under the current one.
    /// Returns, per `table.column`, how many values were re-sealed. A value no configured
    /// key opens stops the run with an error naming its row (nothing is guessed over).
    pub async fn reseal_all(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for c in SEALED {
            let n = self.reseal_column(c).await?;
            counts.insert(format!("{}.{}", c.table, c.column), n);
        }
        Ok(counts)
    }

    async fn reseal_column(&self, c: &SealedColumn) -> anyhow::Result<u64> {
        let select = format!(
            "SELECT {key} AS id, {column} AS sealed FROM {table} \
             WHERE {key} > $1 AND {column} IS NOT NULL ORDER BY {key} LIMIT {PAGE}",
            key = c.key,
            column = c.column,
            table = c.table,
        );
        let update = format!(
            "UPDATE {table} SET {column} = $1 WHERE {key} = $2 AND {column} = $3",
            key = c.key,
            column = c.column,
            table = c.table,
        );
        let mut after = String::new();
        let mut resealed = 0;
        loop {
            let rows: Vec<SealedRow> = sqlx::query_as(&select)
                .bind(&after)
                .fetch_all(&self.pool)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let mut changed = Vec::new();
            for row in &rows {
                let fresh = self
                    .keys
                    .reseal(&(c.context)(&row.id), &row.sealed)
                    .map_err(|e| {
                        anyhow::anyhow!("{}.{} of row {}: {e}", c.table, c.column, row.id)
                    })?;
                if let Some(fresh) = fresh {
                    changed.push((row, fresh));
                }
            }
            if changed.is_empty() {
                continue;
            }
            let mut tx = self.writer.begin().await?;
            for (row, fresh) in changed {
                let done = sqlx::query(&update)
                    .bind(fresh)
                    .bind(&row.id)
                    .bind(&row.sealed)
                    .execute(&mut *tx)
                    .await?;
                // A row rewritten meanwhile was sealed under the current key by its writer.
                resealed += done.rows_affected();
            }
            tx.commit().await?;
        }
        Ok(resealed)
    }

    /// Documents whose files are sealed under another key than the current one.
    pub async fn stale_documents(&self) -> StoreResult<Vec<StaleDocument>> {
        Ok(
            sqlx::query_as("SELECT id, storage_key FROM documents WHERE key_id <> $1 ORDER BY id")
                .bind(self.keys.current_key_id())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records that a document's file is now sealed under the current key.
    pub async fn document_resealed(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE documents SET key_id = $1 WHERE id = $2")
            .bind(self.keys.current_key_id())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
