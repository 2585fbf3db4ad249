//! Outbound email: the MIME message (multipart/alternative, Message-ID, per-case Reply-To,
//! threading headers, RFC 8058 one-click unsubscribe, tracked HTML) and its transports.

use crate::domain::CaseId;
use std::path::PathBuf;

use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::SendError;
use super::html::{html_from_text, tracked_html};
use crate::app::tracking::{LinkMaker, bounce_address};
use crate::store::Outgoing;

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

/// The per-case reply address: replies to it find their case.
pub fn case_address(case_id: &CaseId, inbound_domain: &str) -> String {
    format!("case-{case_id}@{inbound_domain}")
}

/// Everything about an email that is not in the message row.
pub struct EmailContext<'a> {
    pub from: &'a str,
    pub inbound_domain: &'a str,
    pub links: LinkMaker<'a>,
}

/// The email of `m`: multipart/alternative, or with attachments multipart/mixed, whose
/// attachment parts [`super::attach`] streams in after the text (`Composed::Mixed`).
pub enum Composed {
    Whole(Message),
    Mixed {
        envelope: lettre::address::Envelope,
        /// Headers and the text parts, up to (not including) the closing boundary.
        head: Vec<u8>,
        boundary: String,
    },
}

pub fn build(m: &Outgoing, ctx: &EmailContext<'_>) -> Result<Composed, SendError> {
    let permanent =
        |what: &str, e: &dyn std::fmt::Display| SendError::Permanent(format!("{what}: {e}"));
    let mailbox = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| permanent("invalid address", &e))
    };
    let unsubscribe = ctx.links.unsubscribe();
    // The envelope sender is the message's own bounce address (VERP): a bounce that does
    // not come back to it is not believed.
    let address = |s: &str| {
        s.parse::<lettre::Address>()
            .map_err(|e| permanent("invalid address", &e))
    };
    let recipient = ctx.links.recipient;
    let bounce_to = bounce_address(ctx.links.keys, &m.id, ctx.inbound_domain, recipient)
        .ok_or_else(|| permanent("no bounce address for", &m.id))?;
    // The copy of one recipient goes to that recipient alone; the headers still name all.
    let recipients = m
        .envelope
        .to
        .iter()
        .chain(&m.envelope.cc)
        .enumerate()
        .filter(|(i, _)| recipient.is_none_or(|only| only == *i))
        .map(|(_, r)| address(r))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = lettre::address::Envelope::new(Some(address(&bounce_to)?), recipients)
        .map_err(|e| permanent("building the envelope", &e))?;
    let mut builder = Message::builder()
        .envelope(envelope)
        .from(mailbox(ctx.from)?)
        .reply_to(mailbox(&case_address(&m.case_id, ctx.inbound_domain))?)
        .subject(m.subject.clone().unwrap_or_default())
        .message_id(m.rfc_message_id.clone())
        .header(ListUnsubscribe(format!("<{unsubscribe}>")))
        .header(ListUnsubscribePost);
    for to in &m.envelope.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in &m.envelope.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    if let Some(parent) = &m.in_reply_to {
        builder = builder
            .in_reply_to(parent.clone())
            .references(parent.clone());
    }
    let text = format!(
        "{}\n\n--\nTo stop receiving these emails, unsubscribe: {unsubscribe}\n",
        m.body.trim_end()
    );
    let html_source = m.html.clone().unwrap_or_else(|| html_from_text(&m.body));
    let html = tracked_html(&html_source, &ctx.links, &unsubscribe);
    let alternative = MultiPart::alternative_plain_html(text, html);
    if !m.has_attachments {
        return builder
            .multipart(alternative)
            .map(Composed::Whole)
            .map_err(|e| permanent("building the message", &e));
    }
    let boundary = format!("parley-mixed-{}", uuid::Uuid::new_v4().simple());
    let message = builder
        .multipart(
            MultiPart::mixed()
                .boundary(boundary.clone())
                .multipart(alternative),
        )
        .map_err(|e| permanent("building the message", &e))?;
    let mut head = message.formatted();
    let close = format!("--{boundary}--\r\n");
    if !head.ends_with(close.as_bytes()) {
        return Err(SendError::Permanent(
            "building the message: unexpected end of the multipart body".into(),
        ));
    }
    head.truncate(head.len() - close.len());
    Ok(Composed::Mixed {
        envelope: message.envelope().clone(),
        head,
        boundary,
    })
}

pub enum EmailTransport {
    Smtp(crate::wire::smtp::SmtpClient),
    /// `<data>/outbox/<message id>.eml`
    Outbox(PathBuf),
}

impl EmailTransport {
    /// SMTP from `smtp://` (STARTTLS when the server offers it) or `smtps://`, with at most
    /// `connections` open at once (`smtp.rs`); without a URL, `.eml` files
    /// in the outbox folder.
    pub fn new(
        smtp_url: Option<&str>,
        outbox: PathBuf,
        connections: usize,
    ) -> anyhow::Result<Self> {
        match smtp_url {
            Some(url) => Ok(Self::Smtp(crate::wire::smtp::SmtpClient::from_url(
                url,
                connections,
            )?)),
            None => Ok(Self::Outbox(outbox)),
        }
    }

    /// Sends a message spooled to `path` (`attach.rs`), after `prefix` (a signature header);
    /// the outbox keeps a copy of it.
    pub async fn send_spooled(
        &self,
        id: &str,
        envelope: &lettre::address::Envelope,
        prefix: &[u8],
        path: &std::path::Path,
    ) -> Result<(), SendError> {
        match self {
            Self::Smtp(client) => match client.send_file(envelope, prefix, path).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(format!(
                    "SMTP server refused the message: {e}"
                ))),
                Err(e) => Err(SendError::Transient {
                    reason: format!("SMTP: {e}"),
                    retry_after: None,
                }),
            },
            Self::Outbox(dir) => {
                let moved = async {
                    tokio::fs::create_dir_all(dir).await?;
                    let tmp = dir.join(format!(".{id}.eml.tmp"));
                    let mut out = tokio::fs::File::create(&tmp).await?;
                    tokio::io::AsyncWriteExt::write_all(&mut out, prefix).await?;
                    let mut spooled = tokio::fs::File::open(path).await?;
                    tokio::io::copy(&mut spooled, &mut out).await?;
                    out.sync_data().await?;
                    tokio::fs::rename(&tmp, dir.join(format!("{id}.eml"))).await
                };
                moved.await.map_err(|e| SendError::Transient {
                    reason: format!("writing the outbox: {e}"),
                    retry_after: None,
                })
            }
        }
    }

    /// Sends a whole message (`bytes`, the formatted message with any signature before it).
    pub async fn send(
        &self,
        id: &str,
        envelope: &lettre::address::Envelope,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        match self {
            Self::Smtp(client) => match client.send(envelope, bytes).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(format!(
                    "SMTP server refused the message: {e}"
                ))),
                Err(e) => Err(SendError::Transient {
                    reason: format!("SMTP: {e}"),
                    retry_after: None,
                }),
            },
            Self::Outbox(dir) => super::write_outbox(dir, &format!("{id}.eml"), bytes)
                .await
                .map_err(|e| SendError::Transient {
                    reason: format!("writing the outbox: {e}"),
                    retry_after: None,
                }),
        }
    }
}
