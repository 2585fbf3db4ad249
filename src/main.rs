//! The `parley` command: parses the command line and calls the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley::config::Config;
use parley::domain::PartyKind;

/// mimalloc: a request allocates and frees many small buffers across the runtime's threads,
/// which glibc's allocator served at some tenth of the process's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "Communication Center for debt-collection cases"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (and, as they arrive, the background workers).
    Serve,
    /// Apply database migrations, then seal a data subject's values that an earlier version
    /// kept under the master key under that subject's key (documents too); prints what it
    /// changed.
    Migrate,
    /// Ask the serving process on PARLEY_HTTP_ADDR for /healthz: exit 0 when it answers 200
    /// (the container's health check).
    Health,
    /// Seal everything held under an earlier master key (PARLEY_OLD_MASTER_KEYS) again under
    /// PARLEY_MASTER_KEY (data subjects' keys wrapped anew), so the earlier key can be
    /// retired; prints what it changed.
    Rekey,
    /// Manage parties.
    Party {
        #[command(subcommand)]
        command: PartyCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum PartyCommand {
    /// Create a party; prints {"partyId": "..."}.
    Create {
        #[arg(long, value_parser = ["admin", "creditor", "partner"])]
        kind: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a party; prints {"token": "...", "tokenId": "..."} once, only its
    /// hash is kept.
    Create {
        #[arg(long)]
        party: String,
        #[arg(long)]
        label: Option<String>,
        /// The token expires this long after now, e.g. 90d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List a party's tokens (never the tokens themselves).
    List {
        #[arg(long)]
        party: String,
    },
    /// Revoke a token at once, by its id.
    Revoke { token_id: String },
}

/// The allocator's settings a server starts with unless the environment names its own:
/// an arena's memory committed as it is touched (not at once, as mimalloc does where the
/// system overcommits). Measured (docs/BENCHMARKS.md): a server at rest 41 MB instead of
/// 61, and a 1 GiB upload mirrored to a document system at a peak of 52-55 MB instead of
/// 85. Giving freed pages back at once as well (`MIMALLOC_PURGE_DELAY=0`) saved a few MB
/// more and cost the send API 5-13 % of its rate, so it is left to the operator.
const ALLOCATOR_DEFAULTS: [(&str, &str); 1] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// mimalloc reads its options from the environment when the process starts, before `main`:
/// a server whose environment does not name them starts itself again with them (the same
/// process, by `exec`). If that cannot be done, it goes on as it is.
#[cfg(unix)]
fn with_allocator_defaults() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<(&str, &str)> = ALLOCATOR_DEFAULTS
        .iter()
        .copied()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(me)
        .args(std::env::args_os().skip(1))
        .envs(ALLOCATOR_DEFAULTS.iter().map(|(name, value)| {
            let value = std::env::var_os(name).unwrap_or_else(|| (*value).into());
            (*name, value)
        }))
        .exec();
    eprintln!("parley: starting with the allocator's defaults failed ({error}); going on");
}

#[cfg(not(unix))]
fn with_allocator_defaults() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve) {
        with_allocator_defaults();
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parley: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = parley::telemetry::init(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("parley: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parley: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => parley::serve(config).await,
        Command::Health => health(&config).await,
        Command::Migrate => {
            let resealed = parley::rekey(&config).await?;
            println!(
                "{}",
                serde_json::json!({"migrated": true, "resealed": resealed})
            );
            Ok(())
        }
        Command::Rekey => {
            let done = parley::rekey(&config).await?;
            println!("{}", serde_json::to_string(&done)?);
            Ok(())
        }
        Command::Party {
            command: PartyCommand::Create { kind, name },
        } => {
            let kind: PartyKind = kind.parse()?;
            let name = parley::domain::case::parse_name(&name)?;
            let store = migrated(&config).await?;
            let id = store.parties().create_party(kind, &name).await?;
            println!("{}", serde_json::json!({"partyId": id.as_str()}));
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    party,
                    label,
                    expires_in,
                },
        } => {
            let expires_at = expires_in
                .as_deref()
                .map(|v| {
                    parley::domain::time::parse_duration(v)
                        .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))
                        .map(|d| {
                            parley::domain::time::now_micros()
                                .saturating_add(parley::domain::time::duration_micros(d))
                        })
                })
                .transpose()?;
            let store = migrated(&config).await?;
            let (id, token) = store
                .parties()
                .issue_token(&party, label.as_deref(), expires_at)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no party with id {party:?}"))?;
            let mut out = serde_json::json!({"token": token, "tokenId": id});
            if let Some(at) = expires_at {
                out["expiresAt"] = parley::domain::time::rfc3339(at).into();
            }
            println!("{out}");
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List { party },
        } => {
            let store = migrated(&config).await?;
            let time = |t: Option<i64>| t.map(parley::domain::time::rfc3339);
            let tokens: Vec<serde_json::Value> = store
                .parties()
                .list_tokens(&party)
                .await?
                .into_iter()
                .map(|t| {
                    serde_json::json!({
                        "tokenId": t.id,
                        "label": t.label,
                        "createdAt": parley::domain::time::rfc3339(t.created_at),
                        "expiresAt": time(t.expires_at),
                        "revokedAt": time(t.revoked_at),
                    })
                })
                .collect();
            println!("{}", serde_json::json!({"tokens": tokens}));
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Revoke { token_id },
        } => {
            let store = migrated(&config).await?;
            if !store.parties().revoke_token(&token_id).await? {
                anyhow::bail!("no live token with id {token_id:?}");
            }
            println!("{}", serde_json::json!({"revoked": token_id}));
            Ok(())
        }
    }
}

async fn health(config: &Config) -> anyhow::Result<()> {
    let mut addr = config.http.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/healthz");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let status = client.get(&url).send().await?.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    println!("{}", serde_json::json!({"healthy": true}));
    Ok(())
}

async fn migrated(config: &Config) -> anyhow::Result<parley::store::Store> {
    let store = parley::open_store(config).await?;
    store.migrate().await?;
    Ok(store)
}
