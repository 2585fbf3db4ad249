//! Re-sealing stored values (`parley rekey`, `parley migrate`): a data subject's values
//! sealed under the master key move under the subject's key (installations from before
//! subject keys), the rest under the current master key, so an earlier key can be retired;
//! and subject keys are wrapped again under the current master key.
//!
//! Every sealed column is listed here with the context its values were sealed under and how
//! its row's case is found. Rows are read a page at a time and each changed value is written
//! back only if the row still holds what was read, so a rekey can run beside a serving
//! process.

use crate::domain::{CaseId, DocumentId};
use std::collections::BTreeMap;

use super::{
    StoreResult, Subjects, cases, documents, inbound, messages, notes, payments, policy,
    preferences,
};
use super::{threads, webhooks};

/// A column of sealed values, the column that names its row, and the seal's context.
struct SealedColumn {
    table: &'static str,
    key: &'static str,
    column: &'static str,
    context: fn(&str) -> String,
    /// The SQL naming the row's case, whose debtor's key seals the value; `None` for values
    /// about no data subject (keys, webhook secrets).
    case_of: Option<&'static str>,
}

const PAGE: i64 = 500;

const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "key_material",
        key: "purpose",
        column: "sealed",
        context: |id| super::key_context(id),
        case_of: None,
    },
    SealedColumn {
        table: "cases",
        key: "id",
        column: "debtor_sealed",
        context: |id| cases::debtor_context(id),
        case_of: Some("id"),
    },
    SealedColumn {
        table: "notes",
        key: "id",
        column: "note_sealed",
        context: |id| notes::note_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "threads",
        key: "id",
        column: "subject_sealed",
        context: |id| threads::thread_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "documents",
        key: "id",
        column: "uploaded_by_sealed",
        context: |id| documents::uploader_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "thread_participants",
        key: "id",
        column: "participant_sealed",
        context: |id| threads::participant_context(id),
        case_of: Some(
            "(SELECT t.case_id FROM threads t WHERE t.id = thread_participants.thread_id)",
        ),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "envelope_sealed",
        context: |id| messages::context(id, "envelope"),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "subject_sealed",
        context: |id| messages::context(id, "subject"),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "body_sealed",
        context: |id| messages::context(id, "body"),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "html_sealed",
        context: |id| messages::context(id, "html"),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "messages",
        key: "id",
        column: "understanding_sealed",
        context: |id| messages::context(id, "understanding"),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "documents",
        key: "id",
        column: "description_sealed",
        context: |id| documents::description_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "preferences",
        key: "case_id",
        column: "contact_sealed",
        context: |id| preferences::contact_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "preferences",
        key: "case_id",
        column: "dnc_reason_sealed",
        context: |id| format!("{}:reason", preferences::contact_context(id)),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "webhooks",
        key: "id",
        column: "secret_sealed",
        context: |id| webhooks::secret_context(id),
        case_of: None,
    },
    SealedColumn {
        table: "suppressions",
        key: "id",
        column: "address_sealed",
        context: |id| policy::address_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "documents",
        key: "id",
        column: "file_name_sealed",
        context: |id| documents::file_name_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "deadlines",
        key: "id",
        column: "title_sealed",
        context: |id| payments::title_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "payments",
        key: "id",
        column: "reference_sealed",
        context: |id| payments::reference_context(id),
        case_of: Some("case_id"),
    },
    SealedColumn {
        table: "inbound_raw",
        key: "id",
        column: "raw_sealed",
        context: |id| inbound::raw_context(id),
        case_of: Some("(SELECT m.case_id FROM messages m WHERE m.id = inbound_raw.message_id)"),
    },
];

/// A text kept in the clear by earlier versions, and the column that seals it now.
struct ClearText {
    table: &'static str,
    clear: &'static str,
    sealed: &'static str,
    context: fn(&str) -> String,
    /// What the clear column holds once the text is sealed (SQL).
    emptied: &'static str,
}

