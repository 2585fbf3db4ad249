//! Domain types and rules. Pure: no I/O, no HTTP, no SQL. Values here can only be built by
//! parsing, so the rest of the program never sees an invalid one.

/// An enum of fixed words: `as_str`, `parse` (refusing other words, naming the allowed ones)
/// and `ALL`.
macro_rules! word_enum_impl {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
            pub fn parse(s: &str) -> Result<Self, $crate::domain::Invalid> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err($crate::domain::Invalid::new(format!(
                        concat!("unknown ", $what, " {:?}: expected one of {}"),
                        s,
                        [$($word),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($word),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use word_enum_impl as word_enum;

pub mod audit;
pub mod authentication;
pub mod calendar;
pub mod case;
pub mod clock;
pub mod code;
pub mod connector;
pub mod document;
pub mod event;
pub mod ids;
pub mod mail;
pub mod mailfile;
pub mod matching;
pub mod message;
pub mod note;
pub mod party;
pub mod payload;
pub mod policy;
pub mod recipient;
pub mod signing;
pub mod sms;
pub mod template;
pub mod thread;
pub mod time;
pub mod understanding;

pub use case::{CaseNumber, CaseStatus, Debtor, Money};
pub use ids::{
    CaseId, ConnectorId, DeliveryId, DocumentId, MessageId, NoteId, PartyId, ThreadId, WebhookId,
    prefixed_id,
};
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

/// True when the text shows nothing: every character white space or a control character
/// (the published schema's "not blank" says the same).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// True when the text holds a character that must never reach a mail header or a log line.
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}
