//! Would the ledger have produced this event? The domain rules of
//! `ledger_core::decide`, restated as checks on an event against the state
//! before it.
//!
//! `LedgerState::evolve` trusts its input and panics on an event that breaks
//! an invariant (TigerBeetle: a broken invariant is a crash). An audit reads
//! untrusted bytes, so every condition `evolve` asserts, and every rule
//! `decide` enforces, is checked here first and reported as a finding.

use crate::FindingKind;
use ledger_core::state::apply_event;
use ledger_core::validate::PERMISSION_GROUPS_MAX;
use ledger_core::{
    Envelope, EventData, LedgerState, Reservation, TokenBody, TokenKind, TokenState,
};

/// What is wrong with an event.
pub(crate) type Violation = (FindingKind, String);

fn violation(kind: FindingKind, message: impl Into<String>) -> Result<(), Violation> {
    Err((kind, message.into()))
}

/// True for the two types that create a token.
pub(crate) fn creates(data: &EventData) -> bool {
    matches!(
        data,
        EventData::ClientTokenIssued(_) | EventData::AccessTokenRegistered(_)
    )
}

/// The kind of token an event type applies to; `None` for the `token_*` types.
fn kind_of(data: &EventData) -> Option<TokenKind> {
    match data {
        EventData::ClientTokenIssued(_)
        | EventData::ClientTokenUpdated(_)
        | EventData::PermissionGroupsAssigned(_)
        | EventData::PermissionGroupsUnassigned(_)
        | EventData::ClientTokenRotated(_) => Some(TokenKind::Client),
        EventData::AccessTokenRegistered(_)
        | EventData::AccessTokenRefreshed(_)
        | EventData::AccessTokenUpdated(_) => Some(TokenKind::Access),
        EventData::TokenTrashed(_)
        | EventData::TokenRestored(_)
        | EventData::TokenRevoked(_)
        | EventData::TokenPurged(_) => None,
    }
}

