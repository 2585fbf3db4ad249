//! One schema for both databases: the SQLite and PostgreSQL migration folders are kept by hand
//! as twins, so both are applied to empty databases and the schemas they make are compared.
//!
//! What is compared, per table (`_sqlx_migrations` and SQLite's own `sqlite_%` tables left
//! out), one self-contained line per fact so that a difference reads as a short list:
//!
//! - each column: its name, a type class (`integer`, `text`, `blob`, `bool`, `real`,
//!   `numeric`; widths are not compared, SQLite has one integer type) and whether it is
//!   nullable;
//! - the primary key, as its ordered columns;
//! - the unique constraints, as their ordered columns. Their index names are the database's
//!   own (`sqlite_autoindex_t_1`, `t_col_key`), so they are compared by columns only;
//! - every index made by `CREATE INDEX`, by name: its columns, whether it is unique, whether it
//!   is partial (`WHERE ...`). On PostgreSQL that is every index that does not back a primary
//!   key or unique constraint; on SQLite every index whose origin is `c`.
//!
//! Column defaults, foreign keys and CHECK constraints are not compared.
//!
//! One difference by design: the history tables PostgreSQL partitions by month (migration
//! 0030) have their partition key first in their primary key (PostgreSQL takes a unique
//! index on a partitioned table only with it), where SQLite has the key `(id)` and an index
//! on the same columns ([`PARTITIONED`]). Their partitions are not tables of their own here.
//!
//! One normalisation: SQLite reports a primary-key column as nullable unless it is declared
//! `NOT NULL` (a legacy quirk: a rowid table accepts NULL in a non-INTEGER primary key), where
//! PostgreSQL makes every primary-key column NOT NULL. Primary-key columns count as NOT NULL
//! on both sides here; the application never writes a NULL key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::helpers::fresh_database;

/// The schema as a set of facts, each a line such as `cases.status: text not null`.
type Schema = BTreeSet<String>;

fn migrations(folder: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder)
}

/// The type class of a declared (SQLite) or reported (PostgreSQL) column type.
fn type_class(declared: &str) -> String {
    let t = declared.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or_default().trim();
    match base {
        "integer" | "int" | "bigint" | "smallint" | "int2" | "int4" | "int8" | "bigserial"
        | "serial" => "integer".into(),
        "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" => "text".into(),
        "blob" | "bytea" => "blob".into(),
        "boolean" | "bool" => "bool".into(),
        "real" | "double precision" | "double" | "float" | "float4" | "float8" => "real".into(),
        "numeric" | "decimal" => "numeric".into(),
        _ => format!("other({t})"),
    }
}

fn column_fact(table: &str, column: &str, class: &str, nullable: bool) -> String {
    let null = if nullable { "null" } else { "not null" };
    format!("{table}.{column}: {class} {null}")
}

fn index_fact(table: &str, name: &str, columns: &[String], unique: bool, partial: bool) -> String {
    let unique = if unique { "unique " } else { "" };
    let partial = if partial { " where ..." } else { "" };
    format!(
        "{table}: {unique}index {name} ({}){partial}",
        columns.join(", ")
    )
}

#[derive(sqlx::FromRow)]
struct SqliteColumn {
    name: String,
    #[sqlx(rename = "type")]
    declared: String,
    #[sqlx(rename = "notnull")]
    not_null: i64,
    pk: i64,
}

#[derive(sqlx::FromRow)]
struct SqliteIndex {
    name: String,
    #[sqlx(rename = "unique")]
    is_unique: i64,
    origin: String,
    partial: i64,
}

async fn sqlite_schema(conn: &mut SqliteConnection) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for table in &tables {
        let columns: Vec<SqliteColumn> = sqlx::query_as(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut primary_key: Vec<(i64, String)> = Vec::new();
        for c in &columns {
            // A primary-key column counts as NOT NULL: see the module comment.
            let nullable = c.not_null == 0 && c.pk == 0;
            schema.insert(column_fact(
                table,
                &c.name,
                &type_class(&c.declared),
                nullable,
            ));
            if c.pk > 0 {
                primary_key.push((c.pk, c.name.clone()));
            }
        }
        if !primary_key.is_empty() {
            primary_key.sort();
            let names: Vec<String> = primary_key.into_iter().map(|(_, n)| n).collect();
            schema.insert(format!("{table}: primary key ({})", names.join(", ")));
        }
        let indexes: Vec<SqliteIndex> = sqlx::query_as(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list($1) ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for index in indexes {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&index.name)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            match index.origin.as_str() {
                // Backs the primary key (a non-INTEGER one): already compared above.
                "pk" => {}
                "u" => {
                    schema.insert(format!("{table}: unique ({})", columns.join(", ")));
                }
                _ => {
                    schema.insert(index_fact(
                        table,
                        &index.name,
                        &columns,
                        index.is_unique != 0,
                        index.partial != 0,
                    ));
                }
            }
        }
    }
    schema
}

