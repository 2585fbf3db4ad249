//! Opening an IMAP session: TCP, then TLS (at once for `imaps://`, after `STARTTLS` for
//! `imap://`), then `LOGIN` or `AUTHENTICATE XOAUTH2` with a token read from a file or printed
//! by a command at each login. The password never leaves before TLS unless `?tls=none` says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_imap::imap_proto::{Response, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::guard::{Guarded, Refused};
use super::{Auth, ImapTarget, Security};

/// How long one network step (connecting, one answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a token command may run, and how much it may print.
const TOKEN_COMMAND_LIMIT: Duration = Duration::from_secs(30);
const MAX_TOKEN: u64 = 64 << 10;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Conn = Guarded<Box<dyn Io>>;
pub type ImapSession = async_imap::Session<Conn>;

/// Where an OAuth2 access token comes from: read again at each login, since such tokens
/// live an hour.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file that something else keeps fresh.
    File(PathBuf),
    /// A command run with `/bin/sh -c` that prints the token.
    Command(String),
}

impl TokenSource {
    pub async fn token(&self) -> anyhow::Result<String> {
        let raw = match self {
            Self::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("reading the IMAP token file {}", path.display()))?;
                let mut raw = Vec::new();
                file.take(MAX_TOKEN + 1).read_to_end(&mut raw).await?;
                raw
            }
            Self::Command(command) => run_token_command(command).await?,
        };
        if raw.len() as u64 > MAX_TOKEN {
            bail!("the IMAP token is longer than {MAX_TOKEN} bytes");
        }
        let token = String::from_utf8(raw)
            .context("the IMAP token is not UTF-8")?
            .trim()
            .to_string();
        if token.is_empty() || token.contains(['\x01', '\r', '\n']) {
            bail!("the IMAP token is empty or not one line");
        }
        Ok(token)
    }
}

async fn run_token_command(command: &str) -> anyhow::Result<Vec<u8>> {
    // Only PATH and HOME: the command is someone else's program, and parley's environment
    // holds its keys. In a process group of its own, so all of it can be stopped.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .into_iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the IMAP token command")?;
    let mut out = child.stdout.take().context("token command output")?;
    let group = child.id();
    let outcome = tokio::time::timeout(TOKEN_COMMAND_LIMIT, async {
        let mut raw = Vec::new();
        (&mut out).take(MAX_TOKEN + 1).read_to_end(&mut raw).await?;
        if raw.len() as u64 > MAX_TOKEN {
            bail!("the IMAP token is longer than {MAX_TOKEN} bytes");
        }
        drop(out);
        let status = child.wait().await?;
        if !status.success() {
            bail!("the IMAP token command failed ({status})");
        }
        Ok(raw)
    })
    .await
    .context("the IMAP token command took longer than 30 s")
    .and_then(|r| r);
    if outcome.is_err()
        && let Some(pid) = group
    {
        // The shell and whatever it started.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
    }
    outcome
}

/// SASL XOAUTH2: the user and the bearer token; an empty answer to the server's error.
struct XOAuth2 {
    user: String,
    token: String,
    sent: bool,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = Vec<u8>;

    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        if std::mem::replace(&mut self.sent, true) {
            return Vec::new();
        }
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token).into_bytes()
    }
}

/// What an IMAP error says without quoting the server: a parse error carries the bytes it
/// could not read, which may be someone's mail, and a refusal may echo the command.
pub fn describe(e: &async_imap::error::Error) -> String {
    use async_imap::error::Error;
    match e {
        Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<Refused>()) {
            Some(refused) => refused.to_string(),
            None => format!("IMAP connection: {}", io.kind()),
        },
        Error::Bad(_) => "the IMAP server answered BAD".into(),
        Error::No(_) => "the IMAP server answered NO".into(),
        Error::ConnectionLost => "the IMAP server closed the connection".into(),
        Error::Parse(_) => "the IMAP server sent what is not IMAP".into(),
        Error::Validate(_) => "a mailbox or user name IMAP cannot carry".into(),
        Error::Append => "IMAP append failed".into(),
        _ => "IMAP error".into(),
    }
}

/// An IMAP step within [`TIMEOUT`], its error described by [`describe`].
pub async fn within<T>(
    step: impl Future<Output = Result<T, async_imap::error::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(TIMEOUT, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!(describe(&e))),
        Err(_) => bail!("the IMAP server did not answer within {TIMEOUT:?}"),
    }
}