const CLEAR: &[ClearText] = &[
    ClearText {
        table: "documents",
        clear: "file_name",
        sealed: "file_name_sealed",
        context: |id| documents::file_name_context(id),
        emptied: "''",
    },
    ClearText {
        table: "deadlines",
        clear: "title",
        sealed: "title_sealed",
        context: |id| payments::title_context(id),
        emptied: "''",
    },
    ClearText {
        table: "payments",
        clear: "reference",
        sealed: "reference_sealed",
        context: |id| payments::reference_context(id),
        emptied: "NULL",
    },
];

#[derive(sqlx::FromRow)]
struct ClearRow {
    id: String,
    case_id: CaseId,
    text: String,
}

impl SealedColumn {
    /// Writes a re-sealed value back only if the row still holds what was read.
    fn update_sql(&self) -> String {
        format!(
            "UPDATE {table} SET {column} = $1 WHERE {key} = $2 AND {column} = $3",
            key = self.key,
            column = self.column,
            table = self.table,
        )
    }
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    id: String,
    sealed: Vec<u8>,
    case_id: Option<CaseId>,
}

/// A document whose file is sealed under the master key, not its case's subject key.
#[derive(Debug, sqlx::FromRow)]
pub struct StaleDocument {
    pub id: DocumentId,
    pub case_id: CaseId,
    pub storage_key: String,
}

impl Subjects {
    /// Seals every value held under an earlier master key again under the current one.
    /// Returns, per `table.column`, how many values were re-sealed. A value no configured
    /// key opens stops the run with an error naming its row (nothing is guessed over).
    pub async fn reseal_all(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        counts.insert(
            "subject_keys.key_sealed".to_string(),
            self.rewrap_subject_keys().await?,
        );
        for c in CLEAR {
            let n = self.seal_clear_text(c).await?;
            counts.insert(format!("{}.{}", c.table, c.clear), n);
        }
        for c in SEALED {
            let n = self.reseal_column(c).await?;
            counts.insert(format!("{}.{}", c.table, c.column), n);
        }
        Ok(counts)
    }

