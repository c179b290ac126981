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
/// Its `Debug` hides the plaintext secrets a reveal fills in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

// By hand, so that a `tracing::debug!(?view)` after an issue, a rotate or a
// reveal does not log the string or the provider's secrets. Destructured, so
// a new field does not compile until it is shown here.
impl std::fmt::Debug for TokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TokenView {
            kind,
            resource_id,
            id,
            workspace_id,
            name,
            provided_resource_id,
            permission_groups,
            issued_at,
            expires,
            jwt,
            token_str,
            user,
            provider,
            account_name,
            display_name,
            access_token_fingerprint,
            refresh_token_fingerprint,
            access_token,
            refresh_token,
            created_at,
            created_by,
            last_updated_at,
            last_updated_by,
            updated_at,
            version,
            trash_item,
            revoked,
            revocation,
            import,
            expired,
        } = self;
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("TokenView")
            .field("kind", kind)
            .field("resource_id", resource_id)
            .field("id", id)
            .field("workspace_id", workspace_id)
            .field("name", name)
            .field("provided_resource_id", provided_resource_id)
            .field("permission_groups", permission_groups)
            .field("issued_at", issued_at)
            .field("expires", expires)
            .field("jwt", jwt)
            .field("token_str", &hidden(token_str))
            .field("user", user)
            .field("provider", provider)
            .field("account_name", account_name)
            .field("display_name", display_name)
            .field("access_token_fingerprint", access_token_fingerprint)
            .field("refresh_token_fingerprint", refresh_token_fingerprint)
            .field("access_token", &hidden(access_token))
            .field("refresh_token", &hidden(refresh_token))
            .field("created_at", created_at)
            .field("created_by", created_by)
            .field("last_updated_at", last_updated_at)
            .field("last_updated_by", last_updated_by)
            .field("updated_at", updated_at)
            .field("version", version)
            .field("trash_item", trash_item)
            .field("revoked", revoked)
            .field("revocation", revocation)
            .field("import", import)
            .field("expired", expired)
            .finish()
    }
}

impl TokenView {
    /// The view of a token's state; `None` for a purged token, which has none.
    pub fn of(token: &TokenState) -> Option<TokenView> {
        ViewRef::of(token).map(|view| view.to_owned_view())
    }

    /// The bytes of `serde_json::to_vec(&TokenView::of(token))`, written
    /// straight from the state without building the view (no clones): what
    /// projectors store for every token. `false`, and nothing written, for a
    /// purged token.
    pub fn write_json_of(token: &TokenState, out: &mut Vec<u8>) -> bool {
        match ViewRef::of(token) {
            Some(view) => {
                serde_json::to_writer(out, &view).expect("a view always serializes");
                true
            }
            None => false,
        }
    }

    /// The token's id, whichever field holds it.
    pub fn token_id(&self) -> Uuid {
        self.resource_id
            .or(self.id)
            .expect("a view always has an id")
    }

    /// True when past `expires` at `now`, or, for a client token, past its
    /// current string's own `exp`.
    ///
    /// The string's `exp` is minted from `expires` (rounded up to the
    /// second), so the two agree until an update moves `expires` later:
    /// the signed `exp` still caps the string, and verification refuses it
    /// from then on. Reporting the token as live would contradict that;
    /// a rotation mints a string that lasts until the new expiry.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        let now = now.millis();
        self.expires.is_some_and(|e| e <= now)
            || self
                .jwt
                .as_ref()
                .and_then(|j| j.exp)
                .is_some_and(|exp| exp.saturating_mul(1000) <= now)
    }

    /// Whether the current string expires before `expires` says the token
    /// does (after an update moved `expires` later, or cleared it): a
    /// rotation is needed for the new expiry to take effect.
    pub fn string_expires_first(&self) -> bool {
        match self.jwt.as_ref().and_then(|j| j.exp) {
            None => false,
            Some(exp) => self.expires.is_none_or(|e| exp.saturating_mul(1000) < e),
        }
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

    /// True when neither trashed, revoked nor expired at `now` (see [`TokenView::is_expired_at`]).
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.trash_item.is_none() && !self.revoked && !self.is_expired_at(now)
    }
}

