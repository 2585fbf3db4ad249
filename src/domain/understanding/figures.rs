//! A promise's figures: the amount in either language's notation, and the date, resolved
//! against the day the reply was written.

use chrono::{Datelike, Duration, NaiveDate, Weekday};

use super::Token;

const CURRENCY: &[&str] = &[
    "kr", "kr.", "kroner", "dkk", "eur", "euro", "euros", "gbp", "usd", "pounds", "dollars", ",-",
];

/// A promised amount: the first figure with a currency beside it, or right after "pay".
pub(super) fn amount(own: &str, toks: &[Token]) -> Option<String> {
    for (i, t) in toks.iter().enumerate() {
        let before = i.checked_sub(1).map(|j| toks[j].word.as_str());
        let after = toks.get(i + 1).map(|n| n.word.as_str());
        let raw = &own[t.start..t.end];
        let symbol =
            own[..t.start].trim_end().ends_with(['£', '$', '€']) || own[t.end..].starts_with(",-");
        let currency = symbol
            || before.is_some_and(|w| CURRENCY.contains(&w))
            || after.is_some_and(|w| CURRENCY.contains(&w) || w.starts_with("kr"));
        // "pay 500", "pay the 1,250"
        let before = match before {
            Some("the" | "de" | "those") => i.checked_sub(2).map(|j| toks[j].word.as_str()),
            other => other,
        };
        let after_pay = before.is_some_and(|w| {
            [
                "pay",
                "betale",
                "betaler",
                "indbetaler",
                "overfoerer",
                "transfer",
                "send",
            ]
            .contains(&w)
        });
        let date_like = after.is_some_and(|w| month(w).is_some())
            || raw.ends_with('.') && after.is_some_and(|w| month(w).is_some());
        if (currency || after_pay)
            && !date_like
            && let Some(v) = number(raw.trim_end_matches('.'))
        {
            return Some(v);
        }
    }
    None
}

/// A figure as written in either language: `1.500,00`, `1,500.00`, `1500`, `750,-`.
pub(super) fn number(raw: &str) -> Option<String> {
    let s = raw
        .trim_start_matches(['£', '$', '€'])
        .trim_end_matches(",-");
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return None;
    }
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let decimal = match (s.rfind('.'), s.rfind(',')) {
        (Some(d), Some(c)) => Some(d.max(c)),
        (Some(p), None) | (None, Some(p)) => (s.len() - p - 1 <= 2).then_some(p),
        (None, None) => None,
    };
    let (whole, cents) = match decimal {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, ""),
    };
    let whole: String = whole.chars().filter(char::is_ascii_digit).collect();
    let whole: u64 = whole.parse().ok()?;
    let cents: u64 = match cents.len() {
        0 => 0,
        1 => cents.parse::<u64>().ok()? * 10,
        _ => cents[..2].parse().ok()?,
    };
    Some(format!("{whole}.{cents:02}"))
}

fn month(word: &str) -> Option<u32> {
    const MONTHS: [(&str, &str); 12] = [
        ("jan", "januar"),
        ("feb", "februar"),
        ("mar", "marts"),
        ("apr", "april"),
        ("may", "maj"),
        ("jun", "juni"),
        ("jul", "juli"),
        ("aug", "august"),
        ("sep", "september"),
        ("oct", "oktober"),
        ("nov", "november"),
        ("dec", "december"),
    ];
    let w = word.trim_end_matches('.');
    MONTHS
        .iter()
        .position(|(en, da)| {
            w.len() >= 3
                && (en.starts_with(&w[..3]) || da.starts_with(&w[..3]))
                && (da.starts_with(w) || w.starts_with(en) || w == "march" || w == "october")
        })
        .map(|i| i as u32 + 1)
}

fn weekday(word: &str) -> Option<Weekday> {
    Some(match word {
        "monday" | "mandag" => Weekday::Mon,
        "tuesday" | "tirsdag" => Weekday::Tue,
        "wednesday" | "onsdag" => Weekday::Wed,
        "thursday" | "torsdag" => Weekday::Thu,
        "friday" | "fredag" => Weekday::Fri,
        "saturday" | "loerdag" => Weekday::Sat,
        "sunday" | "soendag" => Weekday::Sun,
        _ => return None,
    })
}

