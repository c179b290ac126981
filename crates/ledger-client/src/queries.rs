//! Query inputs and results: `tokens.query.{workspaceId}.{get|list|history|reveal}`.

use ledger_core::{Timestamp, TokenKind, TokenView};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How `get` names the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum GetBy {
    /// By id (`resourceId` / `id`).
    #[serde(rename = "tokenId")]
    Id(Uuid),
    /// By client token name, case-insensitively.
    #[serde(rename = "name")]
    Name(String),
    /// By client token `providedResourceId`.
    #[serde(rename = "providedResourceId")]
    ProvidedId(String),
}

/// A point in a token's history (`get` by any [`GetBy`]: a name or provided
/// id names the token that holds it now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AsOf {
    /// Right after the token's `n`-th event.
    Version(u64),
    /// After every event up to global position `n`, inclusive.
    Position(u64),
    /// After every event that occurred at or before this instant.
    Time(Timestamp),
}

/// Which trashed tokens a listing shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trashed {
    /// Only tokens not in the trash (the ledger's default).
    #[default]
    Exclude,
    /// Both.
    Include,
    /// Only tokens in the trash.
    Only,
}

/// Filters and paging of `list`; `None` leaves a filter off (or the ledger's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Only this kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TokenKind>,
    /// Only access tokens of this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// Only access tokens of this provider, case-insensitively.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Trashed tokens: excluded unless asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trashed: Option<Trashed>,
    /// Only revoked (`true`) or only not revoked (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    /// Only expired (`true`) or only unexpired (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
    /// Page size (the ledger's default when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The tokens, `expired` filled in.
    pub items: Vec<TokenView>,
    /// Give it as `cursor` for the next page; `None` on the last one. A page
    /// may be short and still have a next one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The body of a `get`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetQuery<'a> {
    #[serde(flatten)]
    pub by: &'a GetBy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOf>,
}

/// The body of a `reveal`: the lookup and who asks.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevealQuery<'a> {
    #[serde(flatten)]
    pub by: &'a GetBy,
    pub actor: &'a ledger_core::Agent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_bodies_have_the_wire_shape() {
        let id = Uuid::nil();
        let q = GetQuery {
            by: &GetBy::Id(id),
            as_of: Some(AsOf::Version(2)),
        };
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"tokenId": id, "asOf": {"version": 2}})
        );
        let q = GetQuery {
            by: &GetBy::ProvidedId("u".into()),
            as_of: None,
        };
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"providedResourceId": "u"})
        );
        let actor = ledger_core::Agent {
            agent_id: "svc".into(),
            agent_type: ledger_core::AgentType::Service,
        };
        let q = RevealQuery {
            by: &GetBy::Name("n".into()),
            actor: &actor,
        };
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"name": "n", "actor": {"agentId": "svc", "agentType": "service"}})
        );
        let t = Timestamp::parse("2026-11-24T14:00:00.000Z").unwrap();
        assert_eq!(
            serde_json::to_value(AsOf::Time(t)).unwrap(),
            json!({"time": "2026-11-24T14:00:00.000Z"})
        );
        assert_eq!(
            serde_json::to_value(ListQuery::default()).unwrap(),
            json!({})
        );
        let l = ListQuery {
            kind: Some(TokenKind::Access),
            trashed: Some(Trashed::Only),
            limit: Some(5),
            ..ListQuery::default()
        };
        assert_eq!(
            serde_json::to_value(l).unwrap(),
            json!({"kind": "access", "trashed": "only", "limit": 5})
        );
    }
}
