//! The client's one error type: what went wrong, with the Kafka error code inside when the
//! broker said no.

use std::sync::Arc;
use std::time::Duration;
use wire::ErrorCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors are `Clone` so that one failed batch can fail every record's delivery future.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No broker answered: the address is wrong or nothing listens there.
    #[error("cannot reach {addr}: {error} — is `sluice server` running there?")]
    Unreachable { addr: String, error: Arc<std::io::Error> },
    /// An established connection failed.
    #[error("connection to {addr} failed: {error}")]
    Io { addr: String, error: Arc<std::io::Error> },
    /// The broker answered with a Kafka error code.
    #[error("{}{}{}", if .context.is_empty() { String::new() } else { format!("{}: ", .context) }, code_name(*.code), .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        code: i16,
        context: String,
        message: Option<String>,
    },
    /// The broker sent bytes this client cannot read, or lacks an API this client needs.
    #[error("protocol error talking to {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { after: Duration, what: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A record or request the client refuses before sending (too large, bad partition, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("the {0} is closed")]
    Closed(&'static str),
}

fn code_name(code: i16) -> String {
    match ErrorCode::from_code(code) {
        Some(c) => format!("{} ({code})", c.name()),
        None => format!("unknown error code {code}"),
    }
}

impl Error {
    /// An error for a non-zero Kafka error code, or `Ok` for zero.
    pub fn check(code: i16, context: impl FnOnce() -> String, message: Option<&String>) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        Err(Error::Kafka {
            code,
            context: context(),
            message: message.cloned().filter(|m| !m.is_empty()),
        })
    }

    /// The Kafka error code, when the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Kafka { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }

    /// Whether trying again (after a metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => ErrorCode::from_code(*code).is_some_and(|c| c.is_retriable()),
            Error::Io { .. } | Error::Unreachable { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether the error means the cached leader or coordinator is stale.
    pub fn needs_metadata(&self) -> bool {
        matches!(
            self.code(),
            Some(
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::NotCoordinator
                    | ErrorCode::CoordinatorNotAvailable
                    | ErrorCode::FencedLeaderEpoch
            )
        ) || matches!(self, Error::Io { .. } | Error::Unreachable { .. })
    }
}
