//! The query plans of the lists that must stay flat as data grows: a case's messages and
//! their count, the cases a party sees and their count, a case's threads. A test asserts
//! that each walks an index rather than reading a whole table.

use super::cases::{count_cases_sql, list_cases_sql};
use super::messages::{count_messages_sql, list_messages_sql};
use super::threads::LIST_THREADS_SQL;
use super::{Backend, StoreResult, System};
use crate::domain::party::Actor;
use crate::domain::{PartyId, PartyKind};

/// A list query with parameters as a client would send them.
struct Planned {
    name: &'static str,
    sql: String,
    /// Text parameters, then integer ones, in this order of `$n`.
    text: Vec<Option<&'static str>>,
    numbers: Vec<i64>,
}

/// The list queries whose plans are checked, each with values for its parameters.
fn planned() -> Vec<Planned> {
    let actor = |kind| Actor {
        party_id: PartyId::from_stored("party_plan".to_string()),
        kind,
        name: String::new(),
        token_id: String::new(),
    };
    let creditor = actor(PartyKind::Creditor);
    let admin = actor(PartyKind::Admin);
    vec![
        Planned {
            name: "messages of a case",
            sql: list_messages_sql(),
            text: vec![Some("case"), None, None, None],
            numbers: vec![],
        },
        Planned {
            name: "messages of a case, by type and direction",
            sql: list_messages_sql(),
            text: vec![Some("case"), Some("email"), Some("outbound"), None],
            numbers: vec![],
        },
        Planned {
            name: "messages of a case, counted",
            sql: count_messages_sql(),
            text: vec![Some("case"), Some("sms"), None, Some("sent")],
            numbers: vec![],
        },
        Planned {
            name: "cases of a creditor",
            sql: list_cases_sql(&creditor),
            text: vec![Some("party_plan"), None, None],
            numbers: vec![51],
        },
        Planned {
            name: "cases of a creditor, counted",
            sql: count_cases_sql(&creditor),
            text: vec![Some("party_plan"), Some("active")],
            numbers: vec![],
        },
        Planned {
            name: "cases, as an admin",
            sql: list_cases_sql(&admin),
            text: vec![Some("party_plan"), None, None],
            numbers: vec![51],
        },
        Planned {
            name: "threads of a case",
            sql: LIST_THREADS_SQL.to_string(),
            text: vec![Some("case")],
            numbers: vec![],
        },
    ]
}

impl System {
    /// The plan of every list query, as the database describes it (`EXPLAIN QUERY PLAN` on
    /// SQLite; `EXPLAIN` on PostgreSQL, with sequential scans discouraged so that a small
    /// table still shows the index the query can use). For tests and operators.
    #[doc(hidden)]
    pub async fn list_plans(&self) -> StoreResult<Vec<(&'static str, String)>> {
        let queries = planned();
        let mut plans = Vec::new();
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await?;
        }
        for q in queries {
            let explain = match self.backend {
                Backend::Sqlite => format!("EXPLAIN QUERY PLAN {}", q.sql),
                Backend::Postgres => format!("EXPLAIN {}", q.sql),
            };
            let mut query = sqlx::query(&explain);
            for t in &q.text {
                query = query.bind(*t);
            }
            // The messages list has two optional times before its cursor and page size.
            if q.sql.contains("$8") {
                query = query
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .bind(None::<&str>)
                    .bind(51_i64);
            } else if q.sql.contains("$6") {
                query = query.bind(None::<i64>).bind(None::<i64>);
            }
            for n in &q.numbers {
                query = query.bind(*n);
            }
            let rows = query.fetch_all(&mut *tx).await?;
            let lines: Vec<String> = rows
                .iter()
                .map(|row| {
                    use sqlx::Row;
                    // SQLite: (id, parent, notused, detail); PostgreSQL: one text column.
                    let column = if self.backend == Backend::Sqlite {
                        3
                    } else {
                        0
                    };
                    row.try_get::<String, _>(column).unwrap_or_default()
                })
                .collect();
            plans.push((q.name, lines.join("\n")));
        }
        tx.rollback().await?;
        Ok(plans)
    }
}
