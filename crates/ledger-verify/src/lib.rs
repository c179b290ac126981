//! Verification of client token strings, RFC 7662 style.
//!
//! A string is active only when both halves agree:
//!
//! 1. **the JWT**: its `alg` is on the whitelist, its `kid` names a known key
//!    of that algorithm, the signature holds and its `exp` has not passed
//!    (the ledger's key ring checks this on the server, [`jwks::KeySet`]
//!    checks it from the published JWKS in a gateway);
//! 2. **the ledger**: the token exists (not purged), is a client token, is
//!    neither trashed nor revoked, the string belongs to its current
//!    rotation (`jti`, and every other claim, equal to the token's recorded
//!    claims), and its `expires` has not passed.
//!
//! [`decide`] is the second half, a pure function of the verified claims,
//! the token's [`TokenStatus`] and the time. The answer to a caller is
//! [`Introspection`]: `{"active": true, ...claims}` or exactly
//! `{"active": false}`; the [`Reason`] of a refusal is for the server's log
//! only, so the answer is no oracle.
//!
//! **Architecture invariant**: this crate does no IO and reads no clock;
//! `now` comes in as an argument. It knows nothing of sled, NATS or the key
//! ring file.

pub mod jwks;
mod status;

pub use status::{Applied, TokenStatus};

use ledger_core::TokenKind;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// The claims of a client token's JWT, as the ledger mints them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The token id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch; absent for tokens that do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Unique id of this string (one per issue or rotation).
    pub jti: String,
    /// The workspace id.
    pub ws: String,
}

/// A JWT whose header and signature checked out, signed by the key `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedJwt {
    /// The key that signed it.
    pub kid: String,
    /// Its claims.
    pub claims: Claims,
}

/// Why a string is not active: a stable code for logs and metrics, never
/// shown to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not a compact JWS carrying our claims (or too long, or a `crit` header).
    Malformed,
    /// `alg` not on the whitelist, or not the algorithm of the key `kid` names (`none`, HS/EdDSA confusion).
    Algorithm,
    /// No `kid`, or one no key is known by.
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// The JWT's own `exp` has passed.
    JwtExpired,
    /// No token with that id (in the verifier's scope).
    NotFound,
    /// The token was purged.
    Purged,
    /// The id names an access token, which has no string.
    NotClient,
    /// The token belongs to another workspace than the string says.
    OtherWorkspace,
    /// The token is in the trash.
    Trashed,
    /// The token is revoked.
    Revoked,
    /// The string is of an earlier rotation (its `jti` is not the token's current one).
    Rotated,
    /// Same `jti` but other claims or key than the ledger recorded.
    ClaimsMismatch,
    /// The ledger's `expires` has passed.
    Expired,
    /// A local verifier has not been able to confirm, for longer than its
    /// bound, that it holds every event: it refuses rather than answer from
    /// statuses that may miss a revocation.
    Stale,
}

impl Reason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Algorithm => "algorithm",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::JwtExpired => "jwt_expired",
            Reason::NotFound => "not_found",
            Reason::Purged => "purged",
            Reason::NotClient => "not_client",
            Reason::OtherWorkspace => "other_workspace",
            Reason::Trashed => "trashed",
            Reason::Revoked => "revoked",
            Reason::Rotated => "rotated",
            Reason::ClaimsMismatch => "claims_mismatch",
            Reason::Expired => "expired",
            Reason::Stale => "stale",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What an active string stands for: its claims and the token's current facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Active {
    /// `sub`: the token id, as in the JWT.
    pub sub: String,
    /// `iat`, seconds.
    pub iat: i64,
    /// `exp`, seconds, if the JWT has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// `jti`.
    pub jti: String,
    /// `ws`: the workspace id, as in the JWT.
    pub ws: String,
    /// The signing key.
    pub kid: String,
    /// The token id.
    pub token_id: Uuid,
    /// The token's workspace.
    pub workspace_id: String,
    /// Always `client`: only client tokens have strings.
    pub kind: TokenKind,
    /// The token's name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ids of the permission groups assigned now.
    pub permission_groups: Vec<String>,
    /// The ledger's expiry, epoch ms, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The token's version the answer was made from.
    pub version: u64,
}

