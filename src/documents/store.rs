//! The file store of sealed documents (`PARLEY_DOCUMENT_STORE=file://DIR`).

use crate::domain::DocumentId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CHUNK, chunk_context};
use crate::crypto::{KeyRing, SubjectKey};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the document is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the upload failed")]
    Upload,
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// Where sealed documents live: a folder, or an S3 bucket (with a local folder for uploads
/// in progress).
#[derive(Clone)]
pub struct DocumentStore {
    dir: PathBuf,
    s3: Option<Arc<super::s3::S3>>,
    keys: Arc<KeyRing>,
}

impl std::fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A document written to the store, not yet recorded in the database.
#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub key: String,
}

impl DocumentStore {
    pub fn open(url: &str, keys: Arc<KeyRing>) -> anyhow::Result<Self> {
        let Some(dir) = url.strip_prefix("file://") else {
            anyhow::bail!("PARLEY_DOCUMENT_STORE: expected file://DIR here");
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        Ok(Self {
            dir: PathBuf::from(dir),
            s3: None,
            keys,
        })
    }

    /// The store the configuration names.
    pub fn from_config(config: &crate::config::Config, keys: Arc<KeyRing>) -> anyhow::Result<Self> {
        if config.storage.document_store.starts_with("s3://") {
            let s3 = super::s3::S3::new(
                &config.storage.document_store,
                config.storage.s3_access_key_id.as_deref(),
                config.storage.s3_secret_access_key.as_ref(),
            )?;
            let dir = config.storage.data_dir.join("uploads");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            return Ok(Self {
                dir,
                s3: Some(Arc::new(s3)),
                keys,
            });
        }
        Self::open(&config.storage.document_store, keys)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Seals the chunks of `next` as they arrive into a temporary file, then moves it into
    /// place. Nothing is left behind on error.
    /// Streams an upload into the store, sealed. A stream error of kind `FileTooLarge` (the
    /// upload's framing gave up on its size first) is [`WriteError::TooLarge`] too.
    pub async fn write<S>(
        &self,
        document_id: &DocumentId,
        key: &SubjectKey,
        max: u64,
        mut upload: S,
    ) -> Result<Written, WriteError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let tmp = self.path(&format!(".upload-{document_id}"));
        let result = self
            .write_to(&tmp, document_id.as_str(), key, max, &mut upload)
            .await;
        match result {
            Ok(w) => {
                if let Some(s3) = &self.s3 {
                    let put = s3.put_file(&w.key, &tmp).await;
                    let _ = tokio::fs::remove_file(&tmp).await;
                    put?;
                } else {
                    tokio::fs::rename(&tmp, self.path(&w.key))
                        .await
                        .context("moving the document into place")?;
                }
                Ok(w)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn write_to<S>(
        &self,
        tmp: &Path,
        id: &str,
        key: &SubjectKey,
        max: u64,
        upload: &mut S,
    ) -> Result<Written, WriteError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        use futures_util::StreamExt;
        let mut file = tokio::fs::File::create(tmp)
            .await
            .context("creating the document file")?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut index: u64 = 0;
        // A full buffer is sealed only when more data follows, so the last chunk is known.
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let Some(bytes) = upload
                .next()
                .await
                .transpose()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::FileTooLarge => WriteError::TooLarge(max),
                    _ => WriteError::Upload,
                })?
            else {
                break;
            };
            size += bytes.len() as u64;
            if size > max {
                return Err(WriteError::TooLarge(max));
            }
            hasher.update(&bytes);
            let mut rest: &[u8] = &bytes;
            while !rest.is_empty() {
                let take = (CHUNK - buffer.len()).min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buffer.len() == CHUNK {
                    if let Some(full) = pending.take() {
                        self.write_frame(&mut file, key, id, index, false, &full)
                            .await?;
                        index += 1;
                    }
                    pending = Some(std::mem::replace(&mut buffer, Vec::with_capacity(CHUNK)));
                }
            }
        }
        match (pending, buffer.is_empty()) {
            (Some(full), true) => {
                self.write_frame(&mut file, key, id, index, true, &full)
                    .await?
            }
            (Some(full), false) => {
                self.write_frame(&mut file, key, id, index, false, &full)
                    .await?;
                self.write_frame(&mut file, key, id, index + 1, true, &buffer)
                    .await?;
            }
            (None, _) => {
                self.write_frame(&mut file, key, id, index, true, &buffer)
                    .await?
            }
        }
        file.sync_all().await.context("syncing the document file")?;
        Ok(Written {
            size,
            sha256: hex::encode(hasher.finalize()),
            key: id.to_string(),
        })
    }

    async fn write_frame(
        &self,
        file: &mut tokio::fs::File,
        key: &SubjectKey,
        id: &str,
        index: u64,
        last: bool,
        plain: &[u8],
    ) -> Result<(), WriteError> {
        let sealed = key.seal(&chunk_context(id, index, last), plain);
        let len = u32::try_from(sealed.len()).map_err(|_| anyhow::anyhow!("chunk too large"))?;
        file.write_all(&len.to_be_bytes())
            .await
            .context("writing the document")?;
        file.write_all(&sealed)
            .await
            .context("writing the document")?;
        Ok(())
    }

