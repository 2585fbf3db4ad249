//! Data subjects: finding everything held about one person through the blind indexes (never
//! by opening every row), for an export.

use super::messages::MESSAGE_COLUMNS_WITH_BODY;
use super::{MessageView, Store, StoreResult};

impl Store {
    /// The cases whose debtor has this email address or phone number, oldest first.
    pub async fn subject_cases(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let email = email.map(|e| self.keys.blind_index("email", &e.to_lowercase()));
        let phone = phone.map(|p| self.keys.blind_index("phone", p));
        Ok(sqlx::query_scalar(
            "SELECT id FROM cases WHERE ($1 IS NOT NULL AND debtor_email_index = $1) \
             OR ($2 IS NOT NULL AND debtor_phone_index = $2) ORDER BY created_at, id",
        )
        .bind(email)
        .bind(phone)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A page of a case's messages with their bodies and attachments, oldest first, after
    /// the message `after`.
    pub async fn case_messages_with_bodies(
        &self,
        case_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<MessageView>> {
        let rows = sqlx::query_as::<_, super::messages::MessageWithBody>(&format!(
            "SELECT {MESSAGE_COLUMNS_WITH_BODY} FROM messages m WHERE m.case_id = $1 \
             AND ($2 IS NULL OR m.id > $2) ORDER BY m.id LIMIT $3"
        ))
        .bind(case_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut m = self.message_with_body(row)?;
            if m.has_attachments {
                m.attachments = self.message_attachments(&m.id).await?;
            }
            out.push(m);
        }
        Ok(out)
    }
}

impl Store {
    /// The tables of the schema (for the test that every table is placed in or out of the
    /// data subject export).
    #[doc(hidden)]
    pub async fn table_names(&self) -> StoreResult<Vec<String>> {
        let sql = match self.backend {
            super::Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            super::Backend::Postgres => {
                "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            }
        };
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }
}
