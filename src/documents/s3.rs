//! The S3 document store (`PARLEY_DOCUMENT_STORE=s3://BUCKET?endpoint=…&region=…`) on
//! object_store's S3 client: path-style requests signed with SigV4, credentials from
//! `PARLEY_S3_ACCESS_KEY_ID`/`PARLEY_S3_SECRET_ACCESS_KEY`, else AWS's own chain (the
//! `AWS_*` variables with session tokens, web identity, container and instance roles).
//! Documents go up in parts of 8 MiB read from their sealed file and come down in ranges of
//! 4 MiB: never a whole document in memory.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::config::Secret;

/// Bytes of a document per part of an upload (S3 needs 5 MiB at least, the last part aside).
const PART: usize = 8 * 1024 * 1024;
/// Bytes of a document per ranged request when it is read.
const RANGE: u64 = 4 * 1024 * 1024;

pub struct S3 {
    store: Arc<AmazonS3>,
    bucket: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)
    }
}

impl S3 {
    /// From `s3://BUCKET?endpoint=URL&region=REGION`; static credentials when both are given,
    /// else the environment's chain.
    pub fn new(
        url: &str,
        access_key: Option<&str>,
        secret_key: Option<&Secret>,
    ) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).context("PARLEY_DOCUMENT_STORE is not a URL")?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .context("PARLEY_DOCUMENT_STORE names no bucket")?
            .to_string();
        let query: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false);
        if let Some(region) = query.get("region") {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = query.get("endpoint") {
            url::Url::parse(endpoint).context("PARLEY_DOCUMENT_STORE: endpoint is not a URL")?;
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        match (access_key, secret_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret.expose());
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "PARLEY_DOCUMENT_STORE: give both PARLEY_S3_ACCESS_KEY_ID and PARLEY_S3_SECRET_ACCESS_KEY, or neither"
            ),
        }
        let store = builder
            .build()
            .context("PARLEY_DOCUMENT_STORE: the S3 client")?;
        Ok(Self {
            store: Arc::new(store),
            bucket,
        })
    }

    /// Uploads the file at `path` as `key`, a part at a time.
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let mut file = tokio::fs::File::open(path)
            .await
            .context("opening the sealed upload")?;
        let upload = self
            .store
            .put_multipart(&ObjectPath::from(key))
            .await
            .context("S3: starting the upload")?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0; 1024 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(anyhow::Error::new(e).context("reading the sealed upload"));
                }
            };
            if n == 0 {
                break;
            }
            // At most two parts in flight: the memory of an upload stays bounded.
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(anyhow::Error::new(e).context("S3: uploading a part"));
            }
            writer.write(&buf[..n]);
        }
        if let Err(e) = writer.wait_for_capacity(0).await {
            let _ = writer.abort().await;
            return Err(anyhow::Error::new(e).context("S3: uploading a part"));
        }
        // Completing aborts the upload when it fails; only a failure of the last part in
        // `finish` leaves parts behind, for the bucket's rule on incomplete uploads.
        writer.finish().await.context("S3: finishing the upload")?;
        Ok(())
    }

    /// The object `key`, read in ranges.
    pub async fn reader(
        &self,
        key: &str,
    ) -> anyhow::Result<impl tokio::io::AsyncRead + Unpin + Send + 'static> {
        let path = ObjectPath::from(key);
        let size = self
            .store
            .head(&path)
            .await
            .context("S3 has no such document")?
            .size;
        let store = self.store.clone();
        let ranges = futures_util::stream::unfold(0u64, move |at| {
            let (store, path) = (store.clone(), path.clone());
            async move {
                if at >= size {
                    return None;
                }
                let end = (at + RANGE).min(size);
                let piece: std::io::Result<Bytes> = store
                    .get_range(&path, at..end)
                    .await
                    .map_err(std::io::Error::other);
                Some((piece, end))
            }
        });
        Ok(tokio_util::io::StreamReader::new(Box::pin(ranges)))
    }

    /// The whole object (what the tests look at in the bucket).
    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader(key).await?.read_to_end(&mut out).await?;
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.store
            .delete(&ObjectPath::from(key))
            .await
            .context("S3: removing a document")?;
        Ok(())
    }
}
