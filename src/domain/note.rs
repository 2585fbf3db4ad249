use super::Invalid;

/// `internal`: the case's creditor, partner and admins; `private`: the author's party only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteVisibility {
    Internal,
    Private,
}

impl NoteVisibility {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "internal" => Ok(Self::Internal),
            "private" => Ok(Self::Private),
            _ => Err(Invalid::new(format!(
                "unknown visibility {s:?}: expected internal or private"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Private => "private",
        }
    }
}

/// A note category or tag: a short machine word (`call_log`, `payment_plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(String);

impl Tag {
    pub fn parse(what: &str, s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
            });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid::new(format!(
                "invalid {what} {s:?}: 1 to 64 characters of a-z, 0-9, '_', '-' or '.'"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}