    async fn reseal_column(&self, c: &SealedColumn) -> anyhow::Result<u64> {
        let select = format!(
            "SELECT {key} AS id, {column} AS sealed, {case_of} AS case_id FROM {table} \
             WHERE {key} > $1 AND {column} IS NOT NULL ORDER BY {key} LIMIT {PAGE}",
            key = c.key,
            column = c.column,
            table = c.table,
            case_of = c.case_of.unwrap_or("NULL"),
        );
        let update = c.update_sql();
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
                let key = match (&row.case_id, crate::crypto::subject_key_of(&row.sealed)) {
                    (Some(case_id), None) => self.key_unless_erased(case_id).await?,
                    _ => None,
                };
                if let Some(fresh) = self.resealed(c, row, key.as_deref())? {
                    changed.push((row, fresh));
                }
            }
            resealed += self.write_resealed(&update, changed).await?;
        }
        Ok(resealed)
    }

    /// Seals what an earlier version kept in the clear under its case's subject key (an
    /// erased case's is left: its erasure cleared it).
    async fn seal_clear_text(&self, c: &ClearText) -> anyhow::Result<u64> {
        let select = format!(
            "SELECT id, case_id, {clear} AS text FROM {table} WHERE {sealed} IS NULL AND {clear} IS NOT NULL \
             AND {clear} <> '' AND id > $1 ORDER BY id LIMIT {PAGE}",
            clear = c.clear,
            sealed = c.sealed,
            table = c.table,
        );
        let update = format!(
            "UPDATE {table} SET {sealed} = $1, {clear} = {emptied} WHERE id = $2 AND {clear} = $3 AND {sealed} IS NULL",
            clear = c.clear,
            sealed = c.sealed,
            table = c.table,
            emptied = c.emptied,
        );
        let mut after = String::new();
        let mut sealed = 0;
        loop {
            let rows: Vec<ClearRow> = sqlx::query_as(&select)
                .bind(&after)
                .fetch_all(&self.pool)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let mut tx = self.writer.begin().await?;
            for row in &rows {
                let Some(key) = self.key_unless_erased(&row.case_id).await? else {
                    continue;
                };
                sealed += sqlx::query(&update)
                    .bind(key.seal_str(&(c.context)(&row.id), &row.text))
                    .bind(&row.id)
                    .bind(&row.text)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        }
        Ok(sealed)
    }

    /// A value sealed anew: a data subject's value still under the master key under the
    /// subject's `key` (when the subject is not erased), anything else under the master key
    /// when it is under an earlier one. `None`: it stays as it is.
    fn resealed(
        &self,
        c: &SealedColumn,
        row: &SealedRow,
        key: Option<&crate::crypto::SubjectKey>,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let context = (c.context)(&row.id);
        let failed = |e: crate::crypto::CryptoError| {
            anyhow::anyhow!("{}.{} of row {}: {e}", c.table, c.column, row.id)
        };
        match key {
            Some(key) if crate::crypto::subject_key_of(&row.sealed).is_none() => {
                let plain = self.keys.open(&context, &row.sealed).map_err(failed)?;
                Ok(Some(key.seal(&context, &plain)))
            }
            _ => self.keys.reseal(&context, &row.sealed).map_err(failed),
        }
    }

    /// Writes re-sealed values back, each only if its row still holds what was read (a row
    /// rewritten meanwhile was sealed by its writer); returns how many were written.
    async fn write_resealed(
        &self,
        update: &str,
        changed: Vec<(&SealedRow, Vec<u8>)>,
    ) -> anyhow::Result<u64> {
        if changed.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        let mut tx = self.writer.begin().await?;
        for (row, fresh) in changed {
            written += sqlx::query(update)
                .bind(fresh)
                .bind(&row.id)
                .bind(&row.sealed)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Seals every value of one case's debtor still under the master key (an installation
    /// from before subject keys) under the case's `key`: an erasure then reaches them too.
    pub(crate) async fn seal_case_under(
        &self,
        case_id: &CaseId,
        key: &crate::crypto::SubjectKey,
    ) -> anyhow::Result<u64> {
        let mut resealed = 0;
        for c in SEALED {
            let Some(case_of) = c.case_of else { continue };
            let select = format!(
                "SELECT {key} AS id, {column} AS sealed, {case_of} AS case_id FROM {table} \
                 WHERE {case_of} = $1 AND {column} IS NOT NULL",
                key = c.key,
                column = c.column,
                table = c.table,
            );
            let update = c.update_sql();
            let rows: Vec<SealedRow> = sqlx::query_as(&select)
                .bind(case_id)
                .fetch_all(&self.pool)
                .await?;
            let mut changed = Vec::new();
            for row in rows
                .iter()
                .filter(|r| crate::crypto::subject_key_of(&r.sealed).is_none())
            {
                let context = (c.context)(&row.id);
                let plain = self.keys.open(&context, &row.sealed).map_err(|e| {
                    anyhow::anyhow!("{}.{} of row {}: {e}", c.table, c.column, row.id)
                })?;
                changed.push((row, key.seal(&context, &plain)));
            }
            resealed += self.write_resealed(&update, changed).await?;
        }
        Ok(resealed)
    }

    /// Documents whose files are sealed under the master key (of an installation from
    /// before subject keys), of debtors not erased.
    pub async fn stale_documents(&self) -> StoreResult<Vec<StaleDocument>> {
        Ok(sqlx::query_as(
            "SELECT d.id, d.case_id, d.storage_key FROM documents d JOIN cases c ON c.id = d.case_id \
             WHERE d.key_id <> $1 AND c.erased_at IS NULL ORDER BY d.id",
        )
        .bind(documents::SUBJECT_SEALED)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that a document's file is now sealed under its case's subject key.
    pub async fn document_resealed(&self, id: &DocumentId) -> StoreResult<()> {
        sqlx::query("UPDATE documents SET key_id = $1 WHERE id = $2")
            .bind(documents::SUBJECT_SEALED)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
