//! The `parley` command: parses the command line and calls the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley::config::Config;
use parley::domain::PartyKind;

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
    /// Apply database migrations and exit.
    Migrate,
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
    /// Create a token for a party; prints {"token": "..."} once, only its hash is kept.
    Create {
        #[arg(long)]
        party: String,
        #[arg(long)]
        label: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parley: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    parley::telemetry::init(&config);
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
        Command::Migrate => {
            let store = parley::open_store(&config).await?;
            store.migrate().await?;
            println!("{}", serde_json::json!({"migrated": true}));
            Ok(())
        }
        Command::Party {
            command: PartyCommand::Create { kind, name },
        } => {
            let kind: PartyKind = kind.parse()?;
            let name = parley::domain::case::parse_name(&name)?;
            let store = migrated(&config).await?;
            let id = store.create_party(kind, &name).await?;
            println!("{}", serde_json::json!({"partyId": id.as_str()}));
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { party, label },
        } => {
            let store = migrated(&config).await?;
            let token = store
                .create_token(&party, label.as_deref())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no party with id {party:?}"))?;
            println!("{}", serde_json::json!({"token": token}));
            Ok(())
        }
    }
}

async fn migrated(config: &Config) -> anyhow::Result<parley::store::Store> {
    let store = parley::open_store(config).await?;
    store.migrate().await?;
    Ok(store)
}
