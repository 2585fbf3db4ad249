//! Recipients: email addresses (RFC 5322 addr-spec, dot-atom form) and phone numbers (E.164).

use std::fmt;

use super::Invalid;

/// An email address in dot-atom form: `local@domain`, at most 254 characters, lower-cased
/// domain. Quoted local parts and address literals are refused: no mail system we deliver
/// through needs them, and they are the usual carriers of header injection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || ATEXT_SPECIALS.contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|part| !part.is_empty() && part.chars().all(is_atext))
}

/// A host name: dot-separated labels of letters, digits and hyphens, no label starting or
/// ending with a hyphen.
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
                })
        })
}

impl EmailAddress {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        let bad = || Invalid::new(format!("not an email address: {s:?}"));
        if s.len() > 254 || super::has_control_chars(s) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.len() > 64 || !is_dot_atom(local) || !is_domain(domain) {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number in E.164: `+`, a country code not starting with 0, 8 to 15 digits in all.
/// Spaces, hyphens and parentheses in the input are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "not an E.164 phone number (+ and 8 to 15 digits): {s:?}"
            ))
        };
        let compact: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = compact.strip_prefix('+').ok_or_else(bad)?;
        if !(8..=15).contains(&digits.len())
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(bad());
        }
        Ok(Self(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        assert_eq!(
            EmailAddress::parse("Debtor.One+x@Example.COM")
                .unwrap()
                .as_str(),
            "Debtor.One+x@example.com"
        );
        assert!(EmailAddress::parse("noreply@localhost").is_ok());
    }

    #[test]
    fn refuses_broken_addresses_and_injection() {
        for bad in [
            "",
            "a",
            "a@",
            "@b.c",
            "a..b@c.d",
            "a@b..c",
            "a@-b.c",
            "a b@c.d",
            "a@b.c\r\nBcc: x@y.z",
            "a@b.c\0",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phone_numbers_are_e164() {
        assert_eq!(
            PhoneNumber::parse("+45 12 34 56 78").unwrap().as_str(),
            "+4512345678"
        );
        for bad in [
            "4512345678",
            "+0512345678",
            "+45",
            "+45123456789012345",
            "+45abc45678",
            "+4512\n345678",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
    }
}