fn tls_config(t: &ImapTarget) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &t.ca {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading the IMAP CA file {}", ca.display()))?
        {
            roots
                .add(cert.context("a certificate of the IMAP CA file")?)
                .context("a certificate of the IMAP CA file")?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

async fn tls(t: &ImapTarget, io: Box<dyn Io>) -> anyhow::Result<Box<dyn Io>> {
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .context("the IMAP host is not a TLS server name")?;
    let stream = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(tls_config(t)?).connect(name, io),
    )
    .await
    .context("TLS with the IMAP server timed out")?
    .context("TLS with the IMAP server")?;
    Ok(Box::new(stream))
}

/// The server's greeting must be OK (or PREAUTH).
async fn greeting(client: &mut async_imap::Client<Conn>) -> anyhow::Result<()> {
    let greeting = tokio::time::timeout(TIMEOUT, client.read_response())
        .await
        .context("the IMAP server sent no greeting")?
        .map_err(|e| anyhow::anyhow!(describe(&e.into())))?
        .context("the IMAP server closed the connection")?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        _ => bail!("the IMAP server refused the connection"),
    }
}

/// Connects, secures and logs in.
pub async fn open(t: &ImapTarget) -> anyhow::Result<ImapSession> {
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
        .await
        .context("connecting to the IMAP server timed out")?
        .context("connecting to the IMAP server")?;
    let mut io: Box<dyn Io> = Box::new(tcp);
    if t.security == Security::Tls {
        io = tls(t, io).await?;
    }
    let mut client = async_imap::Client::new(Guarded::new(io));
    greeting(&mut client).await?;
    if t.security == Security::StartTls {
        within(client.run_command_and_check_ok("STARTTLS", None))
            .await
            .context(
                "the IMAP server refused STARTTLS (use imaps://, or ?tls=none on a network you trust)",
            )?;
        // Whatever the server sent after its OK stays behind with the old client: nothing
        // read before TLS is trusted after it.
        let io = tls(t, client.into_inner().into_inner()).await?;
        client = async_imap::Client::new(Guarded::new(io));
    }
    let session = match &t.auth {
        Auth::Password(password) => tokio::time::timeout(TIMEOUT, client.login(&t.user, password))
            .await
            .context("IMAP login timed out")?
            .map_err(|(e, _)| anyhow::anyhow!(describe(&e)))
            .context("IMAP login")?,
        Auth::OAuth2(source) => {
            let token = source.token().await?;
            let sasl = XOAuth2 {
                user: t.user.clone(),
                token,
                sent: false,
            };
            tokio::time::timeout(TIMEOUT, client.authenticate("XOAUTH2", sasl))
                .await
                .context("IMAP authentication timed out")?
                .map_err(|(e, _)| anyhow::anyhow!(describe(&e)))
                .context("IMAP XOAUTH2 authentication")?
        }
    };
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_sends_its_token_once() {
        use async_imap::Authenticator;
        let mut sasl = XOAuth2 {
            user: "parley@example.com".into(),
            token: "ya29.abc".into(),
            sent: false,
        };
        assert_eq!(
            sasl.process(b""),
            b"user=parley@example.com\x01auth=Bearer ya29.abc\x01\x01"
        );
        // The server's error challenge is answered empty, as RFC 7628 asks.
        assert_eq!(sasl.process(b"{\"status\":\"401\"}"), b"");
    }

    #[tokio::test]
    async fn tokens_come_from_a_command_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(TokenSource::File(file).token().await.unwrap(), "from-file");
        assert_eq!(
            TokenSource::Command("printf 'from-command\\n'".into())
                .token()
                .await
                .unwrap(),
            "from-command"
        );
        let failed = TokenSource::Command("exit 3".into()).token().await;
        assert!(format!("{:#}", failed.unwrap_err()).contains("failed"));
        let endless = TokenSource::Command("yes".into()).token().await;
        assert!(format!("{:#}", endless.unwrap_err()).contains("longer than"));
        let two_lines = TokenSource::Command("printf 'a\\nb'".into()).token().await;
        assert!(two_lines.is_err());
        // parley's own environment stays with parley (cargo gives the tests some of its own).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let env = TokenSource::Command("env | grep -c '^CARGO' || true".into())
            .token()
            .await
            .unwrap();
        assert_eq!(env, "0");
    }
}
