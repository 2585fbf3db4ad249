//! The real `parley` binary as a separate process, for the tests that attack it or kill it.
//!
//! `PARLEY_TEST_BIN` names the binary to run (`bench/attacks` sets it to a release build);
//! without it, the debug binary cargo built for this suite.

use std::path::PathBuf;
use std::process::Stdio;

use base64::Engine;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::helpers::fresh_database;
use crate::peers::eventually;

/// The binary under test.
pub fn parley_bin() -> PathBuf {
    std::env::var_os("PARLEY_TEST_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_parley")))
}

/// The binary's `subcommand` on the data folder, database and document store of `app`, under
/// the master key `key` (base64 given by [`b64`]).
pub fn command_on(app: &crate::helpers::TestApp, subcommand: &str, key: &[u8; 32]) -> Command {
    let mut command = Command::new(parley_bin());
    command
        .arg(subcommand)
        .env("PARLEY_DATA_DIR", app.dir.path())
        .env(
            "PARLEY_DATABASE_URL",
            app.config.storage.database_url.expose(),
        )
        .env("PARLEY_DOCUMENT_STORE", &app.config.storage.document_store)
        .env("PARLEY_MASTER_KEY", b64(key));
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `N` distinct free ports: each is held until all are chosen (one at a time, the system may
/// hand out the same port twice).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

pub fn b64(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A data folder and database with the environment every command of one test runs under.
pub struct Installation {
    pub dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Installation {
    /// A fresh installation: its own data folder (and database, on a PostgreSQL run), a
    /// fixed master key, no contact-hour or volume rules, no background delivery.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut this = Self {
            vars: Vec::new(),
            dir,
        };
        let data = this.dir.path().display().to_string();
        this.set("PATH", &std::env::var("PATH").unwrap_or_default());
        this.set("PARLEY_DATA_DIR", &data);
        this.set("PARLEY_MASTER_KEY", &b64(&[42; 32]));
        this.set("PARLEY_DEFAULT_CONTACT_HOURS", "off");
        this.set("PARLEY_FREQUENCY_CAP", "off");
        this.set("PARLEY_DELIVERY_CONCURRENCY", "0");
        this.set("PARLEY_WEBHOOK_CONCURRENCY", "0");
        this.set("PARLEY_LOG_LEVEL", "warn");
        // Senders are authenticated where a test names a DNS server for it.
        this.set("PARLEY_DNS_RESOLVER", "off");
        if let Some(url) = fresh_database().await {
            this.set("PARLEY_DATABASE_URL", &url);
        }
        this
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.into()));
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    /// A `parley` command under this installation's environment (and no other).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(parley_bin());
        cmd.args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(n, v)| (n, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a command to its end; its standard output as JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.command(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "parley {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A party and a token of it, made with the command line.
    pub async fn party(&self, kind: &str, name: &str) -> String {
        let party = self
            .json(&["party", "create", "--kind", kind, "--name", name])
            .await;
        let id = party["partyId"].as_str().unwrap();
        let token = self.json(&["token", "create", "--party", id]).await;
        token["token"].as_str().unwrap().to_string()
    }

    /// `parley serve` on free ports (HTTP, and SMTP for inbound mail), once it answers.
    pub async fn serve(&self) -> Server {
        let [http, smtp_port] = free_ports();
        let child = self
            .command(&["serve"])
            .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("PARLEY_INBOUND_SMTP_ADDR", format!("127.0.0.1:{smtp_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = std::sync::Arc::new(std::sync::Mutex::new(child));
        let base = format!("http://127.0.0.1:{http}");
        let client = reqwest::Client::new();
        eventually(60, "parley serve to answer", || {
            let url = format!("{base}/readyz");
            let client = client.clone();
            let child = child.clone();
            async move {
                // A server that stopped will not answer: say why at once.
                let exited = child.lock().unwrap().try_wait();
                if let Ok(Some(status)) = exited {
                    panic!("parley serve exited with {status} before it answered");
                }
                let r = client.get(url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        let Ok(child) = std::sync::Arc::try_unwrap(child) else {
            panic!("the probe let go of the child");
        };
        let child = child.into_inner().unwrap();
        eventually(30, "parley serve to answer SMTP", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", smtp_port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Server {
            base,
            smtp_port,
            client,
            child,
        }
    }
}

/// A running `parley serve`.
pub struct Server {
    pub base: String,
    pub smtp_port: u16,
    pub client: reqwest::Client,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The resident memory of process `pid`, in bytes.
pub fn resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
