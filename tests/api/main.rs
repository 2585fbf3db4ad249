//! The integration suite: the real application on a random port, a database of its own per
//! test (SQLite by default; PostgreSQL when `PARLEY_TEST_POSTGRES_URL` names a server).

mod binary;
mod box_fake;
mod drive_fake;
mod gdrive_fake;
mod helpers;
mod hostile;
mod imap;
mod inbound;
mod isolation;
mod journal;
mod layers;
mod peers;
mod vendors;

mod archive;
mod attachments;
mod attacks;
mod auth;
mod cases;
mod cli;
mod clients;
mod connectors;
mod console;
mod dkim;
mod documents;
mod drives;
mod erasure;
mod errors;
mod faults;
mod fuzz;
mod inbox;
mod messages;
mod notes;
mod operators;
mod ops;
mod plans;
mod policy;
mod processes;
mod providers;
mod queue;
mod rekey;
mod schema;
mod sender_auth;
mod smtp_hostile;
mod spam;
mod storage;
mod subjects;
mod suppressions;
mod system;
mod templates;
mod tenancy;
mod understanding;

mod webhooks;
