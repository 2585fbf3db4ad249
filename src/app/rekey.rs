//! `parley rekey`: everything sealed under an earlier master key, sealed again under the
//! current one (database values and document files), so the earlier key can be retired.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::documents::store::DocumentStore;
use crate::store::Store;

/// What a rekey changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rekeyed {
    /// The id of the key everything is now sealed under.
    pub key_id: String,
    /// Values re-sealed, per `table.column`.
    pub values: BTreeMap<String, u64>,
    /// Document files re-sealed.
    pub documents: u64,
}

/// Re-seals the database (a data subject's values under the subject's key, the rest and the
/// subject keys under the current master key), then the document files (under their case's
/// subject key). Safe to run again (what is current is
/// left alone) and beside a serving process.
pub async fn rekey(store: &Store, files: &DocumentStore) -> anyhow::Result<Rekeyed> {
    let values = store.subjects().reseal_all().await?;
    let mut documents = 0;
    for doc in store.subjects().stale_documents().await? {
        let Some(key) = store.key_unless_erased(&doc.case_id).await? else {
            continue;
        };
        files.reseal(&doc.storage_key, &doc.id, &key).await?;
        store.subjects().document_resealed(&doc.id).await?;
        documents += 1;
    }
    Ok(Rekeyed {
        key_id: store.keys().current_key_id(),
        values,
        documents,
    })
}
