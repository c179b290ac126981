//! `decide`: a command against the current state becomes events or a rejection.

use crate::command::{Command, IfExists, Patch, SealedCommand};
use crate::event::{
    AccessTokenRefreshed, AccessTokenRegistered, AccessTokenUpdated, AssignedPermissionGroup,
    ClientTokenIssued, ClientTokenRotated, ClientTokenUpdated, EventData, EventDraft, JwtRef,
    PermissionGroupsAssigned, PermissionGroupsUnassigned, TokenPurged, TokenRestored, TokenRevoked,
    TokenTrashed, UserRef,
};
use crate::rejection::{ErrorCode, Rejection};
use crate::state::{LedgerState, Reservation, TokenBody, TokenKind, TokenState};
use crate::time::Timestamp;
use crate::validate::{fold, PERMISSION_GROUPS_MAX};
use uuid::Uuid;

/// Everything a decision needs from outside: the clock, fresh ids, the signing key.
#[derive(Clone, Debug)]
pub struct Context {
    /// Now, as the caller's clock says.
    pub now: Timestamp,
    /// Id for a token this command may create.
    pub new_token_id: Uuid,
    /// `jti` for a token string this command may mint.
    pub jti: String,
    /// `kid` of the active signing key.
    pub kid: String,
}

/// The outcome of an accepted command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The token the command was about (created, reused or changed).
    pub token_id: Uuid,
    /// Events to append, in order; empty when nothing changes (a reuse or a no-op).
    pub events: Vec<EventDraft>,
}

