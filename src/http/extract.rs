//! Extractors that turn every kind of bad input into a problem response.

use crate::domain::code::Code;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::ApiError;
use crate::domain::party::Actor;
use crate::store::StoreError;

/// A JSON body: 415 without a JSON content type, 400 for broken JSON, 413 over the limit,
/// 422 when it does not fit the request's shape.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Code::PayloadTooLarge,
                        "request body is larger than this endpoint accepts",
                    )
                } else {
                    ApiError::bad_request(Code::InvalidBody, r.body_text())
                }
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        T::deserialize(strict::Strict(&mut de))
            .and_then(|v| de.end().map(|()| v))
            .map(Self)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::unprocessable(Code::InvalidBody, e.to_string())
                }
                _ => ApiError::bad_request(Code::MalformedJson, format!("malformed JSON: {e}")),
            })
    }
}

/// `application/json` or `application/*+json`, parameters aside.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(essence.split_once('/'), Some(("application", sub)) if sub == "json" || sub.ends_with("+json"))
}

trait CauseText {
    fn body_text_cause(&self) -> String;
}

impl<E: std::error::Error> CauseText for E {
    /// serde's message without axum's prefix ("Failed to deserialize the JSON body into the
    /// target type: ").
    fn body_text_cause(&self) -> String {
        let mut source: &dyn std::error::Error = self;
        while let Some(next) = source.source() {
            source = next;
        }
        source.to_string()
    }
}

/// A form-encoded body (provider callbacks): 415 without the form content type, 422 when
/// fields are missing or wrong.
pub struct Form<T>(pub T);

impl<S, T> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Form::<T>::from_request(req, state).await {
            Ok(axum::extract::Form(v)) => Ok(Self(v)),
            Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                "expected Content-Type: application/x-www-form-urlencoded",
            )),
            Err(FormRejection::FailedToDeserializeForm(e)) => Err(ApiError::unprocessable(
                Code::InvalidBody,
                e.body_text_cause(),
            )),
            Err(FormRejection::FailedToDeserializeFormBody(e)) => Err(ApiError::unprocessable(
                Code::InvalidBody,
                e.body_text_cause(),
            )),
            Err(other) if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::PayloadTooLarge,
                "request body is larger than this endpoint accepts",
            )),
            Err(other) => Err(ApiError::bad_request(Code::InvalidBody, other.body_text())),
        }
    }
}

/// A path segment. One that cannot be decoded names nothing that exists: 404.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No id holds a NUL (which PostgreSQL cannot even compare).
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("resource"))?;
        if params.iter().any(|(_, v)| v.contains('\0')) {
            return Err(ApiError::not_found("resource"));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(_) => Err(ApiError::not_found("resource")),
        }
    }
}

/// Query parameters: 400 `invalid_query` when they do not parse.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts
            .uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("%00"))
        {
            return Err(ApiError::bad_request(
                Code::InvalidQuery,
                "a query parameter holds a NUL character",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::bad_request(
                Code::InvalidQuery,
                e.body_text_cause(),
            )),
            Err(other) => Err(ApiError::bad_request(Code::InvalidQuery, other.body_text())),
        }
    }
}

/// The authenticated party: `Authorization: Bearer <token>`, 401 otherwise; 429 past the
/// token's rate limit.
pub struct Auth(pub Actor);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let actor = AuthAttempt::start(parts, state)?
            .actor(bearer_token(parts), "missing bearer token")
            .await?;
        within_limit(state, &actor, true).await?;
        Ok(Self(actor))
    }
}

/// The party sending a message. Its token is taken as this process last verified it, without
/// a read; the send checks it again in its own read of the case, so a token revoked or expired
/// meanwhile is 401 there all the same. `verified`: read just now.
pub struct Sender {
    pub actor: Actor,
    pub verified: bool,
}

impl FromRequestParts<AppState> for Sender {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (actor, verified) = AuthAttempt::start(parts, state)?
            .found(bearer_token(parts), "missing bearer token", async |token| {
                state.app.access.authenticate_for_sending(token).await
            })
            .await?;
        within_limit(state, &actor, verified).await?;
        Ok(Self { actor, verified })
    }
}

