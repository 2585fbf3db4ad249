//! DKIM signatures of outbound email (RFC 6376): rsa-sha256, relaxed/relaxed. The body hash
//! is computed as the body streams past ([`BodyHash`]), so a message spooled with large
//! attachments is signed without being read into memory; the signature header is then put in
//! front of the message.

use anyhow::Context;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use sha2::{Digest, Sha256};

/// The headers signed, where the message has them (`h=`). Those in [`OVERSIGNED`] are
/// named once more (and when absent), so that one added on the way breaks the signature.
const SIGNED: &[&str] = &[
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

const OVERSIGNED: &[&str] = &[
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// A signing key with its domain (`d=`) and selector (`s=`).
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// An RSA key in PEM, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str, domain: &str, selector: &str) -> anyhow::Result<Self> {
        let der = |label: &str| -> Option<Vec<u8>> {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let body = pem.split_once(&begin)?.1.split_once(&end)?.0;
            let text: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        let key = if let Some(d) = der("PRIVATE KEY") {
            RsaKeyPair::from_pkcs8(&d).map_err(|e| anyhow::anyhow!("{e}"))
        } else if let Some(d) = der("RSA PRIVATE KEY") {
            RsaKeyPair::from_der(&d).map_err(|e| anyhow::anyhow!("{e}"))
        } else {
            Err(anyhow::anyhow!("no PEM private key found"))
        }
        .context("reading the DKIM key (an RSA key of 1024 to 4096 bits)")?;
        Ok(Self {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The `DKIM-Signature` header field (ending in CRLF) of a message whose header block is
    /// `head` (the header fields, each ending in CRLF) and whose body hashed to `body_hash`.
    pub fn signature(&self, head: &[u8], body_hash: &[u8], now: i64) -> anyhow::Result<String> {
        let fields = header_fields(head);
        let mut names = Vec::new();
        let mut hashed = Vec::new();
        for name in SIGNED {
            // The last instance, as verifiers take them (RFC 6376 §5.4.2).
            if let Some((_, value)) = fields
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                names.push(*name);
                hashed.extend_from_slice(relaxed_header(name, value).as_bytes());
                hashed.extend_from_slice(b"\r\n");
            }
        }
        // Named again, these stand for "no further instance": they hash nothing.
        names.extend_from_slice(OVERSIGNED);
        let b64 = &base64::engine::general_purpose::STANDARD;
        let value = format!(
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d={}; s={}; t={now}; h={}; bh={}; b=",
            self.domain,
            self.selector,
            names.join(":"),
            b64.encode(body_hash)
        );
        hashed.extend_from_slice(relaxed_header("dkim-signature", &value).as_bytes());
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, &hashed, &mut signature)
            .map_err(|_| anyhow::anyhow!("signing with the DKIM key failed"))?;
        // Folded after each tag; relaxed canonicalisation reads the fold as the space it replaces.
        let folded = value.replace("; ", ";\r\n\t");
        Ok(format!(
            "DKIM-Signature: {folded}{}\r\n",
            b64.encode(&signature)
        ))
    }
}

/// The header fields of a header block, unfolded: `(name, value)`.
fn header_fields(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.to_string()));
        }
    }
    fields
}

/// Relaxed header canonicalisation: lower-case name, runs of white space as one space,
/// none at either end of the value.
fn relaxed_header(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 1);
    out.push_str(&name.trim().to_ascii_lowercase());
    out.push(':');
    let mut space = false;
    for c in value.trim_matches([' ', '\t', '\r', '\n']).chars() {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            space = true;
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// The relaxed body hash, fed the body in pieces of any size.
#[derive(Default)]
pub struct BodyHash {
    sha: Sha256,
    line: Vec<u8>,
    /// Empty lines seen but not yet hashed: dropped if nothing follows them.
    empty: usize,
}

impl BodyHash {
    pub fn update(&mut self, mut data: &[u8]) {
        while let Some(at) = data.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&data[..at]);
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            self.end_line();
            data = &data[at + 1..];
        }
        self.line.extend_from_slice(data);
    }

    fn end_line(&mut self) {
        let mut canonical = Vec::with_capacity(self.line.len());
        let mut space = false;
        for &b in &self.line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    canonical.push(b' ');
                    space = false;
                }
                canonical.push(b);
            }
        }
        self.line.clear();
        if canonical.is_empty() {
            self.empty += 1;
            return;
        }
        for _ in 0..self.empty {
            self.sha.update(b"\r\n");
        }
        self.empty = 0;
        self.sha.update(&canonical);
        self.sha.update(b"\r\n");
    }

    pub fn finish(mut self) -> Vec<u8> {
        if !self.line.is_empty() {
            self.end_line();
        }
        self.sha.finalize().to_vec()
    }
}

/// Splits a formatted message at the end of its header block: `(head, body)`, the head with
/// its last CRLF, the body after the empty line.
pub fn split_message(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = message.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&message[..at + 2], &message[at + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pieces: &[&[u8]]) -> Vec<u8> {
        let mut h = BodyHash::default();
        for p in pieces {
            h.update(p);
        }
        h.finish()
    }

    #[test]
    fn relaxed_body_canonicalisation_follows_the_rfc() {
        // RFC 6376 §3.4.6's example body, relaxed: " C \r\nD \t E\r\n\r\n\r\n" -> " C\r\nD E\r\n".
        let expected = Sha256::digest(b" C\r\nD E\r\n").to_vec();
        assert_eq!(hash(&[b" C \r\nD \t E\r\n\r\n\r\n"]), expected);
        // However it is cut.
        assert_eq!(
            hash(&[b" C \r", b"\nD \t", b" E\r\n\r", b"\n\r\n"]),
            expected
        );
        // An empty body hashes as nothing; a last line without CRLF gets one.
        assert_eq!(hash(&[b""]), Sha256::digest(b"").to_vec());
        assert_eq!(hash(&[b"x"]), Sha256::digest(b"x\r\n").to_vec());
        // Empty lines inside the body are kept.
        assert_eq!(
            hash(&[b"a\r\n\r\nb\r\n"]),
            Sha256::digest(b"a\r\n\r\nb\r\n").to_vec()
        );
    }

    #[test]
    fn relaxed_headers_fold_and_collapse() {
        assert_eq!(
            relaxed_header("Subject", " Hello \t  world\r\n\tagain "),
            "subject:Hello world again"
        );
        let fields = header_fields(b"To: a@b,\r\n c@d\r\nSubject: Hi\r\n");
        assert_eq!(fields[0], ("To".into(), " a@b, c@d".into()));
        assert_eq!(fields[1].0, "Subject");
    }
}
