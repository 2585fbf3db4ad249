//! Inbound mail: MIME parsing and what a mail says about where it belongs. Receiving (the
//! HTTP endpoint now; an SMTP server and IMAP polling to come) hands raw mail to
//! `mime::parse`, then to `Store::ingest_email`.

pub mod imap;
pub mod smtp;
