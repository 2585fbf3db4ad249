//! The built-in inbound SMTP server (`PARLEY_INBOUND_SMTP_ADDR`): accepts mail for the
//! inbound domain and hands each to `app::inbound::Inbound::receive_email` before answering
//! the end of DATA, so a 250 means stored. It is meant to sit behind the organisation's MX,
//! which relays the per-case domain to it; STARTTLS is offered when a certificate is
//! configured, AUTH is not.
//!
//! It is strict about what it reads, like Postfix with `smtpd_forbid_bare_newline`:
//!
//! - Lines end with CRLF only. A bare LF or CR, in a command or in DATA, is answered 550 and
//!   ends the session; nothing of the transaction is stored (no SMTP smuggling).
//! - A line holds at most 998 octets before its CRLF (RFC 5321 §4.5.3.1.6). A longer one is
//!   refused (500) and what it said is read in small chunks and dropped, never buffered.
//! - `SIZE` (`PARLEY_INBOUND_MAX_BYTES`) is advertised; `MAIL FROM:<…> SIZE=n` above it is 552,
//!   and DATA that grows above it is no longer kept: 552 after the final dot, nothing stored.
//! - Every session has a time limit (10 minutes) and an idle limit per read (5 minutes, RFC
//!   5321 §4.5.3.2); either ends it with 421. So do 20 refused commands.
//!
//! Memory: a session holds one line (998 octets), a read buffer (16 KiB; a TLS session adds
//! rustls' buffers) and at most 256 KiB of the mail it is receiving: past that, DATA goes on
//! into a spool file (`<data>/spool/inbound-*`), so a session's memory does not grow with the
//! mail. A received mail is read whole to be stored; those reads share a budget of 256 MiB (or
//! one largest mail) and wait for their turn. Sessions at once: at most 256 (a relay's bursts
//! fit), and from one IP address at most `PARLEY_INBOUND_SESSIONS_PER_PEER` (50, Postfix's
//! own default per client) unless the address is in a trusted relay network
//! (`PARLEY_INBOUND_RELAYS`). A session beyond a bound is answered 421 and closed; a session
//! that ends gives its place back at once, before its connection lingers.
//!
//! Commands are read by our framing (above) and parsed by `smtp-proto`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::rustls::ServerConfig;

use crate::app::AppError;
use crate::app::inbound::{Arrival, Inbound};
use crate::app::sender_auth::SmtpClient;
use crate::config::{MailConfig, SpamConfig};
use crate::domain::EmailAddress;
use crate::store::Ingested;

/// Octets of a line before its CRLF (RFC 5321 §4.5.3.1.6: 1000 with the CRLF).
pub const MAX_LINE: usize = 998;
const MAX_RECIPIENTS: usize = 100;
/// Refused commands after which a session is closed.
const MAX_ERRORS: usize = 20;
/// Mail that all sessions together may hold in memory while it is stored.
const MAIL_MEMORY_BUDGET: u64 = 256 << 20;
const MAX_SESSIONS: usize = 256;
/// Octets of a mail a session keeps in memory before the rest goes to its spool file.
const SPILL_AT: usize = 256 * 1024;
const SESSION_LIMIT: Duration = Duration::from_secs(600);
const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long a refused or ended session's remaining input is drained so the final reply
/// reaches the client instead of being cut off by a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What the server needs to run; `Settings::new` takes it from the configuration, tests
/// may shorten the limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The inbound domain: the only one mail is accepted for, and the server's name.
    pub domain: String,
    /// The largest mail taken, advertised as `SIZE`.
    pub max_bytes: u64,
    /// STARTTLS is offered when set.
    pub tls: Option<Arc<ServerConfig>>,
    pub max_sessions: usize,
    pub max_sessions_per_peer: usize,
    /// Networks whose addresses are bounded only by `max_sessions` (the organisation's MX);
    /// their mail's SPF is checked for the client their `Received:` field names.
    pub relays: Vec<ipnet::IpNet>,
    /// The spam filter asked before a mail is taken; none: no filter.
    pub spam: Option<SpamConfig>,
    /// Where mail larger than `SPILL_AT` is written while it arrives.
    pub spool: std::path::PathBuf,
    /// Octets of received mail held in memory at once while being stored.
    pub mail_memory: u64,
    /// The longest a session may last.
    pub session_limit: Duration,
    /// The longest the server waits for the client's next bytes.
    pub idle_limit: Duration,
}

