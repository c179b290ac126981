//! The JWT signing key ring: minting and verifying the ledger's client tokens.
//!
//! Every key has a `kid`, and tokens carry it in their header, so keys can be
//! rotated without breaking tokens signed by a retired key. Only two algorithms
//! are ever accepted, each only with a key of its own kind, so a token cannot
//! pick `none` or turn the public EdDSA key into an HMAC secret.
//!
//! A [`KeyRing`] is a snapshot of `jwt-keys.json`: one process rotates, others
//! see the new key when they load the file again.

use crate::error::CryptoError;
use crate::fsutil;
use crate::random_bytes;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::{Zeroize, Zeroizing};

/// Most keys a ring may hold; retired keys are kept so their tokens still verify.
pub const MAX_KEYS: usize = 1000;
/// Longest token `verify` looks at; ours are a few hundred bytes.
pub const MAX_TOKEN_LEN_BYTES: usize = 8 * 1024;

/// File name of the signing key ring inside the data directory.
pub const KEY_RING_FILE: &str = "jwt-keys.json";
const KEY_RING_FILE_MAX_BYTES: u64 = 1024 * 1024;
const FORMAT_VERSION: u32 = 1;
const SECRET_LEN: usize = 32;
/// Length of a `kid` in hex characters (64 bits).
const KID_LEN: usize = 16;
/// PKCS#8 v1 DER header for an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The signing algorithms the ledger mints and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    /// Ed25519 signatures; the public key is published in the JWKS.
    EdDSA,
    /// HMAC-SHA256 with a 256-bit secret; never published.
    HS256,
}

impl SigningAlg {
    /// The JOSE name (`EdDSA` or `HS256`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::HS256 => "HS256",
        }
    }

    fn jwt_alg(self) -> Algorithm {
        match self {
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::HS256 => Algorithm::HS256,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(SigningAlg::EdDSA),
            "HS256" => Ok(SigningAlg::HS256),
            _ => Err(CryptoError::JwtAlgorithm),
        }
    }
}

/// The claims of a client token's JWT (one definition, shared with the verifiers).
pub use ledger_verify::Claims as JwtClaims;

/// Public facts about one key of the ring (no key material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// Key id, carried in the JWT header.
    pub kid: String,
    /// Algorithm of the key.
    pub alg: SigningAlg,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it; `None` for the active key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<DateTime<Utc>>,
}

struct RingKey {
    info: KeyInfo,
    secret: Zeroizing<[u8; SECRET_LEN]>,
    /// The Ed25519 public key; `None` for HS256.
    public: Option<[u8; 32]>,
    /// The Ed25519 signing key, expanded once. jsonwebtoken re-parses its
    /// PKCS#8 bytes and re-derives the public key on every `encode`, which
    /// doubles the cost of each signature. AWS-LC's, not dalek's: an issue's
    /// reply carries a fresh signature, and AWS-LC signs in about 9 µs here
    /// where ed25519-dalek takes 18 (Ed25519 is deterministic, so both give
    /// the same bytes; a test holds them equal). AWS-LC keeps the key in its
    /// own memory and wipes it when freeing it (`OPENSSL_free` cleanses),
    /// as dalek's zeroizes on drop.
    ed_signer: Option<Ed25519KeyPair>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl RingKey {
    fn new(info: KeyInfo, secret: Zeroizing<[u8; SECRET_LEN]>) -> RingKey {
        // jsonwebtoken keeps its own copies of the key bytes, which it does not
        // zeroize; building them once per key keeps that to one copy.
        match info.alg {
            SigningAlg::EdDSA => {
                let public = ed25519_public(&secret);
                let mut der = Zeroizing::new(Vec::with_capacity(48));
                der.extend_from_slice(&ED25519_PKCS8_PREFIX);
                der.extend_from_slice(&secret[..]);
                RingKey {
                    encoding: EncodingKey::from_ed_der(&der),
                    decoding: DecodingKey::from_ed_der(&public),
                    ed_signer: Some(
                        Ed25519KeyPair::from_seed_and_public_key(&secret[..], &public)
                            .expect("the public key is derived from this seed"),
                    ),
                    public: Some(public),
                    info,
                    secret,
                }
            }
            SigningAlg::HS256 => RingKey {
                encoding: EncodingKey::from_secret(&secret[..]),
                decoding: DecodingKey::from_secret(&secret[..]),
                ed_signer: None,
                public: None,
                info,
                secret,
            },
        }
    }

    fn generate(alg: SigningAlg, now: DateTime<Utc>, existing: &[RingKey]) -> RingKey {
        loop {
            let secret: Zeroizing<[u8; SECRET_LEN]> = Zeroizing::new(random_bytes());
            let kid = match alg {
                SigningAlg::EdDSA => ed25519_kid(&ed25519_public(&secret)),
                SigningAlg::HS256 => hex::encode(random_bytes::<{ KID_LEN / 2 }>()),
            };
            // 64-bit kids make a collision absurdly unlikely, but a clash would make
            // verification pick the wrong key, so draw again rather than assume.
            if existing.iter().all(|k| k.info.kid != kid) {
                let info = KeyInfo {
                    kid,
                    alg,
                    created_at: now,
                    retired_at: None,
                };
                return RingKey::new(info, secret);
            }
        }
    }
}

/// All JWT signing keys: exactly one active (signs new tokens), the rest retired (verify only).
pub struct KeyRing {
    dir: PathBuf,
    keys: Vec<RingKey>,
    active: usize,
}

impl KeyRing {
    /// Loads `dir/jwt-keys.json`, creating it (mode 0600) with one `default_alg` key if absent.
    pub fn load_or_create(
        dir: &Path,
        default_alg: SigningAlg,
        now: DateTime<Utc>,
    ) -> Result<KeyRing, CryptoError> {
        let path = dir.join(KEY_RING_FILE);
        if let Some(bytes) = fsutil::read_private(&path, KEY_RING_FILE_MAX_BYTES)? {
            return KeyRing::parse(dir, &bytes);
        }
        fsutil::ensure_dir(dir)?;
        let ring = KeyRing {
            dir: dir.to_path_buf(),
            keys: vec![RingKey::generate(default_alg, now, &[])],
            active: 0,
        };
        if fsutil::create_private(dir, KEY_RING_FILE, &ring.serialize())? {
            return Ok(ring);
        }
        // Another process created the ring between our read and our link: use theirs.
        match fsutil::read_private(&path, KEY_RING_FILE_MAX_BYTES)? {
            Some(bytes) => KeyRing::parse(dir, &bytes),
            None => Err(CryptoError::io(
                "read",
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "vanished after creation"),
            )),
        }
    }

