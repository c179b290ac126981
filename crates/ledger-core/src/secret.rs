//! Secrets as the ledger keeps them: plaintext only in flight, sealed at rest.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A plaintext secret received in a command; its `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plaintext; call only where the secret is sealed or handed to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A secret encrypted with its token's data key (AEAD), as stored in events.
///
/// Fields are in alphabetical order of their JSON names: the derived
/// serialization is then canonical (sorted keys), which the hash chain needs.
/// `fingerprint` is a keyed hash of the plaintext so that two values can be
/// compared (was the refresh token changed?) without revealing either.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SealedSecret {
    /// AEAD algorithm name, e.g. `xchacha20poly1305`.
    pub alg: String,
    /// Base64url (no padding) ciphertext with tag.
    pub ciphertext: String,
    /// `hmac-sha256:` + 16 hex chars; stable for equal plaintexts under one master key.
    pub fingerprint: String,
    /// Identifier of the data key that sealed it.
    pub key_id: String,
    /// Base64url (no padding) nonce.
    pub nonce: String,
}
