//! Document types and file names.

use super::Invalid;

/// The seed's document categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    Invoice,
    Contract,
    Correspondence,
    PaymentProof,
    Settlement,
    Legal,
    Other,
}

impl DocumentType {
    const ALL: [(Self, &'static str); 7] = [
        (Self::Invoice, "invoice"),
        (Self::Contract, "contract"),
        (Self::Correspondence, "correspondence"),
        (Self::PaymentProof, "payment_proof"),
        (Self::Settlement, "settlement"),
        (Self::Legal, "legal"),
        (Self::Other, "other"),
    ];

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL.iter().find(|(_, w)| *w == s).map(|(t, _)| *t).ok_or_else(|| {
            Invalid::new(format!(
                "unknown documentType {s:?}: expected invoice, contract, correspondence, payment_proof, settlement, legal or other"
            ))
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("other", |(_, w)| w)
    }
}

/// A file name as a client may send it, made safe to store and to put in a
/// `Content-Disposition` header: no path, no control characters, at most 200 characters.
pub fn clean_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "document".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_and_name_the_choices() {
        assert_eq!(
            DocumentType::parse("payment_proof").unwrap(),
            DocumentType::PaymentProof
        );
        assert_eq!(DocumentType::PaymentProof.as_str(), "payment_proof");
        assert!(
            DocumentType::parse("receipt")
                .unwrap_err()
                .0
                .contains("payment_proof")
        );
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(clean_file_name("C:\\Users\\x\\invoice.pdf"), "invoice.pdf");
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\r\nb\".pdf"), "ab.pdf");
        assert_eq!(clean_file_name(".."), "document");
    }
}
