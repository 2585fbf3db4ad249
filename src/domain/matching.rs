//! How a received mail or SMS finds its case, and what a debtor's words ask: the rules, apart
//! from the look-ups that answer them.
//!
//! A mail is tried, in this order, by the message it answers (`In-Reply-To`, `References`),
//! by a per-case reply address (`case-<id>@<inbound domain>`), and by a case number in its
//! subject, as a whole word, when that names exactly one case (creditors choose numbers
//! freely, so two tenants may share one). An SMS goes to the case that last sent an SMS to
//! its number, else to the only case whose debtor has that number.

use super::mail::InboundMail;
use super::thread::{case_from_address, case_number_candidates};

/// How a mail found its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// It answers a message of the case; `held` when that message was itself held for
    /// review (its sender not known to the case).
    Reply { held: bool },
    /// It was sent to the case's reply address.
    Address,
    /// Its subject names the case's number.
    Subject,
}

impl MatchedBy {
    /// Anyone can write a case number into a subject, or answer mail held for review: from
    /// a stranger, that alone is not enough for the mail to act on the case, so its sender
    /// must be known to the case.
    pub fn needs_known_sender(self) -> bool {
        matches!(self, Self::Subject | Self::Reply { held: true })
    }
}

/// The case ids a mail's recipients name by per-case addresses at `inbound_domain`, in the
/// order `To`, `Cc`, the envelope's.
pub fn addressed_cases(mail: &InboundMail, inbound_domain: &str) -> Vec<String> {
    mail.to
        .iter()
        .chain(&mail.cc)
        .chain(&mail.delivered_to)
        .filter_map(|a| case_from_address(a, inbound_domain))
        .collect()
}

/// The case numbers a mail's subject may name.
pub fn subject_numbers(mail: &InboundMail) -> Vec<String> {
    case_number_candidates(mail.subject.as_deref().unwrap_or_default())
}

/// The one candidate, when there is exactly one: several are a guess, which an admin makes
/// on the unmatched list instead.
pub fn single<T: Clone>(candidates: &[T]) -> Option<T> {
    match candidates {
        [only] => Some(only.clone()),
        _ => None,
    }
}

/// The words carriers and regulators treat as an opt-out, alone in a message.
pub fn is_stop_word(body: &str) -> bool {
    const WORDS: [&str; 8] = [
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "afmeld",
        "optout",
    ];
    let word = body.trim().trim_end_matches(['.', '!']).to_lowercase();
    WORDS.contains(&word.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_word_alone_is_an_opt_out_and_in_a_sentence_is_not() {
        for word in ["STOP", " stop. ", "Afmeld!", "unsubscribe"] {
            assert!(is_stop_word(word), "{word}");
        }
        for text in ["please stop calling", "stopper", ""] {
            assert!(!is_stop_word(text), "{text}");
        }
    }

    #[test]
    fn only_a_reply_to_held_mail_or_a_subject_needs_a_known_sender() {
        assert!(MatchedBy::Subject.needs_known_sender());
        assert!(MatchedBy::Reply { held: true }.needs_known_sender());
        assert!(!MatchedBy::Reply { held: false }.needs_known_sender());
        assert!(!MatchedBy::Address.needs_known_sender());
    }

    #[test]
    fn a_single_candidate_is_taken_and_several_are_not() {
        assert_eq!(single(&["a"]), Some("a"));
        assert_eq!(single::<&str>(&[]), None);
        assert_eq!(single(&["a", "b"]), None);
    }
}