/// The tables partitioned on PostgreSQL: the primary key `(key, id)` there stands for SQLite's
/// `(id)` and, where named, its index on `(key, id)`.
const PARTITIONED: [(&str, Option<&str>); 3] = [
    ("message_events", Some("message_events_message")),
    ("job_attempts", Some("job_attempts_job")),
    ("audit_log", None),
];

/// A PostgreSQL primary key as SQLite's facts: see [`PARTITIONED`].
fn primary_key_facts(table: &str, columns: &[String], partition_key: Option<&str>) -> Vec<String> {
    let twin = PARTITIONED.iter().find(|(t, _)| *t == table);
    match (twin, partition_key, columns) {
        (Some((_, index)), Some(key), [first, rest @ ..]) if first == key => {
            let mut facts = vec![format!("{table}: primary key ({})", rest.join(", "))];
            if let Some(index) = index {
                facts.push(index_fact(table, index, columns, false, false));
            }
            facts
        }
        _ => vec![format!("{table}: primary key ({})", columns.join(", "))],
    }
}

#[derive(sqlx::FromRow)]
struct PgColumn {
    table_name: String,
    column_name: String,
    data_type: String,
    is_nullable: String,
}

#[derive(sqlx::FromRow)]
struct PgIndex {
    table_name: String,
    index_name: String,
    is_unique: bool,
    is_partial: bool,
    /// `p`, `u` when the index backs a primary key or unique constraint, else empty.
    constraint_type: String,
    columns: Vec<String>,
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let mut schema = Schema::new();
    let columns: Vec<PgColumn> = sqlx::query_as(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
         c.data_type::text AS data_type, c.is_nullable::text AS is_nullable \
         FROM information_schema.columns c JOIN information_schema.tables t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
           AND c.table_name <> '_sqlx_migrations' \
           AND c.table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for c in &columns {
        schema.insert(column_fact(
            &c.table_name,
            &c.column_name,
            &type_class(&c.data_type),
            c.is_nullable == "YES",
        ));
    }
    // pg_indexes names the indexes but gives their columns only inside the definition's
    // text; pg_index has them one by one, and pg_constraint tells which back a constraint.
    let indexes: Vec<PgIndex> = sqlx::query_as(
        "SELECT t.relname::text AS table_name, i.relname::text AS index_name, \
           ix.indisunique AS is_unique, ix.indpred IS NOT NULL AS is_partial, \
           COALESCE((SELECT con.contype::text FROM pg_constraint con \
                     WHERE con.conindid = ix.indexrelid AND con.conrelid = t.oid \
                       AND con.contype IN ('p', 'u') LIMIT 1), '') AS constraint_type, \
           ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) \
                 FROM generate_series(1, ix.indnkeyatts) AS k ORDER BY k) AS columns \
         FROM pg_index ix \
           JOIN pg_class i ON i.oid = ix.indexrelid \
           JOIN pg_class t ON t.oid = ix.indrelid \
           JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND t.relkind IN ('r', 'p') AND NOT t.relispartition \
           AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let partition_keys: BTreeMap<String, String> = sqlx::query_as(
        "SELECT CAST(c.relname AS TEXT), CAST(a.attname AS TEXT) FROM pg_partitioned_table p \
         JOIN pg_class c ON c.oid = p.partrelid \
         JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for index in indexes {
        let table = &index.table_name;
        match index.constraint_type.as_str() {
            "p" => {
                let key = partition_keys.get(table).map(String::as_str);
                schema.extend(primary_key_facts(table, &index.columns, key));
            }
            "u" => {
                schema.insert(format!("{table}: unique ({})", index.columns.join(", ")));
            }
            _ => {
                schema.insert(index_fact(
                    table,
                    &index.index_name,
                    &index.columns,
                    index.is_unique,
                    index.is_partial,
                ));
            }
        }
    }
    schema
}

/// The tables a schema has facts about.
fn tables(schema: &Schema) -> BTreeSet<&str> {
    schema
        .iter()
        .filter_map(|fact| fact.split([':', '.']).next())
        .collect()
}

/// Both sides' facts that the other side lacks, table by table.
fn differences(sqlite: &Schema, postgres: &Schema) -> String {
    let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (side, only) in [
        ("sqlite only:  ", sqlite.difference(postgres)),
        ("postgres only:", postgres.difference(sqlite)),
    ] {
        for fact in only {
            let table = fact.split([':', '.']).next().unwrap_or_default();
            by_table
                .entry(table)
                .or_default()
                .push(format!("  {side} {fact}"));
        }
    }
    let mut out = String::new();
    for (table, mut lines) in by_table {
        lines.sort();
        out.push_str(&format!("table {table}\n{}\n", lines.join("\n")));
    }
    out
}

async fn migrated_sqlite() -> (tempfile::TempDir, Schema) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("schema.db").display()
    );
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    Migrator::new(migrations("sqlite"))
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .expect("applying migrations/sqlite");
    let schema = sqlite_schema(&mut conn).await;
    let _ = conn.close().await;
    (dir, schema)
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_make_the_same_schema() {
    let (_dir, sqlite) = migrated_sqlite().await;
    let sqlite_tables = tables(&sqlite);
    assert!(
        sqlite_tables.contains("cases") && sqlite_tables.contains("messages"),
        "migrations/sqlite made no schema to speak of: {sqlite:#?}"
    );

    // PostgreSQL only when the suite has a server (PARLEY_TEST_POSTGRES_URL).
    let Some(url) = fresh_database().await else {
        eprintln!("PARLEY_TEST_POSTGRES_URL is not set: migrations/postgres not compared");
        return;
    };
    let mut conn = PgConnection::connect(&url).await.unwrap();
    Migrator::new(migrations("postgres"))
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .expect("applying migrations/postgres");
    let postgres = postgres_schema(&mut conn).await;
    let _ = conn.close().await;

    assert!(
        sqlite == postgres,
        "migrations/sqlite and migrations/postgres make different schemas \
         ({} facts in SQLite, {} in PostgreSQL):\n{}",
        sqlite.len(),
        postgres.len(),
        differences(&sqlite, &postgres)
    );
}

