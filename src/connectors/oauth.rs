//! OAuth 2.0 access tokens for the connectors: the client credentials grant against a
//! tenant's own token endpoint (Microsoft), and the JWT bearer grant of a Google service
//! account signed RS256 with `ring`. A token is kept until a minute before it expires and
//! fetched once however many callers want it at the same moment.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::web::{self, Failure};

/// A token is fetched anew this long before it expires.
const MARGIN: Duration = Duration::from_secs(60);

struct Token {
    value: String,
    renew_at: Instant,
}

/// One connector's token, fetched once for all who wait for it.
#[derive(Default)]
pub struct TokenCache {
    current: tokio::sync::Mutex<Option<Token>>,
}

impl TokenCache {
    /// The token kept, or a new one from `fetch` (callers wanting one meanwhile wait for it).
    pub async fn get<F>(&self, fetch: F) -> Result<String, Failure>
    where
        F: std::future::Future<Output = Result<(String, Duration), Failure>>,
    {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let (value, lifetime) = fetch.await?;
        *current = Some(Token {
            value: value.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(MARGIN),
        });
        Ok(value)
    }

    /// Forgets `refused` (the service refused it): the next call fetches another. A token
    /// another caller fetched meanwhile stays.
    pub async fn forget(&self, refused: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.value == refused) {
            *current = None;
        }
    }
}

/// Sends a request with a bearer token from `tokens` (fetched by `fetch` when none is
/// kept): a `401` forgets that token and tries once more with a new one, a throttled answer
/// is waited out ([`web::wait_out`]); `failure` reads any other error answer the service's
/// way.
pub async fn authorized<F, R>(
    tokens: &TokenCache,
    fetch: impl Fn() -> F,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
    failure: impl Fn(reqwest::Response) -> R,
) -> Result<reqwest::Response, Failure>
where
    F: std::future::Future<Output = Result<(String, Duration), Failure>>,
    R: std::future::Future<Output = Failure>,
{
    send_authorized(tokens, fetch, build, failure, false).await
}

/// [`authorized`] for a call answered by a redirect the caller follows (a download's
/// pre-signed URL): a `3xx` is the answer, not a failure.
pub async fn authorized_redirect<F, R>(
    tokens: &TokenCache,
    fetch: impl Fn() -> F,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
    failure: impl Fn(reqwest::Response) -> R,
) -> Result<reqwest::Response, Failure>
where
    F: std::future::Future<Output = Result<(String, Duration), Failure>>,
    R: std::future::Future<Output = Failure>,
{
    send_authorized(tokens, fetch, build, failure, true).await
}

async fn send_authorized<F, R>(
    tokens: &TokenCache,
    fetch: impl Fn() -> F,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
    failure: impl Fn(reqwest::Response) -> R,
    redirect: bool,
) -> Result<reqwest::Response, Failure>
where
    F: std::future::Future<Output = Result<(String, Duration), Failure>>,
    R: std::future::Future<Output = Failure>,
{
    let mut refreshed = false;
    let mut waited = 0;
    loop {
        let token = tokens.get(fetch()).await?;
        let response = build(&token).send().await.map_err(web::network)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
            // Expired or revoked early: one new token, then the answer stands.
            tokens.forget(&token).await;
            refreshed = true;
            continue;
        }
        if response.status().is_success() || (redirect && response.status().is_redirection()) {
            return Ok(response);
        }
        match failure(response).await {
            f @ Failure::Throttled { .. } if web::wait_out(&f, &mut waited).await => {}
            f => return Err(f),
        }
    }
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Refused {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Posts a token request and reads its answer: the token and how long it lasts.
async fn request(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<(String, Duration), Failure> {
    let granted: Granted = grant(http, endpoint, form).await?;
    let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600).clamp(60, 86_400));
    Ok((granted.access_token, lifetime))
}

/// Posts a token request and reads its answer as the service gives it (a refusal read
/// the OAuth 2.0 way).
pub async fn grant<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<T, Failure> {
    let response = http
        .post(endpoint)
        .form(form)
        .send()
        .await
        .map_err(web::network)?;
    let status = response.status();
    if status.is_success() {
        return web::json(response, "the token endpoint").await;
    }
    let retry_after = web::retry_after(&response);
    let body = web::body(response, 64 * 1024).await.unwrap_or_default();
    let refused: Refused = serde_json::from_slice(&body).unwrap_or_default();
    let words = web::said(&refused.error_description);
    let what = format!("the token endpoint refused: {} {words}", refused.error);
    Err(match refused.error.as_str() {
        // The secret, the key or the client id is wrong.
        "invalid_client" | "invalid_client_id" => Failure::Credentials(what.trim().to_string()),
        // Consent, delegation or the grant itself was withdrawn or never given.
        "unauthorized_client" | "invalid_grant" | "consent_required" | "access_denied" => {
            Failure::Reauthorize(what.trim().to_string())
        }
        "invalid_request" | "invalid_scope" | "unsupported_grant_type" => {
            Failure::Credentials(what.trim().to_string())
        }
        _ => web::by_status(status, retry_after, what.trim().to_string()),
    })
}