/// The answer to a caller: `{"active": true, ...}` or exactly `{"active": false}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introspection {
    /// The string is good now.
    Active(Box<Active>),
    /// It is not, for a reason the caller is not told.
    Inactive,
}

impl Introspection {
    /// True for [`Introspection::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, Introspection::Active(_))
    }

    /// The claims and facts of an active string.
    pub fn active(&self) -> Option<&Active> {
        match self {
            Introspection::Active(a) => Some(a),
            Introspection::Inactive => None,
        }
    }

    /// The answer for an outcome; the reason is dropped here, after the caller logged it.
    pub fn from_outcome(outcome: Result<Active, Reason>) -> Introspection {
        match outcome {
            Ok(active) => Introspection::Active(Box::new(active)),
            Err(_) => Introspection::Inactive,
        }
    }
}

#[derive(Serialize)]
struct ActiveWire<'a> {
    active: bool,
    #[serde(flatten)]
    claims: &'a Active,
}

#[derive(Serialize)]
struct InactiveWire {
    active: bool,
}

impl Serialize for Introspection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Introspection::Active(claims) => ActiveWire {
                active: true,
                claims,
            }
            .serialize(s),
            Introspection::Inactive => InactiveWire { active: false }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Introspection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::deserialize(d)?;
        match map.remove("active") {
            Some(serde_json::Value::Bool(true)) => {
                let active: Active = serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(D::Error::custom)?;
                Ok(Introspection::Active(Box::new(active)))
            }
            Some(serde_json::Value::Bool(false)) if map.is_empty() => Ok(Introspection::Inactive),
            Some(serde_json::Value::Bool(false)) => Err(D::Error::custom(
                "an inactive answer carries nothing but \"active\": false",
            )),
            _ => Err(D::Error::custom("\"active\" must be true or false")),
        }
    }
}

/// The ledger half of verification: is a string with these verified claims
/// active, given the token's current status, at `now_ms` (epoch ms)?
///
/// The JWT's own `exp` is checked here too (with no leeway: the ledger both
/// mints and verifies), so a signature verified once and cached still expires.
pub fn decide(jwt: &VerifiedJwt, token: &TokenStatus, now_ms: i64) -> Result<Active, Reason> {
    let claims = &jwt.claims;
    if claims
        .exp
        .is_some_and(|exp| now_ms >= exp.saturating_mul(1000))
    {
        return Err(Reason::JwtExpired);
    }
    if token.revoked {
        return Err(Reason::Revoked);
    }
    if token.trashed {
        return Err(Reason::Trashed);
    }
    if token.workspace_id != claims.ws {
        return Err(Reason::OtherWorkspace);
    }
    if Uuid::parse_str(&claims.sub).ok() != Some(token.token_id) {
        return Err(Reason::ClaimsMismatch);
    }
    if token.jwt.jti != claims.jti {
        return Err(Reason::Rotated);
    }
    // The same jti with other claims or another key is not a string the
    // ledger minted (signatures are deterministic, so it would re-mint
    // exactly one string from the recorded claims).
    if token.jwt.kid != jwt.kid || token.jwt.iat != claims.iat || token.jwt.exp != claims.exp {
        return Err(Reason::ClaimsMismatch);
    }
    if token.expires.is_some_and(|e| e <= now_ms) {
        return Err(Reason::Expired);
    }
    Ok(Active {
        sub: claims.sub.clone(),
        iat: claims.iat,
        exp: claims.exp,
        jti: claims.jti.clone(),
        ws: claims.ws.clone(),
        kid: jwt.kid.clone(),
        token_id: token.token_id,
        workspace_id: token.workspace_id.clone(),
        kind: TokenKind::Client,
        name: token.name.clone(),
        permission_groups: token.permission_groups.clone(),
        expires: token.expires,
        version: token.version,
    })
}

/// The token id a verified string names, or [`Reason::Malformed`].
pub fn subject(claims: &Claims) -> Result<Uuid, Reason> {
    Uuid::parse_str(&claims.sub).map_err(|_| Reason::Malformed)
}

#[cfg(test)]
mod tests;
