//! Errors of the projector, each with a stable code.

use ledger_store::StoreError;

/// Why the projector could not apply, rebuild or answer.
///
/// Bad query input (`invalid_cursor`, `invalid_limit`) is a value the caller
/// should show; the rest are storage trouble or corruption.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// sled failed on the `views` tree.
    #[error("views storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Store(#[from] StoreError),
    /// The `views` tree holds bytes this build did not write.
    #[error("views are corrupt: {0}")]
    Corrupt(String),
    /// The checkpoint is past the log's head: the views belong to another log.
    #[error("views checkpoint {checkpoint} is ahead of the log head {head}")]
    Ahead {
        /// Position the views claim to cover.
        checkpoint: u64,
        /// Last durable position of the log.
        head: u64,
    },
    /// A list cursor that no listing of this kind produced.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// A list limit outside `1..=LIST_LIMIT_MAX`.
    #[error("invalid limit {0}: must be between 1 and {max}", max = crate::LIST_LIMIT_MAX)]
    InvalidLimit(usize),
}

impl ProjectorError {
    /// Stable code for logs and replies.
    pub fn code(&self) -> &'static str {
        match self {
            ProjectorError::Sled(_) => "storage",
            ProjectorError::Store(e) => e.code(),
            ProjectorError::Corrupt(_) => "corrupt",
            ProjectorError::Ahead { .. } => "ahead",
            ProjectorError::InvalidCursor(_) => "invalid_cursor",
            ProjectorError::InvalidLimit(_) => "invalid_limit",
        }
    }

    /// True when the caller's query was at fault (answer `invalid_input`).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            ProjectorError::InvalidCursor(_) | ProjectorError::InvalidLimit(_)
        )
    }
}
