//! Tracking and unsubscribe links: opaque tokens sealed with the master key (so they can be
//! neither forged nor read), the open pixel and link rewriting of the HTML part.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use crate::crypto::KeyRing;
use crate::domain::template::html_escape;

const CONTEXT: &str = "tracking-link";

/// What a link stands for: its message and, in mail to several recipients, the recipient
/// whose copy carries it (`r`, a place among `to` then `cc`; absent in a message's only
/// copy, and in links made before copies were per recipient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Link {
    #[serde(rename = "o")]
    Open {
        m: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<u8>,
    },
    #[serde(rename = "c")]
    Click {
        m: String,
        u: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<u8>,
    },
    #[serde(rename = "u")]
    Unsubscribe {
        m: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<u8>,
    },
}

pub fn seal(keys: &KeyRing, link: &Link) -> String {
    let json = serde_json::to_vec(link).expect("a link serialises");
    B64URL.encode(keys.seal(CONTEXT, &json))
}

/// `None` for anything not sealed by us, tampered with, or malformed.
pub fn open(keys: &KeyRing, token: &str) -> Option<Link> {
    let sealed = B64URL.decode(token).ok()?;
    let json = keys.open(CONTEXT, &sealed).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The envelope sender (VERP) of an outbound email,
/// `bounce+<message hex>-<mac>@<inbound domain>`, or for the copy of one of several
/// recipients `bounce+<message hex>.<recipient>-<mac>@…`: a delivery status notification
/// sent to it proves which message, and which recipient's copy, it answers. The address fits
/// the 64 octets of a local part and survives relays that lower-case it.
pub fn bounce_address(
    keys: &KeyRing,
    message_id: &str,
    inbound_domain: &str,
    recipient: Option<usize>,
) -> Option<String> {
    let hex = message_id.strip_prefix("msg_")?;
    let (tag, signed) = match recipient {
        Some(i) => (format!("{hex}.{i}"), format!("{message_id}.{i}")),
        None => (hex.to_string(), message_id.to_string()),
    };
    let mac = keys.blind_index("verp", &signed);
    Some(format!("bounce+{tag}-{}@{inbound_domain}", &mac[..16]))
}

/// What a bounce address names: the message and, for one recipient's copy, the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    pub message_id: String,
    pub recipient: Option<usize>,
}

/// The message (and recipient) a bounce address names, if it is one of ours with a valid
/// token.
pub fn bounced_message(keys: &KeyRing, address: &str, inbound_domain: &str) -> Option<Returned> {
    let (local, domain) = address.trim().rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(inbound_domain) {
        return None;
    }
    let token = local.to_ascii_lowercase();
    let (tag, mac) = token.strip_prefix("bounce+")?.split_once('-')?;
    let (hex, recipient) = match tag.split_once('.') {
        Some((hex, i)) if (1..=3).contains(&i.len()) && i.bytes().all(|b| b.is_ascii_digit()) => {
            (hex, Some(i.parse::<usize>().ok()?))
        }
        Some(_) => return None,
        None => (tag, None),
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let message_id = format!("msg_{hex}");
    let signed = match recipient {
        Some(i) => format!("{message_id}.{i}"),
        None => message_id.clone(),
    };
    let expected = keys.blind_index("verp", &signed);
    let valid: bool = expected.as_bytes()[..16]
        .iter()
        .zip(mac.as_bytes())
        .fold(mac.len() == 16, |ok, (a, b)| ok & (a == b));
    valid.then_some(Returned {
        message_id,
        recipient,
    })
}

pub struct LinkMaker<'a> {
    pub keys: &'a KeyRing,
    pub public_url: &'a str,
    pub message_id: &'a str,
    /// The recipient whose copy the links are for, when a message has several.
    pub recipient: Option<usize>,
}

