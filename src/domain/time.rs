//! Time as stored (microseconds since the Unix epoch, UTC) and as shown (RFC 3339).

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

pub type Micros = i64;

pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

/// A duration as stored time, saturating.
pub fn duration_micros(d: std::time::Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub fn to_micros(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

pub fn from_micros(m: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(m).single().unwrap_or_default()
}

/// `2024-01-10T14:30:00Z`, with fractions only when there are any.
pub fn rfc3339(m: Micros) -> String {
    from_micros(m).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An RFC 3339 date-time, or a plain date taken as midnight UTC.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// `250ms`, `30s`, `5m`, `2h`, `7d`.
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let bad = || format!("not a duration: {v:?} (expected e.g. 30s, 5m, 2h, 7d, 5y)");
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        // A year of 365¼ days, so five years hold their leap day.
        "y" => n.checked_mul(31_557_600).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip() {
        let t = parse_instant("2024-01-10T14:30:00Z").unwrap();
        assert_eq!(rfc3339(to_micros(t)), "2024-01-10T14:30:00Z");
        assert_eq!(
            rfc3339(to_micros(parse_instant("2024-01-10").unwrap())),
            "2024-01-10T00:00:00Z"
        );
        assert!(parse_instant("yesterday").is_none());
    }
}
