//! Parties and their API tokens.

use super::{Parties, StoreResult};
use crate::crypto::{new_token, token_hash};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{PartyId, PartyKind, prefixed_id};

/// A token as an operator sees it: never the token itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub label: Option<String>,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
}

/// Tokens this process has verified, by hash, with the party each names. A token's party,
/// kind and name never change; only whether it is still valid does. So a send takes the party
/// from here and checks the token's validity in its own read of the case
/// (`Store::case_for_sending`) instead of reading the token first.
pub(crate) type KnownTokens = super::Remembered<String, Actor>;

/// A live token with its party, as `authenticate` reads it.
#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: String,
    label: Option<String>,
    party_id: String,
    party_kind: String,
    party_name: String,
}

impl Parties {
    pub async fn create_party(&self, kind: PartyKind, name: &str) -> StoreResult<PartyId> {
        let id = PartyId::new();
        sqlx::query("INSERT INTO parties (id, kind, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(kind.as_str())
            .bind(name)
            .bind(self.now())
            .execute(&self.writer)
            .await?;
        Ok(id)
    }

    pub async fn party_kind(&self, id: &str) -> StoreResult<Option<PartyKind>> {
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM parties WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(kind.and_then(|k| k.parse().ok()))
    }

    /// A new token for the party; the token itself is returned once and only its hash kept.
    /// `None` when the party does not exist.
    pub async fn create_token(
        &self,
        party_id: &str,
        label: Option<&str>,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .issue_token(party_id, label, None)
            .await?
            .map(|(_, token)| token))
    }

    /// A new token (its id and the token, shown once), valid until `expires_at` if given.
    /// `None` when the party does not exist.
    pub async fn issue_token(
        &self,
        party_id: &str,
        label: Option<&str>,
        expires_at: Option<Micros>,
    ) -> StoreResult<Option<(String, String)>> {
        if self.party_kind(party_id).await?.is_none() {
            return Ok(None);
        }
        let token = new_token();
        let id = prefixed_id("tok");
        sqlx::query(
            "INSERT INTO tokens (id, party_id, token_hash, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(party_id)
        .bind(token_hash(&token))
        .bind(label)
        .bind(self.now())
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(Some((id, token)))
    }

    /// A party's tokens, newest first; never the tokens themselves.
    pub async fn list_tokens(&self, party_id: &str) -> StoreResult<Vec<TokenInfo>> {
        Ok(sqlx::query_as::<_, TokenInfo>(
            "SELECT id, label, created_at, expires_at, revoked_at FROM tokens WHERE party_id = $1 ORDER BY id DESC",
        )
        .bind(party_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token at once; `false` when there is no such token or it was revoked before.
    pub async fn revoke_token(&self, token_id: &str) -> StoreResult<bool> {
        self.known_tokens
            .forget(|_, actor| actor.token_id == token_id);
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(token_id)
                .bind(self.now())
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The party a bearer token belongs to, if the token is known and not revoked.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<Actor>> {
        let hash = token_hash(token);
        let row = sqlx::query_as::<_, TokenRow>(
            "SELECT t.id AS token_id, t.label AS label, p.id AS party_id, p.kind AS party_kind, p.name AS party_name \
             FROM tokens t JOIN parties p ON p.id = t.party_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(&hash)
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let Ok(kind) = row.party_kind.parse::<PartyKind>() else {
            return Ok(None);
        };
        let actor = Actor {
            token_id: row.token_id,
            name: row
                .label
                .filter(|l| !l.is_empty())
                .unwrap_or(row.party_name),
            party_id: PartyId::from_stored(row.party_id),
            kind,
        };
        self.known_tokens.keep(hash, actor.clone());
        Ok(Some(actor))
    }

    /// The party of a token for a send, and whether the token was verified just now: from the
    /// tokens this process has verified before, without a read (`false`); else as
    /// [`Store::authenticate`] reads it (`true`).
    /// A send then checks the token in its read of the case: revoked or expired, it is
    /// refused there ([`StoreError::TokenGone`](super::StoreError::TokenGone)).
    pub async fn authenticate_for_sending(
        &self,
        token: &str,
    ) -> StoreResult<Option<(Actor, bool)>> {
        if let Some(actor) = self.known_tokens.get(token_hash(token).as_str()) {
            return Ok(Some((actor, false)));
        }
        Ok(self.authenticate(token).await?.map(|a| (a, true)))
    }

    /// Whether a token is still valid (not revoked, not expired); one that is not is
    /// forgotten.
    pub(crate) async fn token_valid(&self, token_id: &str) -> StoreResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM tokens WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(token_id)
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?;
        if found.is_none() {
            self.known_tokens
                .forget(|_, actor| actor.token_id == token_id);
        }
        Ok(found.is_some())
    }
}