/// Checks `env` against the state before it. Positions and versions are
/// checked by the caller; this is everything else `evolve` needs to hold.
pub(crate) fn check(state: &LedgerState, env: &Envelope) -> Result<(), Violation> {
    let ty = env.event_type();
    if let Some(kind) = kind_of(&env.data) {
        if kind != env.token_kind {
            return violation(
                FindingKind::KindMismatch,
                format!(
                    "{ty} applies to {} tokens but the envelope says tokenKind {}",
                    kind.as_str(),
                    env.token_kind.as_str()
                ),
            );
        }
    }
    let Some(token) = state.token(&env.token_id) else {
        if creates(&env.data) {
            return claims_keys(state, env.token_id, creation_keys(env));
        }
        return violation(
            FindingKind::UnknownToken,
            format!(
                "{ty} for token {}, which no earlier event created",
                env.token_id
            ),
        );
    };
    if creates(&env.data) {
        return violation(
            FindingKind::TokenExists,
            format!("{ty} for token {}, which already exists", env.token_id),
        );
    }
    if token.purged {
        return violation(
            FindingKind::AfterPurge,
            format!("{ty} after token_purged: nothing may follow a purge"),
        );
    }
    if token.workspace_id != env.workspace_id {
        return violation(
            FindingKind::WorkspaceMismatch,
            format!(
                "{ty} names workspace {:?}, but the token belongs to {:?}",
                env.workspace_id, token.workspace_id
            ),
        );
    }
    if token.kind() != env.token_kind {
        return violation(
            FindingKind::KindMismatch,
            format!(
                "{ty} says tokenKind {}, but the token is a {} token",
                env.token_kind.as_str(),
                token.kind().as_str()
            ),
        );
    }
    match &env.data {
        EventData::ClientTokenUpdated(u) => {
            active(token, ty.as_str())?;
            let TokenBody::Client {
                name,
                expires,
                permission_groups,
                ..
            } = &token.body
            else {
                unreachable!("the kind was checked");
            };
            if u.is_empty() {
                return violation(
                    FindingKind::NoChange,
                    "client_token_updated changes nothing",
                );
            }
            if u.name.as_ref() == Some(name) {
                return violation(
                    FindingKind::NoChange,
                    "client_token_updated sets the name it already has",
                );
            }
            if u.expires.as_ref() == Some(expires) {
                return violation(
                    FindingKind::NoChange,
                    "client_token_updated sets the expiry it already has",
                );
            }
            if u.permission_groups.as_ref() == Some(permission_groups) {
                return violation(
                    FindingKind::NoChange,
                    "client_token_updated sets the groups it already has",
                );
            }
            if let Some(groups) = &u.permission_groups {
                groups_fit(
                    groups.iter().map(|g| g.permission_group_id.as_str()),
                    groups.len(),
                )?;
            }
            if let Some(Some(new_name)) = &u.name {
                return claims_keys(
                    state,
                    token.id,
                    vec![Reservation::name(&token.workspace_id, new_name)],
                );
            }
            Ok(())
        }
        EventData::PermissionGroupsAssigned(a) => {
            active(token, ty.as_str())?;
            let held = client_groups(token);
            for g in &a.permission_groups {
                if held
                    .iter()
                    .any(|h| h.permission_group_id == g.permission_group_id)
                {
                    return violation(
                        FindingKind::NoChange,
                        format!(
                            "assigns group {:?}, which the token already has",
                            g.permission_group_id
                        ),
                    );
                }
            }
            let ids = held
                .iter()
                .chain(&a.permission_groups)
                .map(|g| g.permission_group_id.as_str());
            groups_fit(ids, held.len() + a.permission_groups.len())
        }
        EventData::PermissionGroupsUnassigned(u) => {
            active(token, ty.as_str())?;
            let held = client_groups(token);
            for id in &u.permission_group_ids {
                if !held.iter().any(|h| &h.permission_group_id == id) {
                    return violation(
                        FindingKind::NoChange,
                        format!("unassigns group {id:?}, which the token does not have"),
                    );
                }
            }
            Ok(())
        }
        EventData::ClientTokenRotated(_) | EventData::AccessTokenRefreshed(_) => {
            active(token, ty.as_str())
        }
        EventData::AccessTokenUpdated(u) => {
            active(token, ty.as_str())?;
            let TokenBody::Access {
                provider,
                account_name,
                ..
            } = &token.body
            else {
                unreachable!("the kind was checked");
            };
            if u.account_name.is_none() && u.provider.is_none() {
                return violation(
                    FindingKind::NoChange,
                    "access_token_updated changes nothing",
                );
            }
            if u.account_name.as_ref() == Some(account_name)
                || u.provider.as_ref() == Some(provider)
            {
                return violation(
                    FindingKind::NoChange,
                    "access_token_updated sets a value the token already has",
                );
            }
            let TokenBody::Access { user_id, .. } = &token.body else {
                unreachable!("the kind was checked");
            };
            let key = Reservation::account(
                &token.workspace_id,
                *user_id,
                u.provider.as_deref().unwrap_or(provider),
                u.account_name.as_deref().unwrap_or(account_name),
            );
            claims_keys(state, token.id, vec![key])
        }
        EventData::TokenTrashed(_) => {
            if token.trash.is_some() {
                return violation(
                    FindingKind::AlreadyTrashed,
                    "token_trashed on a token already in the trash",
                );
            }
            Ok(())
        }
        EventData::TokenRestored(_) => {
            if token.trash.is_none() {
                return violation(
                    FindingKind::NotTrashed,
                    "token_restored on a token that is not in the trash",
                );
            }
            if token.revoked.is_some() {
                return violation(
                    FindingKind::Revoked,
                    "token_restored on a revoked token: revocation is final",
                );
            }
            claims(state, &apply_event(Some(token.clone()), env))
        }
        EventData::TokenRevoked(_) => {
            if token.revoked.is_some() {
                return violation(
                    FindingKind::Revoked,
                    "token_revoked on a token already revoked",
                );
            }
            Ok(())
        }
        EventData::TokenPurged(p) => {
            let in_trash = token.trash.is_some();
            if p.forced == in_trash {
                return violation(
                    FindingKind::IllegalEvent,
                    if in_trash {
                        "token_purged says forced, but the token was in the trash"
                    } else {
                        "token_purged without force, but the token was not in the trash"
                    },
                );
            }
            Ok(())
        }
        EventData::ClientTokenIssued(_) | EventData::AccessTokenRegistered(_) => {
            unreachable!("creation events were handled above")
        }
    }
}

