//! Domain types and rules. Pure: no I/O, no HTTP, no SQL. Values here can only be built by
//! parsing, so the rest of the program never sees an invalid one.

pub mod case;
pub mod document;
pub mod ids;
pub mod message;
pub mod note;
pub mod party;
pub mod policy;
pub mod recipient;
pub mod sms;
pub mod template;
pub mod thread;
pub mod time;

pub use case::{CaseNumber, CaseStatus, Debtor, Money};
pub use ids::{CaseId, NoteId, PartyId, prefixed_id};
pub use note::{NoteVisibility, Tag};
pub use party::PartyKind;
pub use recipient::{EmailAddress, PhoneNumber};

/// Why a value was refused; the message is safe to show to the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// True when the text holds a character that must never reach a mail header or a log line.
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}