    /// Adds a new active `alg` key, retires the previous one at `now`, persists; returns the new kid.
    pub fn rotate(&mut self, alg: SigningAlg, now: DateTime<Utc>) -> Result<String, CryptoError> {
        if self.keys.len() >= MAX_KEYS {
            return Err(CryptoError::KeyRingFull(self.keys.len()));
        }
        let key = RingKey::generate(alg, now, &self.keys);
        let kid = key.info.kid.clone();
        let previous = self.active;
        self.keys[previous].info.retired_at = Some(now);
        self.keys.push(key);
        self.active = self.keys.len() - 1;
        if let Err(e) = fsutil::replace_private(&self.dir, KEY_RING_FILE, &self.serialize()) {
            // Keep memory equal to disk, so a failed rotation changes nothing.
            self.keys.pop();
            self.keys[previous].info.retired_at = None;
            self.active = previous;
            return Err(e);
        }
        Ok(kid)
    }

    /// The kid of the key that signs new tokens.
    pub fn active_kid(&self) -> &str {
        &self.keys[self.active].info.kid
    }

    /// Every key, oldest first, without key material.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(|k| k.info.clone()).collect()
    }

    /// Signs `claims` with the active key.
    pub fn mint(&self, claims: &JwtClaims) -> Result<String, CryptoError> {
        sign(&self.keys[self.active], claims)
    }

    /// Signs `claims` with the key `kid`, retired or not; equal inputs give equal tokens.
    pub fn mint_with(&self, kid: &str, claims: &JwtClaims) -> Result<String, CryptoError> {
        let key = self.find(kid).ok_or(CryptoError::JwtUnknownKid)?;
        sign(key, claims)
    }

    /// Checks a token's header, signature and `exp` (if any) at `now_secs`; returns its kid and claims.
    ///
    /// `exp` is checked with no leeway: the ledger both mints and verifies, so
    /// there is no second clock to allow for. Tokens without `exp` are valid;
    /// their lifetime is the ledger's business, not the JWT's.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<(String, JwtClaims), CryptoError> {
        if token.len() > MAX_TOKEN_LEN_BYTES {
            return Err(CryptoError::JwtMalformed);
        }
        let header = peek_header(token)?;
        let alg = SigningAlg::from_str(&header.alg)?;
        if header.crit.is_some() {
            // RFC 7515 4.1.11: extensions we do not understand must be rejected.
            return Err(CryptoError::JwtMalformed);
        }
        let kid = header.kid.ok_or(CryptoError::JwtUnknownKid)?;
        let key = self.find(&kid).ok_or(CryptoError::JwtUnknownKid)?;
        if key.info.alg != alg {
            return Err(CryptoError::JwtAlgorithm);
        }
        let mut validation = Validation::new(alg.jwt_alg());
        validation.required_spec_claims.clear();
        // jsonwebtoken reads the system clock; `exp` is checked below against `now_secs`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<JwtClaims>(token, &key.decoding, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        if let Some(exp) = data.claims.exp {
            if now_secs >= exp {
                return Err(CryptoError::JwtExpired);
            }
        }
        Ok((kid, data.claims))
    }

    /// The JWKS document: every EdDSA public key, active and retired; HMAC keys never appear.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter_map(|k| {
                let public = k.public.as_ref()?;
                Some(serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public),
                    "kid": k.info.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }))
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.info.kid == kid)
    }

    fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let file = RingFile {
            version: FORMAT_VERSION,
            keys: self
                .keys
                .iter()
                .map(|k| KeyRecord {
                    kid: k.info.kid.clone(),
                    alg: k.info.alg,
                    created_at: k.info.created_at,
                    retired_at: k.info.retired_at,
                    private_key: URL_SAFE_NO_PAD.encode(&k.secret[..]),
                })
                .collect(),
        };
        let mut bytes = Zeroizing::new(
            serde_json::to_vec_pretty(&file).expect("the key ring serializes to JSON"),
        );
        bytes.push(b'\n');
        bytes
    }

    fn parse(dir: &Path, bytes: &[u8]) -> Result<KeyRing, CryptoError> {
        let malformed = |reason: String| CryptoError::MalformedKeyRing {
            path: dir.join(KEY_RING_FILE),
            reason,
        };
        let file: RingFile = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(malformed(format!("unsupported version {}", file.version)));
        }
        if file.keys.is_empty() || file.keys.len() > MAX_KEYS {
            return Err(malformed(format!("{} keys", file.keys.len())));
        }
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(file.keys.len());
        let mut active = None;
        for (i, record) in file.keys.iter().enumerate() {
            if !seen.insert(record.kid.as_str()) {
                return Err(malformed(format!("duplicate kid {}", record.kid)));
            }
            let mut decoded = URL_SAFE_NO_PAD.decode(&record.private_key).map_err(|_| {
                malformed(format!("private key of {} is not base64url", record.kid))
            })?;
            let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
            let len_ok = decoded.len() == SECRET_LEN;
            if len_ok {
                secret.copy_from_slice(&decoded);
            }
            decoded.zeroize();
            if !len_ok {
                return Err(malformed(format!(
                    "private key of {} is not 32 bytes",
                    record.kid
                )));
            }
            let kid_ok = match record.alg {
                // The kid is derived from the key, so a mismatch means a damaged file.
                SigningAlg::EdDSA => record.kid == ed25519_kid(&ed25519_public(&secret)),
                SigningAlg::HS256 => is_kid(&record.kid),
            };
            if !kid_ok {
                return Err(malformed(format!(
                    "kid {} does not match its key",
                    record.kid
                )));
            }
            if record.retired_at.is_none() && active.replace(i).is_some() {
                return Err(malformed("more than one active key".to_owned()));
            }
            let info = KeyInfo {
                kid: record.kid.clone(),
                alg: record.alg,
                created_at: record.created_at,
                retired_at: record.retired_at,
            };
            keys.push(RingKey::new(info, secret));
        }
        let active = active.ok_or_else(|| malformed("no active key".to_owned()))?;
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            keys,
            active,
        })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("active_kid", &self.active_kid())
            .field("keys", &self.keys())
            .finish()
    }
}