/// The next `day` of the month on or after `from` (this month's, or next month's).
fn next_day_of_month(from: NaiveDate, day: u32) -> Option<NaiveDate> {
    let this = NaiveDate::from_ymd_opt(from.year(), from.month(), day);
    match this {
        Some(d) if d >= from => Some(d),
        _ => {
            let (y, m) = if from.month() == 12 {
                (from.year() + 1, 1)
            } else {
                (from.year(), from.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, day)
        }
    }
}

/// A date on or after `from` for day and month (this year's, else next year's).
fn on_or_after(from: NaiveDate, day: u32, month: u32) -> Option<NaiveDate> {
    let this = NaiveDate::from_ymd_opt(from.year(), month, day)?;
    if this >= from {
        Some(this)
    } else {
        NaiveDate::from_ymd_opt(from.year() + 1, month, day)
    }
}

fn day_number(word: &str) -> Option<u32> {
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    let rest = &word[digits.len()..];
    if digits.is_empty() || !["", ".", "st", "nd", "rd", "th", "te"].contains(&rest) {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

/// A promised date: "tomorrow", "i morgen", "(next) Friday", "på fredag", "the 15th",
/// "den 15.", "15 January", "den 15. januar", "15/1", "end of the month", "sidst på
/// måneden".
pub(super) fn date(toks: &[Token], sent: NaiveDate) -> Option<NaiveDate> {
    let w = |i: usize| toks.get(i).map(|t| t.word.as_str()).unwrap_or_default();
    for i in 0..toks.len() {
        let word = w(i);
        match word {
            "tomorrow" if w(i.wrapping_sub(1)) == "week" => return Some(sent + Duration::days(8)),
            "tomorrow" | "imorgen" => return sent.succ_opt(),
            "morgen" if w(i.wrapping_sub(1)) == "i" => return sent.succ_opt(),
            "today" | "idag" => return Some(sent),
            "dag" if w(i.wrapping_sub(1)) == "i" => return Some(sent),
            "end" if w(i + 1) == "of" && (w(i + 2) == "month" || w(i + 3) == "month") => {
                return last_of_month(sent);
            }
            "ultimo" | "maanedsskiftet" => return last_of_month(sent),
            "sidst" if w(i + 1) == "paa" && w(i + 2).starts_with("maaned") => {
                return last_of_month(sent);
            }
            _ => {}
        }
        if let Some(day) = weekday(word) {
            let ahead = (7 + day.num_days_from_monday() as i64
                - sent.weekday().num_days_from_monday() as i64)
                % 7;
            let ahead = if ahead == 0 { 7 } else { ahead };
            let next_week = matches!(w(i.wrapping_sub(1)), "next" | "naeste") && ahead < 3;
            return Some(sent + Duration::days(ahead + if next_week { 7 } else { 0 }));
        }
        if let Some((d, m)) = word.split_once('/')
            && let (Some(d), Ok(m)) = (day_number(d), m.trim_end_matches('.').parse::<u32>())
            && let Some(date) = on_or_after(sent, d, m)
        {
            return Some(date);
        }
        if let Some(d) = day_number(word) {
            if let Some(m) =
                month(w(i + 1)).or_else(|| (w(i + 1) == "of").then(|| month(w(i + 2))).flatten())
            {
                return on_or_after(sent, d, m);
            }
            let prefix = w(i.wrapping_sub(1));
            if matches!(prefix, "the" | "den" | "d" | "d." | "on") || word.ends_with(['.', 'h']) {
                return next_day_of_month(sent, d);
            }
        }
        if let Some(m) = month(word)
            && let Some(d) = day_number(w(i + 1))
        {
            return on_or_after(sent, d, m);
        }
    }
    None
}

fn last_of_month(sent: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if sent.month() == 12 {
        (sent.year() + 1, 1)
    } else {
        (sent.year(), sent.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)?.pred_opt()
}