impl Settings {
    pub fn new(mail: &MailConfig, data_dir: &std::path::Path) -> Self {
        Self {
            domain: mail.inbound_domain.clone(),
            max_bytes: mail.inbound_max_bytes,
            tls: mail.inbound_tls.as_ref().map(|t| t.server_config()),
            max_sessions: MAX_SESSIONS,
            max_sessions_per_peer: mail.inbound_sessions_per_peer,
            relays: mail.inbound_relays.clone(),
            spam: mail.spam.clone(),
            spool: data_dir.join("spool"),
            // One largest mail always fits.
            mail_memory: MAIL_MEMORY_BUDGET.max(mail.inbound_max_bytes),
            session_limit: SESSION_LIMIT,
            idle_limit: IDLE_LIMIT,
        }
    }
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    inbound: Inbound,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        starttls = settings.tls.is_some(),
        max_bytes = settings.max_bytes,
        max_sessions = settings.max_sessions,
        "inbound SMTP server listening"
    );
    remove_stale_spool(&settings.spool).await;
    let settings = Arc::new(settings);
    let limits = Limits::new(&settings);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let slot = limits.take(peer.ip());
                    let (inbound, settings) = (inbound.clone(), settings.clone());
                    let memory = limits.memory.clone();
                    tokio::spawn(async move {
                        let io: Box<dyn Io> = Box::new(socket);
                        match slot {
                            Ok(slot) => session(io, slot, &inbound, &settings, &memory).await,
                            Err(why) => refuse(io, &settings, why).await,
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accepting an SMTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// The session bounds: all sessions, and sessions per peer address outside the relays; and
/// the memory that received mail may take while it is stored.
struct Limits {
    sessions: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_peer: usize,
    relays: Vec<ipnet::IpNet>,
    memory: Arc<Memory>,
}

/// Received mail's memory, in KiB permits.
struct Memory(Semaphore);

impl Memory {
    fn new(bytes: u64) -> Self {
        let kib = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
        Self(Semaphore::new(kib.min(Semaphore::MAX_PERMITS)))
    }

    /// Waits (until `deadline`) for room to hold `bytes` of mail; `None` when time is up.
    async fn hold(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        tokio::time::timeout_at(deadline, self.0.acquire_many(kib))
            .await
            .ok()?
            .ok()
    }
}

/// One session's place within the limits, given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

#[derive(Debug, Clone, Copy)]
enum Busy {
    Server,
    Peer,
}

impl Limits {
    fn new(settings: &Settings) -> Self {
        Self {
            sessions: Arc::new(Semaphore::new(settings.max_sessions.max(1))),
            peers: Arc::default(),
            per_peer: settings.max_sessions_per_peer.max(1),
            relays: settings.relays.clone(),
            memory: Arc::new(Memory::new(settings.mail_memory)),
        }
    }

    fn take(&self, ip: IpAddr) -> Result<Slot, Busy> {
        let ip = ip.to_canonical();
        let relay = self.relays.iter().any(|net| net.contains(&ip));
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !relay && peers.get(&ip).copied().unwrap_or(0) >= self.per_peer {
            return Err(Busy::Peer);
        }
        let permit = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Server)?;
        *peers.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            _permit: permit,
            peers: self.peers.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = peers.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

async fn refuse(io: Box<dyn Io>, settings: &Settings, why: Busy) {
    tracing::debug!(?why, "inbound SMTP session refused: too many sessions");
    let text = match why {
        Busy::Server => "too many sessions, try again later",
        Busy::Peer => "too many sessions from your address, try again later",
    };
    let mut conn = Conn::new(io, Instant::now() + LINGER, settings.idle_limit);
    let _ = conn
        .send(&format!("421 4.7.0 {} {text}\r\n", settings.domain))
        .await;
    conn.close().await;
}

/// A byte stream a session runs over: TCP, or TLS over TCP after STARTTLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the line reader found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A line ended by CRLF, of at most `MAX_LINE` octets; `Lines::line` holds it.
    Line,
    /// A line of more than `MAX_LINE` octets ended; its contents were dropped.
    TooLong,
    /// A CR not followed by LF, or an LF without a CR before it.
    BareNewline,
}

/// Splits the client's bytes into CRLF-terminated lines, holding at most `MAX_LINE` octets
/// of one. It does no I/O: `feed` takes whatever was read.
#[derive(Debug, Default)]
pub struct Lines {
    line: Vec<u8>,
    /// Octets of the current line so far, kept or not.
    len: usize,
    /// The last octet was a CR.
    cr: bool,
    /// `line` is a finished line, to be cleared when the next one starts.
    done: bool,
}

impl Lines {
    /// Takes octets of `input` up to the end of the first line (or the first bare CR or
    /// LF) in it. Returns how many it took and, when a line ended, what it was.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        if self.done {
            self.line.clear();
            self.len = 0;
            self.done = false;
        }
        let Some(&first) = input.first() else {
            return (0, None);
        };
        if self.cr {
            self.cr = false;
            return match first {
                b'\n' => (1, Some(self.finish())),
                _ => (1, Some(self.bare())),
            };
        }
        let Some(i) = find_cr_or_lf(input) else {
            self.keep(input);
            return (input.len(), None);
        };
        self.keep(&input[..i]);
        if input[i] == b'\n' {
            return (i + 1, Some(self.bare()));
        }
        match input.get(i + 1) {
            None => {
                self.cr = true;
                (i + 1, None)
            }
            Some(b'\n') => (i + 2, Some(self.finish())),
            Some(_) => (i + 1, Some(self.bare())),
        }
    }

    /// The last line `feed` reported as `Frame::Line`, without its CRLF.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    fn keep(&mut self, octets: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line
            .extend_from_slice(&octets[..octets.len().min(room)]);
        self.len = self.len.saturating_add(octets.len());
    }

    fn bare(&mut self) -> Frame {
        self.done = true;
        self.line.clear();
        Frame::BareNewline
    }

    fn finish(&mut self) -> Frame {
        self.done = true;
        if self.len > MAX_LINE {
            self.line.clear();
            Frame::TooLong
        } else {
            Frame::Line
        }
    }
}