/// [`TokenView`] borrowed from a [`TokenState`]: the same fields, names,
/// order and omissions, so the same JSON. [`TokenView::write_json_of`]
/// serializes it as it is, [`TokenView::of`] owns it. The fields a stored view
/// never has (`tokenStr`, the plaintext secrets, `expired`) are left out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ViewRef<'a> {
    kind: TokenKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_id: Option<&'a Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Uuid>,
    workspace_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provided_resource_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_groups: Option<&'a [AssignedPermissionGroup]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<JwtInfoRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_fingerprint: Option<&'a str>,
    created_at: &'a Timestamp,
    created_by: &'a Agent,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_updated_at: Option<&'a Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_updated_by: Option<&'a Agent>,
    updated_at: &'a Timestamp,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trash_item: Option<&'a TrashItem>,
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation: Option<&'a Revocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    import: Option<&'a ImportOrigin>,
}

/// [`JwtInfo`] borrowed, in its field order.
#[derive(Serialize)]
struct JwtInfoRef<'a> {
    kid: &'a str,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    jti: &'a str,
}

impl<'a> ViewRef<'a> {
    /// The one mapping from a token's state to its view; `None` once purged.
    fn of(token: &'a TokenState) -> Option<ViewRef<'a>> {
        if token.purged {
            return None;
        }
        let mut view = ViewRef {
            kind: token.kind(),
            resource_id: None,
            id: None,
            workspace_id: &token.workspace_id,
            name: None,
            provided_resource_id: None,
            permission_groups: None,
            issued_at: None,
            expires: None,
            jwt: None,
            user: None,
            provider: None,
            account_name: None,
            display_name: None,
            access_token_fingerprint: None,
            refresh_token_fingerprint: None,
            created_at: &token.created_at,
            created_by: &token.created_by,
            last_updated_at: token.last_updated_at.as_ref(),
            last_updated_by: token.last_updated_by.as_ref(),
            updated_at: &token.updated_at,
            version: token.version,
            trash_item: token.trash.as_ref(),
            revoked: token.revoked.is_some(),
            revocation: token.revoked.as_ref(),
            import: token.import.as_ref(),
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
                view.resource_id = Some(&token.id);
                view.name = name.as_deref();
                view.provided_resource_id = provided_resource_id.as_deref();
                view.permission_groups = Some(permission_groups);
                view.issued_at = Some(issued_at);
                view.expires = *expires;
                view.jwt = Some(JwtInfoRef {
                    kid: &jwt.kid,
                    iat: jwt.iat,
                    exp: jwt.exp,
                    jti: &jwt.jti,
                });
            }
            TokenBody::Access {
                user_id,
                provider,
                account_name,
                access_token,
                refresh_token,
            } => {
                view.id = Some(&token.id);
                view.user = Some(UserRef { id: *user_id });
                view.provider = Some(provider);
                view.account_name = Some(account_name);
                view.display_name = Some(account_name);
                view.access_token_fingerprint = Some(&access_token.fingerprint);
                view.refresh_token_fingerprint = refresh_token.as_ref().map(|r| &*r.fingerprint);
            }
        }
        Some(view)
    }

