//! Encryption at rest and the other uses of the master key.
//!
//! A sealed value is `version (1) | key id (4) | nonce (12) | AES-256-GCM ciphertext and tag`.
//! The key id names the master key that sealed it, so a value sealed before a rotation still
//! opens with the old key while new values use the new one. Every seal binds an associated
//! context (for example the note id), so a ciphertext copied onto another row does not open.
//!
//! A data subject's personal data is sealed under a key of its own instead: `version (2) |
//! subject key id (16) | nonce (12) | ciphertext and tag`. Subject keys are random, kept
//! sealed under the master key in the key store (not the database), and destroyed to erase the
//! subject: every copy of what they sealed, backups included, is unreadable from then on. The
//! ring caches the subject keys the store has looked up (`remember_subject`); opening a value
//! of a subject whose key was destroyed is `CryptoError::Erased`.

use crate::domain::CaseId;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 12;
const SUBJECT_VERSION: u8 = 2;
const SUBJECT_HEADER: usize = 1 + 16 + 12;
/// Subject keys kept in memory at most; the cache starts over beyond it.
const SUBJECT_CACHE: usize = 100_000;
/// How long a looked-up subject key (or its absence) is trusted before it is read again.
const SUBJECT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value names key {0}, which is not configured")]
    UnknownKey(String),
    #[error("sealed value failed authentication")]
    Tampered,
    /// The data subject's key was destroyed: the value is erased.
    #[error("sealed value belongs to an erased data subject")]
    Erased,
    /// The subject key was not looked up before opening (a bug in the caller).
    #[error("sealed value names subject key {0}, which was not loaded")]
    NotLoaded(String),
}

/// The id of a subject key, as sealed values name it.
pub type SubjectKeyId = [u8; 16];

/// A data subject's key: seals that subject's personal data.
pub struct SubjectKey {
    id: SubjectKeyId,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKey")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl SubjectKey {
    pub fn new(id: SubjectKeyId, raw: &[u8; 32]) -> Self {
        Self {
            id,
            cipher: Aes256Gcm::new(raw.into()),
        }
    }

    pub fn id(&self) -> SubjectKeyId {
        self.id
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, SUBJECT_VERSION, &self.id, context, plaintext)
    }

    pub fn seal_str(&self, context: &str, plaintext: &str) -> Vec<u8> {
        self.seal(context, plaintext.as_bytes())
    }

    /// Opens a value sealed under this key.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if subject_key_of(sealed) != Some(self.id) {
            return Err(CryptoError::Malformed);
        }
        open_with(&self.cipher, SUBJECT_HEADER, context, sealed)
    }
}

/// A new subject key: its id and its 32 bytes.
pub fn new_subject_key() -> (SubjectKeyId, [u8; 32]) {
    let mut id = [0u8; 16];
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    OsRng.fill_bytes(&mut raw);
    (id, raw)
}

/// The subject key a value is sealed under, if it is sealed under one.
pub fn subject_key_of(sealed: &[u8]) -> Option<SubjectKeyId> {
    if sealed.len() < SUBJECT_HEADER + 16 || sealed[0] != SUBJECT_VERSION {
        return None;
    }
    sealed[1..17].try_into().ok()
}

#[derive(Default)]
struct SubjectCache {
    /// Key id → the key, or `None` when it was destroyed; and when it was looked up.
    by_id: HashMap<SubjectKeyId, (Option<Arc<SubjectKey>>, Instant)>,
    /// A case's key, for sealing.
    by_case: HashMap<CaseId, (Arc<SubjectKey>, Instant)>,
}

struct Key {
    id: [u8; 4],
    cipher: Aes256Gcm,
    /// Sub-key for keyed hashes (blind indexes, signed links), derived so the AES key itself
    /// is used for one purpose only.
    mac_key: [u8; 32],
}

