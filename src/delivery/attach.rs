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
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    out.write_all(head).await?;
    for doc in documents {
        out.write_all(part_header(boundary, doc).as_bytes()).await?;
        let mut reader = store.reader(&doc.storage_key, &doc.id).await?;
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
/// character) with a plain-ASCII `filename` beside it for older readers.
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
    let content_type = if is_token_type(&doc.content_type) {
        doc.content_type.as_str()
    } else {
        "application/octet-stream"
    };
    format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{ascii}\"; filename*=utf-8''{encoded}\r\n\r\n"
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
            id: "doc_1".into(),
            case_id: "c".into(),
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
        };
        let h = part_header(
            "B",
            &doc("kvittering æøå \"x\".pdf\r\nBcc: a@b", "application/pdf"),
        );
        assert_eq!(h.matches("\r\n").count(), 5, "{h}");
        assert!(
            h.contains(
                "filename*=utf-8''kvittering%20%C3%A6%C3%B8%C3%A5%20%22x%22.pdf%0D%0ABcc%3A%20a%40b"
            ),
            "{h}"
        );
        let h = part_header("B", &doc("a.pdf", "text/html\r\nX: y"));
        assert!(
            h.contains("Content-Type: application/octet-stream\r\n"),
            "{h}"
        );
    }
}
