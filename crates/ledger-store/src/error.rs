//! Errors of the store, each with a stable code.

use ledger_core::{ErrorCode, Rejection};

/// Why the store could not open or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the data dir.
    #[error("data dir {0} is in use by another tokenledger process (sled holds its lock)")]
    Locked(String),
    /// sled failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The log on disk breaks an invariant: detected, never repaired silently.
    #[error("log is corrupt at position {position}: {reason}")]
    Corrupt {
        /// First bad position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// Key material could not be loaded or used.
    #[error("crypto: {0}")]
    Crypto(#[from] ledger_crypto::CryptoError),
    /// The writer stopped after a storage failure or shutdown.
    #[error("the ledger writer is not running: {0}")]
    Unavailable(String),
    /// The data dir already holds a ledger, where a new one was to be made.
    #[error("data dir {0} already holds a ledger")]
    Exists(String),
    /// Filesystem error outside sled.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    /// The data dir holds a ledger, but not the keys it was made with.
    #[error("data dir {dir}: {reason}")]
    Keys {
        /// The data dir.
        dir: String,
        /// Which key, and what to do.
        reason: String,
    },
}

impl StoreError {
    /// Stable code for logs and replies.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Locked(_) => "locked",
            StoreError::Sled(_) => "storage",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Crypto(_) => "crypto",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Exists(_) => "exists",
            StoreError::Io(_) => "io",
            StoreError::Keys { .. } => "key_file",
        }
    }

    /// As a rejection for a caller: storage trouble is `unavailable`, the rest `internal`.
    pub fn to_rejection(&self) -> Rejection {
        let code = match self {
            StoreError::Sled(_)
            | StoreError::Unavailable(_)
            | StoreError::Io(_)
            | StoreError::Keys { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        Rejection::new(code, self.to_string())
    }
}
