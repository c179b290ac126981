//! What verification needs to know about one client token, and how events change it.

use ledger_core::event::JwtRef;
use ledger_core::{Envelope, EventData, TokenKind, TokenView};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A client token's facts that decide whether its string verifies.
///
/// Built from a view ([`TokenStatus::from_view`]) or from its
/// `client_token_issued` event, then kept current with [`TokenStatus::apply`]:
/// the same fold as the ledger's own, restricted to these fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenStatus {
    /// The token id.
    pub token_id: Uuid,
    /// Its workspace.
    pub workspace_id: String,
    /// The number of events folded in (the token's version).
    pub version: u64,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ids of its assigned permission groups.
    pub permission_groups: Vec<String>,
    /// The ledger's expiry, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The claims and key of its current string.
    pub jwt: JwtRef,
    /// In the trash.
    pub trashed: bool,
    /// Revoked (final).
    pub revoked: bool,
}

/// What [`TokenStatus::apply`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event was the next one and is folded in.
    Applied,
    /// The status already covers it (its version is not above the status's).
    AlreadySeen,
    /// The token was purged: drop the status.
    Purged,
    /// Versions skipped: an event is missing, so the status cannot be trusted.
    Gap,
}

impl TokenStatus {
    /// The status of a client token's view; `None` for an access token.
    pub fn from_view(view: &TokenView) -> Option<TokenStatus> {
        if view.kind != TokenKind::Client {
            return None;
        }
        let jwt = view.jwt.as_ref()?;
        Some(TokenStatus {
            token_id: view.token_id(),
            workspace_id: view.workspace_id.clone(),
            version: view.version,
            name: view.name.clone(),
            permission_groups: view
                .permission_groups
                .iter()
                .flatten()
                .map(|g| g.permission_group_id.clone())
                .collect(),
            expires: view.expires,
            jwt: JwtRef {
                exp: jwt.exp,
                iat: jwt.iat,
                jti: jwt.jti.clone(),
                kid: jwt.kid.clone(),
            },
            trashed: view.trash_item.is_some(),
            revoked: view.revoked,
        })
    }

    /// The status a `client_token_issued` event creates; `None` for any other event.
    pub fn from_issued(event: &Envelope) -> Option<TokenStatus> {
        let EventData::ClientTokenIssued(e) = &event.data else {
            return None;
        };
        Some(TokenStatus {
            token_id: event.token_id,
            workspace_id: event.workspace_id.clone(),
            version: event.version,
            name: e.name.clone(),
            permission_groups: e
                .permission_groups
                .iter()
                .map(|g| g.permission_group_id.clone())
                .collect(),
            expires: e.expires,
            jwt: e.jwt.clone(),
            trashed: false,
            revoked: false,
        })
    }

    /// Folds the token's next event in; see [`Applied`].
    pub fn apply(&mut self, event: &Envelope) -> Applied {
        debug_assert_eq!(event.token_id, self.token_id, "an event of another token");
        if event.version <= self.version {
            return Applied::AlreadySeen;
        }
        if event.version != self.version + 1 {
            return Applied::Gap;
        }
        self.version = event.version;
        match &event.data {
            EventData::ClientTokenUpdated(e) => {
                if let Some(name) = &e.name {
                    self.name.clone_from(name);
                }
                if let Some(expires) = e.expires {
                    self.expires = expires;
                }
                if let Some(groups) = &e.permission_groups {
                    self.permission_groups = groups
                        .iter()
                        .map(|g| g.permission_group_id.clone())
                        .collect();
                }
            }
            EventData::PermissionGroupsAssigned(e) => self.permission_groups.extend(
                e.permission_groups
                    .iter()
                    .map(|g| g.permission_group_id.clone()),
            ),
            EventData::PermissionGroupsUnassigned(e) => self
                .permission_groups
                .retain(|g| !e.permission_group_ids.contains(g)),
            EventData::ClientTokenRotated(e) => self.jwt = e.jwt.clone(),
            EventData::TokenTrashed(_) => self.trashed = true,
            EventData::TokenRestored(_) => self.trashed = false,
            EventData::TokenRevoked(_) => self.revoked = true,
            EventData::TokenPurged(_) => return Applied::Purged,
            // Access token events never reach a client token's stream; one
            // that did would be a broken log: trust nothing about the token.
            EventData::ClientTokenIssued(_)
            | EventData::AccessTokenRegistered(_)
            | EventData::AccessTokenRefreshed(_)
            | EventData::AccessTokenUpdated(_) => return Applied::Gap,
        }
        Applied::Applied
    }
}
