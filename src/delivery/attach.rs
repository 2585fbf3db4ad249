//! Attachments of outbound email, streamed: the message is spooled to a file, its text
//! first and then each document read chunk by chunk from the document store and written as
//! base64 lines, so that no document is ever whole in memory. The SMTP client then sends the
//! file in pieces (`SmtpClient::send_file`); the outbox transport moves it into place.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use tokio::io::AsyncWriteExt;

use crate::documents::store::DocumentStore;
use crate::store::DocumentView;

/// Removes spool files older than an hour (left by a process that died while sending).
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > hour);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Bytes of input per base64 line: 57 bytes make the 76 characters RFC 2045 allows.
const LINE_INPUT: usize = 57;

/// Writes the whole message to `path`: `head` (headers and text parts, open at the mixed
/// boundary), one part per document, and the closing boundary.
pub async fn spool(
    path: &Path,
    head: &[u8],
    boundary: &str,
    documents: &[DocumentView],
    store: &DocumentStore,
    subject: Option<std::sync::Arc<crate::crypto::SubjectKey>>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // It holds documents in the clear while the message is sent: the owner's alone.
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    out.write_all(head).await?;
    for doc in documents {
        out.write_all(part_header(boundary, doc).as_bytes()).await?;
        let mut reader = store
            .reader(&doc.storage_key, &doc.id, subject.clone())
            .await?;
        let mut lines = Base64Lines::default();
        let mut encoded = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            encoded.clear();
            lines.push(&chunk, &mut encoded);
            out.write_all(&encoded).await?;
        }
        encoded.clear();
        lines.finish(&mut encoded);
        out.write_all(&encoded).await?;
    }
    out.write_all(format!("--{boundary}--\r\n").as_bytes())
        .await?;
    out.flush().await?;
    out.into_inner().sync_data().await?;
    Ok(())
}

/// The headers of one attachment part. The file name goes as RFC 2231 `filename*` (any
/// character, in continuations of at most 60 characters on folded lines, so no line nears
/// the 998-octet limit) with a plain-ASCII `filename` of at most 60 characters beside it for
/// older readers.
fn part_header(boundary: &str, doc: &DocumentView) -> String {
    let ascii: String = doc
        .file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let encoded: String = doc
        .file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    // A composite type (multipart, message) may not be base64-encoded: sent as bytes.
    let lower = doc.content_type.to_ascii_lowercase();
    let composite = lower.starts_with("multipart/") || lower.starts_with("message/");
    let content_type = if is_token_type(&doc.content_type) && !composite {
        doc.content_type.as_str()
    } else {
        "application/octet-stream"
    };
    let mut continuations = String::new();
    let mut rest = encoded.as_str();
    let mut n = 0;
    loop {
        // At most 60 characters, never cutting a %XX escape.
        let mut cut = rest.len().min(60);
        if let Some(at) = rest[..cut].rfind('%').filter(|at| at + 3 > cut) {
            cut = at;
        }
        let (piece, tail) = rest.split_at(cut);
        let charset = if n == 0 { "utf-8''" } else { "" };
        continuations.push_str(&format!(";\r\n filename*{n}*={charset}{piece}"));
        rest = tail;
        n += 1;
        if rest.is_empty() {
            break;
        }
    }
    format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment;\r\n filename=\"{ascii}\"{continuations}\r\n\r\n"
    )
}

/// `type/subtype` of token characters only: anything else is not written into a header.
fn is_token_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    s.len() <= 127 && s.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// Base64 in lines of 76 characters, fed in pieces of any size.
#[derive(Default)]
struct Base64Lines {
    carry: Vec<u8>,
}

impl Base64Lines {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.carry.is_empty() {
            let need = LINE_INPUT - self.carry.len();
            let take = need.min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.carry.len() < LINE_INPUT {
                return;
            }
            line(&self.carry, out);
            self.carry.clear();
        }
        let whole = input.len() / LINE_INPUT * LINE_INPUT;
        for l in input[..whole].chunks(LINE_INPUT) {
            line(l, out);
        }
        self.carry.extend_from_slice(&input[whole..]);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.carry.is_empty() {
            line(&self.carry, out);
            self.carry.clear();
        }
    }
}

fn line(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + input.len().div_ceil(3) * 4, 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(input, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_do_not_depend_on_how_the_input_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut whole = Vec::new();
        let mut l = Base64Lines::default();
        l.push(&data, &mut whole);
        l.finish(&mut whole);
        for cut in [1, 2, 56, 57, 58, 100, 999] {
            let mut pieces = Vec::new();
            let mut l = Base64Lines::default();
            for c in data.chunks(cut) {
                l.push(c, &mut pieces);
            }
            l.finish(&mut pieces);
            assert_eq!(pieces, whole, "cut {cut}");
        }
        let text = String::from_utf8(whole).unwrap();
        assert!(text.lines().all(|l| l.len() <= 76));
        let joined: String = text.lines().collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
            data
        );
    }

    #[test]
    fn file_names_and_types_cannot_break_the_header() {
        let doc = |name: &str, ct: &str| DocumentView {
            id: crate::domain::DocumentId::new(),
            case_id: crate::domain::CaseId::new(),
            document_type: crate::domain::document::DocumentType::parse("invoice").unwrap(),
            description: None,
            file_name: name.into(),
            content_type: ct.into(),
            size: 1,
            sha256: String::new(),
            storage_key: String::new(),
            version: 1,
            replaces_document_id: None,
            is_latest: true,
            uploaded_by: String::new(),
            uploaded_at: 0,
            mirrors: Vec::new(),
        };
        let h = part_header(
            "B",
            &doc("kvittering æøå \"x\".pdf\r\nBcc: a@b", "application/pdf"),
        );
        // Every line a header line or a fold of one; nothing a header of its own.
        assert!(
            h.lines().all(|l| l.is_empty()
                || l.starts_with(' ')
                || l.starts_with("--B")
                || l.starts_with("Content-")),
            "{h}"
        );
        let joined: String = h
            .split("filename*")
            .skip(1)
            .map(|p| {
                p.split_once('=')
                    .unwrap()
                    .1
                    .trim_end_matches(['\r', '\n', ';', ' '])
            })
            .collect();
        assert_eq!(
            joined,
            "utf-8''kvittering%20%C3%A6%C3%B8%C3%A5%20%22x%22.pdf%0D%0ABcc%3A%20a%40b"
        );
        for ct in ["text/html\r\nX: y", "message/rfc822", "multipart/mixed"] {
            let h = part_header("B", &doc("a.pdf", ct));
            assert!(
                h.contains("Content-Type: application/octet-stream\r\n"),
                "{h}"
            );
        }
        // A long Danish name stays on short lines.
        let h = part_header("B", &doc(&"æblegrød ".repeat(22), "application/pdf"));
        assert!(h.lines().all(|l| l.len() < 100), "{h}");
    }
}
