//! Cryptography of tokenledger: secrets sealed at rest and the JWT signing key ring.
//!
//! Secrets use envelope encryption: each token has its own random [`DataKey`],
//! stored only wrapped by the [`MasterKey`], so destroying a token's wrapped key
//! makes its secrets unrecoverable (as long as the wrapped key is kept outside
//! the append-only log).
//!
//! **Architecture Invariant:** this crate reads and writes only its two key files
//! (`master.key`, `jwt-keys.json`); it knows nothing about the log, NATS or tokio.

mod error;
pub mod fsutil;
pub mod jwt;
mod secrets;

pub use error::CryptoError;
pub use secrets::{
    fingerprint, open, seal, DataKey, MasterKey, StateSeal, MASTER_KEY_FILE, SEAL_ALG,
};

use rand::rngs::OsRng;
use rand::RngCore;

/// Fresh bytes from the operating system's CSPRNG.
///
/// Panics only if the OS random source fails, which no caller could recover from.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}
