//! The `parley` binary as an operator uses it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::fresh_database;

struct Cli {
    dir: tempfile::TempDir,
    database_url: Option<String>,
}

impl Cli {
    async fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            database_url: fresh_database().await,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_parley"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("PARLEY_DATA_DIR", self.dir.path())
            .env_remove("PARLEY_DATABASE_URL");
        if let Some(url) = &self.database_url {
            cmd.env("PARLEY_DATABASE_URL", url);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.command(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[tokio::test]
async fn party_and_token_commands_print_json_and_the_token_works() {
    let cli = Cli::new().await;
    assert_eq!(cli.json(&["migrate"]).await["migrated"], true);
    let party = cli
        .json(&[
            "party",
            "create",
            "--kind",
            "creditor",
            "--name",
            "Acme Creditor",
        ])
        .await;
    let party_id = party["partyId"].as_str().unwrap();
    let token = cli
        .json(&[
            "token",
            "create",
            "--party",
            party_id,
            "--label",
            "Collections desk",
        ])
        .await;
    let token = token["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 40);

    let out = cli
        .command(&["token", "create", "--party", "party_nope"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no party with id"));

    // Serve on a free port, use the token, then stop with SIGTERM.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = cli
        .command(&["serve"])
        .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        poll.tick().await;
        let up = client.get(format!("{base}/healthz")).send().await;
        if up.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "parley serve did not come up");
    }
    let r = client
        .get(format!("{base}/api/cases"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("parley stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

#[tokio::test]
async fn a_bad_configuration_value_is_named() {
    let cli = Cli::new().await;
    let out = cli
        .command(&["migrate"])
        .env("PARLEY_DATABASE_URL", "mysql://localhost/parley")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PARLEY_DATABASE_URL: unsupported scheme \"mysql\""),
        "{stderr}"
    );

    let out = cli
        .command(&["migrate"])
        .env("PARLEY_RATE_LIMIT_PER_MINUTE", "lots")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("PARLEY_RATE_LIMIT_PER_MINUTE"));

    std::fs::write(cli.dir.path().join("parley.toml"), "http_adr = \"x\"\n").unwrap();
    let out = cli.command(&["migrate"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"http_adr\""));
}
