//! Verification and signing keys over request/reply.
//!
//! * `tokens.verify`: `{"tokenStr": "..."}` in; `{"active": true, ...claims}`
//!   or exactly `{"active": false}` as the `result`. A malformed, forged,
//!   unknown or inactive string is not an error: it is `{"active": false}`,
//!   and the reason goes to the log only. Only a body that is not
//!   `{"tokenStr": string}` is refused (`invalid_input`).
//! * `tokens.jwks`: the JWKS (every EdDSA public key, active and retired).
//! * `tokens.snapshot`: `{"workspaceId"?, "cursor"?, "limit"?}` in;
//!   `{"position", "tokens": [status...], "nextCursor"}` out: client token
//!   statuses as of log position `position`, for a gateway's local verifier
//!   to follow the stream from `position + 1`.
//! * `tokens.admin.keys.rotate`: `{"alg"?, "actor"}` in; the recorded key
//!   event and the keys out. This is how a running server rotates: the data
//!   dir is held by the server, so `tokenledger keys rotate` on the data dir
//!   only works while no server runs.
//! * `tokens.admin.keys.list`: the keys (public facts) and their history.
//!
//! Verification answers from the log, not the views: see
//! [`ledger_store::Verifier`] for why that is both current and cheap.

use crate::lease::LeaseGuard;
use crate::queries::{body, QueryContext};
use chrono::Utc;
use ledger_core::{Agent, ErrorCode, Rejection, TokenKind};
use ledger_crypto::jwt::SigningAlg;
use ledger_projector::{ListFilter, TrashedFilter, LIST_LIMIT_MAX};
use ledger_store::{Store, Verifier};
use ledger_verify::TokenStatus;
use serde::Deserialize;
use serde_json::{json, Value};

/// The verification and key endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRoute {
    Verify,
    Jwks,
    Snapshot,
    Rotate,
    List,
}

impl KeyRoute {
    pub const ALL: [KeyRoute; 5] = [
        KeyRoute::Verify,
        KeyRoute::Jwks,
        KeyRoute::Snapshot,
        KeyRoute::Rotate,
        KeyRoute::List,
    ];

    /// Endpoint name and subject.
    pub fn endpoint(self) -> (&'static str, &'static str) {
        use crate::subjects::*;
        match self {
            KeyRoute::Verify => ("verify", VERIFY),
            KeyRoute::Jwks => ("jwks", JWKS),
            KeyRoute::Snapshot => ("snapshot", SNAPSHOT),
            KeyRoute::Rotate => ("keys_rotate", KEYS_ROTATE),
            KeyRoute::List => ("keys_list", KEYS_LIST),
        }
    }
}

/// What the handlers share.
pub(crate) struct VerifyContext {
    store: Store,
    verifier: Verifier,
    /// A key rotation appends to the key log: only under the writer lease.
    lease: LeaseGuard,
}

impl VerifyContext {
    pub fn new(store: Store, lease: LeaseGuard) -> VerifyContext {
        VerifyContext {
            verifier: Verifier::new(store.clone()),
            store,
            lease,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VerifyBody {
    token_str: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SnapshotBody {
    workspace_id: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateBody {
    alg: Option<SigningAlg>,
    actor: Agent,
}

/// Handles one request; the reply's `result` or the rejection.
pub(crate) async fn handle(
    ctx: &VerifyContext,
    queries: &QueryContext,
    route: KeyRoute,
    payload: &[u8],
) -> Result<Value, Rejection> {
    match route {
        KeyRoute::Verify => {
            let b: VerifyBody = body(payload)?;
            let answer = ctx.verifier.introspect(&b.token_str, Utc::now());
            Ok(serde_json::to_value(answer).expect("an introspection serializes"))
        }
        KeyRoute::Jwks => Ok(ctx.store.key_ring().read().expect("key ring lock").jwks()),
        KeyRoute::Snapshot => snapshot(queries, body(payload)?).await,
        KeyRoute::Rotate => {
            let b: RotateBody = body(payload)?;
            ledger_core::validate::actor(&b.actor)?;
            ctx.lease.check()?;
            let store = ctx.store.clone();
            let alg = b.alg.unwrap_or(SigningAlg::EdDSA);
            let event = tokio::task::spawn_blocking(move || store.rotate_key(alg, b.actor))
                .await
                .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| e.to_rejection())?;
            tracing::info!(kid = %event.kid, alg = %alg, actor = ?event.actor, "signing key rotated");
            let keys = ctx.store.key_ring().read().expect("key ring lock").keys();
            Ok(json!({ "event": event, "keys": keys }))
        }
        KeyRoute::List => {
            let store = ctx.store.clone();
            let history = tokio::task::spawn_blocking(move || store.key_history())
                .await
                .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| e.to_rejection())?;
            let ring = ctx.store.key_ring().read().expect("key ring lock");
            Ok(json!({ "activeKid": ring.active_kid(), "keys": ring.keys(), "history": history }))
        }
    }
}

/// One page of client token statuses, with the position the views covered.
///
/// With a workspace, pages follow its listing (creation order); without,
/// every view in token id order (cursor: the last token id). Each page is
/// consistent with its own `position`; positions never go down from page to
/// page, so a follower that starts the stream after the FIRST page's
/// position and skips events its statuses already cover misses nothing.
async fn snapshot(queries: &QueryContext, b: SnapshotBody) -> Result<Value, Rejection> {
    let limit = b.limit.unwrap_or(LIST_LIMIT_MAX);
    // Views are measured, and a status is a part of its view: pages fit.
    let max_bytes = queries.reply_limit.page_bytes_max();
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(Rejection::invalid(
            "limit",
            format!("limit must be between 1 and {LIST_LIMIT_MAX}"),
        ));
    }
    if let Some(ws) = &b.workspace_id {
        ledger_core::validate::workspace_id("workspaceId", ws)?;
    }
    let after = match (&b.workspace_id, &b.cursor) {
        (None, Some(c)) => Some(ledger_core::validate::uuid("cursor", c)?),
        _ => None,
    };
    let (statuses, next_cursor, position) = queries
        .at_head(move |views, position| {
            let now = ledger_core::Timestamp::new(Utc::now());
            let (items, next) = match b.workspace_id {
                Some(ws) => {
                    let filter = ListFilter {
                        kind: Some(TokenKind::Client),
                        trashed: TrashedFilter::Include,
                        limit,
                        cursor: b.cursor,
                        max_bytes: Some(max_bytes),
                        ..ListFilter::default()
                    };
                    let page = views.list(&ws, &filter, now)?;
                    (page.items, page.next_cursor)
                }
                None => {
                    let (items, more) = views.every_after(after, limit, Some(max_bytes))?;
                    let next = more
                        .then(|| items.last().map(|v| v.token_id().to_string()))
                        .flatten();
                    (items, next)
                }
            };
            let statuses: Vec<TokenStatus> =
                items.iter().filter_map(TokenStatus::from_view).collect();
            Ok((statuses, next, position))
        })
        .await?;
    Ok(json!({ "position": position, "tokens": statuses, "nextCursor": next_cursor }))
}