impl Key {
    fn new(raw: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"parley key id\0")
            .chain_update(raw)
            .finalize();
        let id = [digest[0], digest[1], digest[2], digest[3]];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(raw).expect("any key length");
        mac.update(b"parley mac key");
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            id,
            cipher: Aes256Gcm::new(raw.into()),
            mac_key,
        }
    }
}

/// The current key, which seals, and the earlier ones, which still open; and the key of
/// blind indexes, which outlives rotations (it is kept in the database, sealed under the
/// master key, so an index computed before a rotation still finds its row after it).
pub struct KeyRing {
    current: Key,
    older: HashMap<[u8; 4], Key>,
    index_key: std::sync::OnceLock<[u8; 32]>,
    subjects: RwLock<SubjectCache>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &hex::encode(self.current.id))
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(current: &[u8; 32], older: &[[u8; 32]]) -> Self {
        let older = older.iter().map(Key::new).map(|k| (k.id, k)).collect();
        Self {
            current: Key::new(current),
            older,
            index_key: std::sync::OnceLock::new(),
            subjects: RwLock::default(),
        }
    }

    /// The configured key, or the one kept in `<data>/master.key`, generated on first use.
    pub fn load(
        configured: Option<[u8; 32]>,
        older: &[[u8; 32]],
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        if let Some(key) = configured {
            return Ok(Self::new(&key, older));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let bytes = B64
                .decode(text.trim())
                .with_context(|| format!("{}: not base64", path.display()))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))?;
            return Ok(Self::new(&key, older));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        write_private(&path, B64.encode(key).as_bytes())?;
        tracing::warn!(
            path = %path.display(),
            "no PARLEY_MASTER_KEY set: generated a master key into the data folder; back it up, data sealed with it is lost without it"
        );
        Ok(Self::new(&key, older))
    }

    pub fn current_key_id(&self) -> String {
        hex::encode(self.current.id)
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with(
            &self.current.cipher,
            VERSION,
            &self.current.id,
            context,
            plaintext,
        )
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if let Some(id) = subject_key_of(sealed) {
            let cache = self.subjects.read().unwrap_or_else(|e| e.into_inner());
            return match cache.by_id.get(&id) {
                Some((Some(key), _)) => key.open(context, sealed),
                Some((None, _)) => Err(CryptoError::Erased),
                None => Err(CryptoError::NotLoaded(hex::encode(id))),
            };
        }
        if sealed.len() < HEADER + 16 || sealed[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let id: [u8; 4] = sealed[1..5]
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        let key = if id == self.current.id {
            &self.current
        } else {
            self.older
                .get(&id)
                .ok_or_else(|| CryptoError::UnknownKey(hex::encode(id)))?
        };
        open_with(&key.cipher, HEADER, context, sealed)
    }

    /// Whether `sealed` was sealed under the current key, or under a subject key (whose own
    /// seal is what a rekey renews): a rekey leaves it as it is.
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        subject_key_of(sealed).is_some() || sealed.get(1..5) == Some(&self.current.id[..])
    }

    /// A subject key sealed under the master key, for the key store.
    pub fn wrap_subject_key(&self, id: &SubjectKeyId, raw: &[u8; 32]) -> Vec<u8> {
        self.seal(&subject_key_context(id), raw)
    }

    /// A subject key from the key store.
    pub fn unwrap_subject_key(
        &self,
        id: &SubjectKeyId,
        wrapped: &[u8],
    ) -> Result<SubjectKey, CryptoError> {
        let raw: [u8; 32] = self
            .open(&subject_key_context(id), wrapped)?
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(SubjectKey::new(*id, &raw))
    }

    /// A subject key wrapped again under the current master key; `None` when it already is.
    pub fn rewrap_subject_key(
        &self,
        id: &SubjectKeyId,
        wrapped: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        self.reseal(&subject_key_context(id), wrapped)
    }

    /// Keeps what the key store said of a subject key: the key (and, when given, the case it
    /// belongs to), or `None` when it was destroyed.
    pub fn remember_subject(
        &self,
        id: SubjectKeyId,
        key: Option<Arc<SubjectKey>>,
        case_id: Option<&CaseId>,
    ) {
        let mut cache = self.subjects.write().unwrap_or_else(|e| e.into_inner());
        if cache.by_id.len() >= SUBJECT_CACHE || cache.by_case.len() >= SUBJECT_CACHE {
            // What was looked up lately stays (a reader may be about to open with it).
            cache.by_id.retain(|_, (_, at)| at.elapsed() < SUBJECT_TTL);
            cache
                .by_case
                .retain(|_, (_, at)| at.elapsed() < SUBJECT_TTL);
            if cache.by_id.len() >= SUBJECT_CACHE || cache.by_case.len() >= SUBJECT_CACHE {
                *cache = SubjectCache::default();
            }
        }
        let now = Instant::now();
        if let (Some(key), Some(case_id)) = (&key, case_id) {
            cache.by_case.insert(*case_id, (key.clone(), now));
        }
        if key.is_none()
            && let Some(case_id) = case_id
        {
            cache.by_case.remove(case_id);
        }
        cache.by_id.insert(id, (key, now));
    }

    /// The key of a case, when it was looked up lately.
    pub fn cached_case_key(&self, case_id: &CaseId) -> Option<Arc<SubjectKey>> {
        let cache = self.subjects.read().unwrap_or_else(|e| e.into_inner());
        cache
            .by_case
            .get(case_id)
            .filter(|(_, at)| at.elapsed() < SUBJECT_TTL)
            .map(|(k, _)| k.clone())
    }

    /// Of the subject keys these values are sealed under, those not looked up lately.
    pub fn subject_keys_to_load<'a>(
        &self,
        sealed: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<SubjectKeyId> {
        let cache = self.subjects.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SubjectKeyId> = sealed
            .into_iter()
            .filter_map(subject_key_of)
            .filter(|id| {
                cache
                    .by_id
                    .get(id)
                    .is_none_or(|(_, at)| at.elapsed() >= SUBJECT_TTL)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The value sealed again under the current key; `None` when it already is.
    pub fn reseal(&self, context: &str, sealed: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = self.open(context, sealed)?;
        Ok(Some(self.seal(context, &plain)))
    }

    pub fn seal_str(&self, context: &str, plaintext: &str) -> Vec<u8> {
        self.seal(context, plaintext.as_bytes())
    }

    pub fn open_string(&self, context: &str, sealed: &[u8]) -> anyhow::Result<String> {
        let bytes = self.open(context, sealed)?;
        String::from_utf8(bytes).context("sealed text is not UTF-8")
    }

    /// A new key for blind indexes, as installations that have none start with: the one
    /// their indexes were computed with so far.
    pub fn initial_index_key(&self) -> [u8; 32] {
        self.current.mac_key
    }

    /// Sets the key of blind indexes (read from the database at start); once.
    pub fn set_index_key(&self, key: [u8; 32]) {
        let _ = self.index_key.set(key);
    }

    /// A keyed hash for looking up a sealed value by equality (a debtor's email or phone)
    /// without storing it in the clear. The same value gives the same index across master
    /// key rotations.
    pub fn blind_index(&self, purpose: &str, value: &str) -> String {
        let key = self.index_key.get().unwrap_or(&self.current.mac_key);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// `version | key id | nonce | ciphertext and tag`, the context bound as associated data.
fn seal_with(
    cipher: &Aes256Gcm,
    version: u8,
    key_id: &[u8],
    context: &str,
    plaintext: &[u8],
) -> Vec<u8> {
    // A random 96-bit nonce per value, from the thread's CSPRNG (ChaCha, seeded and reseeded
    // from the operating system): no system call for every value sealed.
    let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: context.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + key_id.len() + 12 + ciphertext.len());
    out.push(version);
    out.extend_from_slice(key_id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// The plaintext of a value whose header (version, key id, nonce) is `header` bytes long.
fn open_with(
    cipher: &Aes256Gcm,
    header: usize,
    context: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = Nonce::from_slice(&sealed[header - 12..header]);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[header..],
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Tampered)
}

fn subject_key_context(id: &SubjectKeyId) -> String {
    format!("subject-key:{}", hex::encode(id))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Whether two secrets are equal, in time that does not depend on where they differ: both
/// are hashed first, so neither their contents nor their lengths leak.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A new API token: `pk_` and 32 random bytes, base64url. Shown once.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("pk_{}", B64URL.encode(bytes))
}

/// What is stored of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_context() {
        let ring = KeyRing::new(&[7; 32], &[]);
        let sealed = ring.seal("note:1", b"Debtor called");
        assert_eq!(ring.open("note:1", &sealed).unwrap(), b"Debtor called");
        assert!(matches!(
            ring.open("note:2", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(!sealed.windows(6).any(|w| w == b"Debtor"));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = KeyRing::new(&[7; 32], &[]);
        let mut sealed = ring.seal("c", b"hello");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            ring.open("c", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(matches!(
            ring.open("c", &sealed[..10]),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn rotated_keys_still_open_old_values() {
        let old = KeyRing::new(&[1; 32], &[]);
        let sealed = old.seal("c", b"before rotation");
        let rotated = KeyRing::new(&[2; 32], &[[1; 32]]);
        assert_eq!(rotated.open("c", &sealed).unwrap(), b"before rotation");
        let fresh = rotated.seal("c", b"after");
        assert_ne!(fresh[1..5], sealed[1..5]);
        let unrelated = KeyRing::new(&[3; 32], &[]);
        assert!(matches!(
            unrelated.open("c", &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn subject_keys_seal_apart_from_the_master_key_and_erase() {
        let ring = KeyRing::new(&[7; 32], &[]);
        let (id, raw) = new_subject_key();
        let wrapped = ring.wrap_subject_key(&id, &raw);
        let key = Arc::new(ring.unwrap_subject_key(&id, &wrapped).unwrap());
        let sealed = key.seal_str("note:1", "Debtor called");
        assert_eq!(subject_key_of(&sealed), Some(id));
        assert!(
            ring.is_current(&sealed),
            "a rekey leaves subject seals alone"
        );
        assert!(matches!(
            ring.open("note:1", &sealed),
            Err(CryptoError::NotLoaded(_))
        ));
        assert_eq!(ring.subject_keys_to_load([&sealed[..]]), vec![id]);
        let case = crate::domain::CaseId::new();
        ring.remember_subject(id, Some(key), Some(&case));
        assert!(ring.subject_keys_to_load([&sealed[..]]).is_empty());
        assert_eq!(ring.open("note:1", &sealed).unwrap(), b"Debtor called");
        assert!(matches!(
            ring.open("note:2", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(ring.cached_case_key(&case).is_some());
        ring.remember_subject(id, None, Some(&case));
        assert!(ring.cached_case_key(&case).is_none());
        assert!(matches!(
            ring.open("note:1", &sealed),
            Err(CryptoError::Erased)
        ));
        let other = KeyRing::new(&[8; 32], &[]);
        assert!(other.unwrap_subject_key(&id, &wrapped).is_err());
    }

    #[test]
    fn key_is_generated_once_into_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyRing::load(None, &[], dir.path()).unwrap();
        let b = KeyRing::load(None, &[], dir.path()).unwrap();
        assert_eq!(a.current_key_id(), b.current_key_id());
        let sealed = a.seal("x", b"y");
        assert_eq!(b.open("x", &sealed).unwrap(), b"y");
    }

    #[test]
    fn tokens_are_long_and_hashed() {
        let t = new_token();
        assert!(t.len() >= 3 + 43);
        assert_ne!(new_token(), t);
        assert_eq!(token_hash(&t).len(), 64);
        assert!(!token_hash(&t).contains(&t[3..]));
    }
}