/// A grant posted as a form to `endpoint` (a service's own client credentials flavour).
pub async fn form_grant(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<(String, Duration), Failure> {
    request(http, endpoint, form).await
}

/// An Entra application signing in to Microsoft Graph: the client credentials grant at
/// its tenant's own endpoint (never `/common`), for `{graphUrl}/.default`. The settings of
/// `microsoft365_mail` and `sharepoint`.
pub struct GraphApp {
    http: reqwest::Client,
    login_url: String,
    tenant: String,
    client_id: String,
    secret: String,
    scope: String,
}

impl GraphApp {
    pub fn new(http: reqwest::Client, settings: &crate::domain::connector::Settings) -> Self {
        Self {
            http,
            login_url: settings.text("loginUrl").to_string(),
            tenant: settings.text("tenantId").to_string(),
            client_id: settings.text("clientId").to_string(),
            secret: settings.text("clientSecret").to_string(),
            scope: format!("{}/.default", settings.text("graphUrl")),
        }
    }

    /// A new token and how long it lasts.
    pub async fn token(&self) -> Result<(String, Duration), Failure> {
        client_credentials(
            &self.http,
            (&self.login_url, &self.tenant),
            (&self.client_id, &self.secret),
            &self.scope,
        )
        .await
    }
}

/// The client credentials grant at `{login}/{tenant}/oauth2/v2.0/token` for `scope`.
pub async fn client_credentials(
    http: &reqwest::Client,
    (login, tenant): (&str, &str),
    (client_id, secret): (&str, &str),
    scope: &str,
) -> Result<(String, Duration), Failure> {
    let tenant = percent_encoding::utf8_percent_encode(tenant, percent_encoding::NON_ALPHANUMERIC);
    let endpoint = format!("{login}/{tenant}/oauth2/v2.0/token");
    request(
        http,
        &endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}

/// The JWT bearer grant of a service account (RFC 7523): a JWT signed RS256 with the
/// account's key, for `subject` (domain-wide delegation; empty: the account itself) and
/// `scope`.
pub async fn jwt_bearer(
    http: &reqwest::Client,
    account: &crate::domain::connector::ServiceAccount,
    subject: &str,
    scope: &str,
) -> Result<(String, Duration), Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let assertion = signed_jwt(account, subject, scope, now)?;
    request(
        http,
        &account.token_uri,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ],
    )
    .await
}

/// The assertion: `header.claims.signature`, each base64url without padding.
pub fn signed_jwt(
    account: &crate::domain::connector::ServiceAccount,
    subject: &str,
    scope: &str,
    now: u64,
) -> Result<String, Failure> {
    let mut claims = serde_json::json!({
        "iss": account.client_email,
        "sub": subject,
        "scope": scope,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    // No subject: the service account acts as itself (a shared drive it is a member of).
    if subject.is_empty() {
        claims.as_object_mut().map(|c| c.remove("sub"));
    }
    signed_rs256(
        &claims,
        &account.private_key,
        "the service account's private_key",
    )
}

/// A JWT of `claims` signed RS256 with the PKCS#8 key `pem` (`what` names it in a failure):
/// `header.claims.signature`, each base64url without padding.
pub fn signed_rs256(claims: &serde_json::Value, pem: &str, what: &str) -> Result<String, Failure> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = crate::domain::connector::pem_der(pem)
        .ok_or_else(|| Failure::Credentials(format!("{what} is not PEM")))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| Failure::Credentials(format!("{what} is not an RSA key: {e}")))?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| Failure::Credentials("signing the token request failed".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_a_forgotten_token_is_fetched_again() {
        let cache = Arc::new(TokenCache::default());
        let fetched = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetched) = (cache.clone(), fetched.clone());
                tokio::spawn(async move {
                    cache
                        .get(async {
                            fetched.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Ok(("t1".to_string(), Duration::from_secs(3600)))
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(fetched.load(Ordering::SeqCst), 1);
        cache.forget("not the one kept").await;
        let kept = cache
            .get(async { Ok(("t3".to_string(), Duration::from_secs(3600))) })
            .await
            .unwrap();
        assert_eq!(kept, "t1", "forgetting another token keeps this one");
        cache.forget("t1").await;
        let again = cache
            .get(async { Ok(("t2".to_string(), Duration::from_secs(3600))) })
            .await
            .unwrap();
        assert_eq!(again, "t2");
    }

    #[tokio::test]
    async fn a_token_about_to_expire_is_not_used() {
        let cache = TokenCache::default();
        cache
            .get(async { Ok(("short".to_string(), Duration::from_secs(30))) })
            .await
            .unwrap();
        let next = cache
            .get(async { Ok(("fresh".to_string(), Duration::from_secs(3600))) })
            .await
            .unwrap();
        assert_eq!(
            next, "fresh",
            "a token within a minute of expiry is renewed"
        );
    }
}
