//! The send policy: a debtor's communication preferences, contact hours and frequency caps,
//! decided before every message is queued. Pure rules; the caller brings the facts.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::calendar::ClosedDays;
use super::case::CaseStatus;
use super::code::Code;
use super::message::{Category, Channel};

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
        let window = super::time::parse_duration(window).map_err(|_| bad())?;
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

impl ContactWindow {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The first instant at or after `t` inside the window, in `tz`'s local time.
    pub fn next_allowed(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = t.with_timezone(&tz);
        if self.contains(local.time()) {
            return t;
        }
        // Outside: the window opens next at `start`, today or tomorrow.
        let today = local.date_naive();
        let day = if local.time() < self.start {
            today
        } else {
            today.checked_add_days(Days::new(1)).unwrap_or(today)
        };
        let naive = day.and_time(self.start);
        // A start inside a daylight-saving gap opens at the first valid local time after it.
        (0..4)
            .find_map(|h| {
                tz.from_local_datetime(&(naive + chrono::Duration::hours(h)))
                    .earliest()
            })
            .map_or(t, |l| l.with_timezone(&Utc))
    }
}

/// A case's communication preferences (the seed's `communication-preferences`, opt-out
/// included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub preferred_channel: Option<String>,
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    pub allow_sms: bool,
    pub allow_email: bool,
    pub preferred_language: Option<String>,
    pub do_not_contact: bool,
    pub reason: Option<String>,
    /// `YYYY-MM-DD`: the opt-out holds from this day on (UTC).
    pub effective_date: Option<String>,
    /// Categories still allowed under an opt-out, e.g. `legal_notices`.
    pub exceptions: Vec<String>,
    /// `HH:MM` to `HH:MM` in `timezone` (else the debtor's time zone).
    pub contact_hours: Option<(String, String, Option<String>)>,
}

/// A change of preferences, checked: each field present replaces the current one (an inner
/// `None` clears it), each field absent keeps it.
#[derive(Debug, Clone, Default)]
pub struct PreferencesPatch {
    pub preferred_channel: Option<Option<String>>,
    pub email_address: Option<Option<String>>,
    pub phone_number: Option<Option<String>>,
    pub allow_sms: Option<bool>,
    pub allow_email: Option<bool>,
    pub preferred_language: Option<Option<String>>,
    pub do_not_contact: Option<bool>,
    pub reason: Option<Option<String>>,
    pub effective_date: Option<Option<String>>,
    pub exceptions: Option<Vec<String>>,
    pub contact_hours: Option<Option<(String, String, Option<String>)>>,
}

impl PreferencesPatch {
    /// The preferences `p` with this change made.
    pub fn apply(self, mut p: Preferences) -> Preferences {
        fn set<T>(field: &mut T, given: Option<T>) {
            if let Some(v) = given {
                *field = v;
            }
        }
        set(&mut p.preferred_channel, self.preferred_channel);
        set(&mut p.email_address, self.email_address);
        set(&mut p.phone_number, self.phone_number);
        set(&mut p.allow_sms, self.allow_sms);
        set(&mut p.allow_email, self.allow_email);
        set(&mut p.preferred_language, self.preferred_language);
        set(&mut p.do_not_contact, self.do_not_contact);
        set(&mut p.reason, self.reason);
        set(&mut p.effective_date, self.effective_date);
        set(&mut p.exceptions, self.exceptions);
        set(&mut p.contact_hours, self.contact_hours);
        p
    }
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            preferred_channel: None,
            email_address: None,
            phone_number: None,
            allow_sms: true,
            allow_email: true,
            preferred_language: None,
            do_not_contact: false,
            reason: None,
            effective_date: None,
            exceptions: Vec::new(),
            contact_hours: None,
        }
    }
}

super::word_enum!(
    /// What a send-policy check decided.
    Decision, "decision" { Allow => "allow", Defer => "defer", Refuse => "refuse" }
);