    /// The owned view, with nothing a stored view lacks (no string, no
    /// plaintext secrets, `expired` not yet computed).
    fn to_owned_view(&self) -> TokenView {
        TokenView {
            kind: self.kind,
            resource_id: self.resource_id.copied(),
            id: self.id.copied(),
            workspace_id: self.workspace_id.to_owned(),
            name: self.name.map(str::to_owned),
            provided_resource_id: self.provided_resource_id.map(str::to_owned),
            permission_groups: self.permission_groups.map(<[_]>::to_vec),
            issued_at: self.issued_at.copied(),
            expires: self.expires,
            jwt: self.jwt.as_ref().map(|j| JwtInfo {
                kid: j.kid.to_owned(),
                iat: j.iat,
                exp: j.exp,
                jti: j.jti.to_owned(),
            }),
            token_str: None,
            user: self.user.clone(),
            provider: self.provider.map(str::to_owned),
            account_name: self.account_name.map(str::to_owned),
            display_name: self.display_name.map(str::to_owned),
            access_token_fingerprint: self.access_token_fingerprint.map(str::to_owned),
            refresh_token_fingerprint: self.refresh_token_fingerprint.map(str::to_owned),
            access_token: None,
            refresh_token: None,
            created_at: *self.created_at,
            created_by: self.created_by.clone(),
            last_updated_at: self.last_updated_at.copied(),
            last_updated_by: self.last_updated_by.cloned(),
            updated_at: *self.updated_at,
            version: self.version,
            trash_item: self.trash_item.cloned(),
            revoked: self.revoked,
            revocation: self.revocation.cloned(),
            import: self.import.cloned(),
            expired: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentType;
    use crate::event::JwtRef;
    use crate::secret::SealedSecret;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn agent(id: &str) -> Agent {
        Agent {
            agent_id: id.into(),
            agent_type: AgentType::User,
        }
    }

    fn sealed(f: &str) -> SealedSecret {
        SealedSecret {
            alg: "xchacha20poly1305".into(),
            ciphertext: "c".into(),
            fingerprint: f.into(),
            key_id: "k".into(),
            nonce: "n".into(),
        }
    }

    fn states() -> Vec<TokenState> {
        let minimal = TokenState {
            id: Uuid::from_u128(1),
            workspace_id: "acme".into(),
            version: 1,
            created_at: at(1_000),
            created_by: agent("alice"),
            last_updated_at: None,
            last_updated_by: None,
            updated_at: at(1_000),
            trash: None,
            revoked: None,
            purged: false,
            import: None,
            body: TokenBody::Client {
                name: None,
                provided_resource_id: None,
                permission_groups: Vec::new(),
                issued_at: at(1_000),
                expires: None,
                jwt: JwtRef {
                    exp: None,
                    iat: 1,
                    jti: "j".into(),
                    kid: "k1".into(),
                },
            },
        };
        let full_client = TokenState {
            version: 7,
            last_updated_at: Some(at(5_000)),
            last_updated_by: Some(agent("bob \"quoted\" é")),
            updated_at: at(5_000),
            trash: Some(TrashItem {
                reason: Some("why".into()),
                trashed_at: at(4_000),
                trashed_by: agent("carol"),
            }),
            revoked: Some(Revocation {
                reason: None,
                revoked_at: at(4_500),
                revoked_by: agent("dave"),
            }),
            import: Some(ImportOrigin {
                created_at: at(10),
                created_by: Some(agent("src")),
                source: "fimidara".into(),
                source_version: Some(3),
                updated_at: Some(at(20)),
            }),
            body: TokenBody::Client {
                name: Some("Näme".into()),
                provided_resource_id: Some("ext-1".into()),
                permission_groups: vec![AssignedPermissionGroup {
                    assigned_at: at(2_000),
                    assigned_by: agent("alice"),
                    permission_group_id: "readers".into(),
                }],
                issued_at: at(3_000),
                expires: Some(9_000),
                jwt: JwtRef {
                    exp: Some(9),
                    iat: 3,
                    jti: "j2".into(),
                    kid: "k2".into(),
                },
            },
            ..minimal.clone()
        };
        let access = |refresh: Option<SealedSecret>| TokenState {
            id: Uuid::from_u128(2),
            body: TokenBody::Access {
                user_id: Uuid::from_u128(3),
                provider: "Google".into(),
                account_name: "a@example.com".into(),
                access_token: sealed("hmac-sha256:aa"),
                refresh_token: refresh,
            },
            ..minimal.clone()
        };
        vec![
            minimal.clone(),
            full_client,
            access(None),
            access(Some(sealed("hmac-sha256:bb"))),
        ]
    }

    #[test]
    fn debug_hides_the_revealed_secrets_and_shows_the_rest() {
        for state in states() {
            let mut view = TokenView::of(&state).unwrap();
            view.token_str = Some("eyJ.SECRET-STRING".into());
            view.access_token = Some("SECRET-ACCESS".into());
            view.refresh_token = Some("SECRET-REFRESH".into());
            let shown = format!("{view:?}");
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("token_str: Some(\"***\")"), "{shown}");
            assert!(
                shown.contains(&format!("{:?}", view.workspace_id)),
                "{shown}"
            );
            assert!(
                shown.contains(&format!("version: {}", view.version)),
                "{shown}"
            );
        }
    }

    #[test]
    fn write_json_of_equals_serializing_the_view() {
        for state in states() {
            let mut out = Vec::new();
            assert!(TokenView::write_json_of(&state, &mut out));
            let expected = serde_json::to_vec(&TokenView::of(&state).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        let mut purged = states().remove(0);
        purged.purged = true;
        let mut out = Vec::new();
        assert!(!TokenView::write_json_of(&purged, &mut out));
        assert!(out.is_empty());
    }
}
