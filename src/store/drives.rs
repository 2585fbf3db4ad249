//! The document systems' copies (`connectors/drives.rs` does the talking): the folder of
//! each case on each drive connector, each document's remote file (the name chosen for it
//! before its upload, the remote item, an upload session to resume), the `mirror_document`
//! jobs (queued in the transaction that records a document), the files taken in from a case
//! folder, and the case folders an erasure has still to delete.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::AnyConnection;

use crate::crypto::SubjectKey;
use crate::domain::connector::ConnectorType;
use crate::domain::document::DocumentType;
use crate::domain::message::JobKind;
use crate::domain::time::Micros;
use crate::domain::{CaseId, ConnectorId, DocumentId, PartyId};

use super::StoreResult;
use super::{Connector, Connectors, DocumentView, Documents, Drives, NewDocument, Sibling};

/// A document to mirror, with its case's number and creditor.
#[derive(Debug, Clone)]
pub struct ToMirror {
    pub document: DocumentView,
    pub case_number: String,
    pub creditor_id: PartyId,
}

/// A document's file on one connector.
#[derive(Debug, Clone, Default)]
pub struct RemoteFile {
    /// The name chosen for it in its case folder (before the upload).
    pub name: Option<String>,
    /// The remote item, once it exists.
    pub remote_id: Option<String>,
    /// An upload session begun and not finished.
    pub session: Option<String>,
    /// Where a person opens it, when the service gives a link.
    pub link: Option<String>,
    /// It is there, whole.
    pub done: bool,
    /// Taken in from the service (never mirrored back to it).
    pub taken: bool,
}

/// A folder of a connector that belongs to a case: its case folder, or a sub-folder named
/// by a document type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveFolder {
    pub case_id: CaseId,
    pub document_type: Option<DocumentType>,
}

fn name_context(connector: &ConnectorId, document: &DocumentId) -> String {
    format!("remote:{connector}:{document}:name")
}

fn link_context(connector: &ConnectorId, document: &DocumentId) -> String {
    format!("remote:{connector}:{document}:link")
}

fn session_context(connector: &ConnectorId, document: &DocumentId) -> String {
    format!("remote:{connector}:{document}:session")
}

/// The drive connector types, as SQL's `IN (...)` list.
fn drive_types() -> String {
    ConnectorType::ALL
        .iter()
        .filter(|k| k.is_drive())
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Queues a `mirror_document` job for a document just recorded, in the caller's
/// transaction, when a drive connector serves its case: mirrored later even across a
/// crash. With no drive connector, one cheap statement.
pub(super) async fn enqueue(
    conn: &mut AnyConnection,
    document: &DocumentId,
    case: &CaseId,
    at: Micros,
) -> sqlx::Result<()> {
    let served: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT 1 FROM cases c WHERE c.id = $1 AND EXISTS (SELECT 1 FROM connectors k \
         WHERE k.connector_type IN ({}) AND (k.creditor_id IS NULL OR k.creditor_id = c.creditor_id))",
        drive_types()
    ))
    .bind(case)
    .fetch_optional(&mut *conn)
    .await?;
    if served.is_some() {
        super::side_job(&mut *conn, JobKind::MirrorDocument, document.as_str(), at).await?;
    }
    Ok(())
}

impl Drives {
    /// The drive connectors.
    pub async fn drive_connectors(&self) -> StoreResult<Vec<Connector>> {
        Ok(self
            .sibling::<Connectors>()
            .connectors()
            .await?
            .into_iter()
            .filter(|c| c.kind.is_drive())
            .collect())
    }

