//! Identifiers. Cases are UUIDs (the contract); other resources carry a type prefix
//! (`note_…`, `msg_…`) over a time-ordered UUIDv7, so ids sort by creation.

use std::fmt;

use uuid::Uuid;

/// A new `prefix_<uuidv7 hex>` identifier.
pub fn prefixed_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

fn parse_prefixed(prefix: &str, s: &str) -> Option<String> {
    let rest = s.strip_prefix(prefix)?.strip_prefix('_')?;
    let uuid = Uuid::try_parse(rest).ok()?;
    Some(format!("{prefix}_{}", uuid.simple()))
}

macro_rules! prefixed_id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// A new id. (No `Default`: a missing id is never quietly a fresh one.)
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(prefixed_id($prefix))
            }
            /// `None` for anything that is not one of ours; callers answer 404.
            pub fn parse(s: &str) -> Option<Self> {
                parse_prefixed($prefix, s).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// For ids read back from our own database.
            #[allow(dead_code)]
            pub(crate) fn from_stored(s: String) -> Self {
                Self(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            /// As parley itself wrote it (stored JSON); a client's text is `parse`d instead.
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id_type!(PartyId, "party");
prefixed_id_type!(NoteId, "note");
prefixed_id_type!(MessageId, "msg");
prefixed_id_type!(ThreadId, "thread");
prefixed_id_type!(DocumentId, "doc");
prefixed_id_type!(WebhookId, "wh");
prefixed_id_type!(DeliveryId, "whd");
prefixed_id_type!(ConnectorId, "con");

/// A case id: a UUID in its hyphenated form (ordered as that text is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId(Uuid);

impl CaseId {
    /// A new case's id. (No `Default`: a missing case id is never quietly a fresh one.)
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    pub fn parse(s: &str) -> Option<Self> {
        Uuid::try_parse(s).ok().map(Self)
    }
}

impl serde::Serialize for CaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a case id"))
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_ids_round_trip_and_refuse_other_prefixes() {
        let id = NoteId::new();
        assert_eq!(NoteId::parse(id.as_str()), Some(id.clone()));
        assert!(PartyId::parse(id.as_str()).is_none());
        assert!(NoteId::parse("note_xyz").is_none());
        assert!(NoteId::parse("note_").is_none());
    }

    #[test]
    fn case_ids_are_uuids() {
        let id = CaseId::new();
        assert_eq!(CaseId::parse(&id.to_string()), Some(id));
        assert!(CaseId::parse("msg_123").is_none());
    }
}
