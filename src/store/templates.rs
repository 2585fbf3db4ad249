//! Message templates, each with its text in one or more languages.

use super::{StoreError, StoreResult, Templates, audit};
use crate::domain::audit::AuditAction;
use crate::domain::code::Code;
use crate::domain::message::Channel;
use crate::domain::party::Actor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContent {
    pub language: String,
    pub subject: Option<String>,
    pub body: String,
    pub html_body: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub channel: Channel,
    pub default_language: String,
    /// The default language first.
    pub contents: Vec<TemplateContent>,
}

#[derive(sqlx::FromRow)]
struct TemplateRow {
    id: String,
    name: String,
    channel: String,
    default_language: String,
}

#[derive(sqlx::FromRow)]
struct TemplateContentRow {
    template_id: String,
    language: String,
    subject: Option<String>,
    body: String,
    html_body: Option<String>,
}

impl Template {
    pub fn content(&self, language: &str) -> Option<&TemplateContent> {
        self.contents.iter().find(|c| c.language == language)
    }
    pub fn default_content(&self) -> Option<&TemplateContent> {
        self.content(&self.default_language)
            .or(self.contents.first())
    }
    pub fn languages(&self) -> Vec<String> {
        self.contents.iter().map(|c| c.language.clone()).collect()
    }
}

impl Templates {
    pub async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        self.load_templates(None).await
    }

    /// One template: two indexed look-ups, not the whole list (a send with a template asks
    /// for it).
    pub async fn get_template(&self, id: &str) -> StoreResult<Option<Template>> {
        Ok(self.load_templates(Some(id)).await?.into_iter().next())
    }

    /// Every template, or the one named.
    async fn load_templates(&self, id: Option<&str>) -> StoreResult<Vec<Template>> {
        let heads = sqlx::query_as::<_, TemplateRow>(
            "SELECT id, name, channel, default_language FROM templates WHERE ($1 IS NULL OR id = $1) ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let bodies = sqlx::query_as::<_, TemplateContentRow>(
            "SELECT template_id, language, subject, body, html_body FROM template_contents \
             WHERE ($1 IS NULL OR template_id = $1) ORDER BY template_id, language",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut templates = heads
            .into_iter()
            .map(|r| {
                Ok(Template {
                    channel: Channel::parse(&r.channel).map_err(anyhow::Error::from)?,
                    id: r.id,
                    name: r.name,
                    default_language: r.default_language,
                    contents: Vec::new(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        for r in bodies {
            if let Some(t) = templates.iter_mut().find(|t| t.id == r.template_id) {
                t.contents.push(TemplateContent {
                    language: r.language,
                    subject: r.subject,
                    body: r.body,
                    html_body: r.html_body,
                });
            }
        }
        for t in &mut templates {
            let default = t.default_language.clone();
            t.contents.sort_by_key(|c| c.language != default);
        }
        Ok(templates)
    }

    /// Creates (`replace = false`) or replaces a template; `Ok(false)` when replacing one
    /// that does not exist.
    pub async fn save_template(
        &self,
        actor: &Actor,
        t: &Template,
        replace: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let now = self.now();
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM templates WHERE id = $1")
            .bind(&t.id)
            .fetch_optional(&mut *tx)
            .await?;
        match (exists.is_some(), replace) {
            (true, false) => return Err(StoreError::Conflict(Code::TemplateExists)),
            (false, true) => return Ok(false),
            (true, true) => {
                sqlx::query("UPDATE templates SET name = $2, channel = $3, default_language = $4, updated_at = $5 WHERE id = $1")
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(t.channel.as_str())
                    .bind(&t.default_language)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM template_contents WHERE template_id = $1")
                    .bind(&t.id)
                    .execute(&mut *tx)
                    .await?;
            }
            (false, false) => {
                sqlx::query(
                    "INSERT INTO templates (id, name, channel, default_language, owner_party_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(&t.id)
                .bind(&t.name)
                .bind(t.channel.as_str())
                .bind(&t.default_language)
                .bind(actor.party_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        for c in &t.contents {
            sqlx::query("INSERT INTO template_contents (template_id, language, subject, body, html_body) VALUES ($1, $2, $3, $4, $5)")
                .bind(&t.id)
                .bind(&c.language)
                .bind(c.subject.as_deref())
                .bind(&c.body)
                .bind(c.html_body.as_deref())
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            None,
            actor,
            if replace {
                AuditAction::TemplateReplaced
            } else {
                AuditAction::TemplateCreated
            },
            "template",
            &t.id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn delete_template(&self, actor: &Actor, id: &str) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM template_contents WHERE template_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM templates WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        audit(
            &mut tx,
            None,
            actor,
            AuditAction::TemplateDeleted,
            "template",
            id,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