    /// Seals a stored document again under its case's subject key: its plaintext, chunk by
    /// chunk, into a new file that then replaces the old one.
    pub async fn reseal(
        &self,
        key: &str,
        document_id: &DocumentId,
        subject: &SubjectKey,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            key == document_id.as_str(),
            "document {document_id} is stored under another name ({key})"
        );
        let reader = self.reader(key, document_id, None).await?;
        let chunks = futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(format!("{e:#}"))), None)),
            }
        });
        match self
            .write(document_id, subject, u64::MAX, Box::pin(chunks))
            .await
        {
            Ok(_) => Ok(()),
            Err(WriteError::Io(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("document {document_id}: {e}")),
        }
    }

    /// Removes a stored document (an upload the database refused).
    pub async fn remove(&self, key: &str) {
        match &self.s3 {
            Some(s3) => {
                if let Err(e) = s3.delete(key).await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "removing a refused upload from S3 failed"
                    );
                }
            }
            None => {
                let _ = tokio::fs::remove_file(self.path(key)).await;
            }
        }
    }

    /// Opens a stored document for reading, chunk by chunk: with its case's subject key
    /// (held by the reader for the whole download), or `None` for a file sealed under the
    /// master key (an installation from before subject keys).
    pub async fn reader(
        &self,
        key: &str,
        document_id: &DocumentId,
        subject: Option<Arc<SubjectKey>>,
    ) -> anyhow::Result<DocumentReader> {
        let source: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &self.s3 {
            Some(s3) => Box::new(s3.reader(key).await?),
            None => Box::new(
                tokio::fs::File::open(self.path(key))
                    .await
                    .with_context(|| format!("opening document {document_id}"))?,
            ),
        };
        Ok(DocumentReader {
            file: tokio::io::BufReader::new(source),
            keys: self.keys.clone(),
            subject,
            id: document_id.to_string(),
            index: 0,
            next: None,
            done: false,
        })
    }
}

pub struct DocumentReader {
    file: tokio::io::BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    keys: Arc<KeyRing>,
    subject: Option<Arc<SubjectKey>>,
    id: String,
    index: u64,
    /// The frame read ahead, to know whether the current one is the last.
    next: Option<Vec<u8>>,
    done: bool,
}

impl DocumentReader {
    async fn frame(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.file.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        anyhow::ensure!(
            len <= CHUNK + 64,
            "document frame of {len} bytes is not one of ours"
        );
        let mut sealed = vec![0; len];
        self.file
            .read_exact(&mut sealed)
            .await
            .context("document file is cut short")?;
        Ok(Some(sealed))
    }

    /// The next chunk of plaintext; `None` at the end.
    pub async fn next_chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let current = match self.next.take() {
            Some(f) => f,
            None => match self.frame().await? {
                Some(f) => f,
                None => anyhow::bail!("document {} has no content", self.id),
            },
        };
        self.next = self.frame().await?;
        let last = self.next.is_none();
        let context = chunk_context(&self.id, self.index, last);
        let plain = match &self.subject {
            Some(key) if crate::crypto::subject_key_of(&current).is_some() => {
                key.open(&context, &current)
            }
            _ => self.keys.open(&context, &current),
        }
        .map_err(|e| anyhow::anyhow!("document {}: {e}", self.id))?;
        self.index += 1;
        self.done = last;
        Ok(Some(Bytes::from(plain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key ring that knows one subject key, and that key.
    fn ring_and_key() -> (Arc<KeyRing>, Arc<SubjectKey>) {
        let ring = Arc::new(KeyRing::new(&[5; 32], &[]));
        let (id, raw) = crate::crypto::new_subject_key();
        let key = Arc::new(SubjectKey::new(id, &raw));
        ring.remember_subject(id, Some(key.clone()), None);
        (ring, key)
    }

    async fn round_trip(size: usize, piece: usize) {
        let dir = tempfile::tempdir().unwrap();
        let (ring, key) = ring_and_key();
        let store = DocumentStore::open(&format!("file://{}", dir.path().display()), ring).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let pieces: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(piece.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let written = store
            .write(
                &DocumentId::parse("doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c01").unwrap(),
                &key,
                u64::MAX,
                futures_util::stream::iter(pieces),
            )
            .await
            .unwrap();
        assert_eq!(written.size, size as u64);
        let mut reader = store
            .reader(
                &written.key,
                &DocumentId::parse("doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c01").unwrap(),
                Some(key.clone()),
            )
            .await
            .unwrap();
        let mut back = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, data, "size {size}, pieces of {piece}");
        assert!(
            store
                .reader(
                    &written.key,
                    &DocumentId::parse("doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c02").unwrap(),
                    Some(key.clone())
                )
                .await
                .unwrap()
                .next_chunk()
                .await
                .is_err(),
            "bound to its document id"
        );
    }

    #[tokio::test]
    async fn chunk_boundaries_round_trip() {
        for (size, piece) in [
            (0, 1),
            (1, 1),
            (CHUNK, 1000),
            (2 * CHUNK, CHUNK),
            (2 * CHUNK + 1, 7777),
            (3 * CHUNK - 1, 100_000),
        ] {
            round_trip(size, piece).await;
        }
    }

    #[tokio::test]
    async fn a_size_limit_stops_the_upload_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, key) = ring_and_key();
        let store = DocumentStore::open(&format!("file://{}", dir.path().display()), ring).unwrap();
        let pieces = vec![
            Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 600])),
            Ok(Bytes::from(vec![0u8; 600])),
        ];
        let err = store
            .write(
                &DocumentId::parse("doc_0190c6a43f1e7c2a9d4b5e6f7a8b9c01").unwrap(),
                &key,
                1000,
                futures_util::stream::iter(pieces),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::TooLarge(1000)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
