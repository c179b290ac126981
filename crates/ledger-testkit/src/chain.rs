//! Crafted event histories for tests that check or tamper with a log.

use ledger_core::event::{
    ClientTokenIssued, ClientTokenUpdated, JwtRef, StampMeta, TokenRestored, TokenTrashed,
    GENESIS_HASH,
};
use ledger_core::{Agent, AgentType, Envelope, EventData, EventDraft, Timestamp, TokenKind};
use uuid::Uuid;

/// When crafted event `position` occurred: 1 ms apart from 2026-03-01.
fn at(position: u64) -> Timestamp {
    let t0 = Timestamp::parse("2026-03-01T00:00:00.000Z").unwrap();
    Timestamp::from_millis(t0.millis() + position as i64).unwrap()
}

/// Stamps `drafts` into a hash-chained history from position 1, each under
/// the command id given with it (the same id given twice crafts what the
/// writer never appends), by actor `crafted`, 1 ms apart from 2026-03-01.
/// Versions and rules are the drafts' business: the chain only links them.
pub fn stamp_chain(drafts: impl IntoIterator<Item = (EventDraft, Uuid)>) -> Vec<Envelope> {
    let actor = Agent {
        agent_id: "crafted".into(),
        agent_type: AgentType::Service,
    };
    let mut prev = GENESIS_HASH.to_owned();
    drafts
        .into_iter()
        .zip(1..)
        .map(|((draft, command_id), position)| {
            let (env, _) = draft.stamp(StampMeta {
                event_id: Uuid::now_v7(),
                position,
                occurred_at: at(position),
                actor: actor.clone(),
                command_id,
                correlation_id: None,
                prev_hash: std::mem::take(&mut prev),
            });
            prev.clone_from(&env.hash);
            env
        })
        .collect()
}

/// A client token's `ClientTokenIssued` data at time `at`, named `name`.
pub fn issued(name: &str, at: Timestamp) -> EventData {
    EventData::ClientTokenIssued(ClientTokenIssued {
        expires: None,
        import: None,
        issued_at: at,
        jwt: JwtRef {
            exp: None,
            iat: at.secs(),
            jti: Uuid::now_v7().to_string(),
            kid: "3f9a1c0b5e7d2a64".into(),
        },
        name: Some(name.to_owned()),
        permission_groups: vec![],
        provided_resource_id: None,
    })
}

/// Version `version` of client token `token` in workspace `acme`.
fn draft(token: Uuid, version: u64, data: EventData) -> EventDraft {
    EventDraft {
        token_id: token,
        token_kind: TokenKind::Client,
        workspace_id: "acme".into(),
        version,
        data,
    }
}

/// A legal, hash-chained history of `n` events on one new client token in
/// workspace `acme`, from position 1: issued as `{names}-1`, then renamed to
/// `{names}-2`, `{names}-3`, ... (what the audit tests tamper with).
pub fn renamed_chain(n: u64, names: &str) -> Vec<Envelope> {
    let token = Uuid::new_v4();
    stamp_chain((1..=n).map(|p| {
        let data = if p == 1 {
            issued(&format!("{names}-1"), at(p))
        } else {
            EventData::ClientTokenUpdated(ClientTokenUpdated {
                name: Some(Some(format!("{names}-{p}"))),
                ..Default::default()
            })
        };
        (draft(token, p, data), Uuid::new_v4())
    }))
}

/// `n` hash-chained events on one client token in workspace `acme`,
/// versions and positions 1..=n: trashed at odd ones, restored at even ones.
/// Not a legal history (nothing issues the token): for tests of what reads
/// a stream (its chain, order and duplicates), not of the rules.
pub fn trash_restore_chain(n: u64) -> Vec<Envelope> {
    let token = Uuid::new_v4();
    stamp_chain((1..=n).map(|p| {
        let data = if p % 2 == 1 {
            EventData::TokenTrashed(TokenTrashed::default())
        } else {
            EventData::TokenRestored(TokenRestored {})
        };
        (draft(token, p, data), Uuid::new_v4())
    }))
}