    /// A document to mirror, and its case's key; none when it is gone or its debtor erased.
    pub async fn to_mirror(
        &self,
        id: &DocumentId,
    ) -> StoreResult<Option<(ToMirror, Arc<SubjectKey>)>> {
        let Some(document) = self.sibling::<Documents>().document_by_id(id).await? else {
            return Ok(None);
        };
        let case: Option<(String, PartyId)> =
            sqlx::query_as("SELECT case_number, creditor_id FROM cases WHERE id = $1")
                .bind(document.case_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((case_number, creditor_id)) = case else {
            return Ok(None);
        };
        let Some(key) = self.key_unless_erased(&document.case_id).await? else {
            return Ok(None);
        };
        Ok(Some((
            ToMirror {
                document,
                case_number,
                creditor_id,
            },
            key,
        )))
    }

    /// The key of a case, or `None` when its debtor was erased.
    pub async fn key_of(&self, case: &CaseId) -> StoreResult<Option<Arc<SubjectKey>>> {
        self.key_unless_erased(case).await
    }

    /// The document's file on the connector, if one was planned or taken in.
    pub async fn remote_file(
        &self,
        connector: &ConnectorId,
        document: &DocumentId,
    ) -> StoreResult<Option<RemoteFile>> {
        type Row = (
            String,
            Option<Vec<u8>>,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT origin, name_sealed, remote_id, link_sealed, session_sealed, done_at \
             FROM remote_files WHERE connector_id = $1 AND document_id = $2",
        )
        .bind(connector)
        .bind(document)
        .fetch_optional(&self.pool)
        .await?;
        let Some((origin, name, remote_id, link, session, done_at)) = row else {
            return Ok(None);
        };
        self.unlock(
            [&name, &link, &session]
                .into_iter()
                .flatten()
                .map(Vec::as_slice),
        )
        .await?;
        let open = |context: String, sealed: Option<Vec<u8>>| {
            sealed.map(|s| self.open_text(&context, &s)).transpose()
        };
        Ok(Some(RemoteFile {
            name: open(name_context(connector, document), name)?,
            remote_id,
            session: open(session_context(connector, document), session)?,
            link: open(link_context(connector, document), link)?,
            done: done_at.is_some(),
            taken: origin == "taken",
        }))
    }

    /// Keeps the name chosen for a document's file before anything is uploaded (a retry
    /// after a crash uploads under the same name, replacing what a lost attempt left).
    /// A new file's name is the case's on this connector alone (`name_key`): `false`, and
    /// nothing kept, when another document took it meanwhile (or this one was planned).
    /// A new version (`remote_id` given) writes into its predecessor's file and name.
    pub async fn plan_file(
        &self,
        connector: &ConnectorId,
        document: &DocumentView,
        key: &SubjectKey,
        name: &str,
        remote_id: Option<&str>,
    ) -> StoreResult<bool> {
        let name_key = remote_id.is_none().then(|| {
            self.keys.blind_index(
                "remote-name",
                &format!("{connector}:{}:{}", document.case_id, name.to_lowercase()),
            )
        });
        let done = sqlx::query(
            "INSERT INTO remote_files (connector_id, document_id, case_id, origin, name_key, name_sealed, remote_id, created_at) \
             VALUES ($1, $2, $3, 'mirrored', $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(connector)
        .bind(&document.id)
        .bind(document.case_id)
        .bind(name_key)
        .bind(key.seal_str(&name_context(connector, &document.id), name))
        .bind(remote_id)
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps the remote item a planned file became.
    pub async fn set_remote(
        &self,
        connector: &ConnectorId,
        document: &DocumentId,
        remote_id: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE remote_files SET remote_id = $3 WHERE connector_id = $1 AND document_id = $2",
        )
        .bind(connector)
        .bind(document)
        .bind(remote_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Keeps (or forgets) the upload session of a file, to resume after a failure.
    pub async fn set_session(
        &self,
        connector: &ConnectorId,
        document: &DocumentId,
        key: &SubjectKey,
        session: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE remote_files SET session_sealed = $3 WHERE connector_id = $1 AND document_id = $2",
        )
        .bind(connector)
        .bind(document)
        .bind(session.map(|s| key.seal_str(&session_context(connector, document), s)))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records a file mirrored whole, and on its connector that it works (one transaction).
    pub async fn finish_file(
        &self,
        connector: &ConnectorId,
        document: &DocumentId,
        key: &SubjectKey,
        (remote_id, link): (&str, Option<&str>),
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE remote_files SET remote_id = $3, link_sealed = $4, session_sealed = NULL, done_at = $5 \
             WHERE connector_id = $1 AND document_id = $2",
        )
        .bind(connector)
        .bind(document)
        .bind(remote_id)
        .bind(link.map(|l| key.seal_str(&link_context(connector, document), l)))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        worked(&mut tx, connector, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The connector's folders that belong to cases, by their remote ids.
    pub async fn folders(
        &self,
        connector: &ConnectorId,
    ) -> StoreResult<HashMap<String, DriveFolder>> {
        let rows: Vec<(String, CaseId, Option<String>)> = sqlx::query_as(
            "SELECT remote_id, case_id, document_type FROM remote_folders WHERE connector_id = $1",
        )
        .bind(connector)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(remote, case_id, kind)| {
                let document_type = kind.and_then(|k| DocumentType::parse(&k).ok());
                (
                    remote,
                    DriveFolder {
                        case_id,
                        document_type,
                    },
                )
            })
            .collect())
    }

    /// The case's folder on the connector, if it was made or found.
    pub async fn case_folder(
        &self,
        connector: &ConnectorId,
        case: &CaseId,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT remote_id FROM remote_folders WHERE connector_id = $1 AND case_id = $2 \
             AND document_type IS NULL ORDER BY created_at LIMIT 1",
        )
        .bind(connector)
        .bind(case)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Keeps a folder of a case (its case folder, or a document type's sub-folder).
    pub async fn keep_folder(
        &self,
        connector: &ConnectorId,
        remote_id: &str,
        folder: DriveFolder,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO remote_folders (connector_id, remote_id, case_id, document_type, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connector_id, remote_id) DO NOTHING",
        )
        .bind(connector)
        .bind(remote_id)
        .bind(folder.case_id)
        .bind(folder.document_type.map(|t| t.as_str()))
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The names of the case's files on the connector that are planned or there (`pending`:
    /// only those still being uploaded), for choosing a free one and for telling parley's own
    /// uploads from a person's files.
    pub async fn names_in_case(
        &self,
        connector: &ConnectorId,
        case: &CaseId,
        pending: bool,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(DocumentId, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT document_id, name_sealed FROM remote_files WHERE connector_id = $1 AND case_id = $2 \
             AND ($3 = 0 OR done_at IS NULL)",
        )
        .bind(connector)
        .bind(case)
        .bind(i32::from(pending))
        .fetch_all(&self.pool)
        .await?;
        self.unlock(rows.iter().filter_map(|(_, n)| n.as_deref()))
            .await?;
        rows.into_iter()
            .filter_map(|(doc, sealed)| Some((doc, sealed?)))
            .map(|(doc, sealed)| self.open_text(&name_context(connector, &doc), &sealed))
            .collect()
    }

    /// Whether the remote item is a file the connector knows (mirrored or taken in).
    pub async fn knows_remote(
        &self,
        connector: &ConnectorId,
        remote_id: &str,
    ) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM remote_files WHERE connector_id = $1 AND remote_id = $2 LIMIT 1",
        )
        .bind(connector)
        .bind(remote_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Files a file a person put into a case folder as a document of the case, uploaded by
    /// the connector, with its remote file recorded as taken (so it is never mirrored back),
    /// once: `false`, writing nothing, when the connector took that item before.
    pub async fn take_in(
        &self,
        connector: &Connector,
        new: NewDocument,
        remote_id: &str,
    ) -> StoreResult<bool> {
        let key = self.live_case_key(&new.case_id).await?;
        let mut tx = self.write_tx().await?;
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM remote_files WHERE connector_id = $1 AND remote_id = $2 LIMIT 1",
        )
        .bind(&connector.id)
        .bind(remote_id)
        .fetch_optional(&mut *tx)
        .await?;
        // A case it no longer serves (its creditor changed since the folder was learned).
        let served: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM cases WHERE id = $1 AND erased_at IS NULL AND ($2 IS NULL OR creditor_id = $2)",
        )
        .bind(new.case_id)
        .bind(connector.creditor_id.as_ref())
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_some() || served.is_none() {
            return Ok(false);
        }
        let now = self.now();
        sqlx::query(
            "INSERT INTO remote_files (connector_id, document_id, case_id, origin, name_sealed, remote_id, done_at, created_at) \
             VALUES ($1, $2, $3, 'taken', $4, $5, $6, $6)",
        )
        .bind(&connector.id)
        .bind(&new.id)
        .bind(new.case_id)
        .bind(key.seal_str(&name_context(&connector.id, &new.id), &new.file_name))
        .bind(remote_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.sibling::<Documents>()
            .insert_received(
                &mut tx,
                &key,
                (connector.id.as_str(), &connector.name),
                &new,
                None,
            )
            .await?;
        worked(&mut tx, &connector.id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The case a folder named `number` under the connector's root belongs to: a case of
    /// that number the connector serves, not erased; none when there is none, or several.
    pub async fn case_by_number(
        &self,
        connector: &Connector,
        number: &str,
    ) -> StoreResult<Option<CaseId>> {
        let found: Vec<CaseId> = sqlx::query_scalar(
            "SELECT id FROM cases WHERE case_number = $1 AND erased_at IS NULL \
             AND ($2 IS NULL OR creditor_id = $2) LIMIT 2",
        )
        .bind(number)
        .bind(connector.creditor_id.as_ref())
        .fetch_all(&self.pool)
        .await?;
        Ok(match found.as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// Queues a `mirror_document` job for up to `limit` latest documents of the cases the
    /// connector serves that it has no file of and no job is waiting for (documents from
    /// before the connector, or of a creditor it serves since a change). How many.
    pub async fn queue_unmirrored(&self, connector: &Connector, limit: i64) -> StoreResult<usize> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM documents d JOIN cases c ON c.id = d.case_id \
             WHERE d.is_latest = 1 AND d.deleted_at IS NULL AND c.erased_at IS NULL \
             AND ($2 IS NULL OR c.creditor_id = $2) \
             AND NOT EXISTS (SELECT 1 FROM remote_files f WHERE f.connector_id = $1 AND f.document_id = d.id) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.ref_id = d.id AND j.kind = 'mirror_document' \
                 AND j.status IN ('pending', 'running')) \
             ORDER BY d.id LIMIT $3",
        )
        .bind(&connector.id)
        .bind(connector.creditor_id.as_ref())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let mut tx = self.write_tx().await?;
        for id in &ids {
            super::side_job(&mut tx, JobKind::MirrorDocument, id, now).await?;
        }
        tx.commit().await?;
        Ok(ids.len())
    }

    /// The case folders of these cases on every drive connector.
    pub async fn case_folders(
        &self,
        cases: &[CaseId],
    ) -> StoreResult<Vec<(ConnectorId, CaseId, String)>> {
        let mut out = Vec::new();
        for case in cases {
            let rows: Vec<(ConnectorId, String)> = sqlx::query_as(
                "SELECT connector_id, remote_id FROM remote_folders WHERE case_id = $1 AND document_type IS NULL",
            )
            .bind(case)
            .fetch_all(&self.pool)
            .await?;
            out.extend(rows.into_iter().map(|(c, r)| (c, *case, r)));
        }
        Ok(out)
    }

    /// Forgets a case's folders and files on a connector (its folder was deleted there).
    pub async fn forget_case(&self, connector: &ConnectorId, case: &CaseId) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        for table in ["remote_folders", "remote_files", "remote_erasures"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE connector_id = $1 AND case_id = $2"
            ))
            .bind(connector)
            .bind(case)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps a case folder an erasure could not delete yet, with why.
    pub async fn erasure_failed(
        &self,
        connector: &ConnectorId,
        (case, remote_id): (&CaseId, &str),
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO remote_erasures (connector_id, remote_id, case_id, attempts, last_error, created_at) \
             VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (connector_id, remote_id) \
             DO UPDATE SET attempts = remote_erasures.attempts + 1, last_error = $4",
        )
        .bind(connector)
        .bind(remote_id)
        .bind(case)
        .bind(error)
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The case folders an erasure has still to delete on the connector.
    pub async fn erasures(&self, connector: &ConnectorId) -> StoreResult<Vec<(CaseId, String)>> {
        Ok(sqlx::query_as(
            "SELECT case_id, remote_id FROM remote_erasures WHERE connector_id = $1 ORDER BY created_at",
        )
        .bind(connector)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fills in where each of these documents is mirrored (one statement).
    pub async fn fill_mirrors(&self, documents: &mut [DocumentView]) -> StoreResult<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let params: Vec<String> = (1..=documents.len()).map(|i| format!("${i}")).collect();
        let sql = super::positional(
            format!(
                "SELECT f.document_id, f.connector_id, k.connector_type, f.link_sealed FROM remote_files f \
                 JOIN connectors k ON k.id = f.connector_id \
                 WHERE f.done_at IS NOT NULL AND f.document_id IN ({}) ORDER BY f.connector_id",
                params.join(", ")
            ),
            self.backend,
        );
        let mut query =
            sqlx::query_as::<_, (DocumentId, ConnectorId, String, Option<Vec<u8>>)>(&sql);
        for d in documents.iter() {
            query = query.bind(d.id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        self.unlock(rows.iter().filter_map(|(_, _, _, l)| l.as_deref()))
            .await?;
        for (document, connector, kind, sealed) in rows {
            let Some(d) = documents.iter_mut().find(|d| d.id == document) else {
                continue;
            };
            let link = sealed
                .map(|s| self.open_text(&link_context(&connector, &document), &s))
                .transpose()?;
            d.mirrors.push(Mirror {
                kind: ConnectorType::parse(&kind).map_err(|e| super::StoreError::Corrupt(e.0))?,
                connector_id: connector,
                link,
            });
        }
        Ok(())
    }
}

/// Where a document is mirrored: the connector, its type, and a link to the file where the
/// service gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub connector_id: ConnectorId,
    pub kind: ConnectorType,
    pub link: Option<String>,
}

/// Records on a connector that its work succeeded: `active`, one more item, `lastSyncAt`
/// now. Not `last_attempt_at`: that is its sync's, which a steady stream of mirrors would
/// otherwise put off for ever.
async fn worked(
    conn: &mut AnyConnection,
    connector: &ConnectorId,
    now: Micros,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE connectors SET status = 'active', last_error = NULL, last_sync_at = $2, \
         items = items + 1 WHERE id = $1",
    )
    .bind(connector)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
