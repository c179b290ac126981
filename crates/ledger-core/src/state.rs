//! The state decisions are made against, and how events change it.

use crate::agent::Agent;
use crate::event::{AssignedPermissionGroup, Envelope, EventData, ImportOrigin, JwtRef};
use crate::secret::SealedSecret;
use crate::sharded::ShardedMap;
use crate::time::Timestamp;
use crate::validate::fold;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The two kinds of token the ledger keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A token a workspace issues to its clients (fimidara seed).
    Client,
    /// A provider's OAuth token kept for a user (primaERP seed).
    Access,
}

impl TokenKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Client => "client",
            TokenKind::Access => "access",
        }
    }
}

/// A trash item: present while the token is in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrashItem {
    /// Why it was trashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub trashed_at: Timestamp,
    /// By whom.
    pub trashed_by: Agent,
}

/// Revocation record: present once revoked, forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revocation {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub revoked_at: Timestamp,
    /// By whom.
    pub revoked_by: Agent,
}

/// Kind-specific fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum TokenBody {
    /// A client token.
    Client {
        /// Unique name in the workspace.
        name: Option<String>,
        /// Caller's id for the token.
        provided_resource_id: Option<String>,
        /// Assigned groups.
        permission_groups: Vec<AssignedPermissionGroup>,
        /// When the current string was issued.
        issued_at: Timestamp,
        /// Expiry, epoch ms.
        expires: Option<i64>,
        /// Claims of the current string.
        jwt: JwtRef,
    },
    /// A provider access token.
    Access {
        /// Owner.
        user_id: Uuid,
        /// Provider.
        provider: String,
        /// Account at the provider.
        account_name: String,
        /// Sealed access token.
        access_token: SealedSecret,
        /// Sealed refresh token.
        refresh_token: Option<SealedSecret>,
    },
}

/// One token as the decisions see it. Serializable for the store's state
/// snapshot; never published (that is what events and views are for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenState {
    /// Token id (`resourceId` / `id`).
    pub id: Uuid,
    /// Tenant.
    pub workspace_id: String,
    /// Version: the number of events applied.
    pub version: u64,
    /// Creation time (the source's, for imports).
    pub created_at: Timestamp,
    /// Creator.
    pub created_by: Agent,
    /// Time of the last event after creation.
    pub last_updated_at: Option<Timestamp>,
    /// Actor of the last event after creation.
    pub last_updated_by: Option<Agent>,
    /// Time of the last event, creation included (primaERP `updatedAt`).
    pub updated_at: Timestamp,
    /// Present while trashed.
    pub trash: Option<TrashItem>,
    /// Present once revoked.
    pub revoked: Option<Revocation>,
    /// True once purged; the state is kept as a tombstone so versions stay monotonic.
    pub purged: bool,
    /// Import provenance.
    pub import: Option<ImportOrigin>,
    /// Kind-specific fields.
    pub body: TokenBody,
}

impl TokenState {
    /// The token's kind.
    pub fn kind(&self) -> TokenKind {
        match self.body {
            TokenBody::Client { .. } => TokenKind::Client,
            TokenBody::Access { .. } => TokenKind::Access,
        }
    }

    /// True when the token may verify or be used: not trashed, revoked or purged.
    pub fn is_live(&self) -> bool {
        self.trash.is_none() && self.revoked.is_none() && !self.purged
    }

    /// The uniqueness keys this token holds in its current state.
    ///
    /// Client names and provided ids are held from issue until purge (trash and
    /// revoke keep them, PRODUCT.md); an access token holds its account only
    /// while live, since the rule is one *live* token per account.
    pub fn reservations(&self) -> Vec<Reservation> {
        if self.purged {
            return Vec::new();
        }
        let ws = &self.workspace_id;
        match &self.body {
            TokenBody::Client {
                name,
                provided_resource_id,
                ..
            } => {
                let mut out = Vec::with_capacity(2);
                if let Some(name) = name {
                    out.push(Reservation::name(ws, name));
                }
                if let Some(prid) = provided_resource_id {
                    out.push(Reservation::ProvidedId {
                        workspace_id: ws.clone(),
                        provided_id: prid.clone(),
                    });
                }
                out
            }
            TokenBody::Access {
                user_id,
                provider,
                account_name,
                ..
            } if self.is_live() => vec![Reservation::account(ws, *user_id, provider, account_name)],
            TokenBody::Access { .. } => Vec::new(),
        }
    }
}

