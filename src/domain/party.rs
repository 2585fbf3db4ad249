use std::fmt;
use std::str::FromStr;

use super::Invalid;

/// Who a party is: an administrator of this installation, a creditor that owns cases, or a
/// collection partner that works the cases assigned to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyKind {
    Admin,
    Creditor,
    Partner,
}

impl PartyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Creditor => "creditor",
            Self::Partner => "partner",
        }
    }
}

impl FromStr for PartyKind {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "admin" => Ok(Self::Admin),
            "creditor" => Ok(Self::Creditor),
            "partner" => Ok(Self::Partner),
            _ => Err(Invalid::new(format!(
                "unknown party kind {s:?}: expected admin, creditor or partner"
            ))),
        }
    }
}

impl fmt::Display for PartyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The party behind a request, as its token identifies it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub party_id: super::PartyId,
    pub kind: PartyKind,
    /// The name shown as `createdBy`/`sentBy`: the token's label where set, else the party's.
    pub name: String,
    pub token_id: String,
}

impl Actor {
    /// parley itself, for its own work (system messages): sees every case, and is named
    /// `system` where it acts.
    pub fn system() -> Self {
        Self {
            party_id: super::PartyId::from_stored("party_system".to_string()),
            kind: PartyKind::Admin,
            name: "system".to_string(),
            token_id: String::new(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.kind == PartyKind::Admin
    }
}