/// Commands other than trash, restore, revoke and purge need a live token.
fn active(token: &TokenState, ty: &str) -> Result<(), Violation> {
    if token.revoked.is_some() {
        return violation(
            FindingKind::Revoked,
            format!("{ty} after token_revoked: only trash and purge may follow a revocation"),
        );
    }
    if token.trash.is_some() {
        return violation(
            FindingKind::Trashed,
            format!("{ty} on a token in the trash: it must be restored first"),
        );
    }
    Ok(())
}

fn client_groups(token: &TokenState) -> &[ledger_core::event::AssignedPermissionGroup] {
    match &token.body {
        TokenBody::Client {
            permission_groups, ..
        } => permission_groups,
        TokenBody::Access { .. } => &[],
    }
}

fn groups_fit<'a>(ids: impl Iterator<Item = &'a str>, count: usize) -> Result<(), Violation> {
    if count > PERMISSION_GROUPS_MAX {
        return violation(
            FindingKind::IllegalEvent,
            format!(
                "the token would hold {count} groups; at most {PERMISSION_GROUPS_MAX} are allowed"
            ),
        );
    }
    let mut seen = std::collections::HashSet::with_capacity(count);
    for id in ids {
        if !seen.insert(id) {
            return violation(
                FindingKind::IllegalEvent,
                format!("group {id:?} is held twice"),
            );
        }
    }
    Ok(())
}

/// The keys a creation event claims (what `TokenState::reservations` gives
/// the new token), computed without building the token.
fn creation_keys(env: &Envelope) -> Vec<Reservation> {
    let ws = &env.workspace_id;
    match &env.data {
        EventData::ClientTokenIssued(e) => {
            let mut keys = Vec::with_capacity(2);
            if let Some(name) = &e.name {
                keys.push(Reservation::name(ws, name));
            }
            if let Some(prid) = &e.provided_resource_id {
                keys.push(Reservation::ProvidedId {
                    workspace_id: ws.clone(),
                    provided_id: prid.clone(),
                });
            }
            keys
        }
        EventData::AccessTokenRegistered(e) => {
            vec![Reservation::account(
                ws,
                e.user.id,
                &e.provider,
                &e.account_name,
            )]
        }
        _ => Vec::new(),
    }
}

/// Every uniqueness key the token would hold must be free or its own.
fn claims(state: &LedgerState, after: &TokenState) -> Result<(), Violation> {
    claims_keys(state, after.id, after.reservations())
}

fn claims_keys(
    state: &LedgerState,
    id: uuid::Uuid,
    keys: Vec<Reservation>,
) -> Result<(), Violation> {
    for key in keys {
        let Some(holder) = state.holder(&key).filter(|h| *h != id) else {
            continue;
        };
        let (kind, what) = match key {
            Reservation::Name { .. } => (FindingKind::NameTaken, "name"),
            Reservation::ProvidedId { .. } => (FindingKind::ProvidedIdTaken, "providedResourceId"),
            Reservation::Account { .. } => (
                FindingKind::AccountTaken,
                "account (user, provider, accountName)",
            ),
        };
        return violation(
            kind,
            format!("the {what} is held by token {holder}; the ledger refuses duplicates"),
        );
    }
    Ok(())
}