/// A uniqueness key a token holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reservation {
    /// A case-folded client token name in a workspace.
    Name {
        /// Tenant.
        workspace_id: String,
        /// Case-folded name.
        folded: String,
    },
    /// A provided resource id in a workspace (compared exactly).
    ProvidedId {
        /// Tenant.
        workspace_id: String,
        /// The id.
        provided_id: String,
    },
    /// One live access token per user, provider and account.
    Account {
        /// Tenant.
        workspace_id: String,
        /// Owner.
        user_id: Uuid,
        /// Case-folded provider.
        provider: String,
        /// Case-folded account name.
        account: String,
    },
}

impl Reservation {
    /// The name key for `name` in a workspace.
    pub fn name(workspace_id: &str, name: &str) -> Reservation {
        Reservation::Name {
            workspace_id: workspace_id.to_owned(),
            folded: fold(name),
        }
    }
    /// The account key.
    pub fn account(
        workspace_id: &str,
        user_id: Uuid,
        provider: &str,
        account: &str,
    ) -> Reservation {
        Reservation::Account {
            workspace_id: workspace_id.to_owned(),
            user_id,
            provider: fold(provider),
            account: fold(account),
        }
    }
    /// A byte key for storage: a kind tag, then NUL-separated parts.
    ///
    /// NUL cannot appear in validated text (control characters are refused)
    /// and the user id is fixed-width, so the encoding is unambiguous.
    pub fn storage_key(&self) -> Vec<u8> {
        let parts: Vec<&[u8]> = match self {
            Reservation::Name {
                workspace_id,
                folded,
            } => vec![b"n", workspace_id.as_bytes(), folded.as_bytes()],
            Reservation::ProvidedId {
                workspace_id,
                provided_id,
            } => vec![b"p", workspace_id.as_bytes(), provided_id.as_bytes()],
            Reservation::Account {
                workspace_id,
                user_id,
                provider,
                account,
            } => vec![
                b"a",
                workspace_id.as_bytes(),
                user_id.as_bytes(),
                provider.as_bytes(),
                account.as_bytes(),
            ],
        };
        parts.join(&0u8)
    }
}

/// Why a set of tokens cannot be a ledger's state ([`LedgerState::from_tokens`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Two tokens hold one uniqueness key.
    #[error("two tokens hold the uniqueness key {0:?}")]
    KeyHeldTwice(Reservation),
    /// One token id appears twice.
    #[error("token {0} appears twice")]
    TokenTwice(Uuid),
}

/// Every token and every uniqueness key: what [`crate::decide`] needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Boxed so that growing a shard moves 24-byte entries, not whole
    /// states. Sharded, so that no growth of either map stalls the writer
    /// for long (see [`ShardedMap`]).
    ///
    /// Both maps hash with foldhash (randomly seeded per map) rather than
    /// SipHash: the keys come from the log, and replay hashes every event.
    tokens: ShardedMap<Uuid, Box<TokenState>>,
    reservations: ShardedMap<Reservation, Uuid>,
    /// Position of the last event applied.
    pub position: u64,
}

impl LedgerState {
    /// An empty ledger.
    pub fn new() -> LedgerState {
        LedgerState::default()
    }

    /// A token by id, purged tombstones included.
    pub fn token(&self, id: &Uuid) -> Option<&TokenState> {
        self.tokens.get(id).map(Box::as_ref)
    }

    /// Who holds a uniqueness key.
    pub fn holder(&self, key: &Reservation) -> Option<Uuid> {
        self.reservations.get(key).copied()
    }

    /// Every held key with its holder.
    pub fn reservations(&self) -> impl Iterator<Item = (&Reservation, &Uuid)> {
        self.reservations.iter()
    }

