//! Message templates: `{{name}}` placeholders, rendered strictly, and the choice of language.

use std::collections::BTreeMap;

use super::Invalid;

/// One piece of a parsed template text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Splits a text into literal pieces and `{{ name }}` placeholders. An opening `{{` without
/// a valid name and closing `}}` is an error, so a typo never reaches a debtor as raw braces.
fn parse(text: &str) -> Result<Vec<Piece<'_>>, Invalid> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Invalid::new("template has an opening {{ without a closing }}"))?;
        let name = after[..end].trim();
        if !is_name(name) {
            return Err(Invalid::new(format!(
                "template placeholder {{{{{}}}}} is not a variable name",
                &after[..end]
            )));
        }
        pieces.push(Piece::Var(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Checks a template text; used when a template is stored.
pub fn validate(text: &str) -> Result<(), Invalid> {
    parse(text).map(|_| ())
}

/// The variables of the given texts, in order of first appearance.
pub fn variables<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        for piece in parse(text).unwrap_or_default() {
            if let Piece::Var(v) = piece
                && !out.iter().any(|o| o == v)
            {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// Variables a rendering lacked, in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<String>);

/// Renders `text`, escaping each value with `escape` (identity for text, HTML escaping for
/// the HTML part). Every placeholder must have a value.
pub fn render(
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: fn(&str) -> String,
) -> Result<String, Missing> {
    let pieces = parse(text).map_err(|_| Missing(Vec::new()))?;
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => match vars.get(v) {
                Some(value) => out.push_str(&escape(value)),
                None if !missing.iter().any(|m| m == v) => missing.push(v.to_string()),
                None => {}
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(Missing(missing))
    }
}

pub fn plain(s: &str) -> String {
    s.to_string()
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The best of `available` for the wanted languages, tried in order: an exact match, then
/// the same primary language (`en-GB` finds `en`, `da` finds `da-DK`).
pub fn choose_language<'a>(available: &'a [String], wanted: &[Option<&str>]) -> Option<&'a str> {
    for want in wanted.iter().flatten() {
        if let Some(exact) = available.iter().find(|a| a.eq_ignore_ascii_case(want)) {
            return Some(exact);
        }
        let primary = want.split('-').next().unwrap_or(want);
        if let Some(close) = available.iter().find(|a| {
            a.split('-')
                .next()
                .unwrap_or(a)
                .eq_ignore_ascii_case(primary)
        }) {
            return Some(close);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_every_placeholder() {
        let v = vars(&[("invoiceNumber", "INV-2024-001"), ("amount", "15,000 DKK")]);
        assert_eq!(
            render("Invoice {{invoiceNumber}}: {{ amount }} due", &v, plain).unwrap(),
            "Invoice INV-2024-001: 15,000 DKK due"
        );
    }

    #[test]
    fn names_each_missing_variable_once() {
        let err = render("{{a}} {{b}} {{a}} {{c}}", &vars(&[("b", "x")]), plain).unwrap_err();
        assert_eq!(err.0, ["a", "c"]);
    }

    #[test]
    fn escapes_values_in_html() {
        let v = vars(&[("name", "<script>alert(1)</script>")]);
        assert_eq!(
            render("<p>{{name}}</p>", &v, html_escape).unwrap(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
    }

    #[test]
    fn variables_in_order_of_first_appearance() {
        let v = variables([
            "Payment Reminder - Invoice {{invoiceNumber}}",
            "{{amount}} {{dueDate}} {{debtorName}} {{amount}}",
        ]);
        assert_eq!(v, ["invoiceNumber", "amount", "dueDate", "debtorName"]);
    }

    #[test]
    fn broken_placeholders_are_refused() {
        assert!(validate("Hello {{name").is_err());
        assert!(validate("Hello {{ two words }}").is_err());
        assert!(validate("Hello {{}}").is_err());
        assert!(validate("Hello { name } and }} alone").is_ok());
    }

    #[test]
    fn language_falls_back_by_primary_subtag_then_order() {
        let available = vec!["en".to_string(), "da".to_string()];
        assert_eq!(
            choose_language(&available, &[Some("da-DK"), Some("en")]),
            Some("da")
        );
        assert_eq!(
            choose_language(&available, &[None, Some("de"), Some("en")]),
            Some("en")
        );
        assert_eq!(choose_language(&available, &[Some("de")]), None);
    }
}
