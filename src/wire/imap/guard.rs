//! The bounds on what an IMAP server may send, enforced on the bytes themselves, below the
//! protocol client: a line (a long `SEARCH` answer fits) is at most [`MAX_LINE`] bytes, a
//! literal (one mail) at most [`MAX_LITERAL`] — refused when it is announced, before the client
//! sets memory aside for it — and the answer to one command at most [`MAX_REPLY`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub const MAX_LINE: usize = 1 << 20;
pub const MAX_LITERAL: u64 = 64 << 20;
pub const MAX_REPLY: u64 = 128 << 20;

/// Why the connection was cut: the only io errors whose text is ours and says nothing about
/// the mail that was being read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In a line: how long it is so far.
    Line(usize),
    /// In a literal: how many of its bytes are still to come.
    Literal(u64),
}

/// Follows the server's bytes: where lines end and literals begin.
#[derive(Debug)]
struct Bounds {
    mode: Mode,
    /// The last bytes of the current line, where a literal's `{size}` is announced.
    tail: Vec<u8>,
    /// Bytes received since the last command was sent.
    taken: u64,
}

impl Bounds {
    fn new() -> Self {
        Self {
            mode: Mode::Line(0),
            tail: Vec::with_capacity(64),
            taken: 0,
        }
    }

    fn scan(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        self.taken += bytes.len() as u64;
        if self.taken > MAX_REPLY {
            return Err(Refused(
                "the IMAP server sent more than 128 MiB for one command",
            ));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.mode {
                Mode::Literal(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    rest = &rest[n..];
                    let left = left - n as u64;
                    self.mode = if left == 0 {
                        Mode::Line(0)
                    } else {
                        Mode::Literal(left)
                    };
                }
                Mode::Line(len) => {
                    let end = rest.iter().position(|b| *b == b'\n');
                    let part = &rest[..end.unwrap_or(rest.len())];
                    let len = len + part.len();
                    if len > MAX_LINE {
                        return Err(Refused("the IMAP server sent a line longer than 1 MiB"));
                    }
                    self.tail
                        .extend_from_slice(&part[part.len().saturating_sub(32)..]);
                    if self.tail.len() > 32 {
                        self.tail.drain(..self.tail.len() - 32);
                    }
                    match end {
                        Some(at) => {
                            rest = &rest[at + 1..];
                            self.mode = match literal_size(&self.tail) {
                                Some(size) if size > MAX_LITERAL => {
                                    return Err(Refused(
                                        "the IMAP server announced a literal over 64 MiB",
                                    ));
                                }
                                Some(0) | None => Mode::Line(0),
                                Some(size) => Mode::Literal(size),
                            };
                            self.tail.clear();
                        }
                        None => {
                            rest = &[];
                            self.mode = Mode::Line(len);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// `{123}` (or `~{123}`, `{123+}`) at the end of a line announces a literal of 123 bytes.
/// A size too large for a number is reported as `u64::MAX`, so it is refused.
fn literal_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(u64::MAX),
    )
}

/// A connection to an IMAP server whose incoming bytes are held to the bounds above.
pub struct Guarded<S> {
    inner: S,
    bounds: Bounds,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            bounds: Bounds::new(),
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("bounds", &self.bounds)
            .finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.bounds
            .scan(&buf.filled()[before..])
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A command goes out: the budget for its answer starts again.
        this.bounds.taken = 0;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_recognised() {
        assert_eq!(
            literal_size(b"* 1 FETCH (UID 4 BODY[] {1234}\r"),
            Some(1234)
        );
        assert_eq!(literal_size(b"* 1 FETCH (BINARY[] ~{7}"), Some(7));
        assert_eq!(literal_size(b"a {12+}"), Some(12));
        assert_eq!(literal_size(b"* 1 FETCH (FLAGS (\\Seen))"), None);
        assert_eq!(literal_size(b"* OK {x}"), None);
        assert_eq!(literal_size(b"{99999999999999999999999}"), Some(u64::MAX));
    }

    #[test]
    fn a_literal_s_bytes_are_not_a_line() {
        let mut b = Bounds::new();
        // A literal of 2 MiB without a line break is fine: it is not a line.
        let size = 2 << 20;
        b.scan(format!("* 1 FETCH (UID 4 BODY[] {{{size}}}\r\n").as_bytes())
            .unwrap();
        for _ in 0..size / 4096 {
            b.scan(&[b'x'; 4096]).unwrap();
        }
        b.scan(b" UID 4)\r\n").unwrap();
        assert_eq!(b.mode, Mode::Line(0));
        // A line of the same length is not.
        assert!(b.scan(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn an_announcement_split_across_reads_is_seen() {
        let mut b = Bounds::new();
        for piece in [
            &b"* 1 FETCH (BODY[] {9999"[..],
            b"99999999",
            b"}",
            b"\r",
            b"\n",
        ] {
            let r = b.scan(piece);
            if piece == b"\n" {
                assert!(r.is_err(), "a 99 GB literal is refused");
            } else {
                r.unwrap();
            }
        }
    }

    #[test]
    fn a_command_s_answer_is_bounded() {
        let mut b = Bounds::new();
        let line = [b"* OK ".as_slice(), &[b'x'; 1000], b"\r\n"].concat();
        let mut total = 0u64;
        let refused = loop {
            if let Err(e) = b.scan(&line) {
                break e;
            }
            total += line.len() as u64;
            assert!(total <= MAX_REPLY);
        };
        assert!(refused.0.contains("128 MiB"));
    }
}
