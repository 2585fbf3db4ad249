//! Seeds a database for the list benchmarks through the library's own write path (the
//! group commit of `Store::queue_message`): `--creditors` creditors, `--cases` cases spread
//! over them, `--messages` outbound messages spread over the cases (email and SMS by turns),
//! `--per-case` to a case at most: the messages go to as many cases as that needs, the first
//! creditor's first, so the cases a benchmark asks about hold as many messages however large
//! the database.
//! Reads the same configuration as `parley serve` (PARLEY_DATABASE_URL, PARLEY_DATA_DIR,
//! PARLEY_MASTER_KEY). Prints `{"token": …, "cases": [ids of the first creditor's cases]}`.
//!
//! `cargo run --release --example seed -- --creditors 100 --cases 10000 --messages 1000000`

use std::sync::Arc;

use futures_util::StreamExt;
use parley::domain::message::{Category, Channel, Priority};
use parley::domain::{Debtor, Money, PartyKind};
use parley::store::{Access, Envelope, NewCase, NewMessage};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (creditors, cases, messages, per_case) = (
        arg("--creditors", 100),
        arg("--cases", 10_000),
        arg("--messages", 1_000_000),
        arg("--per-case", usize::MAX),
    );
    let config = parley::config::Config::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = parley::open_store(&config).await?;
    store.migrate().await?;

    let mut actors = Vec::new();
    let mut first_token = String::new();
    for i in 0..creditors {
        let party = store
            .parties()
            .create_party(PartyKind::Creditor, &format!("Creditor {i}"))
            .await?;
        let token = store
            .parties()
            .create_token(party.as_str(), None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no party"))?;
        if i == 0 {
            first_token = token.clone();
        }
        let actor = store
            .parties()
            .authenticate(&token)
            .await?
            .ok_or_else(|| anyhow::anyhow!("token refused"))?;
        actors.push((party, actor));
    }
    let mut case_ids: Vec<(usize, parley::domain::CaseId)> = Vec::new();
    for i in 0..cases {
        let owner = i % creditors;
        let (party, actor) = &actors[owner];
        let case = store
            .cases()
            .create_case(
                actor,
                NewCase {
                    case_number: None,
                    creditor_id: party.to_string(),
                    partner_id: None,
                    debtor: Debtor::parse(
                        &format!("Debtor {i}"),
                        Some(&format!("debtor{i}@example.com")),
                        Some("+4512345678"),
                        None,
                        None,
                    )?,
                    amount: Money::parse("1500.00", "DKK")?,
                    invoice_number: None,
                    due_date: None,
                },
            )
            .await?;
        case_ids.push((owner, case.id));
    }
    // The cases that get messages: the first creditor's first (those the benchmark asks
    // about), as many as `--per-case` needs.
    case_ids.sort_by_key(|(owner, _)| *owner != 0);
    let busy = messages.div_ceil(per_case.max(1)).clamp(1, case_ids.len());
    let targets: Vec<(usize, parley::domain::CaseId)> = case_ids[..busy].to_vec();
    let store = Arc::new(store);
    let actors = Arc::new(actors);
    let targets = Arc::new(targets);
    let now = parley::domain::time::now_micros();
    let mut sends = futures_util::stream::iter(0..messages)
        .map(|i| {
            let (store, actors, targets) = (store.clone(), actors.clone(), targets.clone());
            async move {
                let (owner, case_id) = &targets[i % targets.len()];
                let channel = if i % 2 == 0 {
                    Channel::Email
                } else {
                    Channel::Sms
                };
                let id = parley::domain::MessageId::new();
                let (to, subject) = match channel {
                    Channel::Email => (
                        format!("debtor{}@example.com", i % targets.len()),
                        Some(format!("Payment reminder {}", i % 7)),
                    ),
                    Channel::Sms => ("+4512345678".to_string(), None),
                };
                let new = NewMessage {
                    rfc_message_id: Some(format!("<{id}@bench.parley>")),
                    id,
                    case_id: *case_id,
                    message_type: channel.into(),
                    channel: Some(channel),
                    status: parley::domain::message::MessageStatus::Queued,
                    system: None,
                    evidence: None,
                    attachments: Vec::new(),
                    priority: Priority::Normal,
                    category: Category::PaymentReminders,
                    template_id: None,
                    language: None,
                    envelope: Envelope {
                        from: "noreply@bench.parley".into(),
                        to: vec![to],
                        cc: Vec::new(),
                    },
                    subject,
                    body: "Dear customer, this is a reminder that your invoice is due.".into(),
                    html: None,
                    in_reply_to: None,
                    segments: None,
                    run_at: now,
                    scheduled_for: None,
                    trace_parent: None,
                };
                store
                    .messages()
                    .queue_message(&actors[*owner].1, new, None, Access::ToCheck, now)
                    .await
            }
        })
        .buffer_unordered(256);
    let mut done = 0usize;
    while let Some(result) = sends.next().await {
        result?;
        done += 1;
        if done.is_multiple_of(100_000) {
            eprintln!("{done} messages");
        }
    }
    let first: Vec<String> = case_ids
        .iter()
        .filter(|(owner, _)| *owner == 0)
        .map(|(_, id)| id.to_string())
        .take(20)
        .collect();
    println!(
        "{}",
        serde_json::json!({"token": first_token, "cases": first})
    );
    Ok(())
}