/// A send decision kept as evidence: what was decided, by which rule, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub decision: Decision,
    /// `contact_permitted`, `opt_out_exception`, `scheduled`, `contact_hours`, `closed_day`,
    /// or the refusal's code.
    pub rule: String,
    pub checked_at: DateTime<Utc>,
}

/// A message may go out: now (`not_before` is `None`) or not before a time, by `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub not_before: Option<DateTime<Utc>>,
    pub rule: &'static str,
}

impl Verdict {
    pub fn evidence(&self, checked_at: DateTime<Utc>) -> Evidence {
        Evidence {
            decision: if self.not_before.is_some_and(|t| t > checked_at) {
                Decision::Defer
            } else {
                Decision::Allow
            },
            rule: self.rule.to_string(),
            checked_at,
        }
    }
}

/// Why a message may not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub detail: String,
}

/// What the policy needs to know besides the preferences.
pub struct SendContext<'a> {
    pub channel: Channel,
    pub category: Category,
    /// The case's status: a disputed or closed case holds collection messages.
    pub case_status: CaseStatus,
    /// A reply read as a dispute, a wrong person or a request to stop awaits a person's
    /// review: collection messages are held until then.
    pub awaiting_review: bool,
    pub now: DateTime<Utc>,
    /// `scheduledAt`, if the sender asked for a later time.
    pub wanted: Option<DateTime<Utc>>,
    pub default_hours: Option<ContactWindow>,
    pub debtor_timezone: Option<&'a str>,
    /// Messages of this channel to this debtor inside the cap's window so far.
    pub recent: u32,
    pub cap: Option<FrequencyCap>,
    /// Days on which nothing goes out, in the debtor's calendar.
    pub closed_days: Option<&'a ClosedDays>,
}

impl Evidence {
    /// A refusal under the rule of `code`.
    pub fn refused(code: Code, checked_at: DateTime<Utc>) -> Self {
        Self {
            decision: Decision::Refuse,
            rule: code.as_str().to_string(),
            checked_at,
        }
    }

    /// A send held back under the rule of `code`, to be asked again later.
    pub fn deferred(code: Code, checked_at: DateTime<Utc>) -> Self {
        Self {
            decision: Decision::Defer,
            rule: code.as_str().to_string(),
            checked_at,
        }
    }
}

impl Refusal {
    pub fn evidence(&self, checked_at: DateTime<Utc>) -> Evidence {
        Evidence::refused(self.code, checked_at)
    }
}

/// What the case itself holds back: collection messages of a disputed or closed case, or
/// of one with a reply awaiting review.
fn case_holds(c: &SendContext<'_>) -> Result<(), Refusal> {
    if !c.category.is_collection() {
        return Ok(());
    }
    if matches!(c.case_status, CaseStatus::Disputed | CaseStatus::Closed) {
        return Err(Refusal {
            code: Code::CaseNotContactable,
            detail: format!(
                "the case is {}: {} messages are held",
                c.case_status.as_str(),
                c.category.as_str()
            ),
        });
    }
    if c.awaiting_review {
        return Err(Refusal {
            code: Code::AwaitingReview,
            detail: format!(
                "a reply on the case awaits review: {} messages are held until a case worker confirms or corrects it",
                c.category.as_str()
            ),
        });
    }
    Ok(())
}

