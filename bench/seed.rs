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
//!
//! `--bulk` (PostgreSQL): only the messages of the cases a benchmark asks about (the first
//! creditor's first 20) go through the write path; the rest are copied by the database from
//! those rows (`INSERT … SELECT`, each table a send writes: the message, its events, its
//! delivery job, its audit entries; one thread per case), with new ids, onto the other
//! cases. Their sealed parts are the originals' and cannot be opened under the new ids, so
//! nothing reads them but the database: they are there for the size of the tables and their
//! indexes. Ten million messages in 16 minutes instead of the write path's 26-40.

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
    let (creditors, cases, mut messages, per_case) = (
        arg("--creditors", 100),
        arg("--cases", 10_000),
        arg("--messages", 1_000_000),
        arg("--per-case", usize::MAX),
    );
    let bulk = std::env::args().any(|a| a == "--bulk");
    let config = parley::config::Config::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        !bulk || config.storage.database_url.expose().starts_with("postgres"),
        "--bulk copies on PostgreSQL only"
    );
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
    // With `--bulk`, the write path only for the cases asked about; the rest copied after.
    let (written, copied) = if bulk {
        let asked = busy.min(ASKED);
        let written = messages.min(asked.saturating_mul(per_case));
        (asked, messages - written)
    } else {
        (busy, 0)
    };
    messages -= copied;
    let targets: Vec<(usize, parley::domain::CaseId)> = case_ids[..written].to_vec();
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
    if copied > 0 {
        let onto: Vec<String> = case_ids[written..busy]
            .iter()
            .map(|(_, id)| id.to_string())
            .collect();
        copy_messages(
            config.storage.database_url.expose(),
            &onto,
            per_case,
            copied,
        )
        .await?;
    }
    let first: Vec<String> = case_ids
        .iter()
        .filter(|(owner, _)| *owner == 0)
        .map(|(_, id)| id.to_string())
        .take(ASKED)
        .collect();
    println!(
        "{}",
        serde_json::json!({"token": first_token, "cases": first})
    );
    Ok(())
}

/// The cases a benchmark asks about: the first creditor's first.
const ASKED: usize = 20;
/// Messages copied in one statement at most.
const COPY_CHUNK: usize = 500_000;

/// Copies `count` messages from those in the database onto `cases` (`per_case` each, in
/// turn), with every row a send writes beside a message, by `INSERT … SELECT`.
async fn copy_messages(
    url: &str,
    cases: &[String],
    per_case: usize,
    count: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cases.is_empty(),
        "--bulk: no cases to copy onto (more --cases)"
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let mut conn = pool.acquire().await?;
    let threads: Vec<String> = cases
        .iter()
        .map(|_| parley::domain::ThreadId::new().to_string())
        .collect();
    for sql in [
        "CREATE TEMP TABLE seed_tmpl AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id \
         FROM messages WHERE direction = 'outbound'",
        "CREATE TEMP TABLE seed_cases (k BIGINT, case_id TEXT, thread_id TEXT)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    sqlx::query(
        "INSERT INTO seed_cases SELECT n - 1, c, t FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u (c, t, n)",
    )
    .bind(cases)
    .bind(&threads)
    .execute(&mut *conn)
    .await?;
    let like = "(SELECT thread_id FROM messages WHERE id = (SELECT id FROM seed_tmpl WHERE k = 0))";
    let cols = columns(
        &mut conn,
        "threads",
        &[("id", "s.thread_id"), ("case_id", "s.case_id")],
    )
    .await?;
    sqlx::query(&format!(
        "INSERT INTO threads SELECT {cols} FROM seed_cases s, threads x WHERE x.id = {like}"
    ))
    .execute(&mut *conn)
    .await?;
    let templates: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM seed_tmpl")
        .fetch_one(&mut *conn)
        .await?;
    let ms = parley::domain::time::now_micros() / 1000;
    let copies = [
        (
            "messages",
            "x.id = b.tmpl",
            vec![
                ("id", "b.id"),
                ("case_id", "b.case_id"),
                ("thread_id", "b.thread_id"),
                ("rfc_message_id", "'<' || b.id || '@bench.parley>'"),
            ],
        ),
        (
            "message_events",
            "x.message_id = b.tmpl",
            vec![("message_id", "b.id")],
        ),
        (
            "jobs",
            "x.ref_id = b.tmpl",
            vec![("id", "b.job_id"), ("ref_id", "b.id")],
        ),
        (
            "audit_log",
            "x.target_id = b.tmpl",
            vec![("case_id", "b.case_id"), ("target_id", "b.id")],
        ),
    ];
    let mut sqls = Vec::new();
    for (table, on, subst) in &copies {
        let cols = columns(&mut conn, table, subst).await?;
        let names = names(&mut conn, table).await?;
        sqls.push(format!(
            "INSERT INTO {table} ({names}) SELECT {cols} FROM seed_map b JOIN {table} x ON {on}"
        ));
    }
    for start in (0..count).step_by(COPY_CHUNK) {
        let end = (start + COPY_CHUNK).min(count);
        sqlx::query(&format!(
            "CREATE TEMP TABLE seed_map AS SELECT \
               'msg_' || lpad(to_hex({ms}::bigint), 12, '0') || '7' || lpad(to_hex(g), 19, '0') AS id, \
               'job_' || lpad(to_hex({ms}::bigint), 12, '0') || '7' || lpad(to_hex(g), 19, '0') AS job_id, \
               s.case_id, s.thread_id, t.id AS tmpl \
             FROM generate_series({start}::bigint, {last}::bigint) g \
             JOIN seed_cases s ON s.k = (g / {per_case}) % {n} JOIN seed_tmpl t ON t.k = g % {templates}",
            last = end - 1,
            n = cases.len(),
        ))
        .execute(&mut *conn)
        .await?;
        for sql in &sqls {
            sqlx::query(sql).execute(&mut *conn).await?;
        }
        sqlx::query("DROP TABLE seed_map")
            .execute(&mut *conn)
            .await?;
        eprintln!("{end} messages copied");
    }
    Ok(())
}

/// A table's columns as a copy's select list: `x.column`, or the expression given for it;
/// a column the database numbers itself (a `BIGSERIAL` id) is left out.
async fn columns(
    conn: &mut sqlx::PgConnection,
    table: &str,
    subst: &[(&str, &str)],
) -> anyhow::Result<String> {
    let cols: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, column_default::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(cols
        .iter()
        .filter(|(_, default)| {
            !default
                .as_deref()
                .is_some_and(|d| d.starts_with("nextval("))
        })
        .map(|(name, _)| {
            subst
                .iter()
                .find(|(c, _)| c == name)
                .map_or_else(|| format!("x.{name}"), |(_, e)| (*e).to_string())
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// The names of the columns [`columns`] selects, in the same order.
async fn names(conn: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<String> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() \
         AND table_name = $1 AND (column_default IS NULL OR column_default NOT LIKE 'nextval(%') \
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(cols.join(", "))
}
