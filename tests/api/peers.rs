//! Real peers over loopback: an SMTP server process (aiosmtpd) and an HTTP server playing a
//! Twilio-compatible SMS API.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// Polls `probe` until it yields, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tick.tick().await;
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

pub struct SmtpPeer {
    pub port: u16,
    dir: tempfile::TempDir,
    _child: Child,
}

impl SmtpPeer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With `["--auth", "user:pass"]`, the server requires AUTH.
    pub async fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the SMTP peer (scripts/test installs aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("SMTP peer did not start (is aiosmtpd installed?): {line:?}")
        });
        Self {
            port,
            dir,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, raw, oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "eml")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            })
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// How many transactions came pipelined (MAIL with RCPT and DATA behind it).
    pub fn pipelined(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join(".pipelined"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The most sessions that were open at the same time.
    pub fn most_sessions(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join(".most-sessions"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many transactions have reached the end of DATA, finished or still waiting for
    /// the sink's reply.
    pub fn data_started(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join(".data-started"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        eventually(60, &format!("{n} messages at the SMTP peer"), || async {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

/// What the SMS peer answers next; after the queue is empty, 201 with a new sid.
#[derive(Clone)]
pub enum SmsReply {
    Status(u16),
    TooMany { retry_after: u64 },
}

#[derive(Clone, Debug)]
pub struct SmsRequest {
    pub account: String,
    pub authorization: String,
    pub form: Vec<(String, String)>,
}

impl SmsRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct SmsState {
    requests: Vec<SmsRequest>,
    sids: Vec<String>,
    replies: VecDeque<SmsReply>,
}

#[derive(Clone)]
pub struct SmsPeer {
    pub base: String,
    state: Arc<Mutex<SmsState>>,
}

impl SmsPeer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(SmsState::default()));
        let app = axum::Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", post(create))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    pub fn reply_next(&self, replies: &[SmsReply]) {
        self.state
            .lock()
            .unwrap()
            .replies
            .extend(replies.iter().cloned());
    }

    /// The message sids handed out, in order.
    pub fn sids(&self) -> Vec<String> {
        self.state.lock().unwrap().sids.clone()
    }

    pub fn requests(&self) -> Vec<SmsRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn create(
    State(state): State<Arc<Mutex<SmsState>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: Vec<(String, String)> = url_decode(&body);
    let authorization = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    s.requests.push(SmsRequest {
        account: account.clone(),
        authorization,
        form,
    });
    match s.replies.pop_front() {
        Some(SmsReply::Status(code)) => (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(serde_json::json!({"code": 21211, "message": "refused"})),
        )
            .into_response(),
        Some(SmsReply::TooMany { retry_after }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
            "slow down",
        )
            .into_response(),
        None => {
            let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
            s.sids.push(sid.clone());
            (
                StatusCode::CREATED,
                axum::Json(
                    serde_json::json!({"sid": sid, "status": "queued", "account_sid": account}),
                ),
            )
                .into_response()
        }
    }
}

fn url_decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// How an [`ImapPeer`] is set up beyond its defaults (plain text, `LOGIN` with a password).
#[derive(Default)]
pub struct ImapSetup {
    /// Offer STARTTLS with a certificate for 127.0.0.1 from a CA of its own ([`ImapPeer::ca`]).
    pub tls: bool,
    /// Take `AUTHENTICATE XOAUTH2`, asking this OAuth2 introspection URL about each token.
    pub oauth2_introspection: Option<String>,
    /// Announce these capabilities instead of Dovecot's own.
    pub capabilities: Option<&'static str>,
}

/// A real IMAP server: Dovecot from Debian's packages, started in a folder of its own with
/// one user (`parley` / `secret`) whose mail is a maildir.
pub struct ImapPeer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl ImapPeer {
    pub async fn start() -> Self {
        Self::start_with(ImapSetup::default()).await
    }

    pub async fn start_with(setup: ImapSetup) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(d.join("mail")).unwrap();
        std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (uid, gid) = if is_root() {
            (65534, 65534)
        } else {
            current_ids()
        };
        std::fs::write(
            d.join("passwd"),
            format!(
                "parley:{{PLAIN}}secret:{uid}:{gid}::{}/mail/parley\n",
                d.display()
            ),
        )
        .unwrap();
        let mut extra = String::new();
        if setup.tls {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![
                "127.0.0.1".to_string(),
                "localhost".to_string(),
            ])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
            std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
            extra += &format!(
                "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n",
                d = d.display()
            );
        } else {
            extra += "ssl = no\n";
        }
        let mut mechanisms = "plain login".to_string();
        let mut passdbs = String::new();
        if let Some(url) = &setup.oauth2_introspection {
            mechanisms += " xoauth2 oauthbearer";
            std::fs::write(
                d.join("oauth2.conf"),
                format!(
                    "introspection_mode = post\nintrospection_url = {url}\n\
                     username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                ),
            )
            .unwrap();
            passdbs += &format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}/oauth2.conf\n}}\n",
                d.display()
            );
        }
        if let Some(capabilities) = setup.capabilities {
            extra += &format!("protocol imap {{\n  imap_capability = {capabilities}\n}}\n");
        }
        let conf = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/run\nlog_path = {d}/dovecot.log\n\
             {extra}disable_plaintext_auth = no\nauth_mechanisms = {mechanisms}\n\
             default_internal_user = {internal}\ndefault_login_user = {login}\nfirst_valid_uid = 1\n\
             mail_location = maildir:~/Maildir\n\
             {passdbs}passdb {{\n  driver = passwd-file\n  mechanisms = plain login\n  args = {d}/passwd\n}}\nuserdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service anvil {{\n  chroot =\n}}\n",
            d = d.display(),
            internal = if is_root() {
                "dovecot"
            } else {
                "$default_internal_user"
            },
            login = if is_root() {
                "dovenull"
            } else {
                "$default_login_user"
            },
        );
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let dovecot = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dovecot");
        let child = Command::new(dovecot)
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dovecot runs (scripts/test installs dovecot-imapd)");
        eventually(30, "Dovecot to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self { port, dir, child }
    }

    /// The certificate of the CA that signed the server's (with [`ImapSetup::tls`]).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Dovecot's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The URL parley polls in plain text (`?tls=none`).
    pub fn plain_url(&self) -> String {
        format!("{}?tls=none", self.url())
    }

    pub fn url(&self) -> String {
        format!("imap://parley:secret@127.0.0.1:{}/INBOX", self.port)
    }

    pub async fn python(&self, script: &str, input: &[u8]) -> String {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!("import imaplib, sys\nm = imaplib.IMAP4('127.0.0.1', {})\nm.login('parley', 'secret')\n{script}\nm.logout()\n", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "imaplib: {script}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Puts a mail into the mailbox over IMAP (APPEND), as a mail server's delivery would.
    pub async fn append(&self, raw: &str) {
        self.python(
            "m.append('INBOX', None, None, sys.stdin.buffer.read())",
            raw.replace('\n', "\r\n").as_bytes(),
        )
        .await;
    }

    /// How many messages the mailbox holds.
    pub async fn count(&self) -> usize {
        self.python("print(int(m.select('INBOX')[1][0]))", b"")
            .await
            .parse()
            .unwrap()
    }
}

impl Drop for ImapPeer {
    fn drop(&mut self) {
        // Dovecot's master takes its helper processes down with it on SIGTERM.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn is_root() -> bool {
    current_ids().0 == 0
}

fn current_ids() -> (u32, u32) {
    let id = |flag: &str| {
        std::process::Command::new("id")
            .arg(flag)
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    };
    (id("-u"), id("-g"))
}

/// What the receiver got, and the statuses it answers next.
type Recorded = Arc<Mutex<(Vec<(HeaderMap, String)>, VecDeque<u16>)>>;

/// A webhook receiver: records every request; answers with the queued statuses first, then 204.
/// While held, it records a request and then keeps it waiting until released.
#[derive(Clone)]
pub struct HookReceiver {
    pub url: String,
    state: Recorded,
    held: Arc<tokio::sync::watch::Sender<bool>>,
}

impl HookReceiver {
    pub async fn start() -> Self {
        let state: Recorded = Arc::default();
        let held = Arc::new(tokio::sync::watch::channel(false).0);
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State((s, held)): State<(Recorded, Arc<tokio::sync::watch::Sender<bool>>)>,
                     headers: HeaderMap,
                     body: String| async move {
                        s.lock().unwrap().0.push((headers, body));
                        let mut gate = held.subscribe();
                        let _ = gate.wait_for(|held| !*held).await;
                        let status = s.lock().unwrap().1.pop_front().unwrap_or(204);
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state((state.clone(), held.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state, held }
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().unwrap().1.extend(statuses);
    }

    pub fn requests(&self) -> Vec<(HeaderMap, String)> {
        self.state.lock().unwrap().0.clone()
    }

    /// Keeps every request waiting, as a slow receiver does, until `release`.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

/// A real S3 endpoint for the document store: moto's server (from PyPI), one bucket, that
/// checks every request's SigV4 signature and the IAM policy of its key. The first four
/// requests (moto's `INITIAL_NO_AUTH_ACTION_COUNT`) set it up: a user, its access key, a
/// policy allowing it S3, the bucket; from then on a wrong signature is refused.
pub struct S3Peer {
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    _child: Child,
}

impl S3Peer {
    pub const BUCKET: &'static str = "parley-documents";

    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server runs (scripts/test installs moto[server])");
        // Only a connection: a request would count as one of the four.
        eventually(60, "the S3 server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let script = format!(
            "import boto3, json\n\
             kw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1',\n\
                       aws_access_key_id='setup', aws_secret_access_key='setup')\n\
             iam = boto3.client('iam', **kw)\n\
             iam.create_user(UserName='parley')\n\
             key = iam.create_access_key(UserName='parley')['AccessKey']\n\
             iam.put_user_policy(UserName='parley', PolicyName='documents', PolicyDocument=json.dumps(\n\
                 {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}}]}}))\n\
             boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')\n\
             print(json.dumps([key['AccessKeyId'], key['SecretAccessKey']]))\n",
            bucket = Self::BUCKET
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "setting up moto: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let [access_key, secret_key]: [String; 2] = serde_json::from_slice(&out.stdout).unwrap();
        Self {
            port,
            access_key,
            secret_key,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            Self::BUCKET,
            self.port
        )
    }
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start (the suite's
/// shared cluster must stay up for every other test). Started with the project's own
/// `scripts/lib/postgres.sh`, so it runs as the `postgres` user like the suite's.
pub struct PgCluster {
    pub admin_url: String,
    dir: String,
    bindir: String,
}

impl PgCluster {
    pub async fn start() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/postgres.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                ". {}; start_postgres >/dev/null 2>&1 && echo \"$PARLEY_PG_DIR $PARLEY_PG_BINDIR $PARLEY_PG_ADMIN_URL\"",
                script.display()
            ))
            .output()
            .await
            .expect("bash runs");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut parts = line.split(' ');
        let (Some(dir), Some(bindir), Some(url)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("a PostgreSQL cluster of its own did not start: {line:?}");
        };
        Self {
            admin_url: url.to_string(),
            dir: dir.to_string(),
            bindir: bindir.to_string(),
        }
    }

    async fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = format!("{}/pg_ctl", self.bindir);
        let data = format!("{}/data", self.dir);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let status = cmd
            .args(["-D", &data, "-w", "-t", "60"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    }

    /// Stops the server (fast: open connections are cut).
    pub async fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]).await;
    }

    /// Starts it again with the options it had (`restart` reads them back from
    /// `postmaster.opts`, also when the server is down).
    pub async fn start_again(&self) {
        let log = format!("{}/server.log", self.dir);
        self.pg_ctl(&["-l", &log, "restart"]).await;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", self.bindir);
        let data = format!("{}/data", self.dir);
        let mut cmd = std::process::Command::new(if is_root() { "runuser" } else { &pg_ctl });
        if is_root() {
            cmd.args(["-u", "postgres", "--", &pg_ctl]);
        }
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postfix instance of its own (Debian's package; its master runs as root, its daemons as
/// `postfix`) listening on `127.0.0.1:port` and relaying every mail to `127.0.0.1:next_hop`,
/// as an organisation's MX relays the inbound domain to parley. Stopped when dropped.
pub struct Postfix {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Postfix {
    pub fn start(next_hop: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::binary::free_port();
        let root = dir.path();
        for sub in ["etc", "queue", "data", "log"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root}/queue\n\
             data_directory = {root}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = relay.test\n\
             mydestination =\n\
             relay_domains = localhost\n\
             relayhost = [127.0.0.1]:{next_hop}\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_tls_security_level = none\n\
             maillog_file = {root}/log/maillog\n\
             maillog_file_prefixes = {root}\n",
            root = root.display()
        );
        std::fs::write(root.join("etc/main.cf"), main).unwrap();
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        let master = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n{}\n",
            services.join("\n")
        );
        std::fs::write(root.join("etc/master.cf"), master).unwrap();
        for owned in ["data", "log"] {
            let status = std::process::Command::new("chown")
                .args(["postfix", &root.join(owned).display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown postfix");
        }
        let postfix = Self { dir, port };
        let status = postfix.command("start");
        assert!(status.success(), "postfix start: {}", postfix.log());
        postfix
    }

    fn command(&self, what: &str) -> std::process::ExitStatus {
        std::process::Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg(what)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }

    /// What Postfix logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/maillog")).unwrap_or_default()
    }

    /// How many deliveries the log records with `status=<status>`.
    pub fn deliveries(&self, status: &str) -> usize {
        self.log().matches(&format!("status={status} ")).count()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.command("abort");
    }
}

/// Postfix's `smtp-source` sending `messages` mails in `sessions` parallel sessions to
/// `127.0.0.1:port`, each to `to`; its output when it failed.
pub async fn smtp_source(port: u16, sessions: u32, messages: u32, to: &str) -> Result<(), String> {
    let out = Command::new("/usr/sbin/smtp-source")
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
        .args(["-l", "2000", "-f", "sender@example.com", "-t", to])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until something accepts connections on loopback `port`, failing the test after
/// `secs` seconds.
pub(crate) async fn listening(port: u16, secs: u64, what: &str) {
    eventually(secs, &format!("{what} to listen"), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
}

/// dnsmasq, from Debian's packages, answering for the test domains on a loopback port: the
/// TXT records it is given, NXDOMAIN for any other name under `.test`, and nothing ever for
/// `slow.test` (forwarded to a socket that never answers), so a lookup there times out.
pub struct Dns {
    _child: Child,
    _silent: std::net::UdpSocket,
    pub addr: std::net::SocketAddr,
}

impl Dns {
    pub async fn start(txt: &[(&str, &str)]) -> Self {
        let port = crate::binary::free_port();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut cmd = Command::new("/usr/sbin/dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            "--user=root",
            // No pid file: several run at once.
            "--pid-file",
        ])
        .arg(format!("--port={port}"))
        .arg(format!(
            "--server=/slow.test/127.0.0.1#{}",
            silent.local_addr().unwrap().port()
        ));
        for (name, text) in txt {
            // A TXT record's strings hold at most 255 octets each (and these hold no comma,
            // which separates them).
            let chunks: Vec<String> = text
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            cmd.arg(format!("--txt-record={name},{}", chunks.join(",")));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting dnsmasq");
        listening(port, 10, "dnsmasq").await;
        Self {
            _child: child,
            _silent: silent,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }
}

/// SpamAssassin's spamd, from Debian's packages, on a loopback port, without network tests.
pub struct Spamd {
    _child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Spamd {
    pub async fn start() -> Self {
        let port = crate::binary::free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("/usr/sbin/spamd")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .args([
                "--allowed-ips=127.0.0.1",
                "--max-children=2",
                "--username=debian-spamd",
                "--local",
                "--nouser-config",
            ])
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that its children go with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("starting spamd");
        listening(port, 60, "spamd").await;
        Self {
            _child: child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        if let Some(pid) = self._child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}