/// Decides a send: `not_before` `None` to send now, `Some(t)` to hold it until `t` (the time
/// asked for, or the next opening of the contact window on an open day); `Err` to refuse.
/// Opt-outs admit their exception categories; contact hours and caps apply to every message.
/// The verdict names the rule that decided it.
pub fn decide(p: &Preferences, c: &SendContext<'_>) -> Result<Verdict, Refusal> {
    let refuse = |code, detail: String| Err(Refusal { code, detail });
    case_holds(c)?;
    let in_force = p
        .effective_date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .is_none_or(|d| d <= c.now.date_naive());
    let excepted = p.exceptions.iter().any(|e| e == c.category.as_str());
    if p.do_not_contact && in_force && !excepted {
        return refuse(
            Code::DoNotContact,
            "the debtor asked not to be contacted".into(),
        );
    }
    let mut rule = if p.do_not_contact && in_force {
        "opt_out_exception"
    } else {
        "contact_permitted"
    };
    let allowed = match c.channel {
        Channel::Email => p.allow_email,
        Channel::Sms => p.allow_sms,
    };
    if !allowed {
        return refuse(
            Code::ChannelNotAllowed,
            format!("the debtor does not accept {}", c.channel.as_str()),
        );
    }
    if let Some(cap) = c.cap
        && c.recent >= cap.count
    {
        return refuse(
            Code::FrequencyCapExceeded,
            format!(
                "{} {} messages to this debtor within {} s already",
                c.recent,
                c.channel.as_str(),
                cap.window.as_secs()
            ),
        );
    }
    let window = match &p.contact_hours {
        Some((start, end, _)) => ContactWindow::parse(&format!("{start}-{end}")).ok(),
        None => c.default_hours,
    };
    let tz_name = p
        .contact_hours
        .as_ref()
        .and_then(|h| h.2.as_deref())
        .or(c.debtor_timezone);
    let tz: Tz = tz_name
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    let at = c.wanted.unwrap_or(c.now);
    if c.wanted.is_some() {
        rule = "scheduled";
    }
    let mut allowed_at = window.map_or(at, |w| w.next_allowed(at, tz));
    if allowed_at != at {
        rule = "contact_hours";
    }
    // On a closed day (debtor-local), the next open day's window; a run of closed days is
    // never longer than a few, the bound only keeps a bad list from looping.
    if let Some(closed) = c.closed_days.filter(|d| !d.is_empty()) {
        for _ in 0..60 {
            let day = allowed_at.with_timezone(&tz).date_naive();
            if !closed.is_closed(day) {
                break;
            }
            rule = "closed_day";
            let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
            let start = window.map_or(NaiveTime::MIN, |w| w.start);
            allowed_at = local_instant(next, start, tz);
            if let Some(w) = window {
                allowed_at = w.next_allowed(allowed_at, tz);
            }
        }
    }
    Ok(Verdict {
        not_before: (allowed_at != at || c.wanted.is_some()).then_some(allowed_at),
        rule,
    })
}

