//! Document bytes at rest: sealed in chunks under the master key and kept in a store.
//!
//! A sealed file is a sequence of frames `len (u32, big-endian) | sealed chunk`, each chunk
//! at most 64 KiB of plaintext sealed with the context `doc:<id>:<index>:<last>`: a chunk
//! cannot move, and a file cut short fails, since its new last frame was not sealed as last.

pub mod s3;
pub mod store;

pub const CHUNK: usize = 64 * 1024;

pub fn chunk_context(
    document_id: &(impl std::fmt::Display + ?Sized),
    index: u64,
    last: bool,
) -> String {
    format!("doc:{document_id}:{index}:{}", u8::from(last))
}
