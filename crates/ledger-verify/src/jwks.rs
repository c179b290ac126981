//! The JWT half of verification from a published JWKS: EdDSA only.
//!
//! A [`KeySet`] holds the Ed25519 public keys of a JWKS document (as the
//! ledger answers it on `tokens.jwks`) and checks a string the way the
//! ledger's key ring does: the header must say `alg: EdDSA` and name a
//! known `kid` (so `none` and HS256 strings never verify here, and a public
//! key can never be used as an HMAC secret), it must carry no `crit`, and
//! the signature must hold. HS256 keys are never published, so strings
//! signed by one can only be checked by the ledger itself (`tokens.verify`).
//!
//! The signature is checked by `jsonwebtoken`; the `exp` claim is left to
//! [`crate::decide`], which has the caller's clock.

use crate::{Claims, Reason, VerifiedJwt};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;

/// Longest string looked at; the ledger's are a few hundred bytes.
pub const MAX_TOKEN_LEN_BYTES: usize = 8 * 1024;
/// Most keys a JWKS may hold.
pub const MAX_KEYS: usize = 1000;

/// Why a JWKS document was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("malformed JWKS: {0}")]
    Malformed(String),
    /// An Ed25519 key that is not 32 bytes, or without a `kid`.
    #[error("unusable JWKS key {kid:?}: {reason}")]
    BadKey {
        /// Its `kid`, if any.
        kid: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// More keys than [`MAX_KEYS`].
    #[error("the JWKS holds {0} keys, more than {MAX_KEYS}")]
    TooManyKeys(usize),
}

/// The EdDSA keys of a JWKS, by `kid`.
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// The Ed25519 keys of a JWKS document; keys of other types are skipped.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<KeySet, JwksError> {
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| JwksError::Malformed(e.to_string()))?;
        if set.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(set.keys.len()));
        }
        let mut keys = HashMap::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
                continue;
            };
            if okp.curve != EllipticCurve::Ed25519 {
                continue;
            }
            let kid = jwk.common.key_id.clone();
            let bad = |reason| JwksError::BadKey {
                kid: kid.clone(),
                reason,
            };
            let Some(kid) = kid.clone() else {
                return Err(bad("no kid"));
            };
            let x = URL_SAFE_NO_PAD
                .decode(&okp.x)
                .map_err(|_| bad("x is not base64url"))?;
            if x.len() != 32 {
                return Err(bad("x is not 32 bytes"));
            }
            keys.insert(kid, DecodingKey::from_ed_der(&x));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(KeySet { keys, validation })
    }

    /// True when a key is known by `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The known kids, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Checks a string's header and signature (not `exp`; see [`crate::decide`]).
    pub fn verify(&self, token: &str) -> Result<VerifiedJwt, Reason> {
        if token.len() > MAX_TOKEN_LEN_BYTES {
            return Err(Reason::Malformed);
        }
        let header = peek_header(token)?;
        if header.alg != "EdDSA" {
            return Err(Reason::Algorithm);
        }
        if header.crit.is_some() {
            return Err(Reason::Malformed);
        }
        let kid = header.kid.ok_or(Reason::UnknownKid)?;
        let key = self.keys.get(&kid).ok_or(Reason::UnknownKid)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => Reason::BadSignature,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Reason::Algorithm,
                    _ => Reason::Malformed,
                }
            })?;
        Ok(VerifiedJwt {
            kid,
            claims: data.claims,
        })
    }
}

/// The header fields read before the key is known (serde refuses duplicate
/// fields, so this and jsonwebtoken cannot disagree about them).
#[derive(Clone, Debug, Deserialize)]
pub struct PeekedHeader {
    /// `alg`, as written.
    pub alg: String,
    /// `kid`, if any.
    #[serde(default)]
    pub kid: Option<String>,
    /// `crit`, if any (we understand no extension, so its presence refuses the string).
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// The kid a string's header names, unverified: only to decide whether the
/// key set needs refreshing.
pub fn peek_kid(token: &str) -> Option<String> {
    peek_header(token).ok()?.kid
}

/// The header of a compact JWS (exactly three parts), unverified; the ledger's
/// key ring reads it the same way.
pub fn peek_header(token: &str) -> Result<PeekedHeader, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Reason::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| Reason::Malformed)
}
