//! Statements of one transaction that answer nothing, sent together.
//!
//! A batch of sends writes rows into several tables (messages, their events, jobs, audit
//! entries, …): one multi-row statement each. On PostgreSQL each statement is a round trip,
//! and under load a round trip costs far more in waiting for the server to be scheduled
//! than in running the statement. So there, the statements go as one: all but the last as
//! data-modifying `WITH` clauses of the last, which PostgreSQL runs to completion whatever
//! the main statement reads (foreign keys are checked at its end, when every row is in).
//! SQLite runs in the process and has no round trip to save, and no `WITH … INSERT`: each
//! statement runs on its own, in order. On PostgreSQL too, statements past
//! [`VALUES_PER_STATEMENT`] values go as another statement (its bound is 65,535): writes
//! that may be that many belong in a transaction.

use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Arguments};

use super::{Backend, positional};

/// Values in one joined statement at most before the next statement starts another.
const VALUES_PER_STATEMENT: usize = 60_000;

/// Statements gathered to run together (see the module's documentation).
pub(crate) struct Writes<'q> {
    backend: Backend,
    /// PostgreSQL: the statements joined so far, their placeholders numbered after the
    /// previous ones', and those of the statements before, each joined likewise.
    joined: Vec<String>,
    shared: AnyArguments<'q>,
    full: Vec<(Vec<String>, AnyArguments<'q>)>,
    /// SQLite: each statement with its own values.
    separate: Vec<(String, AnyArguments<'q>)>,
    failed: Option<sqlx::error::BoxDynError>,
}

/// The values of one statement of [`Writes`], bound in the order of its placeholders.
pub(crate) struct Values<'w, 'q> {
    args: &'w mut AnyArguments<'q>,
    failed: &'w mut Option<sqlx::error::BoxDynError>,
}

impl<'q> Values<'_, 'q> {
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        if let Err(e) = self.args.add(value)
            && self.failed.is_none()
        {
            *self.failed = Some(e);
        }
        self
    }
}

impl<'q> Writes<'q> {
    pub(crate) fn new(backend: Backend) -> Self {
        Self {
            backend,
            joined: Vec::new(),
            shared: AnyArguments::default(),
            full: Vec::new(),
            separate: Vec::new(),
            failed: None,
        }
    }

    /// Adds a statement whose placeholders are `$1, $2, …` of its own; its values are bound
    /// next, on what this returns, before another statement is added.
    pub(crate) fn add(&mut self, sql: &str) -> Values<'_, 'q> {
        match self.backend {
            Backend::Postgres => {
                if self.shared.len() >= VALUES_PER_STATEMENT {
                    let joined = std::mem::take(&mut self.joined);
                    let shared = std::mem::take(&mut self.shared);
                    self.full.push((joined, shared));
                }
                self.joined.push(shifted(sql, self.shared.len()));
                Values {
                    args: &mut self.shared,
                    failed: &mut self.failed,
                }
            }
            Backend::Sqlite => {
                self.separate.push((
                    positional(sql.to_string(), self.backend),
                    AnyArguments::default(),
                ));
                let last = self.separate.len() - 1;
                Values {
                    args: &mut self.separate[last].1,
                    failed: &mut self.failed,
                }
            }
        }
    }

    /// Runs every statement added, on `conn` (inside the caller's transaction).
    pub(crate) async fn run(self, conn: &mut AnyConnection) -> sqlx::Result<()> {
        if let Some(e) = self.failed {
            return Err(sqlx::Error::Encode(e));
        }
        match self.backend {
            Backend::Postgres => {
                let mut statements = self.full;
                statements.push((self.joined, self.shared));
                for (joined, values) in statements {
                    let Some((last, before)) = joined.split_last() else {
                        continue;
                    };
                    let sql = if before.is_empty() {
                        last.clone()
                    } else {
                        let clauses: Vec<String> = before
                            .iter()
                            .enumerate()
                            .map(|(i, s)| format!("w{i} AS ({s})"))
                            .collect();
                        format!("WITH {} {last}", clauses.join(", "))
                    };
                    sqlx::query_with(&sql, values).execute(&mut *conn).await?;
                }
            }
            Backend::Sqlite => {
                for (sql, args) in self.separate {
                    sqlx::query_with(&sql, args).execute(&mut *conn).await?;
                }
            }
        }
        Ok(())
    }
}

/// `sql` with each placeholder `$n` made `$(n + by)`.
fn shifted(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + sql.len() / 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_shift_past_the_values_before_them() {
        assert_eq!(
            shifted("INSERT INTO t (a, b) VALUES ($1, 'x'), ($2, $10)", 3),
            "INSERT INTO t (a, b) VALUES ($4, 'x'), ($5, $13)"
        );
        assert_eq!(shifted("SELECT $1", 0), "SELECT $1");
        assert_eq!(shifted("SELECT '$' || $1", 2), "SELECT '$' || $3");
    }
}
