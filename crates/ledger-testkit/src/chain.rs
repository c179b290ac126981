//! Crafted event histories for tests that check or tamper with a log.

use ledger_core::event::{ClientTokenIssued, ClientTokenUpdated, JwtRef, StampMeta, GENESIS_HASH};
use ledger_core::{Agent, AgentType, Envelope, EventData, EventDraft, Timestamp, TokenKind};
use uuid::Uuid;

/// A legal, hash-chained history of `n` events on one new client token in
/// workspace `acme`, from position 1: issued as `{names}-1`, then renamed to
/// `{names}-2`, `{names}-3`, ... (what the audit tests tamper with).
pub fn renamed_chain(n: u64, names: &str) -> Vec<Envelope> {
    let token = Uuid::new_v4();
    let actor = Agent {
        agent_id: "crafted".into(),
        agent_type: AgentType::Service,
    };
    let t0 = Timestamp::parse("2026-03-01T00:00:00.000Z").unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    (1..=n)
        .map(|p| {
            let at = Timestamp::from_millis(t0.millis() + p as i64).unwrap();
            let data = if p == 1 {
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
                    name: Some(format!("{names}-1")),
                    permission_groups: vec![],
                    provided_resource_id: None,
                })
            } else {
                EventData::ClientTokenUpdated(ClientTokenUpdated {
                    name: Some(Some(format!("{names}-{p}"))),
                    ..Default::default()
                })
            };
            let (env, _) = EventDraft {
                token_id: token,
                token_kind: TokenKind::Client,
                workspace_id: "acme".into(),
                version: p,
                data,
            }
            .stamp(StampMeta {
                event_id: Uuid::now_v7(),
                position: p,
                occurred_at: at,
                actor: actor.clone(),
                command_id: Uuid::new_v4(),
                correlation_id: None,
                prev_hash: std::mem::take(&mut prev),
            });
            prev = env.hash.clone();
            env
        })
        .collect()
}