/// `time` on `day` in `tz`; a time inside a daylight-saving gap is the first valid one after.
fn local_instant(day: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let naive = day.and_time(time);
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ctx(now: &str) -> SendContext<'static> {
        SendContext {
            channel: Channel::Email,
            category: Category::General,
            case_status: CaseStatus::Open,
            awaiting_review: false,
            now: utc(now),
            wanted: None,
            default_hours: ContactWindow::parse("08:00-21:00").ok(),
            debtor_timezone: Some("Europe/Copenhagen"),
            recent: 0,
            cap: FrequencyCap::parse("3/7d").ok(),
            closed_days: None,
        }
    }

    #[test]
    fn outside_contact_hours_waits_for_the_window() {
        let p = Preferences::default();
        // 22:30 in Copenhagen (UTC+1 in January) waits until 08:00 the next morning.
        assert_eq!(
            decide(&p, &ctx("2024-01-10T21:30:00Z")).unwrap().not_before,
            Some(utc("2024-01-11T07:00:00Z"))
        );
        // 06:00 local waits until 08:00 the same day.
        assert_eq!(
            decide(&p, &ctx("2024-01-10T05:00:00Z")).unwrap().not_before,
            Some(utc("2024-01-10T07:00:00Z"))
        );
        assert_eq!(
            decide(&p, &ctx("2024-01-10T12:00:00Z")).unwrap().not_before,
            None
        );
        // The debtor's own hours and zone win over the default.
        let own = Preferences {
            contact_hours: Some((
                "09:00".into(),
                "17:00".into(),
                Some("America/New_York".into()),
            )),
            ..Default::default()
        };
        assert_eq!(
            decide(&own, &ctx("2024-01-10T12:00:00Z"))
                .unwrap()
                .not_before,
            Some(utc("2024-01-10T14:00:00Z"))
        );
    }

    #[test]
    fn overnight_windows_and_daylight_saving() {
        let w = ContactWindow::parse("20:00-02:00").unwrap();
        let tz: Tz = "Europe/Copenhagen".parse().unwrap();
        assert_eq!(
            w.next_allowed(utc("2024-01-10T23:30:00Z"), tz),
            utc("2024-01-10T23:30:00Z")
        );
        assert_eq!(
            w.next_allowed(utc("2024-01-10T12:00:00Z"), tz),
            utc("2024-01-10T19:00:00Z")
        );
        // 02:30 on 31 March 2024 does not exist in Copenhagen: the window opens at 03:00 local.
        let early = ContactWindow::parse("02:30-05:00").unwrap();
        assert_eq!(
            early.next_allowed(utc("2024-03-30T23:00:00Z"), tz),
            utc("2024-03-31T01:30:00Z")
        );
    }

    #[test]
    fn opt_out_refuses_but_admits_its_exceptions_from_its_date() {
        let p = Preferences {
            do_not_contact: true,
            effective_date: Some("2024-01-15".into()),
            exceptions: vec!["legal_notices".into()],
            ..Default::default()
        };
        assert_eq!(
            decide(&p, &ctx("2024-01-14T12:00:00Z")).unwrap().not_before,
            None,
            "not yet in force"
        );
        assert_eq!(
            decide(&p, &ctx("2024-01-15T12:00:00Z")).unwrap_err().code,
            Code::DoNotContact
        );
        let legal = SendContext {
            category: Category::LegalNotices,
            ..ctx("2024-01-15T12:00:00Z")
        };
        assert_eq!(decide(&p, &legal).unwrap().not_before, None);
        assert_eq!(decide(&p, &legal).unwrap().rule, "opt_out_exception");
    }

    #[test]
    fn closed_days_defer_to_the_next_open_days_window() {
        let p = Preferences::default();
        let dk = ClosedDays::parse("dk").unwrap();
        let on = |now: &str| SendContext {
            closed_days: Some(&dk),
            ..ctx(now)
        };
        // Maundy Thursday 2027, 10:00 in Copenhagen: Thursday and Good Friday are closed,
        // Saturday is open; 08:00 local (UTC+1 until 28 March).
        assert_eq!(
            decide(&p, &on("2027-03-25T09:00:00Z")).unwrap().not_before,
            Some(utc("2027-03-27T07:00:00Z"))
        );
        // Easter Saturday evening waits past Easter Sunday and Monday (summer time by then).
        assert_eq!(
            decide(&p, &on("2027-03-27T21:00:00Z")).unwrap().not_before,
            Some(utc("2027-03-30T06:00:00Z"))
        );
        // 24 December at noon: 24, 25 and 26 December are closed.
        assert_eq!(
            decide(&p, &on("2026-12-24T11:00:00Z")).unwrap().not_before,
            Some(utc("2026-12-27T07:00:00Z"))
        );
        // Late on 23 December the window opens on the 27th, not the 24th.
        assert_eq!(
            decide(&p, &on("2026-12-23T21:00:00Z")).unwrap().not_before,
            Some(utc("2026-12-27T07:00:00Z"))
        );
        // An open day is unaffected; without a contact window, the first open day's midnight
        // (31 December and 1 January are closed: 2 January, 00:00 local).
        assert_eq!(
            decide(&p, &on("2027-03-30T09:00:00Z")).unwrap().not_before,
            None
        );
        // The verdict names the rule that decided it, and keeps it as evidence.
        let now = utc("2026-12-24T11:00:00Z");
        let held = decide(&p, &on("2026-12-24T11:00:00Z")).unwrap();
        assert_eq!(held.rule, "closed_day");
        assert_eq!(held.evidence(now).decision, Decision::Defer);
        let open = decide(&p, &on("2027-03-30T09:00:00Z")).unwrap();
        assert_eq!(open.rule, "contact_permitted");
        assert_eq!(open.evidence(now).decision, Decision::Allow);
        assert_eq!(
            decide(&p, &on("2027-03-30T21:00:00Z")).unwrap().rule,
            "contact_hours"
        );
        let no_window = SendContext {
            default_hours: None,
            ..on("2026-12-31T12:00:00Z")
        };
        assert_eq!(
            decide(&p, &no_window).unwrap().not_before,
            Some(utc("2027-01-01T23:00:00Z"))
        );
    }

    #[test]
    fn disputed_and_closed_cases_hold_collection_messages_only() {
        let p = Preferences::default();
        for status in [CaseStatus::Disputed, CaseStatus::Closed] {
            for category in [
                Category::PaymentReminders,
                Category::SettlementOffers,
                Category::DeadlineAlerts,
            ] {
                let c = SendContext {
                    case_status: status,
                    category,
                    ..ctx("2024-01-15T12:00:00Z")
                };
                assert_eq!(decide(&p, &c).unwrap_err().code, Code::CaseNotContactable);
            }
            let legal = SendContext {
                case_status: status,
                category: Category::LegalNotices,
                ..ctx("2024-01-15T12:00:00Z")
            };
            assert_eq!(decide(&p, &legal).unwrap().not_before, None);
        }
        for status in [CaseStatus::Open, CaseStatus::PaymentPlan, CaseStatus::Paid] {
            let c = SendContext {
                case_status: status,
                category: Category::PaymentReminders,
                ..ctx("2024-01-15T12:00:00Z")
            };
            assert_eq!(decide(&p, &c).unwrap().not_before, None, "{status:?}");
        }
    }

    #[test]
    fn a_reply_awaiting_review_holds_collection_messages_only() {
        let p = Preferences::default();
        for category in [
            Category::PaymentReminders,
            Category::SettlementOffers,
            Category::DeadlineAlerts,
        ] {
            let c = SendContext {
                awaiting_review: true,
                category,
                ..ctx("2024-01-15T12:00:00Z")
            };
            assert_eq!(decide(&p, &c).unwrap_err().code, Code::AwaitingReview);
        }
        for category in [
            Category::CaseUpdates,
            Category::LegalNotices,
            Category::General,
        ] {
            let c = SendContext {
                awaiting_review: true,
                category,
                ..ctx("2024-01-15T12:00:00Z")
            };
            assert_eq!(decide(&p, &c).unwrap().not_before, None, "{category:?}");
        }
    }

    #[test]
    fn a_requested_time_is_kept_without_contact_hours() {
        let c = SendContext {
            default_hours: None,
            wanted: Some(utc("2099-01-01T08:00:00Z")),
            ..ctx("2024-01-10T12:00:00Z")
        };
        assert_eq!(
            decide(&Preferences::default(), &c).unwrap().not_before,
            Some(utc("2099-01-01T08:00:00Z"))
        );
        let late = SendContext {
            wanted: Some(utc("2099-01-01T23:00:00Z")),
            ..ctx("2024-01-10T12:00:00Z")
        };
        assert_eq!(
            decide(&Preferences::default(), &late).unwrap().not_before,
            Some(utc("2099-01-02T07:00:00Z")),
            "moved into the window"
        );
    }

    #[test]
    fn channels_and_caps_refuse() {
        let no_sms = Preferences {
            allow_sms: false,
            ..Default::default()
        };
        let sms = SendContext {
            channel: Channel::Sms,
            ..ctx("2024-01-10T12:00:00Z")
        };
        assert_eq!(
            decide(&no_sms, &sms).unwrap_err().code,
            Code::ChannelNotAllowed
        );
        let capped = SendContext {
            recent: 3,
            ..ctx("2024-01-10T12:00:00Z")
        };
        assert_eq!(
            decide(&Preferences::default(), &capped).unwrap_err().code,
            Code::FrequencyCapExceeded
        );
    }

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
