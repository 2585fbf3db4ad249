//! Turning raw RFC 5322 mail into what parley keeps of it, and recognising delivery status
//! notifications (bounces, RFC 3464).

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};

use super::word_enum;

word_enum!(
    /// How a received mail or SMS came in: posted to the API, fetched from an IMAP mailbox,
    /// delivered to parley's SMTP server, an SMS from the provider, or taken from a
    /// Microsoft 365 or Gmail mailbox by its connector.
    Source, "source" {
        Http => "http",
        Imap => "imap",
        Smtp => "smtp",
        Sms => "sms",
        Microsoft365 => "microsoft365",
        Gmail => "gmail",
    }
);

/// A received mail, as far as matching and storing need it.
#[derive(Debug, Clone, Default)]
pub struct InboundMail {
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Addresses the mail was delivered to according to the receiving server
    /// (`Delivered-To`, `X-Original-To`), which Bcc'd per-case addresses only show up in.
    pub delivered_to: Vec<String>,
    pub subject: Option<String>,
    /// `<...>`
    pub message_id: Option<String>,
    /// `In-Reply-To` then `References` (newest first), each `<...>`.
    pub parents: Vec<String>,
    pub text: String,
    pub html: Option<String>,
    pub attachments: usize,
    pub bounce: Option<Bounce>,
}

/// What a delivery status notification reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// `<...>` of the message that could not be delivered.
    pub original_message_id: Option<String>,
    /// `failed` (a bounce) or `delayed`.
    pub action: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
}

impl Bounce {
    pub fn is_failure(&self) -> bool {
        self.action.eq_ignore_ascii_case("failed")
            || self.status.as_deref().is_some_and(|s| s.starts_with('5'))
    }

    /// Whether the failure says the mailbox itself is gone (RFC 3463: `5.1.x`, a bad
    /// address or mailbox; `5.2.1`, a disabled one): a fact about the address, for every
    /// sender. Any other failure (a policy or content refusal `5.7.x`, a size `5.3.4`) may be
    /// about the sender or the mail, and stops only the sender's own mail to it.
    pub fn mailbox_gone(&self) -> bool {
        self.status
            .as_deref()
            .map(str::trim)
            .is_some_and(|s| s.starts_with("5.1.") || s == "5.2.1")
    }

    /// A short reason for the message's `failureReason`.
    pub fn reason(&self) -> String {
        let mut r = format!(
            "bounced ({})",
            self.status.as_deref().unwrap_or(&self.action)
        );
        if let Some(d) = &self.diagnostic {
            r.push_str(": ");
            r.extend(d.chars().take(200));
        }
        r
    }
}

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

fn bracketed(id: &str) -> String {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    format!("<{id}>")
}

/// A message id as it may be looked up: printable and not absurdly long (RFC 5322 ids are
/// printable ASCII); anything else names no message of ours.
fn usable_id(id: &str) -> Option<String> {
    (id.len() <= 998 && !id.chars().any(char::is_control)).then(|| bracketed(id))
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => usable_id(t).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| usable_id(t)).collect(),
        _ => Vec::new(),
    }
}

/// A file a received mail carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The name it came with, cleaned (`domain::document::clean_file_name`); `attachment-N`
    /// when it has none.
    pub file_name: String,
    /// `type/subtype`, lower case.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The attachments of a raw mail, in order. A delivery report carries none (its parts are
/// the report and the returned message).
pub fn attachments(raw: &[u8]) -> Vec<Attachment> {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let is_report = msg.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    if is_report {
        return Vec::new();
    }
    msg.attachments()
        .enumerate()
        .map(|(i, part)| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase();
            let file_name = part
                .attachment_name()
                .map(super::document::clean_file_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("attachment-{}", i + 1));
            Attachment {
                file_name,
                content_type,
                bytes: part.contents().to_vec(),
            }
        })
        .collect()
}

/// Parses a raw mail. `None` when it is not a mail at all (no header could be read).
/// What a mail at the journal address holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journaled {
    /// Not an Exchange journal report: the mail itself is the copy (Gmail's compliance
    /// routing sends the original as it is).
    Copy,
    /// An Exchange journal report (`X-MS-Journal-Report`): the original attached as
    /// `message/rfc822` at its top level, and whether Exchange marked it as sent from inside
    /// the organisation (`X-MS-Exchange-Organization-AuthAs: Internal`, a header Exchange
    /// removes from mail that comes in from outside).
    Report { original: Vec<u8>, internal: bool },
    /// A journal report without an original.
    Empty,
}

pub fn journaled(raw: &[u8]) -> Option<Journaled> {
    let msg = MessageParser::default().parse(raw)?;
    if msg.header_raw("X-MS-Journal-Report").is_none() {
        return Some(Journaled::Copy);
    }
    let children = match msg.parts.first().map(|p| &p.body) {
        Some(mail_parser::PartType::Multipart(children)) => children.clone(),
        _ => Vec::new(),
    };
    let found =
        children
            .iter()
            .find_map(|&i| match &msg.parts.get(usize::try_from(i).ok()?)?.body {
                mail_parser::PartType::Message(inner) => Some(Journaled::Report {
                    original: inner.raw_message().to_vec(),
                    internal: inner
                        .header_raw("X-MS-Exchange-Organization-AuthAs")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("internal")),
                }),
                _ => None,
            });
    Some(found.unwrap_or(Journaled::Empty))
}

