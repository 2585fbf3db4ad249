//! Tracking and unsubscribe links: opaque tokens sealed with the master key (so they can be
//! neither forged nor read), the open pixel and link rewriting of the HTML part.

use crate::domain::MessageId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use crate::crypto::KeyRing;

const CONTEXT: &str = "tracking-link";

/// What a link stands for: its message and, in mail to several recipients, the recipient
/// whose copy carries it (`r`, a place among `to` then `cc`; absent in a message's only
/// copy, and in links made before copies were per recipient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Link {
    #[serde(rename = "o")]
    Open {
        m: MessageId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<u8>,
    },
    #[serde(rename = "c")]
    Click {
        m: MessageId,
        u: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<u8>,
    },
    #[serde(rename = "u")]
    Unsubscribe {
        m: MessageId,
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
    message_id: &MessageId,
    inbound_domain: &str,
    recipient: Option<usize>,
) -> Option<String> {
    let hex = message_id.as_str().strip_prefix("msg_")?;
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
    pub message_id: MessageId,
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
    let message_id = MessageId::parse(&format!("msg_{hex}"))?;
    let signed = match recipient {
        Some(i) => format!("{message_id}.{i}"),
        None => message_id.to_string(),
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
    pub message_id: &'a MessageId,
    /// The recipient whose copy the links are for, when a message has several.
    pub recipient: Option<usize>,
}

impl LinkMaker<'_> {
    fn r(&self) -> Option<u8> {
        self.recipient.and_then(|i| u8::try_from(i).ok())
    }

    pub fn open_pixel(&self) -> String {
        let link = Link::Open {
            m: self.message_id.clone(),
            r: self.r(),
        };
        format!("{}/t/open/{}", self.public_url, seal(self.keys, &link))
    }

    pub fn click(&self, url: &str) -> String {
        let link = Link::Click {
            m: self.message_id.clone(),
            u: url.to_string(),
            r: self.r(),
        };
        format!("{}/t/click/{}", self.public_url, seal(self.keys, &link))
    }

    pub fn unsubscribe(&self) -> String {
        let link = Link::Unsubscribe {
            m: self.message_id.clone(),
            r: self.r(),
        };
        format!("{}/unsubscribe/{}", self.public_url, seal(self.keys, &link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_addresses_name_their_message_and_cannot_be_forged() {
        let keys = KeyRing::new(&[1; 32], &[]);
        let id = MessageId::parse("msg_0192f0c4a1b27c3d8e9f0a1b2c3d4e5f").unwrap();
        let address = bounce_address(&keys, &id, "inbound.example", None).unwrap();
        assert!(address.split('@').next().unwrap().len() <= 64, "{address}");
        let whole = Some(Returned {
            message_id: id.clone(),
            recipient: None,
        });
        assert_eq!(bounced_message(&keys, &address, "inbound.example"), whole);
        assert_eq!(
            bounced_message(&keys, &address.to_uppercase(), "INBOUND.EXAMPLE"),
            whole,
            "relays may change the case"
        );
        // One recipient's copy: its own address, which names that recipient only.
        let copy = bounce_address(&keys, &id, "inbound.example", Some(99)).unwrap();
        assert!(copy.split('@').next().unwrap().len() <= 64, "{copy}");
        assert_eq!(
            bounced_message(&keys, &copy, "inbound.example"),
            Some(Returned {
                message_id: id.clone(),
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
            m: MessageId::new(),
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
                        m: MessageId::new(),
                        r: None
                    }
                )
            ),
            None
        );
    }
}

/// What the links record: opens and clicks as status events, unsubscribes as suppressions.
#[derive(Clone)]
pub struct Tracking {
    messages: crate::store::Messages,
    policy: crate::store::Policy,
    clock: crate::domain::clock::SharedClock,
}

impl Tracking {
    pub fn new(store: &crate::store::Store, clock: crate::domain::clock::SharedClock) -> Self {
        Self {
            messages: store.messages(),
            policy: store.policy(),
            clock,
        }
    }

    /// What a token from one of our links stands for; `None` for anything else.
    pub fn link(&self, token: &str) -> Option<Link> {
        open(self.messages.keys(), token)
    }

    /// Records an open or a click of a message.
    #[tracing::instrument(skip_all)]
    pub async fn record(
        &self,
        message_id: &MessageId,
        event: crate::domain::message::MessageStatus,
    ) -> super::AppResult<()> {
        self.messages
            .record_status_event(message_id, event, self.clock.now(), None, None)
            .await?;
        Ok(())
    }

    /// Suppresses the recipient of the link's copy for the creditor whose message it was;
    /// `false` for a message that is gone.
    #[tracing::instrument(skip_all)]
    pub async fn unsubscribe(
        &self,
        message_id: &MessageId,
        recipient: Option<u8>,
    ) -> super::AppResult<bool> {
        Ok(self
            .policy
            .unsubscribe(message_id, recipient.map(usize::from))
            .await?)
    }
}
