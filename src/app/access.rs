//! Who a request comes from: bearer tokens, checked against the store (or a short-lived
//! copy of it for sends), and the keyed hashes idempotency keys are kept as.

use super::AppResult;
use super::messaging::Idempotency;
use crate::domain::party::Actor;
use crate::store::Store;

#[derive(Clone)]
pub struct Access {
    parties: crate::store::Parties,
}

impl Access {
    pub fn new(store: &Store) -> Self {
        Self {
            parties: store.parties(),
        }
    }

    /// The party behind a bearer token, if it is valid now.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, token: &str) -> AppResult<Option<Actor>> {
        Ok(self.parties.authenticate(token).await?)
    }

    /// As `authenticate`, possibly answered from memory: the flag says whether the token was
    /// checked against the database just now.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_for_sending(&self, token: &str) -> AppResult<Option<(Actor, bool)>> {
        Ok(self.parties.authenticate_for_sending(token).await?)
    }

    /// Whether the token is still valid (not revoked, not expired).
    #[tracing::instrument(skip_all)]
    pub async fn token_valid(&self, token_id: &str) -> AppResult<bool> {
        Ok(self.parties.token_valid(token_id).await?)
    }

    /// An idempotency key and the SHA-256 of its request, as they are kept: keyed hashes, so
    /// that neither can be read back (a key may hold an address).
    pub fn idempotency(&self, key: &str, request_sha256_hex: &str) -> Idempotency {
        Idempotency {
            key: self.parties.idempotency_key_hash(key),
            request_hash: self.parties.idempotency_request_hash(request_sha256_hex),
        }
    }
}