/// 429 past the token's rate limit. A token taken from memory (`verified` false) is checked
/// before its limit is answered: revoked or expired, it is 401 as everywhere else.
async fn within_limit(state: &AppState, actor: &Actor, verified: bool) -> Result<(), ApiError> {
    let Err(retry_after) = state.limiter.check(&actor.token_id) else {
        return Ok(());
    };
    if !verified && !state.app.access.token_valid(&actor.token_id).await? {
        return Err(StoreError::TokenGone.into());
    }
    Err(ApiError::rate_limited(retry_after))
}

/// One attempt at authenticating, from a client address that guesses are counted against:
/// past `PARLEY_AUTH_FAILURES_PER_MINUTE` failures the address gets 429 before any credential
/// is looked at.
pub(super) struct AuthAttempt<'a> {
    state: &'a AppState,
    client: String,
}

impl<'a> AuthAttempt<'a> {
    pub(super) fn start(parts: &Parts, state: &'a AppState) -> Result<Self, ApiError> {
        let client = client_address(parts);
        state
            .auth_failures
            .would_allow(&client)
            .map_err(ApiError::rate_limited)?;
        Ok(Self { state, client })
    }

    /// Counts a failed attempt against the client's address.
    pub(super) fn failed(&self) {
        let _ = self.state.auth_failures.check(&self.client);
    }

    /// The party behind `token`; 401 (`missing` when there is none) otherwise.
    pub(super) async fn actor(
        &self,
        token: Option<&str>,
        missing: &str,
    ) -> Result<Actor, ApiError> {
        self.found(token, missing, async |token| {
            self.state.app.access.authenticate(token).await
        })
        .await
    }

    /// What `look_up` finds for `token`; 401 (`missing` when there is none) otherwise, a
    /// token it does not find counted against the client's address.
    async fn found<T>(
        &self,
        token: Option<&str>,
        missing: &str,
        look_up: impl AsyncFnOnce(&str) -> crate::app::AppResult<Option<T>>,
    ) -> Result<T, ApiError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized(missing))?;
        match look_up(token).await? {
            Some(found) => Ok(found),
            None => {
                self.failed();
                Err(StoreError::TokenGone.into())
            }
        }
    }
}

/// The client's address as the server recorded it, for limits per client.
fn client_address(parts: &Parts) -> String {
    super::server::peer(&parts.extensions).map_or_else(|| "unknown".into(), |p| p.ip().to_string())
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A page cursor as `nextCursor` gives it and the document describes it: base64url without
/// padding of printable ASCII. Anything else is 422 `invalid_cursor`.
pub fn page_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    check_cursor(cursor, |b| (0x20..0x80).contains(&b), 0..=usize::MAX)
}

/// The audit log's cursor: base64url without padding of an entry number of 1 to 18 digits.
pub fn number_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    check_cursor(cursor, |b| b.is_ascii_digit(), 1..=18)
}

fn check_cursor(
    cursor: Option<String>,
    byte: impl Fn(u8) -> bool,
    len: std::ops::RangeInclusive<usize>,
) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    let Some(c) = cursor else { return Ok(None) };
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&c) {
        Ok(b) if len.contains(&b.len()) && b.iter().all(|&x| byte(x)) => Ok(Some(c)),
        _ => Err(ApiError::unprocessable(
            Code::InvalidCursor,
            "cursor is not one this API issued",
        )),
    }
}

/// Page size from a query: default 50, at most 200.
/// Admins only: anyone else is 403 with `detail`.
pub(crate) fn require_admin(actor: &Actor, detail: &str) -> Result<(), ApiError> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(detail.to_string()))
    }
}

pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            Code::InvalidQuery,
            "limit must be between 1 and 200",
        )),
    }
}

/// serde's derived structs read a JSON array as their fields in order, so `{"debtor": [null]}`
/// would pass for `{"debtor": {}}`. The document says objects; this deserializer holds the
/// request to that, everywhere in the body, and otherwise leaves serde_json's reading as it is.
mod strict {
    use serde::de::{
        self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess,
        Visitor,
    };
    use std::fmt;

    pub struct Strict<D>(pub D);

