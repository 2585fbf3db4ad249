//! The application layer: one module per use case, typed commands in, typed results out.
//! HTTP handlers turn requests into commands and results into responses; the background
//! workers call the same services. The layer calls `domain` for rules and `store` for
//! persistence, and knows nothing of HTTP.

pub mod access;
pub mod archive;
pub mod cases;
pub mod connectors;
pub mod documents;
pub mod drives;
pub mod export;
pub mod health;
mod history;
pub mod inbound;
pub mod messaging;
pub mod operators;
pub mod policy;
pub mod providers;
pub mod rekey;
pub mod render;
pub mod sender_auth;
pub mod subjects;
pub mod system;
pub mod templates;
pub mod tracking;
pub mod webhook_target;
pub mod webhooks;

use serde_json::Value;

use crate::domain::Invalid;
use crate::domain::code::Code;
use crate::store::StoreError;

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The thing named does not exist, or the actor may not see it.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Refused by a rule; `detail` is safe to show to the caller, `extra` adds members to
    /// the answer (e.g. the missing template variables).
    #[error("{detail}")]
    Refused {
        code: Code,
        detail: String,
        extra: Option<(&'static str, Value)>,
    },
    /// Not this actor's to do, on something it may see.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Not now: the thing is in a state that does not allow it.
    #[error("{0}")]
    InvalidState(String),
    /// More than a limit allows.
    #[error("{0}")]
    TooLarge(String),
    /// Input that cannot be read at all (a broken upload).
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        Self::Refused {
            code,
            detail: detail.into(),
            extra: None,
        }
    }

    /// Adds a member to the answer.
    pub fn with(self, key: &'static str, value: Value) -> Self {
        match self {
            Self::Refused { code, detail, .. } => Self::Refused {
                code,
                detail,
                extra: Some((key, value)),
            },
            other => other,
        }
    }
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> Self {
        Self::refused(Code::ValidationFailed, e.0)
    }
}

/// The application's services, built once and shared by HTTP and the workers: the only
/// way from a request to the store.
#[derive(Clone)]
pub struct Services {
    /// Tokens: who a request comes from.
    pub access: access::Access,
    /// The mail archive: journaling, sent bytes kept, exports.
    pub archive: archive::Archive,
    /// Cases, payments, deadlines, notes, the audit log and preferences.
    pub cases: cases::Cases,
    /// Connectors to mailboxes and other systems.
    pub connectors: connectors::Connectors,
    pub documents: documents::Documents,
    /// The document systems' folders and files, and files taken in from them.
    pub drives: drives::Drives,
    /// Whether the database answers; the queues' figures.
    pub health: health::Health,
    pub inbound: inbound::Inbound,
    pub messaging: messaging::Messaging,
    pub policy: policy::SendPolicy,
    /// Erasure and restriction of data subjects, and the retention sweeper.
    pub subjects: subjects::DataSubjects,
    /// Retry, cancel and the queue's list.
    pub operators: operators::Operators,
    /// What email and SMS providers report about messages.
    pub providers: providers::ProviderEvents,
    pub templates: templates::Templates,
    /// Opens, clicks and unsubscribes through parley's own links.
    pub tracking: tracking::Tracking,
    pub webhooks: webhooks::Webhooks,
    pub clock: crate::domain::clock::SharedClock,
}

impl Services {
    pub fn new(
        store: &crate::store::Store,
        config: &crate::config::Config,
        clock: crate::domain::clock::SharedClock,
        files: crate::documents::store::DocumentStore,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> anyhow::Result<Self> {
        let policy = policy::SendPolicy::new(store, config.policy.clone());
        let sender_auth =
            sender_auth::SenderAuth::new(&config.mail.sender_auth, &config.mail.inbound_domain)?;
        let senders = messaging::Senders {
            email_from: config.mail.email_from.clone(),
            sms_from: config.sms.from.clone(),
            max_attachment_bytes: config.mail.max_attachment_bytes,
        };
        let inbound = inbound::Inbound::new(
            store,
            config.mail.inbound_domain.clone(),
            config.mail.email_from.clone(),
            sender_auth,
            wake.clone(),
        )
        .with_journal(config.mail.journal.clone());
        Ok(Self {
            access: access::Access::new(store),
            archive: archive::Archive::new(
                store,
                files.clone(),
                (
                    config.mail.email_from.clone(),
                    config.mail.inbound_domain.clone(),
                ),
                clock.clone(),
            ),
            connectors: connectors::Connectors::new(store, inbound.clone()),
            cases: cases::Cases::new(store, clock.clone()),
            health: health::Health::new(store, clock.clone()),
            operators: operators::Operators::new(store, clock.clone(), wake.clone()),
            providers: providers::ProviderEvents::new(store, clock.clone()),
            templates: templates::Templates::new(store),
            tracking: tracking::Tracking::new(store, clock.clone()),
            webhooks: webhooks::Webhooks::new(store, clock.clone(), config.webhooks.allow_private),
            subjects: subjects::DataSubjects::new(
                store,
                files.clone(),
                config.storage.data_dir.clone(),
                (
                    config.policy.retention,
                    config.policy.unmatched_retention,
                    config.webhooks.retention,
                ),
                clock.clone(),
            ),
            drives: drives::Drives::new(store, files.clone(), config.http.max_upload_bytes),
            documents: documents::Documents::new(store, files, config.http.max_upload_bytes),
            inbound,
            messaging: messaging::Messaging::new(
                store,
                policy.clone(),
                senders,
                clock.clone(),
                wake,
            ),
            policy,
            clock,
        })
    }
}