pub fn parse(raw: &[u8]) -> Option<InboundMail> {
    let msg = MessageParser::default().parse(raw)?;
    if msg.headers().is_empty() {
        return None;
    }
    let mut parents = id_list(msg.in_reply_to());
    for r in id_list(msg.references()).into_iter().rev() {
        if !parents.contains(&r) {
            parents.push(r);
        }
    }
    let mut delivered_to = Vec::new();
    for name in ["Delivered-To", "X-Original-To"] {
        for h in msg
            .headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
        {
            if let Some(t) = h
                .value()
                .as_text()
                .filter(|t| !t.chars().any(char::is_control))
            {
                delivered_to.push(t.trim().trim_matches(['<', '>']).to_string());
            }
        }
    }
    let is_report = msg.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let bounce = if is_report {
        delivery_status(&msg)
    } else {
        None
    };
    Some(InboundMail {
        from: addresses(msg.from()).into_iter().next(),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        delivered_to,
        subject: msg.subject().map(|s| s.trim().to_string()),
        message_id: msg.message_id().and_then(usable_id),
        parents,
        text: msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        html: msg.body_html(0).map(|h| h.into_owned()),
        attachments: if is_report { 0 } else { msg.attachment_count() },
        bounce,
    })
}

/// The fields of a `message/delivery-status` part and the Message-ID of the returned
/// original (from `message/rfc822` or `text/rfc822-headers`).
fn delivery_status(msg: &mail_parser::Message<'_>) -> Option<Bounce> {
    let mut action = None;
    let mut status = None;
    let mut diagnostic = None;
    let mut original = None;
    for part in msg.parts.iter().skip(1) {
        let Some(text) = part.text_contents() else {
            continue;
        };
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "action" if action.is_none() => action = Some(value.to_string()),
                "status" if status.is_none() => status = Some(value.to_string()),
                "diagnostic-code" if diagnostic.is_none() => diagnostic = Some(value.to_string()),
                "message-id" if original.is_none() && value.contains('@') => {
                    original = usable_id(value)
                }
                _ => {}
            }
        }
    }
    action.map(|action| Bounce {
        original_message_id: original,
        action,
        status,
        diagnostic,
    })
}

/// The domain of an address (lowercase), for rules about whose mail it is.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('>').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    mod fuzz {
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Any bytes at all: parsed or refused, never a panic, and nothing read that
            /// was not there.
            #[test]
            fn any_bytes_parse_or_are_refused(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
                if let Some(mail) = super::super::parse(&raw) {
                    prop_assert!(mail.text.len() <= raw.len() * 4 + 16);
                    prop_assert!(mail.attachments <= raw.len());
                }
            }

            /// Header-shaped lines in any order and number.
            #[test]
            fn header_soup_never_panics(lines in proptest::collection::vec(
                "(From|To|Cc|Subject|Message-ID|In-Reply-To|References|Content-Type|Content-Transfer-Encoding): [ -~]{0,80}", 0..30)) {
                let raw = format!("{}\r\n\r\nbody\r\n", lines.join("\r\n"));
                let _ = super::super::parse(raw.as_bytes());
            }
        }
    }

    #[test]
    fn ids_with_control_characters_name_nothing() {
        let raw = b"From: a@example.com\r\nMessage-ID: <a\x00b@x>\r\nIn-Reply-To: <msg_1@localho\x00st>\r\n\
References: <ok@example.com>\r\n\r\nbody\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.message_id, None);
        assert_eq!(m.parents, ["<ok@example.com>"]);
    }

    #[test]
    fn reads_addresses_ids_and_bodies() {
        let raw = b"From: Debtor <debtor@example.com>\r\nTo: case-x@localhost\r\nCc: a@example.com, b@example.com\r\n\
Subject: Re: Payment Reminder\r\nMessage-ID: <reply-1@example.com>\r\nIn-Reply-To: <msg_1@localhost>\r\n\
References: <msg_0@localhost> <msg_1@localhost>\r\nDelivered-To: case-y@localhost\r\n\r\nI will pay next week.\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.from.as_deref(), Some("debtor@example.com"));
        assert_eq!(m.cc, ["a@example.com", "b@example.com"]);
        assert_eq!(m.message_id.as_deref(), Some("<reply-1@example.com>"));
        assert_eq!(m.parents, ["<msg_1@localhost>", "<msg_0@localhost>"]);
        assert_eq!(m.delivered_to, ["case-y@localhost"]);
        assert_eq!(m.text.trim(), "I will pay next week.");
        assert!(m.bounce.is_none());
    }

    #[test]
    fn recognises_a_delivery_status_notification() {
        let raw = b"From: MAILER-DAEMON@mx.example.com\r\nTo: noreply@localhost\r\nSubject: Undelivered Mail\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n\
Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: noreply@localhost\r\nMessage-ID: <msg_9@localhost>\r\nSubject: Hi\r\n\
--B--\r\n";
        let m = parse(raw).unwrap();
        let b = m.bounce.unwrap();
        assert!(b.is_failure());
        assert_eq!(b.original_message_id.as_deref(), Some("<msg_9@localhost>"));
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.reason().contains("user unknown"));
    }

    #[test]
    fn refuses_what_is_not_mail() {
        assert!(parse(b"").is_none());
    }
}