/// The position of the first CR or LF.
fn find_cr_or_lf(octets: &[u8]) -> Option<usize> {
    // Eight octets at a time (the usual "has a zero byte" test, on the octets XORed with CR
    // and with LF), so that long lines are skipped quickly even in unoptimised builds.
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(LO) & !w & HI != 0;
    let mut at = 0;
    let mut words = octets.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_ne_bytes(word.try_into().expect("eight octets"));
        if has_zero(w ^ (LO * u64::from(b'\r'))) || has_zero(w ^ (LO * u64::from(b'\n'))) {
            break;
        }
        at += 8;
    }
    octets[at..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| at + i)
}

/// How the message after DATA ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// The message, dot-stuffing undone, every line ending in CRLF.
    Mail(Vec<u8>),
    /// It grew above the maximum; the rest was read and dropped.
    TooBig,
    /// A line was longer than `MAX_LINE`; the rest was read and dropped.
    TooLong,
    /// A bare CR or LF: the session ends.
    BareNewline,
}

/// Collects the lines of the message after DATA, up to the lone dot: at most `max` octets
/// in all, and at most about `spill_at` in memory before the caller takes them (`spill`) to
/// write them elsewhere. It does no I/O: the caller hands it each frame of `Lines`.
#[derive(Debug)]
pub struct Data {
    mail: Vec<u8>,
    /// Octets taken by `spill` so far.
    spilled: usize,
    max: usize,
    spill_at: usize,
    too_big: bool,
    too_long: bool,
}

impl Data {
    pub fn new(max: u64, spill_at: usize) -> Self {
        Self {
            mail: Vec::new(),
            spilled: 0,
            max: usize::try_from(max).unwrap_or(usize::MAX),
            spill_at,
            too_big: false,
            too_long: false,
        }
    }

    /// What is held, once it reaches `spill_at`: the caller writes it out.
    pub fn spill(&mut self) -> Option<Vec<u8>> {
        if self.mail.len() < self.spill_at || self.too_big || self.too_long {
            return None;
        }
        self.spilled += self.mail.len();
        Some(std::mem::take(&mut self.mail))
    }

    /// Takes one frame; returns how the message ended when it did.
    pub fn push(&mut self, frame: Frame, line: &[u8]) -> Option<DataEnd> {
        match frame {
            Frame::BareNewline => {
                self.mail = Vec::new();
                Some(DataEnd::BareNewline)
            }
            Frame::TooLong => {
                self.too_long = true;
                self.mail = Vec::new();
                None
            }
            Frame::Line if line == b"." => Some(if self.too_long {
                DataEnd::TooLong
            } else if self.too_big {
                DataEnd::TooBig
            } else {
                DataEnd::Mail(std::mem::take(&mut self.mail))
            }),
            Frame::Line if self.too_long || self.too_big => None,
            Frame::Line => {
                let content = line.strip_prefix(b".").unwrap_or(line);
                let needed = self.mail.len() + content.len() + 2;
                if self.spilled + needed > self.max {
                    self.too_big = true;
                    self.mail = Vec::new();
                    return None;
                }
                if needed > self.mail.capacity() {
                    // Grow by doubling, but never past the maximum or much past `spill_at`.
                    let target = (self.mail.capacity() * 2)
                        .max(4096)
                        .min(self.max - self.spilled)
                        .min(self.spill_at.saturating_add(MAX_LINE + 2))
                        .max(needed);
                    self.mail.reserve_exact(target - self.mail.len());
                }
                self.mail.extend_from_slice(content);
                self.mail.extend_from_slice(b"\r\n");
                None
            }
        }
    }

    /// Octets held now.
    pub fn held(&self) -> usize {
        self.mail.capacity()
    }
}

/// Why a session stopped reading.
#[derive(Debug)]
enum Stop {
    /// The client closed the connection (or it failed).
    Gone,
    /// The client sent nothing for the idle limit.
    Idle,
    /// The session's time is up.
    Expired,
}

/// One connection: a read buffer, the line reader, the deadlines, its place in the limits.
struct Conn {
    io: Box<dyn Io>,
    /// Given back when the session ends, before the connection lingers.
    slot: Option<Slot>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    lines: Lines,
    deadline: Instant,
    idle: Duration,
}

impl Conn {
    fn new(io: Box<dyn Io>, deadline: Instant, idle: Duration) -> Self {
        Self {
            io,
            slot: None,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            lines: Lines::default(),
            deadline,
            idle,
        }
    }

    /// The earlier of the session's end and the idle limit from now, and what passing it means.
    fn timer(&self) -> (Instant, Stop) {
        let idle = Instant::now() + self.idle;
        if idle < self.deadline {
            (idle, Stop::Idle)
        } else {
            (self.deadline, Stop::Expired)
        }
    }

