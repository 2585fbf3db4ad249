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
           AND c.table_name <> '_sqlx_migrations'",
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
         WHERE n.nspname = 'public' AND t.relkind = 'r' AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for index in indexes {
        let table = &index.table_name;
        match index.constraint_type.as_str() {
            "p" => {
                schema.insert(format!(
                    "{table}: primary key ({})",
                    index.columns.join(", ")
                ));
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
