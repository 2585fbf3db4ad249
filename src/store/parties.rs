//! Parties and their API tokens.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::crypto::{new_token, token_hash};
use crate::domain::party::Actor;
use crate::domain::time::now_micros;
use crate::domain::{PartyId, PartyKind, prefixed_id};

impl Store {
    pub async fn create_party(&self, kind: PartyKind, name: &str) -> StoreResult<PartyId> {
        let id = PartyId::new();
        sqlx::query("INSERT INTO parties (id, kind, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(kind.as_str())
            .bind(name)
            .bind(now_micros())
            .execute(&self.writer)
            .await?;
        Ok(id)
    }

    pub async fn party_kind(&self, id: &str) -> StoreResult<Option<PartyKind>> {
        let row = sqlx::query("SELECT kind FROM parties WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<String, _>(0).parse().ok()))
    }

    /// A new token for the party; the token itself is returned once and only its hash kept.
    /// `None` when the party does not exist.
    pub async fn create_token(
        &self,
        party_id: &str,
        label: Option<&str>,
    ) -> StoreResult<Option<String>> {
        if self.party_kind(party_id).await?.is_none() {
            return Ok(None);
        }
        let token = new_token();
        sqlx::query("INSERT INTO tokens (id, party_id, token_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(prefixed_id("tok"))
            .bind(party_id)
            .bind(token_hash(&token))
            .bind(label)
            .bind(now_micros())
            .execute(&self.writer)
            .await?;
        Ok(Some(token))
    }

    /// The party a bearer token belongs to, if the token is known and not revoked.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Actor>> {
        let row = sqlx::query(
            "SELECT t.id, t.label, p.id, p.kind, p.name FROM tokens t JOIN parties p ON p.id = t.party_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(token_hash(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let label: Option<String> = row.try_get(1)?;
        let kind: String = row.try_get(3)?;
        let Ok(kind) = kind.parse::<PartyKind>() else {
            return Ok(None);
        };
        Ok(Some(Actor {
            token_id: row.try_get(0)?,
            name: label
                .filter(|l| !l.is_empty())
                .map_or_else(|| row.try_get(4), Ok)?,
            party_id: PartyId::from_stored(row.try_get(2)?),
            kind,
        }))
    }
}
