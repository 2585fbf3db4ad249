//! The HTML part of an outbound email: made from the plain text when the sender gave none,
//! then every web link rewritten into a tracked one, the unsubscribe line and the open pixel
//! added (their sealed tokens made by [`LinkMaker`]).

use crate::app::tracking::LinkMaker;
use crate::domain::template::html_escape;

/// An HTML part for a plain-text body: paragraphs, line breaks, and web addresses as links.
pub fn html_from_text(text: &str) -> String {
    let mut html = String::new();
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        html.push_str("<p>");
        let lines: Vec<String> = para.lines().map(autolink).collect();
        html.push_str(&lines.join("<br>\n"));
        html.push_str("</p>\n");
    }
    html
}

fn autolink(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&html_escape(&rest[..start]));
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ')', ';', ':', '!', '?']);
        out.push_str(&format!("<a href=\"{0}\">{0}</a>", html_escape(url)));
        rest = &tail[url.len()..];
    }
    out.push_str(&html_escape(rest));
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Rewrites every `href` to an http(s) address into a tracked link, adds the unsubscribe line
/// and the open pixel, and wraps the result as a document.
pub fn tracked_html(html: &str, links: &LinkMaker<'_>, unsubscribe_url: &str) -> String {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 512);
    let mut at = 0;
    while let Some(found) = lower[at..].find("href=") {
        let value = at + found + 5;
        out.push_str(&html[at..value]);
        at = value;
        let Some(quote) = html[value..]
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
        else {
            continue;
        };
        let Some(len) = html[value + 1..].find(quote) else {
            break;
        };
        let raw = &html[value + 1..value + 1 + len];
        let url = html_unescape(raw);
        out.push(quote);
        if url.starts_with("http://") || url.starts_with("https://") {
            out.push_str(&html_escape(&links.click(&url)));
        } else {
            out.push_str(raw);
        }
        out.push(quote);
        at = value + len + 2;
    }
    out.push_str(&html[at..]);
    let unsubscribe = html_escape(unsubscribe_url);
    let pixel = html_escape(&links.open_pixel());
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{out}\n\
         <p style=\"font-size:12px;color:#666\">To stop receiving these emails, <a href=\"{unsubscribe}\">unsubscribe</a>.</p>\n\
         <img src=\"{pixel}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0\">\n</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tracking::{Link, open};
    use crate::crypto::KeyRing;

    fn keys() -> KeyRing {
        KeyRing::new(&[9; 32], &[])
    }

    #[test]
    fn html_from_text_escapes_and_links() {
        let html = html_from_text(
            "Dear <customer>,\nplease pay at https://pay.example.com/x?a=1&b=2.\n\nThanks",
        );
        assert!(html.contains("Dear &lt;customer&gt;,<br>"));
        assert!(html.contains("<a href=\"https://pay.example.com/x?a=1&amp;b=2\">"));
        assert!(html.contains("</a>.<br>") || html.contains("</a>.</p>"));
        assert!(html.contains("<p>Thanks</p>"));
    }

    #[test]
    fn links_are_rewritten_and_pixel_added() {
        let k = keys();
        let id = crate::domain::MessageId::new();
        let maker = LinkMaker {
            keys: &k,
            public_url: "http://t.example",
            message_id: &id,
            recipient: None,
        };
        let html = tracked_html(
            "<a href=\"https://pay.example.com/?a=1&amp;b=2\">Pay</a> <a href='mailto:x@y.z'>mail</a>",
            &maker,
            "http://t.example/unsubscribe/x",
        );
        assert!(!html.contains("https://pay.example.com"), "{html}");
        assert!(html.contains("href='mailto:x@y.z'"));
        let start =
            html.find("http://t.example/t/click/").unwrap() + "http://t.example/t/click/".len();
        let token: String = html[start..].chars().take_while(|c| *c != '"').collect();
        assert_eq!(
            open(&k, &token),
            Some(Link::Click {
                m: id.clone(),
                u: "https://pay.example.com/?a=1&b=2".into(),
                r: None
            })
        );
        assert!(html.contains("http://t.example/t/open/"));
        assert!(html.contains("unsubscribe"));
    }
}