/// Migration 0030 on a database that has history: every row is copied into the month its
/// key falls in (made by the migration), a row out of reach into DEFAULT, none lost, and the
/// ids go on from where they were.
#[tokio::test]
async fn migration_0030_copies_the_history_into_its_months() {
    let Some(url) = fresh_database().await else {
        eprintln!("PARLEY_TEST_POSTGRES_URL is not set: migration 0030 not tried");
        return;
    };
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(migrations("postgres")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0030" {
            std::fs::copy(&path, before.path().join(&name)).unwrap();
        }
    }
    let mut conn = PgConnection::connect(&url).await.unwrap();
    Migrator::new(before.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();

    let month_ms = 31 * 86_400_000_i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let old_ms = now_ms - 9 * month_ms;
    let message = format!("msg_{old_ms:012x}7000800000000000000a");
    let job = format!("job_{old_ms:012x}7000800000000000000b");
    let month = |table: &str, ms: i64| {
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        format!("{table}_{}", t.format("%Y_%m"))
    };
    for sql in [
        format!(
            "INSERT INTO messages (id, direction, message_type, status, envelope_sealed, created_at, updated_at) \
             VALUES ('{message}', 'outbound', 'email', 'sent', '\\x00', 0, 0)"
        ),
        format!(
            "INSERT INTO message_events (message_id, event, at, provider_event_id) VALUES \
             ('{message}', 'queued', 1, NULL), ('{message}', 'delivered', 2, 'pe-1')"
        ),
        format!(
            "INSERT INTO jobs (id, kind, ref_id, status, run_at, created_at, updated_at) \
             VALUES ('{job}', 'deliver_message', '{message}', 'done', 0, 0, 0)"
        ),
        format!("INSERT INTO job_attempts (job_id, attempt, started_at) VALUES ('{job}', 1, 5)"),
        format!(
            "INSERT INTO audit_log (actor_name, action, target_type, target_id, at) VALUES \
             ('x', 'case.updated', 'case', 'then', {}), ('x', 'case.updated', 'case', 'epoch', 0)",
            old_ms * 1000
        ),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }

    Migrator::new(migrations("postgres"))
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .expect("applying migration 0030 on a database with history");
    let homes: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(tableoid::regclass AS TEXT), event FROM message_events \
         UNION ALL SELECT CAST(tableoid::regclass AS TEXT), job_id FROM job_attempts \
         UNION ALL SELECT CAST(tableoid::regclass AS TEXT), target_id FROM audit_log ORDER BY 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let expect = |home: String, what: &str| (home, what.to_string());
    assert_eq!(
        homes,
        vec![
            expect(month("message_events", old_ms), "delivered"),
            expect("audit_log_default".into(), "epoch"),
            expect(month("job_attempts", old_ms), &job),
            expect(month("message_events", old_ms), "queued"),
            expect(month("audit_log", old_ms), "then"),
        ]
    );
    // Every month from the oldest row's to three ahead of now is made.
    let made: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for m in 0..=12 {
        let ms = old_ms + m * 30 * 86_400_000;
        assert!(made.contains(&month("audit_log", ms)), "{made:?}");
    }
    // The ids go on, and a provider's event id seen before is still seen.
    let next: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO message_events (message_id, event, at, provider_event_id) VALUES ('{message}', 'delivered', 3, 'pe-1') \
         ON CONFLICT (provider_event_id, message_id) WHERE provider_event_id IS NOT NULL DO NOTHING RETURNING id"
    ))
    .fetch_optional(&mut conn)
    .await
    .unwrap()
    .map_or(0, |id: i64| id);
    assert_eq!(next, 0, "a duplicate provider event was written");
    let next: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO message_events (message_id, event, at) VALUES ('{message}', 'opened', 4) RETURNING id"
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    // Past the copied ones (the refused duplicate took a number of the sequence too).
    assert!(next > 2, "{next}");
    let _ = conn.close().await;
}
