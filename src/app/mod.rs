//! The application layer: one module per use case, typed commands in, typed results out.
//! HTTP handlers turn requests into commands and results into responses; the background
//! workers call the same services. The layer calls `domain` for rules and `store` for
//! persistence, and knows nothing of HTTP.

pub mod documents;
pub mod inbound;
pub mod messaging;
pub mod policy;
pub mod rekey;
pub mod render;
pub mod subjects;
pub mod system;
pub mod tracking;
pub mod webhook_target;

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

/// The application's services, built once and shared by HTTP and the workers.
#[derive(Clone)]
pub struct Services {
    pub documents: documents::Documents,
    pub inbound: inbound::Inbound,
    pub messaging: messaging::Messaging,
    pub policy: policy::SendPolicy,
    /// Erasure and restriction of data subjects, and the retention sweeper.
    pub subjects: subjects::DataSubjects,
    pub clock: crate::domain::clock::SharedClock,
}

impl Services {
    pub fn new(
        store: crate::store::Store,
        config: &crate::config::Config,
        clock: crate::domain::clock::SharedClock,
        files: crate::documents::store::DocumentStore,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        let policy = policy::SendPolicy::new(store.clone(), config.policy.clone());
        let senders = messaging::Senders {
            email_from: config.mail.email_from.clone(),
            sms_from: config.sms.from.clone(),
            max_attachment_bytes: config.mail.max_attachment_bytes,
        };
        Self {
            subjects: subjects::DataSubjects::new(
                store.clone(),
                files.clone(),
                config.storage.data_dir.clone(),
                config.policy.retention,
                clock.clone(),
            ),
            documents: documents::Documents::new(
                store.clone(),
                files,
                config.http.max_upload_bytes,
            ),
            inbound: inbound::Inbound::new(
                store.clone(),
                config.mail.inbound_domain.clone(),
                config.mail.email_from.clone(),
                wake.clone(),
            ),
            messaging: messaging::Messaging::new(
                store,
                policy.clone(),
                senders,
                clock.clone(),
                wake,
            ),
            policy,
            clock,
        }
    }
}
