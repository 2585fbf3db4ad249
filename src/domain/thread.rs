//! Thread matching rules: what makes two subjects the same conversation, and where a case
//! number or a per-case address hides in a mail.

/// The subject without reply and forward prefixes (`Re:`, `Fwd:`, `AW:`, `SV:`, `VS:`, …,
/// also `Re[2]:`), with runs of spaces made one, lower-cased. Two messages with the
/// same normalised subject belong to one thread when nothing better links them.
pub fn normalize_subject(subject: &str) -> String {
    const PREFIXES: [&str; 9] = ["re", "fw", "fwd", "aw", "sv", "vs", "wg", "antw", "tr"];
    let mut s = subject.trim();
    while let Some(colon) = s.find(':') {
        let head = s[..colon].trim();
        let word = head.split('[').next().unwrap_or(head).trim();
        let counter_ok = head.strip_prefix(word).is_none_or(|rest| {
            let rest = rest.trim();
            rest.is_empty()
                || (rest.starts_with('[')
                    && rest.ends_with(']')
                    && rest[1..rest.len() - 1].chars().all(|c| c.is_ascii_digit()))
        });
        if PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(word)) && counter_ok {
            s = s[colon + 1..].trim_start();
        } else {
            break;
        }
    }
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The case id in a per-case reply address `case-<caseId>@<domain>`, if `address` is one at
/// `domain`.
pub fn case_from_address(address: &str, domain: &str) -> Option<String> {
    let (local, at) = address.trim().rsplit_once('@')?;
    if !at.eq_ignore_ascii_case(domain) {
        return None;
    }
    let id = local
        .strip_prefix("case-")
        .or_else(|| local.strip_prefix("CASE-"))?;
    super::CaseId::parse(id).map(|c| c.to_string())
}

/// Words of a subject that could be a case number: they hold a digit and are at most 64
/// characters, without surrounding punctuation.
pub fn case_number_candidates(subject: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in subject.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '[' | ']' | '<' | '>' | '"' | '\''
            )
    }) {
        let w = word.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?' | '#'));
        if !w.is_empty()
            && w.len() <= 64
            && !w.chars().any(char::is_control)
            && w.chars().any(|c| c.is_ascii_digit())
            && !out.iter().any(|o| o == w)
        {
            out.push(w.to_string());
        }
    }
    out.truncate(10);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped_in_any_language_and_number() {
        assert_eq!(
            normalize_subject("Re: RE: Fwd:  Payment   Reminder"),
            "payment reminder"
        );
        assert_eq!(
            normalize_subject("SV: Betalingspåmindelse"),
            "betalingspåmindelse"
        );
        assert_eq!(normalize_subject("AW: Re[2]: Invoice"), "invoice");
        assert_eq!(normalize_subject("Reminder: pay now"), "reminder: pay now");
        assert_eq!(
            normalize_subject("Payment Reminder"),
            normalize_subject("re: payment reminder")
        );
    }

    #[test]
    fn per_case_addresses_name_their_case() {
        let id = "01a213fb-3087-758b-b70e-a9b09686a85a";
        assert_eq!(
            case_from_address(&format!("case-{id}@reply.example.com"), "reply.example.com")
                .as_deref(),
            Some(id)
        );
        assert_eq!(
            case_from_address(&format!("case-{id}@other.example.com"), "reply.example.com"),
            None
        );
        assert_eq!(
            case_from_address("case-nope@reply.example.com", "reply.example.com"),
            None
        );
    }

    #[test]
    fn case_numbers_are_found_in_subjects() {
        assert_eq!(
            case_number_candidates("Re: Collection Notice - DEB-2024-12345."),
            ["DEB-2024-12345"]
        );
        assert!(case_number_candidates("Hello there").is_empty());
    }
}
