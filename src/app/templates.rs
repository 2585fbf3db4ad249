//! Message templates: listed and read by every party, written by admins.

use super::{AppError, AppResult};
use crate::domain::party::Actor;
use crate::store::{Store, Template};

#[derive(Clone)]
pub struct Templates {
    templates: crate::store::Templates,
}

fn admin(actor: &Actor) -> AppResult<()> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden("templates are managed by admins"))
    }
}

impl Templates {
    pub fn new(store: &Store) -> Self {
        Self {
            templates: store.templates(),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn list(&self) -> AppResult<Vec<Template>> {
        Ok(self.templates.list_templates().await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, id: &str) -> AppResult<Template> {
        self.templates
            .get_template(id)
            .await?
            .ok_or(AppError::NotFound("template"))
    }

    /// Creates a template; an id already taken is refused by the store (409).
    #[tracing::instrument(skip_all)]
    pub async fn create(&self, actor: &Actor, t: &Template) -> AppResult<()> {
        admin(actor)?;
        self.templates.save_template(actor, t, false).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn replace(&self, actor: &Actor, t: &Template) -> AppResult<()> {
        admin(actor)?;
        if self.templates.save_template(actor, t, true).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("template"))
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete(&self, actor: &Actor, id: &str) -> AppResult<()> {
        admin(actor)?;
        if self.templates.delete_template(actor, id).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("template"))
        }
    }
}