/// Validates `cmd` against `state`. Pure: same inputs, same answer.
pub fn decide(
    state: &LedgerState,
    cmd: &SealedCommand,
    ctx: &Context,
) -> Result<Decision, Rejection> {
    let d = Decider { state, cmd, ctx };
    match &cmd.command {
        Command::IssueClientToken {
            name,
            provided_resource_id,
            permission_group_ids,
            expires,
            if_exists,
            import,
        } => {
            // Checked before any lookup so a re-issue by provided id and a
            // fresh issue answer the same body the same way.
            if import.is_none() {
                if let Some(e) = expires {
                    if *e <= ctx.now.millis() {
                        return Err(Rejection::invalid("expires", "must be in the future"));
                    }
                }
            }
            if let Some(prid) = provided_resource_id {
                // The provided id is looked up before the name: a caller
                // re-issuing for the same user must get the same token back.
                let key = Reservation::ProvidedId {
                    workspace_id: cmd.workspace_id.clone(),
                    provided_id: prid.clone(),
                };
                if let Some(holder) = state.holder(&key) {
                    if *if_exists == IfExists::Fail {
                        return Err(Rejection::new(
                            ErrorCode::ProvidedIdTaken,
                            format!("providedResourceId {prid:?} is used by token {holder}"),
                        )
                        .with_field("providedResourceId"));
                    }
                    let token = d.target(holder, Some(TokenKind::Client))?;
                    d.must_be_active(token)
                        .map_err(|r| r.with_field("providedResourceId"))?;
                    // A list given, even an empty one, replaces the token's
                    // whole, as an update carrying it does; no list keeps it.
                    let name = match name {
                        Some(n) => Patch::Set(n.clone()),
                        None => Patch::Keep,
                    };
                    let expires = match expires {
                        Some(e) => Patch::Set(*e),
                        None => Patch::Keep,
                    };
                    return d.update_client(
                        token,
                        &name,
                        &expires,
                        permission_group_ids.as_deref(),
                    );
                }
            }
            let token_id = d.new_token(import.as_ref().map(|i| i.resource_id), "resourceId")?;
            if let Some(n) = name {
                d.name_free(n, None)?;
            }
            let permission_groups = match import {
                Some(imp) => imp.permission_groups.clone(),
                None => d.assign(permission_group_ids.as_deref().unwrap_or_default()),
            };
            let data = ClientTokenIssued {
                expires: *expires,
                import: import.as_ref().map(|i| i.origin.clone()),
                issued_at: import.as_ref().map_or(ctx.now, |i| i.issued_at),
                jwt: d.jwt(*expires),
                name: name.clone(),
                permission_groups,
                provided_resource_id: provided_resource_id.clone(),
            };
            Ok(d.create(
                token_id,
                TokenKind::Client,
                EventData::ClientTokenIssued(data),
            ))
        }
        Command::UpdateClientToken {
            token_id,
            name,
            expires,
            permission_group_ids,
        } => {
            let token = d.target(*token_id, Some(TokenKind::Client))?;
            d.must_be_active(token)?;
            d.update_client(token, name, expires, permission_group_ids.as_deref())
        }
        Command::AssignPermissionGroups {
            token_id,
            permission_group_ids,
        } => {
            let token = d.target(*token_id, Some(TokenKind::Client))?;
            d.must_be_active(token)?;
            let current = client_groups(token);
            let new: Vec<String> = permission_group_ids
                .iter()
                .filter(|id| !current.iter().any(|g| &g.permission_group_id == *id))
                .cloned()
                .collect();
            if new.is_empty() {
                return Ok(d.unchanged(token));
            }
            if current.len() + new.len() > PERMISSION_GROUPS_MAX {
                return Err(Rejection::invalid(
                    "permissionGroups",
                    format!("a token holds at most {PERMISSION_GROUPS_MAX} groups"),
                ));
            }
            let data = PermissionGroupsAssigned {
                permission_groups: d.assign(&new),
            };
            Ok(d.next(token, EventData::PermissionGroupsAssigned(data)))
        }
        Command::UnassignPermissionGroups {
            token_id,
            permission_group_ids,
        } => {
            let token = d.target(*token_id, Some(TokenKind::Client))?;
            d.must_be_active(token)?;
            let current = client_groups(token);
            let gone: Vec<String> = permission_group_ids
                .iter()
                .filter(|id| current.iter().any(|g| &g.permission_group_id == *id))
                .cloned()
                .collect();
            if gone.is_empty() {
                return Ok(d.unchanged(token));
            }
            let data = PermissionGroupsUnassigned {
                permission_group_ids: gone,
            };
            Ok(d.next(token, EventData::PermissionGroupsUnassigned(data)))
        }
        Command::RotateClientToken { token_id } => {
            let token = d.target(*token_id, Some(TokenKind::Client))?;
            d.must_be_active(token)?;
            let TokenBody::Client { expires, .. } = &token.body else {
                unreachable!("target checked the kind");
            };
            let data = ClientTokenRotated {
                issued_at: ctx.now,
                jwt: d.jwt(*expires),
            };
            Ok(d.next(token, EventData::ClientTokenRotated(data)))
        }
        Command::RegisterAccessToken {
            id,
            user_id,
            provider,
            account_name,
            access_token,
            refresh_token,
            import,
        } => {
            let token_id = d.new_token(*id, "id")?;
            d.account_free(*user_id, provider, account_name, None)?;
            let data = AccessTokenRegistered {
                access_token: access_token.clone(),
                account_name: account_name.clone(),
                import: import.clone(),
                provider: provider.clone(),
                refresh_token: refresh_token.clone(),
                user: UserRef { id: *user_id },
            };
            Ok(d.create(
                token_id,
                TokenKind::Access,
                EventData::AccessTokenRegistered(data),
            ))
        }
        Command::RefreshAccessToken {
            token_id,
            access_token,
            refresh_token,
        } => {
            let token = d.target(*token_id, Some(TokenKind::Access))?;
            d.must_be_active(token)?;
            let data = AccessTokenRefreshed {
                access_token: access_token.clone(),
                refresh_token: refresh_token.clone(),
            };
            Ok(d.next(token, EventData::AccessTokenRefreshed(data)))
        }
        Command::UpdateAccessToken {
            token_id,
            account_name,
            provider,
        } => {
            let token = d.target(*token_id, Some(TokenKind::Access))?;
            d.must_be_active(token)?;
            let TokenBody::Access {
                user_id,
                provider: cur_provider,
                account_name: cur_account,
                ..
            } = &token.body
            else {
                unreachable!("target checked the kind");
            };
            let data = AccessTokenUpdated {
                account_name: account_name.clone().filter(|a| a != cur_account),
                provider: provider.clone().filter(|p| p != cur_provider),
            };
            if data.account_name.is_none() && data.provider.is_none() {
                return Ok(d.unchanged(token));
            }
            d.account_free(
                *user_id,
                data.provider.as_deref().unwrap_or(cur_provider),
                data.account_name.as_deref().unwrap_or(cur_account),
                Some(token.id),
            )?;
            Ok(d.next(token, EventData::AccessTokenUpdated(data)))
        }
        Command::TrashToken { token_id, reason } => {
            let token = d.target(*token_id, None)?;
            if token.trash.is_some() {
                return Err(
                    Rejection::new(ErrorCode::Trashed, "token is already in the trash")
                        .with_field("tokenId"),
                );
            }
            let data = TokenTrashed {
                reason: reason.clone(),
            };
            Ok(d.next(token, EventData::TokenTrashed(data)))
        }
        Command::RestoreToken { token_id } => {
            let token = d.target(*token_id, None)?;
            if token.trash.is_none() {
                return Err(
                    Rejection::new(ErrorCode::NotTrashed, "token is not in the trash")
                        .with_field("tokenId"),
                );
            }
            d.must_not_be_revoked(token)?;
            // Restoring must not break uniqueness: re-claim every key the
            // restored token would hold.
            let mut restored = token.clone();
            restored.trash = None;
            for key in restored.reservations() {
                if let Some(holder) = state.holder(&key).filter(|h| *h != token.id) {
                    return Err(taken(&key, holder));
                }
            }
            Ok(d.next(token, EventData::TokenRestored(TokenRestored {})))
        }
        Command::RevokeToken { token_id, reason } => {
            let token = d.target(*token_id, None)?;
            d.must_not_be_revoked(token)?;
            let data = TokenRevoked {
                reason: reason.clone(),
            };
            Ok(d.next(token, EventData::TokenRevoked(data)))
        }
        Command::PurgeToken { token_id, force } => {
            let token = d.target(*token_id, None)?;
            let in_trash = token.trash.is_some();
            if !in_trash && !force {
                return Err(Rejection::new(
                    ErrorCode::NotTrashed,
                    "only a trashed token can be purged (or pass force: true)",
                )
                .with_field("tokenId"));
            }
            let data = TokenPurged { forced: !in_trash };
            Ok(d.next(token, EventData::TokenPurged(data)))
        }
    }
}

