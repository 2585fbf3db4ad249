//! The files an export of a case's messages is made of: a plain rendition of a stored
//! message whose exact bytes were not kept, MBOX entries (`mboxrd`: a `From ` line before
//! each message, lines starting with `>*From ` quoted once more) and a ZIP archive of
//! `.eml` files (stored, not compressed: mail is mostly base64 already), written a file at a
//! time with its SHA-256 manifest last. Bytes in, bytes out: no I/O here.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::time::Micros;

/// What a rendition shows of a stored message.
#[derive(Debug)]
pub struct Rendition<'a> {
    pub id: &'a str,
    pub sms: bool,
    pub direction: &'a str,
    pub status: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    pub cc: &'a [String],
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// Without angle brackets.
    pub message_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub at: Micros,
}

/// A header value as safe ASCII: kept when it is printable ASCII, else an RFC 2047 encoded
/// word (so no stored text can add a header line).
fn header_text(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_string()
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    }
}

/// An address (or a phone number) as a header's mailbox: an address kept when it is one, a
/// number as the display name of an address that goes nowhere.
fn mailbox(s: &str, sms: bool) -> String {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"<>\"(),;:\\[]".contains(&b));
    if !sms && plain && s.contains('@') {
        format!("<{s}>")
    } else {
        format!(
            "{} <unknown@sms.invalid>",
            header_text(&format!("\"{}\"", s.replace(['"', '\\'], "")))
        )
    }
}

/// A Message-ID as a header may carry it, or none.
fn msg_id(id: Option<&str>) -> Option<&str> {
    id.filter(|id| {
        !id.is_empty()
            && id.len() <= 900
            && id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    })
}