    /// The next line (or what stands for one).
    async fn frame(&mut self) -> Result<Frame, Stop> {
        loop {
            // Checked here too: a client that always has more to send never lets a read wait.
            if Instant::now() >= self.deadline {
                return Err(Stop::Expired);
            }
            if self.start < self.end {
                let (used, frame) = self.lines.feed(&self.buf[self.start..self.end]);
                self.start += used;
                if let Some(frame) = frame {
                    return Ok(frame);
                }
                continue;
            }
            let (at, stop) = self.timer();
            match tokio::time::timeout_at(at, self.io.read(&mut self.buf)).await {
                Err(_) => return Err(stop),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Gone),
                Ok(Ok(n)) => (self.start, self.end) = (0, n),
            }
        }
    }

    fn line(&self) -> &[u8] {
        self.lines.line()
    }

    async fn send(&mut self, reply: &str) -> Result<(), Stop> {
        let (at, stop) = self.timer();
        let write = async {
            self.io.write_all(reply.as_bytes()).await?;
            self.io.flush().await
        };
        match tokio::time::timeout_at(at, write).await {
            Err(_) => Err(stop),
            Ok(Err(_)) => Err(Stop::Gone),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Ends the connection: our side closes, then what the client still sends is read and
    /// dropped for a moment, so that our last reply is not lost to a reset.
    async fn close(mut self) {
        drop(self.slot.take());
        let linger = async {
            let _ = self.io.shutdown().await;
            let mut drained = 0;
            while drained < LINGER_BYTES {
                match self.io.read(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, linger).await;
    }

    /// Starts TLS on the connection. Whatever the client sent after STARTTLS in the clear is
    /// dropped, never read as if it had come through TLS (STARTTLS command injection).
    async fn start_tls(self, config: Arc<ServerConfig>) -> Result<Conn, Stop> {
        let (at, stop) = self.timer();
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(self.io);
        match tokio::time::timeout_at(at, accept).await {
            Err(_) => Err(stop),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "STARTTLS handshake failed");
                Err(Stop::Gone)
            }
            Ok(Ok(tls)) => {
                let mut conn = Conn::new(Box::new(tls), self.deadline, self.idle);
                conn.slot = self.slot;
                Ok(conn)
            }
        }
    }
}

/// The state of one SMTP conversation (RFC 5321 §4.1.4).
#[derive(Default)]
struct State {
    greeted: bool,
    /// The name the client gave in `EHLO`/`HELO`.
    helo: String,
    mail_from: bool,
    /// The envelope sender (empty for a bounce).
    sender: String,
    recipients: Vec<String>,
    tls: bool,
    errors: usize,
}

impl State {
    /// The transaction's recipients and the client it came from; the transaction ends.
    fn take_transaction(&mut self, peer: IpAddr) -> (Vec<String>, SmtpClient) {
        let recipients = std::mem::take(&mut self.recipients);
        let client = SmtpClient {
            ip: peer,
            helo: self.helo.clone(),
            mail_from: std::mem::take(&mut self.sender),
        };
        self.reset_transaction();
        (recipients, client)
    }

    fn reset_transaction(&mut self) {
        self.mail_from = false;
        self.sender.clear();
        self.recipients.clear();
    }
}

/// What a command leads to.
enum Next {
    Reply(String),
    Data,
    StartTls(Arc<ServerConfig>),
    Quit,
}

/// One SMTP conversation, ended by the client, a refusal or a time limit.
#[tracing::instrument(name = "smtp.session", skip_all)]
async fn session(
    io: Box<dyn Io>,
    slot: Slot,
    inbound: &Inbound,
    settings: &Settings,
    memory: &Memory,
) {
    let deadline = Instant::now() + settings.session_limit;
    let mut conn = Conn::new(io, deadline, settings.idle_limit);
    let peer = slot.ip;
    conn.slot = Some(slot);
    let host = &settings.domain;
    let mut state = State::default();
    if conn
        .send(&format!("220 {host} parley ESMTP ready\r\n"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let frame = match conn.frame().await {
            Ok(frame) => frame,
            Err(stop) => return end(conn, host, stop).await,
        };
        let next = match frame {
            Frame::BareNewline => return bare_newline(conn, host).await,
            Frame::TooLong => Next::Reply("500 5.5.2 line too long\r\n".into()),
            Frame::Line => command(conn.line(), &mut state, settings),
        };
        let reply = match next {
            Next::Reply(reply) => reply,
            Next::Quit => {
                let _ = conn.send("221 2.0.0 bye\r\n").await;
                return conn.close().await;
            }
            Next::StartTls(config) => {
                if conn.send("220 2.0.0 ready to start TLS\r\n").await.is_err() {
                    return;
                }
                conn = match conn.start_tls(config).await {
                    Ok(conn) => conn,
                    Err(_) => return,
                };
                // RFC 3207 §4.2: forget everything the client said before.
                state = State {
                    tls: true,
                    errors: state.errors,
                    ..State::default()
                };
                continue;
            }
            Next::Data => {
                if let Err(stop) = conn.send("354 end data with <CR><LF>.<CR><LF>\r\n").await {
                    return end(conn, host, stop).await;
                }
                let mut data = Data::new(settings.max_bytes, SPILL_AT);
                let mut spool = Spool::new(&settings.spool);
                let ended = loop {
                    match conn.frame().await {
                        Ok(frame) => {
                            if let Some(ended) = data.push(frame, conn.line()) {
                                break ended;
                            }
                            if let Some(part) = data.spill() {
                                spool.write(&part).await;
                            }
                        }
                        Err(stop) => return end(conn, host, stop).await,
                    }
                };
                let (recipients, client) = state.take_transaction(peer);
                match ended {
                    DataEnd::Mail(tail) => {
                        received(spool, tail, memory, conn.deadline)
                            .await
                            .and_then_deliver(inbound, settings, &recipients, client)
                            .await
                    }
                    DataEnd::TooBig => "552 5.3.4 message exceeds the maximum size\r\n".into(),
                    DataEnd::TooLong => "500 5.5.2 line too long\r\n".into(),
                    DataEnd::BareNewline => return bare_newline(conn, host).await,
                }
            }
        };
        if reply.starts_with('5') {
            state.errors += 1;
        }
        if let Err(stop) = conn.send(&reply).await {
            return end(conn, host, stop).await;
        }
        if state.errors >= MAX_ERRORS {
            let _ = conn
                .send(&format!("421 4.7.0 {host} too many errors, closing\r\n"))
                .await;
            return conn.close().await;
        }
    }
}

/// A bare CR or LF: 550 and the end of the session.
async fn bare_newline(mut conn: Conn, host: &str) {
    let _ = conn
        .send(&format!(
            "550 5.5.2 {host} bare <CR> or <LF> received: lines end with <CR><LF>\r\n"
        ))
        .await;
    conn.close().await;
}

/// The end of a session the client did not end: 421 when the server ends it.
async fn end(mut conn: Conn, host: &str, stop: Stop) {
    let text = match stop {
        Stop::Gone => return,
        Stop::Idle => "idle for too long",
        Stop::Expired => "session time limit reached",
    };
    tracing::debug!(?stop, "inbound SMTP session ended by the server");
    // The limit is passed already: give the reply a moment of its own.
    conn.deadline = Instant::now() + LINGER;
    let _ = conn
        .send(&format!("421 4.4.2 {host} {text}, closing\r\n"))
        .await;
    conn.close().await;
}

/// Reads one command line and answers it (or says what comes next).
fn command(line: &[u8], state: &mut State, settings: &Settings) -> Next {
    let host = &settings.domain;
    let mut with_crlf = Vec::with_capacity(line.len() + 2);
    with_crlf.extend_from_slice(line);
    with_crlf.extend_from_slice(b"\r\n");
    let request = match Request::parse(&mut with_crlf.iter()) {
        Ok(request) => request,
        Err(e) => return Next::Reply(refusal(e)),
    };
    Next::Reply(match request {
        Request::Ehlo { host: helo } => {
            state.greeted = true;
            state.helo = helo.into_owned();
            state.reset_transaction();
            let mut lines = vec![
                host.to_string(),
                format!("SIZE {}", settings.max_bytes),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
            ];
            if settings.tls.is_some() && !state.tls {
                lines.push("STARTTLS".into());
            }
            let last = lines.len() - 1;
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                .collect()
        }
        Request::Helo { host: helo } => {
            state.greeted = true;
            state.helo = helo.into_owned();
            state.reset_transaction();
            format!("250 {host}\r\n")
        }
        Request::Mail { .. } if !state.greeted => "503 5.5.1 send EHLO or HELO first\r\n".into(),
        Request::Mail { .. } if state.mail_from => "503 5.5.1 MAIL already given\r\n".into(),
        Request::Mail { from } if from.size as u64 > settings.max_bytes => format!(
            "552 5.3.4 message size exceeds the maximum of {} octets\r\n",
            settings.max_bytes
        ),
        Request::Mail { from } => {
            state.mail_from = true;
            state.sender = from.address.into_owned();
            state.recipients.clear();
            "250 2.1.0 OK\r\n".into()
        }
        Request::Rcpt { .. } if !state.mail_from => "503 5.5.1 MAIL first\r\n".into(),
        Request::Rcpt { to } => match EmailAddress::parse(&to.address) {
            Ok(a) if !a.domain().eq_ignore_ascii_case(host) => {
                "550 5.7.1 relaying denied\r\n".into()
            }
            Ok(_) if state.recipients.len() >= MAX_RECIPIENTS => {
                "452 4.5.3 too many recipients\r\n".into()
            }
            Ok(a) => {
                state.recipients.push(a.to_string());
                "250 2.1.5 OK\r\n".into()
            }
            Err(_) => "501 5.1.3 bad recipient address\r\n".into(),
        },
        Request::Data if !state.mail_from => "503 5.5.1 MAIL first\r\n".into(),
        Request::Data if state.recipients.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
        Request::Data => return Next::Data,
        Request::Rset => {
            state.reset_transaction();
            "250 2.0.0 OK\r\n".into()
        }
        Request::Noop { .. } => "250 2.0.0 OK\r\n".into(),
        Request::Quit => return Next::Quit,
        Request::StartTls => match &settings.tls {
            None => "502 5.5.1 STARTTLS not offered\r\n".into(),
            Some(_) if state.tls => "503 5.5.1 TLS already active\r\n".into(),
            Some(_) if line.len() != "STARTTLS".len() => "501 5.5.4 syntax: STARTTLS\r\n".into(),
            Some(config) => return Next::StartTls(config.clone()),
        },
        _ => "502 5.5.1 command not implemented\r\n".into(),
    })
}

/// The reply to a command that does not parse. Nothing the client wrote is echoed.
fn refusal(e: ParseError) -> String {
    match e {
        ParseError::UnknownCommand => "500 5.5.1 command not recognized\r\n".into(),
        ParseError::InvalidSenderAddress => "501 5.1.7 bad sender address\r\n".into(),
        ParseError::InvalidRecipientAddress => "501 5.1.3 bad recipient address\r\n".into(),
        ParseError::SyntaxError { syntax } => format!("501 5.5.4 syntax: {syntax}\r\n"),
        ParseError::InvalidParameter { param } => {
            format!("501 5.5.4 invalid value of {param}\r\n")
        }
        ParseError::UnsupportedParameter { .. } => "555 5.5.4 unsupported parameter\r\n".into(),
        _ => "500 5.5.2 syntax error\r\n".into(),
    }
}

/// A mail's octets past `SPILL_AT`, written to a file of the spool while they arrive; the
/// file is removed when the spool is dropped.
struct Spool {
    dir: std::path::PathBuf,
    file: Option<(std::path::PathBuf, tokio::io::BufWriter<tokio::fs::File>)>,
    written: usize,
    failed: Option<std::io::Error>,
}

impl Spool {
    fn new(dir: &std::path::Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file: None,
            written: 0,
            failed: None,
        }
    }

    /// Appends `part`; a failure is kept and answered at the end of DATA (the client is
    /// still sending).
    async fn write(&mut self, part: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.append(part).await {
            self.failed = Some(e);
        }
    }

    async fn append(&mut self, part: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            tokio::fs::create_dir_all(&self.dir).await?;
            let path = self
                .dir
                .join(format!("inbound-{}.part", uuid::Uuid::new_v4().simple()));
            let file = tokio::fs::File::create(&path).await?;
            self.file = Some((path, tokio::io::BufWriter::with_capacity(64 * 1024, file)));
        }
        if let Some((_, w)) = &mut self.file {
            w.write_all(part).await?;
            self.written += part.len();
        }
        Ok(())
    }

    /// The whole mail: what was written out, then `tail`.
    async fn read_with(&mut self, tail: Vec<u8>) -> std::io::Result<Vec<u8>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some((path, w)) = &mut self.file else {
            return Ok(tail);
        };
        w.flush().await?;
        let mut raw = Vec::with_capacity(self.written + tail.len());
        tokio::fs::File::open(&*path)
            .await?
            .read_to_end(&mut raw)
            .await?;
        raw.extend_from_slice(&tail);
        Ok(raw)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some((path, _)) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Spool files a process left behind when it stopped in the middle of a mail.
async fn remove_stale_spool(dir: &std::path::Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("inbound-") && name.ends_with(".part") {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

/// A received mail, whole in memory within the shared budget, or the reply that says why not.
enum Received<'a> {
    Mail(Vec<u8>, tokio::sync::SemaphorePermit<'a>),
    Reply(String),
}

/// Waits for room in the memory budget (until `deadline`), then reads the mail whole.
async fn received<'a>(
    mut spool: Spool,
    tail: Vec<u8>,
    memory: &'a Memory,
    deadline: Instant,
) -> Received<'a> {
    let Some(held) = memory.hold(spool.written + tail.len(), deadline).await else {
        return Received::Reply("451 4.3.1 too busy to store the mail, try again later\r\n".into());
    };
    match spool.read_with(tail).await {
        Ok(raw) => Received::Mail(raw, held),
        Err(e) => {
            tracing::error!(error = %e, "spooling inbound mail failed");
            Received::Reply("451 4.3.0 temporary failure, try again later\r\n".into())
        }
    }
}

impl Received<'_> {
    /// Asks the spam filter, then stores the mail: the reply to the end of DATA. Mail from a
    /// trusted relay is checked as coming from the client the relay took it from.
    async fn and_then_deliver(
        self,
        inbound: &Inbound,
        settings: &Settings,
        recipients: &[String],
        client: SmtpClient,
    ) -> String {
        let (raw, _held) = match self {
            Self::Mail(raw, held) => (raw, held),
            Self::Reply(reply) => return reply,
        };
        let spam = match &settings.spam {
            Some(config) => Some(super::spamd::check(config, &raw).await),
            None => None,
        };
        if let (Some(config), Some(check)) = (&settings.spam, &spam)
            && check.score.is_some_and(|s| s >= config.reject_score)
        {
            tracing::info!("inbound mail refused as spam");
            return "550 5.7.1 message refused as spam\r\n".into();
        }
        let relayed = settings.relays.iter().any(|n| n.contains(&client.ip));
        let client = if relayed {
            SmtpClient::relayed(&raw, &client.mail_from)
        } else {
            Some(client)
        };
        let arrival = Arrival {
            recipients,
            client,
            spam,
            scope: None,
            origin: None,
            progress: None,
        };
        deliver(inbound, &raw, arrival).await
    }
}