/// `jwt-keys.json` as written on disk.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RingFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRecord {
    kid: String,
    alg: SigningAlg,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<DateTime<Utc>>,
    /// Base64url (no padding): the Ed25519 seed or the HMAC secret, 32 bytes.
    private_key: String,
}

impl Drop for KeyRecord {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

fn peek_header(token: &str) -> Result<ledger_verify::jwks::PeekedHeader, CryptoError> {
    ledger_verify::jwks::peek_header(token).map_err(|_| CryptoError::JwtMalformed)
}

fn sign(key: &RingKey, claims: &JwtClaims) -> Result<String, CryptoError> {
    if let Some(signer) = &key.ed_signer {
        return Ok(sign_eddsa(signer, &key.info.kid, claims));
    }
    let mut header = Header::new(key.info.alg.jwt_alg());
    header.kid = Some(key.info.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|e| CryptoError::JwtSigning(e.to_string()))
}

/// A compact JWS with the cached Ed25519 key; the same bytes as
/// `jsonwebtoken::encode` (its header field order: typ, alg, kid), which a
/// test pins, so strings minted either way re-mint identically.
fn sign_eddsa(signer: &Ed25519KeyPair, kid: &str, claims: &JwtClaims) -> String {
    #[derive(Serialize)]
    struct EdHeader<'a> {
        typ: &'static str,
        alg: &'static str,
        kid: &'a str,
    }
    let header = EdHeader {
        typ: "JWT",
        alg: "EdDSA",
        kid,
    };
    let header = serde_json::to_vec(&header).expect("header serializes");
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let mut jws = URL_SAFE_NO_PAD.encode(header);
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = signer.sign(jws.as_bytes());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    jws
}

fn map_jwt_error(kind: &ErrorKind) -> CryptoError {
    match kind {
        ErrorKind::InvalidSignature => CryptoError::JwtSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => CryptoError::JwtAlgorithm,
        ErrorKind::ExpiredSignature => CryptoError::JwtExpired,
        _ => CryptoError::JwtMalformed,
    }
}

fn ed25519_public(seed: &[u8; SECRET_LEN]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

fn ed25519_kid(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..KID_LEN / 2])
}

fn is_kid(kid: &str) -> bool {
    kid.len() == KID_LEN && kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
