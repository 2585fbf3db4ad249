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
        let mut cmd = Command::new(crate::binary::parley_bin());
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

#[tokio::test]
async fn tokens_are_listed_revoked_and_expire() {
    let cli = Cli::new().await;
    let party = cli
        .json(&["party", "create", "--kind", "creditor", "--name", "Acme"])
        .await;
    let party_id = party["partyId"].as_str().unwrap();
    let kept = cli
        .json(&["token", "create", "--party", party_id, "--label", "desk"])
        .await;
    let revoked = cli
        .json(&[
            "token",
            "create",
            "--party",
            party_id,
            "--expires-in",
            "90d",
        ])
        .await;
    assert!(revoked["expiresAt"].is_string(), "{revoked}");
    let expired = cli
        .json(&["token", "create", "--party", party_id, "--expires-in", "0s"])
        .await;

    let list = cli.json(&["token", "list", "--party", party_id]).await;
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    let text = list.to_string();
    for t in [&kept, &revoked, &expired] {
        assert!(
            !text.contains(t["token"].as_str().unwrap()),
            "a listing never shows a token"
        );
        assert!(text.contains(t["tokenId"].as_str().unwrap()));
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = cli
        .command(&["serve"])
        .env("PARLEY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let status = |token: Value| {
        let (client, url) = (client.clone(), format!("{base}/api/cases"));
        async move {
            client
                .get(url)
                .bearer_auth(token.as_str().unwrap())
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    crate::peers::eventually(30, "parley serve", || {
        let s = status(kept["token"].clone());
        async move { s.await.filter(|c| *c == 200) }
    })
    .await;
    assert_eq!(status(revoked["token"].clone()).await, Some(200));
    assert_eq!(status(expired["token"].clone()).await, Some(401), "expired");

    // Revoked while the server runs: refused at once.
    let id = revoked["tokenId"].as_str().unwrap();
    assert_eq!(cli.json(&["token", "revoke", id]).await["revoked"], id);
    assert_eq!(status(revoked["token"].clone()).await, Some(401));
    assert_eq!(status(kept["token"].clone()).await, Some(200));
    let again = cli
        .command(&["token", "revoke", id])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success(), "a token is revoked once");
    let list = cli.json(&["token", "list", "--party", party_id]).await;
    let entry = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tokenId"] == id)
        .unwrap()
        .clone();
    assert!(entry["revokedAt"].is_string(), "{entry}");
}

#[tokio::test]
async fn the_health_command_asks_the_serving_process() {
    let mut install = crate::binary::Installation::new().await;
    let server = install.serve().await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    // As in the container: the process listens on every address, the check asks loopback.
    install.set("PARLEY_HTTP_ADDR", &format!("0.0.0.0:{port}"));
    let out = install.command(&["health"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["healthy"], true);
    server.stop().await;
    let out = install.command(&["health"]).output().await.unwrap();
    assert!(!out.status.success(), "nothing answers any more");
}
