//! Inbound mail: the built-in SMTP server (`smtp`), with its spam filter (`spamd`), and IMAP
//! polling (`imap`). Both hand each raw mail to `app::inbound::Inbound::receive_email`, as
//! `POST /api/inbound/email` does.

pub mod imap;
pub mod smtp;
pub mod spamd;
