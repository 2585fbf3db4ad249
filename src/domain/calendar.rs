//! Closed days: dates on which no message goes out (`PARLEY_CLOSED_DAYS`). The `dk` calendar
//! is computed, not listed: the Easter-based holidays follow from Easter Sunday of the year
//! (the Gregorian computus), the rest are fixed dates.

use std::collections::BTreeSet;

use chrono::{Datelike, Days, NaiveDate};

/// The days on which messages are held, in the debtor's local calendar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedDays {
    /// Danish public holidays, with 24 December, 31 December and 5 June.
    pub dk: bool,
    /// Further dates.
    pub dates: BTreeSet<NaiveDate>,
}

impl ClosedDays {
    /// `dk`, a comma list of `YYYY-MM-DD`, or both (`dk,2027-01-02`); `none` or empty: none.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut days = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("dk") {
                days.dk = true;
            } else if part.eq_ignore_ascii_case("none") {
            } else {
                let date = NaiveDate::parse_from_str(part, "%Y-%m-%d").map_err(|_| {
                    format!("expected \"dk\", \"none\" or dates as YYYY-MM-DD, got {part:?}")
                })?;
                days.dates.insert(date);
            }
        }
        Ok(days)
    }

    pub fn is_empty(&self) -> bool {
        !self.dk && self.dates.is_empty()
    }

    pub fn is_closed(&self, day: NaiveDate) -> bool {
        self.dates.contains(&day) || (self.dk && is_danish_holiday(day))
    }
}

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous algorithm, Meeus).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or_default()
}

/// Danish public holidays, with the days on which collection practice closes too.
fn is_danish_holiday(day: NaiveDate) -> bool {
    let fixed = matches!(
        (day.month(), day.day()),
        (1, 1) | (6, 5) | (12, 24) | (12, 25) | (12, 26) | (12, 31)
    );
    if fixed {
        return true;
    }
    let easter = easter(day.year());
    let offset = |days: i64| {
        if days >= 0 {
            easter.checked_add_days(Days::new(days.unsigned_abs()))
        } else {
            easter.checked_sub_days(Days::new(days.unsigned_abs()))
        }
    };
    // Maundy Thursday, Good Friday, Easter Sunday and Monday, Ascension Day, Whit Sunday and
    // Monday; Great Prayer Day (the fourth Friday after Easter) was abolished after 2023.
    let mut movable = vec![-3, -2, 0, 1, 39, 49, 50];
    if day.year() <= 2023 {
        movable.push(26);
    }
    movable.into_iter().any(|d| offset(d) == Some(day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn easter_sundays_are_computed() {
        for (year, sunday) in [
            (2000, "2000-04-23"),
            (2019, "2019-04-21"),
            (2024, "2024-03-31"),
            (2025, "2025-04-20"),
            (2027, "2027-03-28"),
            (2038, "2038-04-25"),
        ] {
            assert_eq!(easter(year), date(sunday), "{year}");
        }
    }

    #[test]
    fn the_danish_calendar_of_2027_and_the_prayer_day_until_2023() {
        let dk = ClosedDays::parse("dk").unwrap();
        for closed in [
            "2027-01-01",
            "2027-03-25",
            "2027-03-26",
            "2027-03-28",
            "2027-03-29",
            "2027-05-06",
            "2027-05-16",
            "2027-05-17",
            "2027-06-05",
            "2027-12-24",
            "2027-12-25",
            "2027-12-26",
            "2027-12-31",
            "2023-05-05",
        ] {
            assert!(dk.is_closed(date(closed)), "{closed}");
        }
        for open in [
            "2027-03-27",
            "2027-03-30",
            "2027-04-23",
            "2024-04-26",
            "2027-12-27",
            "2027-06-04",
        ] {
            assert!(!dk.is_closed(date(open)), "{open}");
        }
    }

    #[test]
    fn lists_of_dates_and_bad_words() {
        let c = ClosedDays::parse("dk, 2027-01-02").unwrap();
        assert!(c.dk && c.is_closed(date("2027-01-02")));
        assert!(ClosedDays::parse("none").unwrap().is_empty());
        assert!(ClosedDays::parse("").unwrap().is_empty());
        assert!(ClosedDays::parse("se").is_err());
        assert!(ClosedDays::parse("2027-02-30").is_err());
    }
}