async fn deliver(inbound: &Inbound, raw: &[u8], arrival: Arrival<'_>) -> String {
    match inbound
        .receive_email(crate::domain::mail::Source::Smtp, raw, arrival)
        .await
    {
        Ok(Ingested::Matched { message_id, .. })
        | Ok(Ingested::Bounce { message_id })
        | Ok(Ingested::Duplicate { message_id }) => {
            format!("250 2.0.0 OK {message_id}\r\n")
        }
        Ok(Ingested::Unmatched { inbound_id }) => format!("250 2.0.0 OK {inbound_id}\r\n"),
        Ok(Ingested::Journaled { message_id }) => match message_id {
            Some(id) => format!("250 2.0.0 OK journaled {id}\r\n"),
            None => "250 2.0.0 OK journaled (no case)\r\n".into(),
        },
        Err(AppError::Forbidden(why)) => format!("550 5.7.1 {why}\r\n"),
        Err(AppError::Refused { .. }) => "554 5.6.0 not a mail message\r\n".into(),
        Err(e) => {
            tracing::error!(error = %e, "storing inbound mail failed");
            "451 4.3.0 temporary failure, try again later\r\n".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `Lines` finds in `input` fed in pieces of `step` octets, with its line.
    fn frames(input: &[u8], step: usize) -> Vec<(Frame, Vec<u8>)> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            let mut at = 0;
            while at < piece.len() {
                let (used, frame) = lines.feed(&piece[at..]);
                assert!(used > 0, "feed makes progress");
                at += used;
                if let Some(frame) = frame {
                    out.push((frame, lines.line().to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn lines_end_with_crlf_only() {
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(
                frames(b"EHLO a\r\nNOOP\r\n", step),
                [
                    (Frame::Line, b"EHLO a".to_vec()),
                    (Frame::Line, b"NOOP".to_vec())
                ]
            );
            assert_eq!(
                frames(b"body\n.\n", step)[0],
                (Frame::BareNewline, Vec::new()),
                "{step}"
            );
            assert_eq!(frames(b"a\rb\r\n", step)[0].0, Frame::BareNewline);
            assert_eq!(frames(b"\r\r\n", step)[0].0, Frame::BareNewline);
        }
    }

    #[test]
    fn long_lines_are_dropped_not_kept() {
        let mut input = vec![b'x'; MAX_LINE];
        input.extend_from_slice(b"\r\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE + 1));
        input.extend_from_slice(b"\r\nok\r\n");
        for step in [1, 5, 4096] {
            let got = frames(&input, step);
            assert_eq!(got[0], (Frame::Line, vec![b'x'; MAX_LINE]));
            assert_eq!(got[1], (Frame::TooLong, Vec::new()));
            assert_eq!(got[2], (Frame::Line, b"ok".to_vec()));
        }
    }

    #[test]
    fn cr_and_lf_are_found_in_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for b in [b'\r', b'\n'] {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(find_cr_or_lf(&v), Some(at));
                }
            }
            assert_eq!(find_cr_or_lf(&vec![0xff; len]), None);
        }
    }

    fn data(input: &[u8], max: u64) -> Option<DataEnd> {
        let mut lines = Lines::default();
        let mut data = Data::new(max, usize::MAX);
        let mut at = 0;
        while at < input.len() {
            let (used, frame) = lines.feed(&input[at..]);
            at += used;
            if let Some(end) = frame.and_then(|f| data.push(f, lines.line())) {
                return Some(end);
            }
        }
        None
    }

    #[test]
    fn data_past_the_spill_point_is_handed_out_and_still_counts_to_the_maximum() {
        let line = b"0123456789abcdef0123456789abcdef";
        let mut data = Data::new(10_000, 100);
        let (mut expected, mut got, mut held_most) = (Vec::new(), Vec::new(), 0);
        for _ in 0..90 {
            assert!(data.push(Frame::Line, line).is_none());
            expected.extend_from_slice(line);
            expected.extend_from_slice(b"\r\n");
            held_most = held_most.max(data.held());
            if let Some(part) = data.spill() {
                assert!((100..100 + 34).contains(&part.len()), "{}", part.len());
                got.extend_from_slice(&part);
            }
        }
        let Some(DataEnd::Mail(tail)) = data.push(Frame::Line, b".") else {
            panic!("the mail ends at the dot");
        };
        assert!(tail.len() < 100, "{}", tail.len());
        got.extend_from_slice(&tail);
        assert_eq!(got, expected);
        assert!(held_most <= 4096, "{held_most}");
        // What was handed out still counts to the maximum.
        let mut data = Data::new(1000, 100);
        for _ in 0..40 {
            assert!(data.push(Frame::Line, line).is_none());
            let _ = data.spill();
        }
        assert_eq!(data.push(Frame::Line, b"."), Some(DataEnd::TooBig));
    }

    #[test]
    fn data_undoes_dot_stuffing_and_ends_at_the_lone_dot() {
        assert_eq!(
            data(b"Subject: x\r\n\r\n..hi\r\n.\r\nMAIL", 1000),
            Some(DataEnd::Mail(b"Subject: x\r\n\r\n.hi\r\n".to_vec()))
        );
        assert_eq!(
            data(b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<a@b.c>\r\n", 1000),
            Some(DataEnd::BareNewline)
        );
        assert_eq!(data(&[b'a'; 3000], 10_000), None);
        let mut big = b"a\r\n".repeat(400);
        big.extend_from_slice(b".\r\n");
        assert_eq!(data(&big, 1000), Some(DataEnd::TooBig));
        assert_eq!(data(&big, 1200), Some(DataEnd::Mail(b"a\r\n".repeat(400))));
    }

    #[test]
    fn relays_are_bounded_only_by_all_sessions_and_others_by_their_own() {
        let settings = Settings {
            domain: "localhost".into(),
            max_bytes: 1024,
            tls: None,
            max_sessions: 6,
            max_sessions_per_peer: 2,
            relays: vec!["10.0.0.0/8".parse().unwrap()],
            spam: None,
            spool: std::path::PathBuf::from("spool"),
            mail_memory: MAIL_MEMORY_BUDGET,
            session_limit: SESSION_LIMIT,
            idle_limit: IDLE_LIMIT,
        };
        let limits = Limits::new(&settings);
        let relay: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let relayed: Vec<Slot> = (0..4).map(|_| limits.take(relay).unwrap()).collect();
        let first = limits.take(other).unwrap();
        let _second = limits.take(other).unwrap();
        assert!(matches!(limits.take(other), Err(Busy::Peer)));
        // Six in all: the relay, too, is bounded by that.
        assert!(matches!(limits.take(relay), Err(Busy::Server)));
        drop(first);
        assert!(limits.take(other).is_ok());
        drop(relayed);
        assert!(limits.take(relay).is_ok());
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever arrives, in whatever pieces: no panic, every line within bounds, the
            /// message within its maximum, and every octet accounted for.
            #[test]
            fn arbitrary_input_stays_bounded(
                input in proptest::collection::vec(
                    prop_oneof![
                        8 => any::<u8>().prop_map(|b| vec![b]),
                        4 => Just(b"\r\n".to_vec()),
                        1 => Just(b"\r".to_vec()),
                        1 => Just(b"\n".to_vec()),
                        2 => Just(b".".to_vec()),
                        4 => proptest::sample::select(&[
                            "EHLO ", "MAIL FROM:<", "RCPT TO:<", "DATA", "STARTTLS", " SIZE=",
                            " BODY=8BITMIME", "@", ">", "\"", "postmaster", ":",
                        ][..]).prop_map(|s| s.as_bytes().to_vec()),
                        1 => (0usize..1200).prop_map(|n| vec![b'x'; n]),
                    ],
                    0..300,
                ).prop_map(|pieces| pieces.concat()),
                step in 1usize..600,
                max in 0u64..4096,
            ) {
                let mut lines = Lines::default();
                let mut data = Data::new(max, usize::MAX);
                let mut state = State::default();
                let settings = Settings {
                    domain: "localhost".into(),
                    max_bytes: max,
                    tls: None,
                    max_sessions: 1,
                    max_sessions_per_peer: 1,
                    relays: Vec::new(),
                    spam: None,
                    spool: std::path::PathBuf::from("spool"),
                    mail_memory: MAIL_MEMORY_BUDGET,
                    session_limit: SESSION_LIMIT,
                    idle_limit: IDLE_LIMIT,
                };
                let mut taken = 0;
                for piece in input.chunks(step) {
                    let mut at = 0;
                    while at < piece.len() {
                        let (used, frame) = lines.feed(&piece[at..]);
                        prop_assert!(used > 0 && at + used <= piece.len());
                        at += used;
                        prop_assert!(lines.line().len() <= MAX_LINE);
                        if let Some(frame) = frame {
                            if frame == Frame::Line {
                                prop_assert!(!lines.line().contains(&b'\r'));
                                prop_assert!(!lines.line().contains(&b'\n'));
                                // Any line is answered without panicking, in any state.
                                if let Next::Reply(reply) = command(lines.line(), &mut state, &settings) {
                                    prop_assert!(reply.ends_with("\r\n") && reply.len() < 1024);
                                }
                            }
                            if let Some(end) = data.push(frame, lines.line()) {
                                if let DataEnd::Mail(mail) = end {
                                    prop_assert!(mail.len() as u64 <= max);
                                }
                                data = Data::new(max, usize::MAX);
                            }
                            prop_assert!(data.held() as u64 <= max);
                        }
                    }
                    taken += at;
                }
                prop_assert_eq!(taken, input.len());
            }
        }
    }
}