    /// A visitor passed through, that hands on `Strict` deserializers; `objects_only` refuses
    /// the array form of a struct.
    struct Wrap<V> {
        inner: V,
        objects_only: bool,
    }

    fn wrap<V>(inner: V) -> Wrap<V> {
        Wrap {
            inner,
            objects_only: false,
        }
    }

    struct Seed<S>(S);

    impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
        type Value = S::Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
            self.0.deserialize(Strict(d))
        }
    }

    macro_rules! forward {
        ($($method:ident)*) => {
            $(
                fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
                    self.0.$method(wrap(v))
                }
            )*
        };
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
        type Error = D::Error;

        forward!(deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
            deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
            deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
            deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
            deserialize_option deserialize_unit deserialize_seq deserialize_map
            deserialize_identifier deserialize_ignored_any);

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_unit_struct(name, wrap(v))
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_newtype_struct(name, wrap(v))
        }
        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple(len, wrap(v))
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple_struct(name, len, wrap(v))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_struct(
                name,
                fields,
                Wrap {
                    inner: v,
                    objects_only: true,
                },
            )
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_enum(name, variants, wrap(v))
        }
        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    }

    macro_rules! pass {
        ($($method:ident($t:ty))*) => {
            $(
                fn $method<E: de::Error>(self, x: $t) -> Result<V::Value, E> {
                    self.inner.$method(x)
                }
            )*
        };
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
        type Value = V::Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            self.inner.expecting(f)
        }

        pass!(visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
            visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
            visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
            visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
            visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>));

        fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
            self.inner.visit_none()
        }
        fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
            self.inner.visit_unit()
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
            self.inner.visit_some(Strict(d))
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
            self.inner.visit_newtype_struct(Strict(d))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
            if self.objects_only {
                return Err(de::Error::invalid_type(de::Unexpected::Seq, &self.inner));
            }
            self.inner.visit_seq(Access(seq))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
            self.inner.visit_map(Access(map))
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
            self.inner.visit_enum(Access(data))
        }
    }

    /// Sequence, map, enum and variant access, handing on `Strict` deserializers.
    struct Access<A>(A);

    impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
        type Error = A::Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, A::Error> {
            self.0.next_element_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            self.0.next_key_seed(Seed(seed))
        }
        fn next_value_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.next_value_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
        type Error = A::Error;
        type Variant = Access<A::Variant>;
        fn variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<(T::Value, Self::Variant), A::Error> {
            self.0
                .variant_seed(Seed(seed))
                .map(|(value, variant)| (value, Access(variant)))
        }
    }

    impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
        type Error = A::Error;
        fn unit_variant(self) -> Result<(), A::Error> {
            self.0.unit_variant()
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.newtype_variant_seed(Seed(seed))
        }
        fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
            self.0.tuple_variant(len, wrap(v))
        }
        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, A::Error> {
            self.0.struct_variant(
                fields,
                Wrap {
                    inner: v,
                    objects_only: true,
                },
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Strict;
        use serde::Deserialize;

        #[derive(Debug, Deserialize, PartialEq)]
        struct Patch {
            a: Option<String>,
            b: Option<Inner>,
            #[serde(default)]
            list: Vec<u8>,
        }

        #[derive(Debug, Deserialize, PartialEq)]
        struct Inner {
            c: Option<i64>,
        }

        fn read(json: &str) -> Result<Patch, serde_json::Error> {
            let mut de = serde_json::Deserializer::from_str(json);
            let v = Patch::deserialize(Strict(&mut de))?;
            de.end()?;
            Ok(v)
        }

        #[test]
        fn structs_are_objects_only() {
            assert!(read("[]").is_err());
            assert!(read("[null, null]").is_err());
            assert!(read(r#"{"b": [1]}"#).is_err());
            assert!(read(r#"{"b": []}"#).is_err());
            assert_eq!(
                read(r#"{"a": "x", "b": {"c": 5}, "list": [1, 2]}"#).unwrap(),
                Patch {
                    a: Some("x".into()),
                    b: Some(Inner { c: Some(5) }),
                    list: vec![1, 2],
                }
            );
            assert!(read(r#"{"a": "x"} x"#).is_err());
        }
    }
}
