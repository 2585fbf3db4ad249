//! A minimal S3 client for the document store (`PARLEY_DOCUMENT_STORE=s3://BUCKET?endpoint=…&region=…`):
//! path-style PUT, GET and DELETE of whole objects, signed with AWS Signature Version 4.

use anyhow::{Context, bail};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

pub struct S3 {
    client: reqwest::Client,
    endpoint: url::Url,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: Secret,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}@{}", self.bucket, self.endpoint)
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `Authorization` header of a request (SigV4), given its lower-cased, sorted headers.
/// Who signs, and for which region.
pub struct Signer<'a> {
    pub region: &'a str,
    pub access_key: &'a str,
    pub secret_key: &'a str,
}

pub fn authorization(
    signer: &Signer<'_>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
    amz_date: &str,
) -> String {
    let Signer {
        region,
        access_key,
        secret_key,
    } = signer;
    let date = &amz_date[..8];
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    let signed = signed.join(";");
    let canonical = format!("{method}\n{path}\n\n{canonical_headers}\n{signed}\n{payload_hash}");
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(
        &hmac(
            &hmac(&hmac(format!("AWS4{secret_key}").as_bytes(), date), region),
            "s3",
        ),
        "aws4_request",
    );
    let signature = hex::encode(hmac(&key, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope},SignedHeaders={signed},Signature={signature}"
    )
}

impl S3 {
    /// From `s3://BUCKET?endpoint=URL&region=REGION` and the credentials.
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
        let region = query
            .get("region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = query
            .get("endpoint")
            .cloned()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint =
            url::Url::parse(&endpoint).context("PARLEY_DOCUMENT_STORE: endpoint is not a URL")?;
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            bail!(
                "PARLEY_DOCUMENT_STORE: an s3:// store needs PARLEY_S3_ACCESS_KEY_ID and PARLEY_S3_SECRET_ACCESS_KEY"
            );
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self {
            client,
            endpoint,
            bucket,
            region,
            access_key: access_key.to_string(),
            secret_key: secret_key.clone(),
        })
    }

    async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<reqwest::Response> {
        let path = format!(
            "/{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
        );
        let url = self.endpoint.join(&path).context("object URL")?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let payload_hash = hex::encode(Sha256::digest(body.as_deref().unwrap_or_default()));
        let amz_date = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let headers = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", payload_hash.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        let signer = Signer {
            region: &self.region,
            access_key: &self.access_key,
            secret_key: self.secret_key.expose(),
        };
        let auth = authorization(
            &signer,
            method.as_str(),
            url.path(),
            &headers,
            &payload_hash,
            &amz_date,
        );
        let mut req = self
            .client
            .request(method, url)
            .header("x-amz-content-sha256", &payload_hash)
            .header("x-amz-date", &amz_date)
            .header("authorization", auth);
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send()
            .await
            .map_err(|e| anyhow::anyhow!("S3 request failed: {}", e.without_url()))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let r = self.request(reqwest::Method::PUT, key, Some(bytes)).await?;
        if !r.status().is_success() {
            bail!("S3 refused the document: {}", r.status());
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.request(reqwest::Method::GET, key, None).await?;
        if !r.status().is_success() {
            bail!("S3 has no such document: {}", r.status());
        }
        Ok(r.bytes()
            .await
            .context("reading the document from S3")?
            .to_vec())
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.request(reqwest::Method::DELETE, key, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_aws_get_object_example() {
        // "Example: GET Object" of the S3 Signature Version 4 documentation.
        let signer = Signer {
            region: "us-east-1",
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        };
        let auth = authorization(
            &signer,
            "GET",
            "/test.txt",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                (
                    "x-amz-content-sha256",
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                ),
                ("x-amz-date", "20130524T000000Z"),
            ],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "20130524T000000Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
}
