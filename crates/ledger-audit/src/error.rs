//! The crate's error: everything that stops an audit tool from reading or
//! writing, as opposed to a [`crate::Finding`], which is what it found wrong
//! in the log.

use crate::merkle::ProofError;
use crate::note::NoteError;
use std::path::PathBuf;

/// Why an audit could not run (a finding is not an error: see [`crate::Finding`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The data dir holds no ledger.
    #[error("no ledger in {0} (expected a ledger.sled directory there)")]
    NoLedger(PathBuf),
    /// Another process holds the data dir.
    #[error("data dir {0} is in use by another tokenledger process (sled holds its lock)")]
    Locked(PathBuf),
    /// sled failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] ledger_store::StoreError),
    /// A file could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint key file is unusable.
    #[error("checkpoint key {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint or verifier key is malformed, or a signature does not hold.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A proof is malformed or does not hold.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Input the tool cannot use (an export header, a proof file, an argument).
    #[error("{0}")]
    Invalid(String),
    /// A question the source cannot answer in full (a replay or history of
    /// a partial export), with what to change: refused, never answered in part.
    #[error("{0}")]
    Incomplete(crate::replay::Incomplete),
    /// Something asked for is not there (an event, a checkpoint).
    #[error("{0}")]
    NotFound(String),
    /// A remote source (the JetStream stream, a server) failed or did not answer.
    #[error("{0}")]
    Source(String),
}

impl AuditError {
    /// A stable code for logs and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::NoLedger(_) | AuditError::NotFound(_) => "not_found",
            AuditError::Locked(_) => "locked",
            AuditError::Sled(_) | AuditError::Io { .. } => "storage",
            AuditError::Source(_) => "unavailable",
            AuditError::Store(e) => e.code(),
            AuditError::KeyFile { .. } => "key_file",
            AuditError::Note(
                NoteError::BadSignature(_) | NoteError::Unsigned(_) | NoteError::OtherOrigin { .. },
            ) => "bad_signature",
            AuditError::Note(_) | AuditError::Invalid(_) | AuditError::Incomplete(_) => {
                "invalid_input"
            }
            AuditError::Proof(ProofError::Mismatch) => "proof_mismatch",
            AuditError::Proof(_) => "invalid_input",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