/// A stored message as RFC 5322 text: its addresses, subject, time and text body, marked
/// `X-Parley-Export: rebuilt` (the bytes that went out or came in were not kept).
pub fn rendition(r: &Rendition<'_>, domain: &str) -> Vec<u8> {
    let date = chrono::DateTime::from_timestamp_micros(r.at)
        .unwrap_or_default()
        .to_rfc2822();
    let list = |all: &[String]| {
        all.iter()
            .map(|a| mailbox(a, r.sms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut head = format!("From: {}\r\n", mailbox(r.from, r.sms));
    if !r.to.is_empty() {
        head += &format!("To: {}\r\n", list(r.to));
    }
    if !r.cc.is_empty() {
        head += &format!("Cc: {}\r\n", list(r.cc));
    }
    if let Some(subject) = r.subject {
        head += &format!("Subject: {}\r\n", header_text(subject));
    }
    head += &format!("Date: {date}\r\n");
    match msg_id(r.message_id) {
        Some(id) => head += &format!("Message-ID: <{id}>\r\n"),
        None => head += &format!("Message-ID: <{}@{domain}>\r\n", r.id),
    }
    if let Some(id) = msg_id(r.in_reply_to) {
        head += &format!("In-Reply-To: <{id}>\r\n");
    }
    head += &format!(
        "X-Parley-Message-Id: {}\r\nX-Parley-Channel: {}\r\nX-Parley-Direction: {}\r\n\
         X-Parley-Status: {}\r\nX-Parley-Export: rebuilt\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        r.id,
        if r.sms { "sms" } else { "email" },
        r.direction,
        r.status
    );
    let mut out = head.into_bytes();
    let body = base64::engine::general_purpose::STANDARD.encode(r.body.as_bytes());
    for line in body.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One message of an MBOX file (`mboxrd`): the `From ` line with its time, the message
/// with every line that starts with `>*From ` given one more `>`, and a blank line.
pub fn mbox_entry(raw: &[u8], at: Micros) -> Vec<u8> {
    let date = chrono::DateTime::from_timestamp_micros(at)
        .unwrap_or_default()
        .format("%a %b %e %H:%M:%S %Y");
    let mut out = format!("From MAILER-DAEMON {date}\n").into_bytes();
    out.reserve(raw.len() + 64);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let quoted = line.iter().position(|b| *b != b'>');
        if quoted.is_some_and(|at| line[at..].starts_with(b"From ")) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Why a ZIP could not take more.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the export is larger than a ZIP file without ZIP64 holds (4 GiB, 65,535 files): ask for format=mbox"
)]
pub struct ZipFull;

struct Entry {
    name: String,
    crc: u32,
    size: u32,
    offset: u32,
    time: (u16, u16),
}

/// A ZIP archive written a file at a time ([`Zip::file`] gives each file's bytes to send),
/// its central directory at the end ([`Zip::finish`]), with `manifest.sha256` (one line per
/// file, as `sha256sum` writes them) as its last file.
#[derive(Default)]
pub struct Zip {
    entries: Vec<Entry>,
    offset: u64,
    manifest: String,
}

const LIMIT: u64 = u32::MAX as u64;

impl Zip {
    /// A file's local header and content.
    pub fn file(&mut self, name: &str, content: &[u8], at: Micros) -> Result<Vec<u8>, ZipFull> {
        // One entry stays free for the manifest.
        if self.entries.len() >= 65_534 {
            return Err(ZipFull);
        }
        self.manifest += &format!("{}  {name}\n", hex::encode(Sha256::digest(content)));
        self.add(name, content, at)
    }

    fn add(&mut self, name: &str, content: &[u8], at: Micros) -> Result<Vec<u8>, ZipFull> {
        let total = self.offset + 30 + name.len() as u64 + content.len() as u64;
        if total >= LIMIT || self.entries.len() >= 65_535 || name.len() > 0xffff {
            return Err(ZipFull);
        }
        let crc = crc32fast::hash(content);
        let size = content.len() as u32;
        let time = dos_time(at);
        let mut out = Vec::with_capacity(30 + name.len() + content.len());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // names in UTF-8
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&time.0.to_le_bytes());
        out.extend_from_slice(&time.1.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(content);
        self.entries.push(Entry {
            name: name.to_string(),
            crc,
            size,
            offset: self.offset as u32,
            time,
        });
        self.offset = total;
        Ok(out)
    }

    /// The manifest, the central directory and its end record.
    pub fn finish(mut self, at: Micros) -> Result<Vec<u8>, ZipFull> {
        let manifest = std::mem::take(&mut self.manifest);
        let mut out = self.add("manifest.sha256", manifest.as_bytes(), at)?;
        let start = self.offset;
        let mut directory = Vec::new();
        for e in &self.entries {
            directory.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            directory.extend_from_slice(&0x031eu16.to_le_bytes()); // made by: Unix, 3.0
            directory.extend_from_slice(&20u16.to_le_bytes());
            directory.extend_from_slice(&0x0800u16.to_le_bytes());
            directory.extend_from_slice(&0u16.to_le_bytes());
            directory.extend_from_slice(&e.time.0.to_le_bytes());
            directory.extend_from_slice(&e.time.1.to_le_bytes());
            directory.extend_from_slice(&e.crc.to_le_bytes());
            directory.extend_from_slice(&e.size.to_le_bytes());
            directory.extend_from_slice(&e.size.to_le_bytes());
            directory.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            directory.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
            directory.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
            directory.extend_from_slice(&e.offset.to_le_bytes());
            directory.extend_from_slice(e.name.as_bytes());
        }
        if start + directory.len() as u64 >= LIMIT {
            return Err(ZipFull);
        }
        let count = self.entries.len() as u16;
        out.extend_from_slice(&directory);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // this disk, the directory's disk
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
        out.extend_from_slice(&(start as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        Ok(out)
    }
}

/// MS-DOS time and date (UTC), 1980 at the earliest.
fn dos_time(at: Micros) -> (u16, u16) {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp_micros(at).unwrap_or_default();
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let time = (t.hour() << 11) | (t.minute() << 5) | (t.second() / 2);
    let date = ((t.year() as u32 - 1980).min(127) << 9) | (t.month() << 5) | t.day();
    (time as u16, date as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_quotes_from_lines_once_more() {
        let raw = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nnot From\r\n";
        let entry = mbox_entry(raw, 0);
        let text = String::from_utf8(entry).unwrap();
        assert!(text.starts_with("From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"));
        assert!(text.contains("\r\n>From here\r\n>>From there\r\nnot From\r\n"));
        assert!(text.ends_with("\r\n\n"));
    }

    #[test]
    fn a_rendition_adds_no_header_from_stored_text() {
        let to = vec!["debtor@example.com".to_string()];
        let r = Rendition {
            id: "msg_1",
            sms: false,
            direction: "outbound",
            status: "sent",
            from: "agency@example.com",
            to: &to,
            cc: &[],
            subject: Some("Hello\r\nBcc: evil@example.com"),
            body: "Dear debtor",
            message_id: Some("bad>\r\nX: y"),
            in_reply_to: None,
            at: 0,
        };
        let text = String::from_utf8(rendition(&r, "parley.test")).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(!head.contains("Bcc:"), "{head}");
        assert!(head.contains("Message-ID: <msg_1@parley.test>"), "{head}");
        assert!(head.contains("Subject: =?utf-8?b?"), "{head}");
    }

    #[test]
    fn a_zip_refuses_what_needs_zip64() {
        let mut zip = Zip {
            offset: LIMIT - 10,
            ..Zip::default()
        };
        assert_eq!(zip.file("a.eml", b"0123456789", 0), Err(ZipFull));
    }
}
