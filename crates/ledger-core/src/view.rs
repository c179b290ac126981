//! The read model of one token, as queries and command replies show it.
//!
//! Secrets never appear: provider tokens show only their fingerprints, and a
//! client token's string is re-minted on request by the edge, never stored.

use crate::agent::Agent;
use crate::event::{AssignedPermissionGroup, ImportOrigin, UserRef};
use crate::state::{Revocation, TokenBody, TokenKind, TokenState, TrashItem};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Public claims of a client token's current string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtInfo {
    /// Signing key id.
    pub kid: String,
    /// `iat`, seconds.
    pub iat: i64,
    /// `exp`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// `jti`.
    pub jti: String,
}

/// One token's current state, serialised with the seeds' field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenView {
    /// `client` or `access`.
    pub kind: TokenKind,
    /// Client token id (fimidara `resourceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<Uuid>,
    /// Access token id (primaERP `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Tenant.
    pub workspace_id: String,
    /// Client: unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client: the caller's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided_resource_id: Option<String>,
    /// Client: assigned groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_groups: Option<Vec<AssignedPermissionGroup>>,
    /// Client: when the current string was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// Client: expiry, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Client: claims of the current string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtInfo>,
    /// Client: the string itself, only when explicitly asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_str: Option<String>,
    /// Access: owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// Access: provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Access: account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Access: derived from `accountName` (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Access: fingerprint of the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_fingerprint: Option<String>,
    /// Access: fingerprint of the refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_fingerprint: Option<String>,
    /// Access: the plaintext secrets, only when explicitly asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Access: the plaintext refresh token, only when explicitly asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Creator.
    pub created_by: Agent,
    /// Last change after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<Timestamp>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<Agent>,
    /// Last change, creation included (primaERP `updatedAt`).
    pub updated_at: Timestamp,
    /// Number of events on the token.
    pub version: u64,
    /// Present while trashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash_item: Option<TrashItem>,
    /// True once revoked.
    pub revoked: bool,
    /// Revocation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// Import provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportOrigin>,
    /// Computed when read: past `expires`. Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
}

impl TokenView {
    /// The view of a token's state; `None` for a purged token, which has none.
    pub fn of(token: &TokenState) -> Option<TokenView> {
        if token.purged {
            return None;
        }
        let mut view = TokenView {
            kind: token.kind(),
            resource_id: None,
            id: None,
            workspace_id: token.workspace_id.clone(),
            name: None,
            provided_resource_id: None,
            permission_groups: None,
            issued_at: None,
            expires: None,
            jwt: None,
            token_str: None,
            user: None,
            provider: None,
            account_name: None,
            display_name: None,
            access_token_fingerprint: None,
            refresh_token_fingerprint: None,
            access_token: None,
            refresh_token: None,
            created_at: token.created_at,
            created_by: token.created_by.clone(),
            last_updated_at: token.last_updated_at,
            last_updated_by: token.last_updated_by.clone(),
            updated_at: token.updated_at,
            version: token.version,
            trash_item: token.trash.clone(),
            revoked: token.revoked.is_some(),
            revocation: token.revoked.clone(),
            import: token.import.clone(),
            expired: None,
        };
        match &token.body {
            TokenBody::Client {
                name,
                provided_resource_id,
                permission_groups,
                issued_at,
                expires,
                jwt,
            } => {
                view.resource_id = Some(token.id);
                view.name = name.clone();
                view.provided_resource_id = provided_resource_id.clone();
                view.permission_groups = Some(permission_groups.clone());
                view.issued_at = Some(*issued_at);
                view.expires = *expires;
                view.jwt = Some(JwtInfo {
                    kid: jwt.kid.clone(),
                    iat: jwt.iat,
                    exp: jwt.exp,
                    jti: jwt.jti.clone(),
                });
            }
            TokenBody::Access {
                user_id,
                provider,
                account_name,
                access_token,
                refresh_token,
            } => {
                view.id = Some(token.id);
                view.user = Some(UserRef { id: *user_id });
                view.provider = Some(provider.clone());
                view.account_name = Some(account_name.clone());
                view.display_name = Some(account_name.clone());
                view.access_token_fingerprint = Some(access_token.fingerprint.clone());
                view.refresh_token_fingerprint =
                    refresh_token.as_ref().map(|r| r.fingerprint.clone());
            }
        }
        Some(view)
    }

    /// The token's id, whichever field holds it.
    pub fn token_id(&self) -> Uuid {
        self.resource_id
            .or(self.id)
            .expect("a view always has an id")
    }

    /// True when past `expires` at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now.millis())
    }

    /// Fills the read-time `expired` flag.
    pub fn with_expired(mut self, now: Timestamp) -> TokenView {
        self.expired = Some(self.is_expired_at(now));
        self
    }

    /// True when neither trashed nor revoked (expiry aside).
    pub fn is_live(&self) -> bool {
        self.trash_item.is_none() && !self.revoked
    }

    /// True when the token would verify at `now` (ignoring its string).
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.trash_item.is_none() && !self.revoked && !self.is_expired_at(now)
    }
}
