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
        let written = &own[t.start..t.end];
        // "2000kr", "500dkk": the currency glued to the figure.
        let raw = glued_currency(written).unwrap_or(written);
        let symbol = raw.len() < written.len()
            || written.ends_with(",-")
            || own[..t.start].trim_end().ends_with(['£', '$', '€'])
            || own[t.end..].starts_with(",-");
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
                "paying",
                "betale",
                "betaler",
                "indbetaler",
                "overfoerer",
                "overforer",
                "transfer",
                "send",
            ]
            .contains(&w)
        });
        // "15 januar", "den 15. januar", "betaler 1/8": a day and month.
        let date_like = after.is_some_and(|w| month(w).is_some()) || own[t.end..].starts_with('/');
        if (currency || after_pay)
            && !date_like
            && let Some(v) = number(raw.trim_end_matches('.'))
        {
            return Some(v);
        }
    }
    None
}

/// A figure with its currency glued on (`2000kr`, `1.500,00kr.`, `500dkk`): the figure.
fn glued_currency(written: &str) -> Option<&str> {
    let bytes = written.as_bytes();
    ["kr.", "kr", "dkk", "eur"]
        .iter()
        .find(|c| {
            bytes.len() >= c.len()
                && bytes[bytes.len() - c.len()..].eq_ignore_ascii_case(c.as_bytes())
        })
        .map(|c| &written[..written.len() - c.len()])
        .filter(|figure| figure.ends_with(|c: char| c.is_ascii_digit()))
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
    // The first three bytes, when they end at a character's edge (`piątek` has none).
    let head = w.get(..3)?;
    MONTHS
        .iter()
        .position(|(en, da)| {
            (en.starts_with(head) || da.starts_with(head))
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

/// A promised date: "tomorrow", "i morgen", "tonight", "i aften", "(next) Friday", "a week
/// on Monday", "på fredag", "Friday 30 October", "the 15th", "den 15.", "den første", "15
/// January", "den 15. januar", "15/1", "in 2 weeks", "inden for 14 dage", "end of the
/// month", "sidst på måneden", "before Christmas".
pub(super) fn date(own: &str, toks: &[Token], sent: NaiveDate) -> Option<NaiveDate> {
    let w = |i: usize| toks.get(i).map(|t| t.word.as_str()).unwrap_or_default();
    for i in 0..toks.len() {
        let word = w(i);
        if let Some(date) = named_day(&w, i, sent) {
            return Some(date);
        }
        if let Some(day) = weekday(word) {
            // "Friday 30 October", "fredag den 1. maj": the date itself.
            let at = if matches!(w(i + 1), "the" | "den" | "d") {
                i + 2
            } else {
                i + 1
            };
            if let (Some(d), Some(m)) = (day_number(w(at)), month(w(at + 1)))
                && let Some(date) = on_or_after(sent, d, m)
            {
                return Some(date);
            }
            let ahead = (7 + day.num_days_from_monday() as i64
                - sent.weekday().num_days_from_monday() as i64)
                % 7;
            let ahead = if ahead == 0 { 7 } else { ahead };
            let next_week = matches!(w(i.wrapping_sub(1)), "next" | "naeste") && ahead < 3;
            let week_on = w(i.wrapping_sub(1)) == "on"
                && w(i.wrapping_sub(2)) == "week"
                && matches!(w(i.wrapping_sub(3)), "a" | "one");
            return Some(sent + Duration::days(ahead + if next_week || week_on { 7 } else { 0 }));
        }
        if let Some(d) = day_number(word) {
            // "15/1", "d. 1/8": day and month.
            if own.get(toks[i].end..toks[i].end + 1) == Some("/")
                && toks.get(i + 1).is_some_and(|n| n.start == toks[i].end + 1)
                && let Ok(m) = w(i + 1).parse::<u32>()
                && let Some(date) = on_or_after(sent, d, m)
            {
                return Some(date);
            }
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

/// A day named by words at token `i`: today, tomorrow, the month's end, the first, a span
/// from now ("in 2 weeks", "om en uge", "inden for 14 dage"), Christmas.
fn named_day<'a>(w: &impl Fn(usize) -> &'a str, i: usize, sent: NaiveDate) -> Option<NaiveDate> {
    let before = |k: usize| w(i.wrapping_sub(k));
    match w(i) {
        "tomorrow" if before(1) == "week" => Some(sent + Duration::days(8)),
        "tomorrow" | "imorgen" | "2moro" | "2morrow" | "tmrw" | "tomoz" => sent.succ_opt(),
        "overmorgen" => Some(sent + Duration::days(2)),
        "morgen" if before(1) == "i" => sent.succ_opt(),
        "today" | "idag" | "tonight" | "iaften" => Some(sent),
        "dag" | "aften" if before(1) == "i" => Some(sent),
        "end" if w(i + 1) == "of" && (w(i + 2) == "month" || w(i + 3) == "month") => {
            last_of_month(sent)
        }
        "ultimo" | "maanedsskiftet" => last_of_month(sent),
        "sidst" if w(i + 1) == "paa" && w(i + 2).starts_with("maaned") => last_of_month(sent),
        "first" | "foerste" if matches!(before(1), "the" | "den") => {
            // "the first of March"; not "the first instalment", "den første rate".
            let next = w(i + 1);
            if let Some(m) = (next == "of").then(|| month(w(i + 2))).flatten() {
                on_or_after(sent, 1, m)
            } else if ORDINAL_OF.iter().any(|n| next.starts_with(n)) {
                None
            } else {
                next_day_of_month(sent, 1)
            }
        }
        "christmas" | "xmas" | "juleaften"
            if matches!(
                before(1),
                "before" | "by" | "until" | "inden" | "foer" | "til"
            ) =>
        {
            on_or_after(sent, 24, 12)
        }
        "days" | "dage" | "weeks" | "week" | "uger" | "uge" => {
            let n = count(before(1))?;
            let from_now = matches!(before(2), "in" | "within" | "om" | "indenfor")
                || before(2) == "for" && before(3) == "inden";
            let unit = if w(i).starts_with('d') { 1 } else { 7 };
            from_now.then(|| sent + Duration::days(n * unit))
        }
        _ => None,
    }
}

/// What "the first" may be the first of, when it is no day.
const ORDINAL_OF: &[&str] = &[
    "rate", "instal", "install", "payment", "betaling", "afdrag", "part", "del", "gang", "time",
    "half", "halv", "bit",
];

/// A small count as a figure or a word.
fn count(word: &str) -> Option<i64> {
    Some(match word {
        "a" | "one" | "en" | "et" => 1,
        "two" | "to" | "couple" => 2,
        "three" | "tre" => 3,
        "four" | "fire" => 4,
        _ => return word.parse().ok().filter(|n| (1..=90).contains(n)),
    })
}

fn last_of_month(sent: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if sent.month() == 12 {
        (sent.year() + 1, 1)
    } else {
        (sent.year(), sent.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)?.pred_opt()
}
