//! Contact policy values read from configuration. The rules that use them (contact hours,
//! frequency caps) live beside them as the compliance engine grows.

use std::time::Duration;

use chrono::NaiveTime;

/// At most `count` messages per debtor and channel within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub count: u32,
    pub window: Duration,
}

impl FrequencyCap {
    /// `3/7d`
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("expected COUNT/WINDOW such as \"3/7d\" or \"off\", got {s:?}");
        let (count, window) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(bad)?;
        let window = crate::config::parse_duration(window).map_err(|_| bad())?;
        if window.is_zero() {
            return Err(bad());
        }
        Ok(Self { count, window })
    }
}

/// A daily window in the debtor's local time, `08:00-21:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl ContactWindow {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("expected HH:MM-HH:MM such as \"08:00-21:00\" or \"off\", got {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start = NaiveTime::parse_from_str(a.trim(), "%H:%M").map_err(|_| bad())?;
        let end = NaiveTime::parse_from_str(b.trim(), "%H:%M").map_err(|_| bad())?;
        if start == end {
            return Err(bad());
        }
        Ok(Self { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_windows_parse() {
        let cap = FrequencyCap::parse("3/7d").unwrap();
        assert_eq!((cap.count, cap.window.as_secs()), (3, 604_800));
        assert!(FrequencyCap::parse("0/7d").is_err());
        assert!(FrequencyCap::parse("3").is_err());
        assert!(ContactWindow::parse("08:00-21:00").is_ok());
        assert!(ContactWindow::parse("25:00-21:00").is_err());
    }
}