impl Rejection {
    /// Adds the current version.
    pub fn with_version(mut self, version: u64) -> Rejection {
        self.current_version = Some(version);
        self
    }
}

fn taken(key: &Reservation, holder: Uuid) -> Rejection {
    match key {
        Reservation::Name { .. } => Rejection::new(
            ErrorCode::NameTaken,
            format!("the name is used by token {holder}"),
        )
        .with_field("name"),
        Reservation::ProvidedId { .. } => Rejection::new(
            ErrorCode::ProvidedIdTaken,
            format!("providedResourceId is used by token {holder}"),
        )
        .with_field("providedResourceId"),
        Reservation::Account { .. } => Rejection::new(
            ErrorCode::AccountTaken,
            format!("the user already has a live token for this account: {holder}"),
        )
        .with_field("accountName"),
    }
}

fn client_groups(token: &TokenState) -> &[AssignedPermissionGroup] {
    match &token.body {
        TokenBody::Client {
            permission_groups, ..
        } => permission_groups,
        TokenBody::Access { .. } => &[],
    }
}

struct Decider<'a> {
    state: &'a LedgerState,
    cmd: &'a SealedCommand,
    ctx: &'a Context,
}

impl<'a> Decider<'a> {
    /// The named token: it must exist in this workspace, be of the right kind
    /// and match `expectedVersion`.
    fn target(&self, id: Uuid, kind: Option<TokenKind>) -> Result<&'a TokenState, Rejection> {
        let token = self
            .state
            .token(&id)
            .filter(|t| !t.purged && t.workspace_id == self.cmd.workspace_id)
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::NotFound,
                    format!("no token {id} in this workspace"),
                )
                .with_field("tokenId")
            })?;
        if let Some(expected) = self.cmd.expected_version {
            if expected != token.version {
                return Err(Rejection::conflict(expected, token.version));
            }
        }
        if let Some(kind) = kind {
            if token.kind() != kind {
                return Err(Rejection::invalid(
                    "tokenId",
                    format!(
                        "{} applies to {} tokens; {id} is {} {} token",
                        self.cmd.command.name(),
                        kind.as_str(),
                        match token.kind() {
                            TokenKind::Access => "an",
                            TokenKind::Client => "a",
                        },
                        token.kind().as_str()
                    ),
                ));
            }
        }
        Ok(token)
    }

    fn must_not_be_revoked(&self, token: &TokenState) -> Result<(), Rejection> {
        if token.revoked.is_some() {
            return Err(
                Rejection::new(ErrorCode::Revoked, "token was revoked; that is final")
                    .with_field("tokenId"),
            );
        }
        Ok(())
    }

    fn must_be_active(&self, token: &TokenState) -> Result<(), Rejection> {
        self.must_not_be_revoked(token)?;
        if token.trash.is_some() {
            return Err(Rejection::new(
                ErrorCode::Trashed,
                "token is in the trash; restore it first",
            )
            .with_field("tokenId"));
        }
        Ok(())
    }

    /// The id of a token this command creates: the caller's (`field` names
    /// it), which must be unused, or a fresh one. An existing token is
    /// reported with its own version, before `expectedVersion` is compared
    /// with 0 (the version of a token that does not exist yet).
    fn new_token(&self, given: Option<Uuid>, field: &str) -> Result<Uuid, Rejection> {
        if let Some(existing) = given.and_then(|id| self.state.token(&id)) {
            // Ids are global but workspaces are tenants: another workspace's
            // token is only "taken", with nothing about it (its version would
            // tell its history's length).
            if existing.workspace_id != self.cmd.workspace_id {
                return Err(Rejection::new(
                    ErrorCode::Conflict,
                    format!("token id {} is taken; choose another", existing.id),
                )
                .with_field(field));
            }
            return Err(Rejection::new(
                ErrorCode::Conflict,
                format!("token {} already exists", existing.id),
            )
            .with_field(field)
            .with_version(existing.version));
        }
        if let Some(expected) = self.cmd.expected_version.filter(|v| *v != 0) {
            return Err(Rejection::conflict(expected, 0));
        }
        match given {
            Some(id) => Ok(id),
            None => self.fresh_id(),
        }
    }

    fn fresh_id(&self) -> Result<Uuid, Rejection> {
        if self.state.token(&self.ctx.new_token_id).is_some() {
            // The edge generates random ids; a collision means a broken generator.
            return Err(Rejection::new(
                ErrorCode::Internal,
                "generated token id already exists",
            ));
        }
        Ok(self.ctx.new_token_id)
    }

    fn name_free(&self, name: &str, owner: Option<Uuid>) -> Result<(), Rejection> {
        let key = Reservation::name(&self.cmd.workspace_id, name);
        match self.state.holder(&key) {
            Some(holder) if Some(holder) != owner => Err(taken(&key, holder)),
            _ => Ok(()),
        }
    }

    fn account_free(
        &self,
        user_id: Uuid,
        provider: &str,
        account: &str,
        owner: Option<Uuid>,
    ) -> Result<(), Rejection> {
        let key = Reservation::account(&self.cmd.workspace_id, user_id, provider, account);
        match self.state.holder(&key) {
            Some(holder) if Some(holder) != owner => Err(taken(&key, holder)),
            _ => Ok(()),
        }
    }

    fn assign(&self, ids: &[String]) -> Vec<AssignedPermissionGroup> {
        ids.iter()
            .map(|id| AssignedPermissionGroup {
                assigned_at: self.ctx.now,
                assigned_by: self.cmd.actor.clone(),
                permission_group_id: id.clone(),
            })
            .collect()
    }

    fn jwt(&self, expires_ms: Option<i64>) -> JwtRef {
        JwtRef {
            // Round up so the string never outlives the ledger's expiry by less
            // than a second in the other direction; verification checks the
            // ledger's `expires` to the millisecond anyway.
            exp: expires_ms.map(|ms| ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)),
            iat: self.ctx.now.secs(),
            jti: self.ctx.jti.clone(),
            kid: self.ctx.kid.clone(),
        }
    }

    fn create(&self, token_id: Uuid, kind: TokenKind, data: EventData) -> Decision {
        Decision {
            token_id,
            events: vec![EventDraft {
                token_id,
                token_kind: kind,
                workspace_id: self.cmd.workspace_id.clone(),
                version: 1,
                data,
            }],
        }
    }

    fn next(&self, token: &TokenState, data: EventData) -> Decision {
        Decision {
            token_id: token.id,
            events: vec![EventDraft {
                token_id: token.id,
                token_kind: token.kind(),
                workspace_id: token.workspace_id.clone(),
                version: token.version + 1,
                data,
            }],
        }
    }

    fn unchanged(&self, token: &TokenState) -> Decision {
        Decision {
            token_id: token.id,
            events: Vec::new(),
        }
    }

    fn update_client(
        &self,
        token: &TokenState,
        name: &Patch<String>,
        expires: &Patch<i64>,
        groups: Option<&[String]>,
    ) -> Result<Decision, Rejection> {
        let TokenBody::Client {
            name: cur_name,
            expires: cur_expires,
            permission_groups: cur_groups,
            ..
        } = &token.body
        else {
            unreachable!("callers check the kind");
        };
        let mut data = ClientTokenUpdated::default();
        match name {
            Patch::Keep => {}
            Patch::Clear if cur_name.is_none() => {}
            Patch::Clear => data.name = Some(None),
            Patch::Set(n) if cur_name.as_deref() == Some(n.as_str()) => {}
            Patch::Set(n) => {
                // A rename to another spelling of its own name holds the same
                // key, so `owner` lets it through.
                self.name_free(n, Some(token.id))?;
                data.name = Some(Some(n.clone()));
            }
        }
        match expires {
            Patch::Keep => {}
            Patch::Clear if cur_expires.is_none() => {}
            Patch::Clear => data.expires = Some(None),
            Patch::Set(e) if *cur_expires == Some(*e) => {}
            Patch::Set(e) => data.expires = Some(Some(*e)),
        }
        if let Some(ids) = groups {
            let same = ids.len() == cur_groups.len()
                && ids
                    .iter()
                    .zip(cur_groups)
                    .all(|(id, g)| *id == g.permission_group_id);
            if !same {
                // Groups that stay keep their original assignment record.
                let list = ids
                    .iter()
                    .map(|id| {
                        cur_groups
                            .iter()
                            .find(|g| &g.permission_group_id == id)
                            .cloned()
                            .unwrap_or_else(|| self.assign(std::slice::from_ref(id)).remove(0))
                    })
                    .collect();
                data.permission_groups = Some(list);
            }
        }
        if data.is_empty() {
            return Ok(self.unchanged(token));
        }
        Ok(self.next(token, EventData::ClientTokenUpdated(data)))
    }
}

