//! SMS segment counting: GSM-7 (with its extension table) when every character fits,
//! otherwise UCS-2.

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{000C}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "GSM-7",
            Self::Ucs2 => "UCS-2",
        }
    }
}

/// The encoding a text needs and the number of segments it is sent in.
pub fn segments(text: &str) -> (Encoding, u32) {
    let septets: Option<u32> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    match septets {
        Some(n) => (Encoding::Gsm7, if n <= 160 { 1 } else { n.div_ceil(153) }),
        None => {
            let units = u32::try_from(text.encode_utf16().count()).unwrap_or(u32::MAX);
            (
                Encoding::Ucs2,
                if units <= 70 { 1 } else { units.div_ceil(67) },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gsm7_and_ucs2_segments() {
        assert_eq!(
            segments("Payment reminder: Invoice INV-2024-001 due. Please contact us."),
            (Encoding::Gsm7, 1)
        );
        assert_eq!(segments(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(segments(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(
            segments(&"€".repeat(80)),
            (Encoding::Gsm7, 1),
            "extension characters take two septets"
        );
        assert_eq!(segments(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(segments("Betal venligst, kære Søren"), (Encoding::Gsm7, 1));
        assert_eq!(segments("Zaplaťte prosím"), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ť".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(segments("💶"), (Encoding::Ucs2, 1));
    }
}
