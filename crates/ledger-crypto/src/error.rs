//! The one error type of the crate, with a stable code per rejection.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `ledger-crypto`; `code()` is stable, the message is not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A key file could not be read, written or synced.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`, `sync`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A key file is readable by group or other, or is not a regular file.
    #[error("{} must be a regular file with mode 0600 or stricter (found {mode:o})", path.display())]
    KeyFilePermissions {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A master key (file, config or env) is not 64 hex characters.
    #[error("malformed master key: {0}")]
    MalformedMasterKey(&'static str),
    /// The JWT key ring file is not what this version writes.
    #[error("malformed JWT key ring {}: {reason}", path.display())]
    MalformedKeyRing {
        /// The key ring file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key ring holds as many keys as it may; see `jwt::MAX_KEYS`.
    #[error("the JWT key ring is full ({0} keys)")]
    KeyRingFull(usize),
    /// A sealed secret or wrapped key is structurally invalid (alg, encoding, lengths).
    #[error("malformed sealed value: {0}")]
    MalformedSealed(&'static str),
    /// AEAD authentication failed: wrong key, wrong associated data or tampered bytes.
    #[error("decryption failed")]
    Decrypt,
    /// A JWT is not a well-formed compact JWS carrying our claims.
    #[error("malformed JWT")]
    JwtMalformed,
    /// A JWT's `alg` is not allowed, or is not the algorithm of the key its `kid` names.
    #[error("JWT algorithm not allowed")]
    JwtAlgorithm,
    /// A JWT names no `kid`, or one the key ring does not hold.
    #[error("unknown JWT key id")]
    JwtUnknownKid,
    /// A JWT's signature does not verify.
    #[error("invalid JWT signature")]
    JwtSignature,
    /// A JWT's `exp` is not after the verification time.
    #[error("JWT expired")]
    JwtExpired,
    /// The signing library refused to sign (a bug: our keys are validated on load).
    #[error("JWT signing failed: {0}")]
    JwtSigning(String),
}

impl CryptoError {
    /// A short identifier that never changes meaning, for logs, metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            CryptoError::Io { .. } => "io",
            CryptoError::KeyFilePermissions { .. } => "key_file_permissions",
            CryptoError::MalformedMasterKey(_) => "malformed_master_key",
            CryptoError::MalformedKeyRing { .. } => "malformed_key_ring",
            CryptoError::KeyRingFull(_) => "key_ring_full",
            CryptoError::MalformedSealed(_) => "malformed_sealed",
            CryptoError::Decrypt => "decrypt_failed",
            CryptoError::JwtMalformed => "jwt_malformed",
            CryptoError::JwtAlgorithm => "jwt_algorithm",
            CryptoError::JwtUnknownKid => "jwt_unknown_kid",
            CryptoError::JwtSignature => "jwt_signature",
            CryptoError::JwtExpired => "jwt_expired",
            CryptoError::JwtSigning(_) => "jwt_signing",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CryptoError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