    /// Every token, tombstones included, in no particular order.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenState> {
        self.tokens.values().map(Box::as_ref)
    }

    /// Number of tokens, tombstones included.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The state whose last event is at `position` and whose tokens are
    /// `tokens` (a snapshot's), with the uniqueness keys recomputed from them.
    ///
    /// Folding a log never gives two tokens one id or one uniqueness key, so
    /// either means the tokens did not come from a fold.
    pub fn from_tokens(
        position: u64,
        tokens: impl IntoIterator<Item = TokenState>,
    ) -> Result<LedgerState, StateError> {
        let mut state = LedgerState {
            position,
            ..LedgerState::default()
        };
        for token in tokens {
            for key in token.reservations() {
                if state.reservations.insert(key.clone(), token.id).is_some() {
                    return Err(StateError::KeyHeldTwice(key));
                }
            }
            let id = token.id;
            if state.tokens.insert(id, Box::new(token)).is_some() {
                return Err(StateError::TokenTwice(id));
            }
        }
        Ok(state)
    }

    /// [`LedgerState::evolve`] for events read from bytes the ledger did not
    /// just write (a log opened from disk, an export, the stream): an event
    /// that breaks an invariant is an `Err` with the invariant's message, not
    /// a panic. After an `Err` the state may be half-applied: discard it.
    pub fn try_evolve(&mut self, event: &Envelope) -> Result<(), String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.evolve(event))).map_err(
            |panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a broken invariant".to_owned())
            },
        )
    }

    /// Applies one event. Events come from the log, so a mismatch is a bug:
    /// it panics rather than guess (TigerBeetle: a broken invariant is a crash).
    pub fn evolve(&mut self, event: &Envelope) {
        assert_eq!(
            event.position,
            self.position + 1,
            "event positions must be gap-free"
        );
        self.position = event.position;
        let (before, id, after) = match self.tokens.get_mut(&event.token_id) {
            None => {
                let token = create(event);
                let after = token.reservations();
                let id = token.id;
                self.tokens.insert(id, Box::new(token));
                (Vec::new(), id, after)
            }
            Some(token) => {
                assert_eq!(
                    event.version,
                    token.version + 1,
                    "token versions must be gap-free"
                );
                assert!(!token.purged, "no event may follow token_purged");
                if !moves_keys(&event.data, token) {
                    apply(token, event);
                    return;
                }
                let before = token.reservations();
                apply(token, event);
                (before, token.id, token.reservations())
            }
        };
        for key in before {
            if !after.contains(&key) && self.reservations.get(&key) == Some(&id) {
                self.reservations.remove(&key);
            }
        }
        for key in after {
            let previous = self.reservations.insert(key, id);
            assert!(
                previous.is_none() || previous == Some(id),
                "uniqueness broken at position {}",
                event.position
            );
        }
    }
}

/// Whether an event can change which uniqueness keys its token holds; the
/// others skip the bookkeeping, which is most of the cost of a replay.
///
/// A client token holds its name and provided id from issue until purge
/// (see [`TokenState::reservations`]), so only a rename or a purge moves
/// them; an access token's account key also follows trash, restore and revoke.
fn moves_keys(data: &EventData, token: &TokenState) -> bool {
    match data {
        EventData::PermissionGroupsAssigned(_)
        | EventData::PermissionGroupsUnassigned(_)
        | EventData::ClientTokenRotated(_)
        | EventData::AccessTokenRefreshed(_) => false,
        EventData::ClientTokenUpdated(e) => e.name.is_some(),
        EventData::TokenTrashed(_) | EventData::TokenRestored(_) | EventData::TokenRevoked(_) => {
            token.kind() == TokenKind::Access
        }
        EventData::ClientTokenIssued(_)
        | EventData::AccessTokenRegistered(_)
        | EventData::AccessTokenUpdated(_)
        | EventData::TokenPurged(_) => true,
    }
}

/// Folds one token's own events (its stream, in version order) into its state.
///
/// Used for `asOf` reads and idempotent replies, where only one token's
/// history is at hand; global positions are not checked here.
pub fn fold_token<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Option<TokenState> {
    events
        .into_iter()
        .fold(None, |token, event| Some(apply_event(token, event)))
}

/// Applies one event to a single token's state (`None` before its first event).
///
/// The per-token half of [`LedgerState::evolve`], for projectors that keep
/// only some tokens in memory.
pub fn apply_event(token: Option<TokenState>, event: &Envelope) -> TokenState {
    match token {
        None => create(event),
        Some(mut t) => {
            apply_to(&mut t, event);
            t
        }
    }
}

/// [`apply_event`] on an existing token, in place.
pub fn apply_to(token: &mut TokenState, event: &Envelope) {
    assert_eq!(
        event.version,
        token.version + 1,
        "token versions must be gap-free"
    );
    assert!(!token.purged, "no event may follow token_purged");
    apply(token, event);
}

