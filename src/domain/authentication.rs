//! What checking a received mail's sender found (SPF, DKIM, DMARC and ARC, in the words of
//! RFC 8601's `Authentication-Results`), what its spam filter said, and the rule of when the
//! `From:` address is proven: only then may a mail count as coming from a case's debtor.

use serde::{Deserialize, Serialize};

use super::word_enum;

word_enum!(
    /// One method's result (RFC 8601 §2.7).
    Verdict, "verdict" {
        Pass => "pass",
        Fail => "fail",
        SoftFail => "softfail",
        Neutral => "neutral",
        None => "none",
        TempError => "temperror",
        PermError => "permerror",
    }
);

/// The sender authentication of one received mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// SPF of the SMTP client for the envelope sender (`none` for mail not taken by SMTP,
    /// where no client is known).
    pub spf: Verdict,
    /// `pass` when one DKIM signature verified, else the first signature's result.
    pub dkim: Verdict,
    /// DMARC of the `From:` domain: `pass` when SPF or DKIM passed aligned with it, `fail`
    /// when neither did, `none` when the domain publishes no policy.
    pub dmarc: Verdict,
    /// The ARC chain (RFC 8617) of mail forwarded by relays that seal it.
    pub arc: Verdict,
    /// The `From:` domain is proven: DMARC passed, or the domain publishes no DMARC policy
    /// and SPF or DKIM passed for the same organisational domain, or a trusted forwarder
    /// (`PARLEY_INBOUND_ARC_SEALERS`) sealed an ARC chain that verified, saying DMARC passed
    /// when it took the mail.
    pub from_verified: bool,
}

/// What proves a `From:` domain besides DMARC: `aligned`, SPF or DKIM passed for its
/// organisational domain; `arc_vouched`, a trusted sealer's verified ARC set says DMARC
/// passed when it took the mail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proof {
    pub aligned: bool,
    pub arc_vouched: bool,
}

impl Authentication {
    /// What SPF, DKIM, DMARC and ARC found, and whether that proves the `From:` domain.
    pub fn new(spf: Verdict, dkim: Verdict, dmarc: Verdict, arc: Verdict, proof: Proof) -> Self {
        let from_verified = proof.arc_vouched
            || match dmarc {
                Verdict::Pass => true,
                Verdict::None => proof.aligned,
                _ => false,
            };
        Self {
            spf,
            dkim,
            dmarc,
            arc,
            from_verified,
        }
    }

    /// The `From:` domain says the mail is not its own: DMARC failed (and no trusted
    /// forwarder vouches for it). Such a mail is held for review however it found its case.
    pub fn forged(&self) -> bool {
        self.dmarc == Verdict::Fail && !self.from_verified
    }
}

/// The organisational domain of `domain` (RFC 7489 §3.2), by its last two labels, or three
/// under a second-level public suffix in common use (`co.uk`, `com.au`, ...). Alignment is
/// compared on it.
pub fn organisational(domain: &str) -> &str {
    const SECOND_LEVEL: &[&str] = &[
        "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "com.au", "net.au",
        "org.au", "co.nz", "org.nz", "co.jp", "or.jp", "ne.jp", "com.br", "co.za", "com.cn",
        "com.tr", "co.in", "com.mx", "com.sg", "com.hk",
    ];
    let domain = domain.trim_end_matches('.');
    let labels: Vec<usize> = domain.match_indices('.').map(|(i, _)| i).collect();
    // The last `k` labels.
    let last = |k: usize| -> &str {
        if labels.len() < k {
            domain
        } else {
            &domain[labels[labels.len() - k] + 1..]
        }
    };
    let two = last(2);
    if SECOND_LEVEL.iter().any(|s| two.eq_ignore_ascii_case(s)) {
        last(3)
    } else {
        two
    }
}

/// What the spam filter said of a received mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpamCheck {
    /// The filter's score; absent when it could not be asked (`checked` false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Scored at or above `PARLEY_INBOUND_SPAM_MARK` (and below the reject score): kept,
    /// marked, and held for review.
    pub marked: bool,
    /// `false`: the filter did not answer in time, and the mail was taken unchecked.
    pub checked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_organisational_domain_is_the_last_two_labels_or_three_under_known_suffixes() {
        assert_eq!(organisational("mail.example.com"), "example.com");
        assert_eq!(organisational("example.com"), "example.com");
        assert_eq!(organisational("com"), "com");
        assert_eq!(organisational("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(organisational("example.co.uk."), "example.co.uk");
        assert_eq!(organisational("x.debitor.dk"), "debitor.dk");
    }

    #[test]
    fn the_from_domain_is_proven_by_dmarc_or_without_a_policy_by_alignment() {
        use Verdict::*;
        let aligned = Proof {
            aligned: true,
            arc_vouched: false,
        };
        let nothing = Proof::default();
        let vouched = Proof {
            aligned: false,
            arc_vouched: true,
        };
        assert!(Authentication::new(Fail, Pass, Pass, None, aligned).from_verified);
        assert!(!Authentication::new(Pass, Pass, Fail, None, aligned).from_verified);
        assert!(Authentication::new(Pass, None, None, None, aligned).from_verified);
        assert!(!Authentication::new(Pass, None, None, None, nothing).from_verified);
        assert!(!Authentication::new(Pass, Pass, TempError, None, aligned).from_verified);
        assert!(Authentication::new(Pass, Pass, Fail, None, aligned).forged());
        assert!(!Authentication::new(None, None, None, None, nothing).forged());
        // Forwarded: SPF and DMARC fail at parley, a trusted forwarder's ARC says it passed.
        let forwarded = Authentication::new(Fail, None, Fail, Pass, vouched);
        assert!(forwarded.from_verified && !forwarded.forged());
    }
}
