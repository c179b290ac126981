//! Secrets at rest: a master key wraps per-token data keys, which seal the secrets.

use crate::error::CryptoError;
use crate::fsutil;
use crate::random_bytes;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use ledger_core::secret::{SealedSecret, Secret};
use sha2::Sha256;
use std::fmt;
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// The AEAD algorithm name recorded in every [`SealedSecret`].
pub const SEAL_ALG: &str = "xchacha20poly1305";

/// File name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// A wrapped data key is `nonce || ciphertext(key) || tag`.
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// Room for the 64 hex characters plus a trailing newline a human may add.
const MASTER_KEY_FILE_MAX_BYTES: u64 = 256;

// Separate subkeys for wrapping and fingerprinting, so no key is ever used by
// two algorithms; the labels are versioned so a future scheme can coexist.
const WRAP_LABEL: &[u8] = b"tokenledger wrap v1";
const FINGERPRINT_LABEL: &[u8] = b"tokenledger fingerprint v1";
const STATE_LABEL: &[u8] = b"tokenledger state snapshot v1";

type HmacSha256 = Hmac<Sha256>;

/// The root secret of a ledger; only keys derived from it are kept in memory.
#[derive(Clone)]
pub struct MasterKey {
    wrap_key: Zeroizing<[u8; KEY_LEN]>,
    fingerprint_key: Zeroizing<[u8; KEY_LEN]>,
    state_key: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// A new random master key (for tests and first start).
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(Zeroizing::new(random_bytes()))
    }

    /// Parses 64 hex characters, e.g. from `TOKENLEDGER_MASTER_KEY`; surrounding whitespace is ignored.
    pub fn from_hex(hex_str: &str) -> Result<MasterKey, CryptoError> {
        let trimmed = hex_str.trim();
        if trimmed.len() != 2 * KEY_LEN {
            return Err(CryptoError::MalformedMasterKey(
                "expected 64 hex characters",
            ));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(trimmed, &mut bytes[..])
            .map_err(|_| CryptoError::MalformedMasterKey("expected 64 hex characters"))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// Reads `data_dir/master.key`, creating it (mode 0600) with a new key if absent.
    ///
    /// Refuses a file that group or other may access, and one that is not 64 hex characters.
    pub fn load_or_create(data_dir: &Path) -> Result<MasterKey, CryptoError> {
        let path = data_dir.join(MASTER_KEY_FILE);
        if let Some(content) = fsutil::read_private(&path, MASTER_KEY_FILE_MAX_BYTES)? {
            return MasterKey::from_file_content(&content);
        }
        fsutil::ensure_dir(data_dir)?;
        let bytes: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(random_bytes());
        let hex_key = Zeroizing::new(hex::encode(&bytes[..]) + "\n");
        if fsutil::create_private(data_dir, MASTER_KEY_FILE, hex_key.as_bytes())? {
            return Ok(MasterKey::from_bytes(bytes));
        }
        // Another process created it between our read and our link: use theirs.
        match fsutil::read_private(&path, MASTER_KEY_FILE_MAX_BYTES)? {
            Some(content) => MasterKey::from_file_content(&content),
            None => Err(CryptoError::io(
                "read",
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "vanished after creation"),
            )),
        }
    }

    /// Wraps a data key for storage; the token id is bound as associated data.
    pub fn wrap(&self, data_key: &DataKey, token_id: &uuid::Uuid) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = aead_encrypt(&self.wrap_key, &nonce, &data_key.0[..], token_id.as_bytes());
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ciphertext);
        wrapped
    }

    /// Recovers a data key wrapped for `token_id` by this master key.
    pub fn unwrap(&self, token_id: &uuid::Uuid, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(CryptoError::MalformedSealed(
                "wrapped data key has the wrong length",
            ));
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let plain = Zeroizing::new(aead_decrypt(
            &self.wrap_key,
            nonce,
            ciphertext,
            token_id.as_bytes(),
        )?);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        // The length is fixed by WRAPPED_LEN and the AEAD, so this cannot mismatch.
        if plain.len() != KEY_LEN {
            return Err(CryptoError::Decrypt);
        }
        key.copy_from_slice(&plain);
        Ok(DataKey(key))
    }

    fn from_bytes(master: Zeroizing<[u8; KEY_LEN]>) -> MasterKey {
        MasterKey {
            wrap_key: hmac_sha256(&master[..], WRAP_LABEL),
            fingerprint_key: hmac_sha256(&master[..], FINGERPRINT_LABEL),
            state_key: hmac_sha256(&master[..], STATE_LABEL),
        }
    }

    /// A MAC over a state snapshot's bytes, so that only a holder of the
    /// master key can write a snapshot that open trusts.
    pub fn state_seal(&self) -> StateSeal {
        StateSeal(
            <HmacSha256 as Mac>::new_from_slice(&self.state_key[..])
                .expect("HMAC accepts keys of any length"),
        )
    }

    fn from_file_content(content: &[u8]) -> Result<MasterKey, CryptoError> {
        let text = std::str::from_utf8(content)
            .map_err(|_| CryptoError::MalformedMasterKey("master.key is not text"))?;
        MasterKey::from_hex(text)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// A per-token key that seals that token's secrets; stored only wrapped.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A new random data key.
    pub fn generate() -> DataKey {
        DataKey(Zeroizing::new(random_bytes()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

/// Encrypts `plaintext` with `key`, binding `aad`; the fingerprint is keyed by `master`.
pub fn seal(
    master: &MasterKey,
    key: &DataKey,
    key_id: &str,
    aad: &[u8],
    plaintext: &Secret,
) -> SealedSecret {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let ciphertext = aead_encrypt(&key.0, &nonce, plaintext.expose().as_bytes(), aad);
    SealedSecret {
        alg: SEAL_ALG.to_owned(),
        key_id: key_id.to_owned(),
        nonce: URL_SAFE_NO_PAD.encode(nonce),
        ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
        fingerprint: fingerprint(master, aad, plaintext.expose()),
    }
}

/// Decrypts a sealed secret; fails on a wrong key, wrong `aad` or any tampering.
pub fn open(key: &DataKey, aad: &[u8], sealed: &SealedSecret) -> Result<Secret, CryptoError> {
    if sealed.alg != SEAL_ALG {
        return Err(CryptoError::MalformedSealed("unsupported algorithm"));
    }
    let nonce = URL_SAFE_NO_PAD
        .decode(&sealed.nonce)
        .map_err(|_| CryptoError::MalformedSealed("nonce is not base64url"))?;
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::MalformedSealed("nonce has the wrong length"));
    }
    let ciphertext = URL_SAFE_NO_PAD
        .decode(&sealed.ciphertext)
        .map_err(|_| CryptoError::MalformedSealed("ciphertext is not base64url"))?;
    let plain = aead_decrypt(&key.0, &nonce, &ciphertext, aad)?;
    match String::from_utf8(plain) {
        Ok(text) => Ok(Secret::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            // Authentic but not UTF-8 means something else sealed it: treat it as corrupt.
            Err(CryptoError::MalformedSealed("plaintext is not UTF-8"))
        }
    }
}

/// HMAC-SHA256 of a state snapshot under the master key's state subkey.
#[derive(Clone)]
pub struct StateSeal(HmacSha256);

impl StateSeal {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The MAC, lowercase hex.
    pub fn finalize_hex(self) -> String {
        hex::encode(self.0.finalize().into_bytes())
    }

    /// Whether `hex_mac` is the MAC of the bytes added (in constant time).
    pub fn verify_hex(self, hex_mac: &str) -> bool {
        let mut mac = [0u8; KEY_LEN];
        hex::decode_to_slice(hex_mac, &mut mac).is_ok() && self.0.verify_slice(&mac).is_ok()
    }
}

/// `hmac-sha256:` + 16 hex chars: equal for equal plaintexts of one secret
/// (`aad`: the token and the field, as sealing binds them) under one master
/// key, so a token's refresh tokens can be told apart without revealing them.
///
/// Keyed by the master key so that a leaked log does not allow guessing
/// low-entropy secrets offline; bound to the token and field so that a
/// caller who may register a token cannot confirm a guess of another's
/// secret (in any workspace, purged or not) by comparing fingerprints.
pub fn fingerprint(master: &MasterKey, aad: &[u8], plaintext: &str) -> String {
    let mut message = Vec::with_capacity(8 + aad.len() + plaintext.len());
    // Length-prefixed, so no (aad, plaintext) pair reads as another.
    message.extend_from_slice(&(aad.len() as u64).to_be_bytes());
    message.extend_from_slice(aad);
    message.extend_from_slice(plaintext.as_bytes());
    let message = Zeroizing::new(message);
    let mac = hmac_sha256(&master.fingerprint_key[..], &message);
    let mut out = String::with_capacity(12 + 16);
    out.push_str("hmac-sha256:");
    out.push_str(&hex::encode(&mac[..8]));
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn aead_encrypt(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
        // The only failure is a message over ~256 GiB, which no secret can be.
        .expect("XChaCha20-Poly1305 encrypts any in-memory message")
}

fn aead_decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::MalformedSealed("nonce has the wrong length"));
    }
    XChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests;