impl LinkMaker<'_> {
    fn r(&self) -> Option<u8> {
        self.recipient.and_then(|i| u8::try_from(i).ok())
    }

    pub fn open_pixel(&self) -> String {
        let link = Link::Open {
            m: self.message_id.to_string(),
            r: self.r(),
        };
        format!("{}/t/open/{}", self.public_url, seal(self.keys, &link))
    }

    pub fn click(&self, url: &str) -> String {
        let link = Link::Click {
            m: self.message_id.to_string(),
            u: url.to_string(),
            r: self.r(),
        };
        format!("{}/t/click/{}", self.public_url, seal(self.keys, &link))
    }

    pub fn unsubscribe(&self) -> String {
        let link = Link::Unsubscribe {
            m: self.message_id.to_string(),
            r: self.r(),
        };
        format!("{}/unsubscribe/{}", self.public_url, seal(self.keys, &link))
    }
}

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

    #[test]
    fn bounce_addresses_name_their_message_and_cannot_be_forged() {
        let keys = KeyRing::new(&[1; 32], &[]);
        let id = "msg_0192f0c4a1b27c3d8e9f0a1b2c3d4e5f";
        let address = bounce_address(&keys, id, "inbound.example", None).unwrap();
        assert!(address.split('@').next().unwrap().len() <= 64, "{address}");
        let whole = Some(Returned {
            message_id: id.to_string(),
            recipient: None,
        });
        assert_eq!(bounced_message(&keys, &address, "inbound.example"), whole);
        assert_eq!(
            bounced_message(&keys, &address.to_uppercase(), "INBOUND.EXAMPLE"),
            whole,
            "relays may change the case"
        );
        // One recipient's copy: its own address, which names that recipient only.
        let copy = bounce_address(&keys, id, "inbound.example", Some(99)).unwrap();
        assert!(copy.split('@').next().unwrap().len() <= 64, "{copy}");
        assert_eq!(
            bounced_message(&keys, &copy, "inbound.example"),
            Some(Returned {
                message_id: id.to_string(),
                recipient: Some(99)
            })
        );
        let moved = copy.replacen(".99-", ".98-", 1);
        assert_eq!(bounced_message(&keys, &moved, "inbound.example"), None);
        let forged = address.replacen("-", "-0", 1);
        assert_eq!(bounced_message(&keys, &forged, "inbound.example"), None);
        let other = address.replace("0192", "0193");
        assert_eq!(bounced_message(&keys, &other, "inbound.example"), None);
        assert_eq!(bounced_message(&keys, &address, "elsewhere.example"), None);
        let stranger = KeyRing::new(&[2; 32], &[]);
        assert_eq!(
            bounced_message(&stranger, &address, "inbound.example"),
            None
        );
    }

    fn keys() -> KeyRing {
        KeyRing::new(&[9; 32], &[])
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let k = keys();
        let link = Link::Click {
            m: "msg_1".into(),
            u: "https://pay.example.com/?a=1&b=2".into(),
            r: Some(3),
        };
        let token = seal(&k, &link);
        assert_eq!(open(&k, &token), Some(link));
        let mut bytes = token.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(open(&k, &String::from_utf8(bytes).unwrap()), None);
        assert_eq!(open(&k, "not-a-token"), None);
        assert_eq!(
            open(
                &KeyRing::new(&[1; 32], &[]),
                &seal(
                    &k,
                    &Link::Open {
                        m: "x".into(),
                        r: None
                    }
                )
            ),
            None
        );
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
        let maker = LinkMaker {
            keys: &k,
            public_url: "http://t.example",
            message_id: "msg_1",
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
                m: "msg_1".into(),
                u: "https://pay.example.com/?a=1&b=2".into(),
                r: None
            })
        );
        assert!(html.contains("http://t.example/t/open/"));
        assert!(html.contains("unsubscribe"));
    }
}

/// What the links record: opens and clicks as status events, unsubscribes as suppressions.
#[derive(Clone)]
pub struct Tracking {
    store: crate::store::Store,
    clock: crate::domain::clock::SharedClock,
}

impl Tracking {
    pub fn new(store: crate::store::Store, clock: crate::domain::clock::SharedClock) -> Self {
        Self { store, clock }
    }

    /// What a token from one of our links stands for; `None` for anything else.
    pub fn link(&self, token: &str) -> Option<Link> {
        open(self.store.keys(), token)
    }

    /// Records an open or a click of a message.
    #[tracing::instrument(skip_all)]
    pub async fn record(
        &self,
        message_id: &str,
        event: crate::domain::message::MessageStatus,
    ) -> super::AppResult<()> {
        self.store
            .record_status_event(message_id, event, self.clock.now(), None, None)
            .await?;
        Ok(())
    }

    /// Suppresses the recipient of the link's copy for the creditor whose message it was;
    /// `false` for a message that is gone.
    #[tracing::instrument(skip_all)]
    pub async fn unsubscribe(
        &self,
        message_id: &str,
        recipient: Option<u8>,
    ) -> super::AppResult<bool> {
        Ok(self
            .store
            .unsubscribe(message_id, recipient.map(usize::from))
            .await?)
    }
}