/// True when the two names collide (case-insensitively, Unicode folding).
pub fn names_collide(a: &str, b: &str) -> bool {
    fold(a) == fold(b)
}

/// The rule for handing out a token's secrets (a client token's string, an
/// access token's provider tokens) on an explicit request: only a live
/// token's, in its own workspace.
///
/// An unknown token, a purged one (its secrets are shredded) and one of
/// another workspace are all `not_found`, so a caller learns nothing about
/// other tenants. A revoked token is `revoked` and a trashed one `trashed`:
/// both are inactive, and a secret handed out now would be put to use.
/// An expired client token's string is still handed out: it verifies as
/// inactive, and the view says `expired`.
pub fn may_reveal<'a>(
    token: Option<&'a TokenState>,
    workspace_id: &str,
) -> Result<&'a TokenState, Rejection> {
    let Some(token) = token.filter(|t| !t.purged && t.workspace_id == workspace_id) else {
        return Err(
            Rejection::new(ErrorCode::NotFound, "no such token in this workspace")
                .with_field("tokenId"),
        );
    };
    if token.revoked.is_some() {
        return Err(Rejection::new(
            ErrorCode::Revoked,
            "token was revoked: its secrets are no longer handed out",
        )
        .with_field("tokenId"));
    }
    if token.trash.is_some() {
        return Err(Rejection::new(
            ErrorCode::Trashed,
            "token is in the trash: restore it to read its secrets",
        )
        .with_field("tokenId"));
    }
    Ok(token)
}
