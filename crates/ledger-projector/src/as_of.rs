//! A token's view at an earlier point, replayed from its stream.

use crate::ProjectorError;
use ledger_core::state::fold_token;
use ledger_core::{Envelope, Timestamp, TokenView};
use ledger_store::Store;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The point in a token's history to read it at.
///
/// Serialized as `{"version": n}`, `{"position": n}` or `{"time": "RFC 3339"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum AsOf {
    /// Right after the token's `n`-th event.
    Version(u64),
    /// After every event up to global position `n`, inclusive.
    Position(u64),
    /// After every event that occurred at or before this instant.
    Time(Timestamp),
}

impl AsOf {
    /// Versions and positions count from 1: 0 names no point, and is
    /// refused (`invalid_input` on `asOf.version` / `asOf.position`).
    pub fn check(&self) -> Result<(), ledger_core::Rejection> {
        match self {
            AsOf::Version(0) => Err(ledger_core::Rejection::invalid(
                "asOf.version",
                "versions start at 1",
            )),
            AsOf::Position(0) => Err(ledger_core::Rejection::invalid(
                "asOf.position",
                "positions start at 1",
            )),
            _ => Ok(()),
        }
    }
}

/// Replays a token's stream up to `as_of` and returns its view then.
///
/// `None` before the token's creation, after its purge, and for a version it
/// never reached. `expired` is computed at that point: at the given time, at
/// the time of the event at the given position (the head's, past it), or at
/// the time of the given version's event. The view may belong to any
/// workspace: a caller answering a workspace's query checks `workspace_id`.
pub fn get_as_of(
    store: &Store,
    token_id: Uuid,
    as_of: AsOf,
) -> Result<Option<TokenView>, ProjectorError> {
    let max_version = match as_of {
        AsOf::Version(v) => Some(v),
        AsOf::Position(_) | AsOf::Time(_) => None,
    };
    let stream = store.token_events(&token_id, max_version)?;
    // A stream is in version order, hence in position and time order too.
    let upto: Vec<&Envelope> = stream
        .iter()
        .take_while(|e| match as_of {
            AsOf::Version(v) => e.version <= v,
            AsOf::Position(p) => e.position <= p,
            AsOf::Time(t) => e.occurred_at <= t,
        })
        .collect();
    let Some(last) = upto.last() else {
        return Ok(None);
    };
    if let AsOf::Version(v) = as_of {
        if last.version != v {
            return Ok(None);
        }
    }
    let at = match as_of {
        AsOf::Time(t) => t,
        AsOf::Version(_) => last.occurred_at,
        // The ledger as of position P is the ledger at P's time, whichever
        // token P belongs to (as `audit replay --position` has it): a token
        // with no event since may have expired meanwhile.
        AsOf::Position(p) => {
            let at = p.min(store.head_position());
            match store.event(at)? {
                Some(event) => event.envelope()?.occurred_at,
                None => last.occurred_at,
            }
        }
    };
    let state = fold_token(upto.iter().copied()).expect("a non-empty stream folds to a state");
    Ok(TokenView::of(&state).map(|v| v.with_expired(at)))
}
