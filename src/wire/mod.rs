//! The mail protocols' clients (SMTP out, IMAP in and for the archive): bounded, guarded,
//! and knowing nothing of cases or messages. Delivery, the IMAP poller and the archive use
//! them.

pub mod imap;
pub mod smtp;
