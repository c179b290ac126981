//! Verifying client token strings against the key ring and the log.
//!
//! The JWT half is the key ring's ([`ledger_crypto::jwt::KeyRing::verify`]),
//! the ledger half is [`ledger_verify::decide`] on the token's current
//! [`TokenStatus`], folded from its stream in the log. Two caches make a
//! repeated verification cheap without ever answering from stale state:
//!
//! * **signatures**, by the exact string: a string whose signature held
//!   under key `kid` holds forever, since keys are only ever added to the
//!   ring (retired keys stay). Time-dependent checks (`exp`) and every
//!   ledger rule are re-run on each call, so the cache only saves the
//!   Ed25519 (or HMAC) work. Only successes are cached.
//! * **statuses**, by token id, each tagged with the version it was folded
//!   to. A call compares that version with the token's version in the
//!   store's in-memory stream index, which the writer extends after its
//!   flush and before it answers the command: a status is reused only
//!   while no event was appended to its token, so a revocation acknowledged
//!   before a verification started is always seen by it.
//!
//! Both caches are bounded and cleared when full; nothing is written to
//! sled on the verification path.

use crate::Store;
use chrono::{DateTime, Utc};
use ledger_core::state::fold_token;
use ledger_core::{TokenKind, TokenView};
use ledger_crypto::CryptoError;
use ledger_verify::{decide, subject, Active, Introspection, Reason, TokenStatus, VerifiedJwt};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// Verified signatures kept, at most; the cache is cleared beyond that.
pub const SIGNATURE_CACHE_MAX: usize = 65_536;
/// Token statuses kept, at most; the cache is cleared beyond that.
pub const STATUS_CACHE_MAX: usize = 200_000;

/// A token's status as of a version of its stream.
#[derive(Clone, Debug)]
enum Cached {
    Client(TokenStatus),
    Access { version: u64 },
    Purged { version: u64 },
}

impl Cached {
    fn version(&self) -> u64 {
        match self {
            Cached::Client(s) => s.version,
            Cached::Access { version } | Cached::Purged { version } => *version,
        }
    }
}

/// Verifies strings for one store; share it (it is `Sync`) between requests.
pub struct Verifier {
    store: Store,
    signatures: RwLock<HashMap<Box<str>, Arc<VerifiedJwt>>>,
    statuses: RwLock<HashMap<Uuid, Cached>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `store`'s strings, with empty caches.
    pub fn new(store: Store) -> Verifier {
        Verifier {
            store,
            signatures: RwLock::new(HashMap::new()),
            statuses: RwLock::new(HashMap::new()),
        }
    }

    /// The caller's answer, logging the reason of a refusal (with the
    /// token id when the signature held; never the string).
    ///
    /// May read the log (a few sled reads) when the token changed since it
    /// was last looked at.
    pub fn introspect(&self, token: &str, now: DateTime<Utc>) -> Introspection {
        let outcome = self.check(token, now);
        if let Err((reason, token_id)) = &outcome {
            match token_id {
                Some(id) => tracing::info!(
                    target: crate::AUDIT_LOG_TARGET,
                    reason = reason.code(),
                    token_id = %id,
                    "audit: token string inactive"
                ),
                None => tracing::info!(
                    target: crate::AUDIT_LOG_TARGET,
                    reason = reason.code(),
                    "audit: token string inactive"
                ),
            }
        }
        Introspection::from_outcome(outcome.map_err(|(r, _)| r))
    }

    /// The answer with its reason, for the server's own use.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Active, Reason> {
        self.check(token, now).map_err(|(r, _)| r)
    }

    /// The answer, or the reason with the token the string names (once its signature held).
    fn check(&self, token: &str, now: DateTime<Utc>) -> Result<Active, (Reason, Option<Uuid>)> {
        let jwt = self
            .signature(token, now.timestamp())
            .map_err(|r| (r, None))?;
        let id = subject(&jwt.claims).map_err(|r| (r, None))?;
        self.with_status(id, |status| decide(&jwt, status?, now.timestamp_millis()))
            .map_err(|r| (r, Some(id)))
    }

    /// The string's verified header and claims, from the cache or the key ring.
    fn signature(&self, token: &str, now_secs: i64) -> Result<Arc<VerifiedJwt>, Reason> {
        if let Some(hit) = self.signatures.read().expect("lock").get(token) {
            return Ok(hit.clone());
        }
        let (kid, claims) = self
            .store
            .key_ring()
            .read()
            .expect("key ring lock poisoned")
            .verify(token, now_secs)
            .map_err(|e| crypto_reason(&e))?;
        let jwt = Arc::new(VerifiedJwt { kid, claims });
        let mut cache = self.signatures.write().expect("lock");
        if cache.len() >= SIGNATURE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.into(), jwt.clone());
        Ok(jwt)
    }

    /// Runs `f` on the token's current status (or why there is none).
    fn with_status<T>(&self, id: Uuid, f: impl FnOnce(Result<&TokenStatus, Reason>) -> T) -> T {
        let version = self.store.token_version(&id);
        if version == 0 {
            return f(Err(Reason::NotFound));
        }
        {
            let statuses = self.statuses.read().expect("lock");
            if let Some(cached) = statuses.get(&id).filter(|c| c.version() == version) {
                return f(as_status(cached));
            }
        }
        let cached = match self.fold(&id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(token_id = %id, error = %e, "cannot read a token's stream to verify it");
                return f(Err(Reason::NotFound));
            }
        };
        let out = f(as_status(&cached));
        let mut statuses = self.statuses.write().expect("lock");
        if statuses.len() >= STATUS_CACHE_MAX {
            statuses.clear();
        }
        // Keep whichever of two racing folds saw more.
        if statuses
            .get(&id)
            .is_none_or(|c| c.version() < cached.version())
        {
            statuses.insert(id, cached);
        }
        out
    }

    fn fold(&self, id: &Uuid) -> Result<Cached, crate::StoreError> {
        let events = self.store.token_events(id, None)?;
        let Some(state) = fold_token(&events) else {
            return Ok(Cached::Purged { version: 0 });
        };
        let version = state.version;
        if state.purged {
            return Ok(Cached::Purged { version });
        }
        if state.kind() == TokenKind::Access {
            return Ok(Cached::Access { version });
        }
        let view = TokenView::of(&state).expect("a live token has a view");
        Ok(TokenStatus::from_view(&view).map_or(Cached::Access { version }, Cached::Client))
    }
}

fn as_status(cached: &Cached) -> Result<&TokenStatus, Reason> {
    match cached {
        Cached::Client(s) => Ok(s),
        Cached::Access { .. } => Err(Reason::NotClient),
        Cached::Purged { .. } => Err(Reason::Purged),
    }
}

/// The reason of a key ring refusal.
fn crypto_reason(e: &CryptoError) -> Reason {
    match e {
        CryptoError::JwtAlgorithm => Reason::Algorithm,
        CryptoError::JwtUnknownKid => Reason::UnknownKid,
        CryptoError::JwtSignature => Reason::BadSignature,
        CryptoError::JwtExpired => Reason::JwtExpired,
        _ => Reason::Malformed,
    }
}
