//! Cases and their parts: status, amounts, case numbers, the debtor.

use serde::{Deserialize, Serialize};

use super::{EmailAddress, Invalid, PhoneNumber, has_control_chars};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    Open,
    PaymentPlan,
    Disputed,
    Paid,
    Closed,
}

impl CaseStatus {
    pub const ALL: [Self; 5] = [
        Self::Open,
        Self::PaymentPlan,
        Self::Disputed,
        Self::Paid,
        Self::Closed,
    ];

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "unknown status {s:?}: expected open, payment_plan, disputed, paid or closed"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::PaymentPlan => "payment_plan",
            Self::Disputed => "disputed",
            Self::Paid => "paid",
            Self::Closed => "closed",
        }
    }
}

/// An amount of money: a decimal with at most two fraction digits, kept in minor units, and
/// an ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: [u8; 3],
}

/// The largest amount, and the largest sum of a case's payments: 12 integer digits.
pub const MAX_MINOR: i64 = 100_000_000_000_000 - 1;

/// Currencies without minor units (ISO 4217 exponent 0): their amounts are whole.
const WHOLE_CURRENCIES: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Refuses an amount with more decimals than its currency has.
pub fn check_decimals(minor: i64, currency: &str) -> Result<(), Invalid> {
    if WHOLE_CURRENCIES.contains(&currency) && minor % 100 != 0 {
        return Err(Invalid::new(format!(
            "{currency} amounts are whole: no decimals"
        )));
    }
    Ok(())
}

impl Money {
    pub fn parse(value: &str, currency: &str) -> Result<Self, Invalid> {
        let currency = parse_currency(currency)?;
        let minor = parse_minor(value)?;
        check_decimals(minor, std::str::from_utf8(&currency).unwrap_or_default())?;
        Ok(Self { minor, currency })
    }

    pub fn currency(&self) -> &str {
        std::str::from_utf8(&self.currency).unwrap_or("XXX")
    }

    /// `15000.00`
    pub fn value(&self) -> String {
        format_minor(self.minor)
    }
}

pub fn parse_currency(s: &str) -> Result<[u8; 3], Invalid> {
    let b = s.as_bytes();
    if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
        Ok([b[0], b[1], b[2]])
    } else {
        Err(Invalid::new(format!(
            "invalid currency {s:?}: expected an ISO 4217 code such as DKK"
        )))
    }
}

/// `"15000"`, `"15000.5"`, `"15000.50"` → 1_500_050 minor units; positive, at most 12
/// integer digits ([`MAX_MINOR`]).
pub fn parse_minor(s: &str) -> Result<i64, Invalid> {
    let bad = || {
        Invalid::new(format!(
            "invalid amount {s:?}: expected a positive decimal of at most 12 integer digits and 2 decimals, such as \"15000.00\""
        ))
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > 2
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let minor = whole * 100 + frac;
    if minor <= 0 {
        return Err(bad());
    }
    Ok(minor)
}

pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

/// A human case reference; generated as `DEB-YYYY-NNNNN` when the creditor brings none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseNumber(String);

impl CaseNumber {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        if s.is_empty() || s.chars().count() > 64 || has_control_chars(s) {
            return Err(Invalid::new(
                "caseNumber must be 1 to 64 printable characters",
            ));
        }
        Ok(Self(s.to_string()))
    }
    pub fn generated(year: i32, seq: i64) -> Self {
        Self(format!("DEB-{year}-{seq:05}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The person or company that owes. Personal data: stored sealed, never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debtor {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub language: Option<String>,
    pub timezone: Option<String>,
}

impl Debtor {
    pub fn parse(
        name: &str,
        email: Option<&str>,
        phone: Option<&str>,
        language: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<Self, Invalid> {
        Ok(Self {
            name: parse_name(name)?,
            email: email
                .map(EmailAddress::parse)
                .transpose()?
                .map(|e| e.as_str().to_string()),
            phone: phone
                .map(PhoneNumber::parse)
                .transpose()?
                .map(|p| p.as_str().to_string()),
            language: language.map(parse_language).transpose()?,
            timezone: timezone.map(parse_timezone).transpose()?,
        })
    }
}

pub fn parse_name(s: &str) -> Result<String, Invalid> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 200 || has_control_chars(s) {
        return Err(Invalid::new("name must be 1 to 200 printable characters"));
    }
    Ok(s.to_string())
}

/// A BCP 47 language tag of the common shapes: `da`, `en`, `en-GB`; normalised to
/// lower-case language and upper-case region.
pub fn parse_language(s: &str) -> Result<String, Invalid> {
    let bad = || {
        Invalid::new(format!(
            "invalid language {s:?}: expected a tag such as \"da\" or \"en-GB\""
        ))
    };
    let mut parts = s.split(['-', '_']);
    let lang = parts
        .next()
        .filter(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()))
        .ok_or_else(bad)?;
    let region = parts.next();
    if parts.next().is_some() {
        return Err(bad());
    }
    match region {
        None => Ok(lang.to_ascii_lowercase()),
        Some(r) if r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic()) => Ok(format!(
            "{}-{}",
            lang.to_ascii_lowercase(),
            r.to_ascii_uppercase()
        )),
        Some(_) => Err(bad()),
    }
}

pub fn parse_timezone(s: &str) -> Result<String, Invalid> {
    s.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| {
            Invalid::new(format!(
                "unknown time zone {s:?}: expected an IANA name such as Europe/Copenhagen"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_minor_units() {
        assert_eq!(parse_minor("15000.00").unwrap(), 1_500_000);
        assert_eq!(parse_minor("15000.5").unwrap(), 1_500_050);
        assert_eq!(parse_minor("7").unwrap(), 700);
        for bad in [
            "",
            "0",
            "0.00",
            "-5",
            "1.234",
            "1.",
            ".5",
            "1e3",
            "12,5",
            "99999999999999",
            "1000000000000",
        ] {
            assert!(parse_minor(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_minor("999999999999.99").unwrap(), MAX_MINOR);
        assert_eq!(format_minor(1_500_050), "15000.50");
        assert!(Money::parse("1500", "JPY").is_ok());
        assert!(Money::parse("1500.50", "JPY").is_err(), "yen are whole");
        assert!(Money::parse("1500.50", "DKK").is_ok());
    }

    #[test]
    fn languages_and_zones_normalise() {
        assert_eq!(parse_language("EN-gb").unwrap(), "en-GB");
        assert!(parse_language("english").is_err());
        assert_eq!(
            parse_timezone("Europe/Copenhagen").unwrap(),
            "Europe/Copenhagen"
        );
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn generated_case_numbers_have_the_contract_shape() {
        assert_eq!(
            CaseNumber::generated(2024, 12345).as_str(),
            "DEB-2024-12345"
        );
        assert_eq!(CaseNumber::generated(2026, 7).as_str(), "DEB-2026-00007");
    }
}