fn create(event: &Envelope) -> TokenState {
    assert_eq!(event.version, 1, "a token's first event has version 1");
    let (import, body) = match &event.data {
        EventData::ClientTokenIssued(e) => (
            e.import.clone(),
            TokenBody::Client {
                name: e.name.clone(),
                provided_resource_id: e.provided_resource_id.clone(),
                permission_groups: e.permission_groups.clone(),
                issued_at: e.issued_at,
                expires: e.expires,
                jwt: e.jwt.clone(),
            },
        ),
        EventData::AccessTokenRegistered(e) => (
            e.import.clone(),
            TokenBody::Access {
                user_id: e.user.id,
                provider: e.provider.clone(),
                account_name: e.account_name.clone(),
                access_token: e.access_token.clone(),
                refresh_token: e.refresh_token.clone(),
            },
        ),
        other => panic!(
            "{} cannot create a token (position {})",
            other.event_type(),
            event.position
        ),
    };
    let created_by = import
        .as_ref()
        .and_then(|i| i.created_by.clone())
        .unwrap_or_else(|| event.actor.clone());
    TokenState {
        id: event.token_id,
        workspace_id: event.workspace_id.clone(),
        version: 1,
        created_at: import.as_ref().map_or(event.occurred_at, |i| i.created_at),
        created_by,
        last_updated_at: None,
        last_updated_by: None,
        // An import keeps the source's times "as it is" (PRODUCT.md): its
        // last change is the source's until the ledger makes one.
        updated_at: import
            .as_ref()
            .and_then(|i| i.updated_at)
            .unwrap_or(event.occurred_at),
        trash: None,
        revoked: None,
        purged: false,
        import,
        body,
    }
}

fn apply(token: &mut TokenState, event: &Envelope) {
    token.version = event.version;
    token.last_updated_at = Some(event.occurred_at);
    // In place: reuses the previous actor's allocation on every later event.
    match &mut token.last_updated_by {
        Some(by) => {
            let Agent {
                agent_id,
                agent_type,
            } = &event.actor;
            by.agent_id.clone_from(agent_id);
            by.agent_type = *agent_type;
        }
        None => token.last_updated_by = Some(event.actor.clone()),
    }
    token.updated_at = event.occurred_at;
    match (&event.data, &mut token.body) {
        (
            EventData::ClientTokenUpdated(e),
            TokenBody::Client {
                name,
                expires,
                permission_groups,
                ..
            },
        ) => {
            if let Some(v) = &e.name {
                *name = v.clone();
            }
            if let Some(v) = e.expires {
                *expires = v;
            }
            if let Some(v) = &e.permission_groups {
                *permission_groups = v.clone();
            }
        }
        (
            EventData::PermissionGroupsAssigned(e),
            TokenBody::Client {
                permission_groups, ..
            },
        ) => permission_groups.extend(e.permission_groups.iter().cloned()),
        (
            EventData::PermissionGroupsUnassigned(e),
            TokenBody::Client {
                permission_groups, ..
            },
        ) => permission_groups.retain(|g| !e.permission_group_ids.contains(&g.permission_group_id)),
        (EventData::ClientTokenRotated(e), TokenBody::Client { issued_at, jwt, .. }) => {
            *issued_at = e.issued_at;
            let JwtRef { exp, iat, jti, kid } = &e.jwt;
            jwt.exp = *exp;
            jwt.iat = *iat;
            jwt.jti.clone_from(jti);
            jwt.kid.clone_from(kid);
        }
        (
            EventData::AccessTokenRefreshed(e),
            TokenBody::Access {
                access_token,
                refresh_token,
                ..
            },
        ) => {
            *access_token = e.access_token.clone();
            if let Some(r) = &e.refresh_token {
                *refresh_token = Some(r.clone());
            }
        }
        (
            EventData::AccessTokenUpdated(e),
            TokenBody::Access {
                provider,
                account_name,
                ..
            },
        ) => {
            if let Some(v) = &e.provider {
                *provider = v.clone();
            }
            if let Some(v) = &e.account_name {
                *account_name = v.clone();
            }
        }
        (EventData::TokenTrashed(e), _) => {
            token.trash = Some(TrashItem {
                reason: e.reason.clone(),
                trashed_at: event.occurred_at,
                trashed_by: event.actor.clone(),
            })
        }
        (EventData::TokenRestored(_), _) => token.trash = None,
        (EventData::TokenRevoked(e), _) => {
            token.revoked = Some(Revocation {
                reason: e.reason.clone(),
                revoked_at: event.occurred_at,
                revoked_by: event.actor.clone(),
            })
        }
        (EventData::TokenPurged(_), body) => {
            token.purged = true;
            token.trash = None;
            // The sealed secrets are useless once the data key is destroyed;
            // dropping them from memory too keeps a purged token inert.
            if let TokenBody::Access {
                access_token,
                refresh_token,
                ..
            } = body
            {
                access_token.ciphertext.clear();
                *refresh_token = None;
            }
        }
        (data, _) => panic!(
            "{} does not apply to a {} token (position {})",
            data.event_type(),
            token.kind().as_str(),
            event.position
        ),
    }
}
