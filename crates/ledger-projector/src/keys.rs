//! Key layout of the `views` tree and of the in-memory index (the table is
//! in the crate docs).
//!
//! Every key starts with a one-byte tag; a workspace id is followed by a NUL
//! byte, which validated text never contains, so a workspace's prefix never
//! matches another workspace whose id merely starts the same way. Integers are
//! big-endian so that byte order is numeric order.

use ledger_core::state::{TokenBody, TokenState};
use ledger_core::validate::fold;
use uuid::Uuid;

/// `V` tokenId(16) creation position(u64 BE) -> the view's JSON.
pub const VIEW: u8 = b'V';
/// `N` ws NUL case-folded name -> tokenId(16).
pub const NAME: u8 = b'N';
/// `P` ws NUL providedResourceId -> tokenId(16).
pub const PROVIDED_ID: u8 = b'P';
/// `U` ws NUL userId(16) case-folded provider NUL tokenId(16) -> empty.
pub const USER: u8 = b'U';
/// `W` ws NUL creation position(u64 BE) -> tokenId(16).
pub const WORKSPACE: u8 = b'W';
/// The position of the last event applied, u64 BE. Its name carries the
/// views' format: a new format gets a new name, so a tree of older views has
/// none and is refolded.
pub const CHECKPOINT: &[u8] = b"#checkpoint-2";
/// The checkpoint of every earlier build's views: the earlier layout (index
/// entries in the tree) and the earlier format (imported tokens showed the
/// import's time as `updatedAt`, not the source's).
pub const EARLIER_CHECKPOINT: &[u8] = b"#checkpoint";

/// Key of a token's view: the token id, then the position of the event that
/// created it (which the workspace listing is ordered by, and which the
/// view itself does not show), so the index can be rebuilt from the views.
pub fn view(token: &Uuid, created_position: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..17].copy_from_slice(&view_prefix(token));
    k[17..].copy_from_slice(&created_position.to_be_bytes());
    k
}

/// The prefix of a token's view key: its only key starting so.
pub fn view_prefix(token: &Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = VIEW;
    k[1..].copy_from_slice(token.as_bytes());
    k
}

/// The token id and creation position of a view key.
pub fn split_view_key(key: &[u8]) -> Option<(Uuid, u64)> {
    let rest = key.strip_prefix(&[VIEW])?;
    let (id, position) = rest.split_first_chunk::<16>()?;
    let position: [u8; 8] = position.try_into().ok()?;
    Some((Uuid::from_bytes(*id), u64::from_be_bytes(position)))
}

fn in_workspace(tag: u8, workspace_id: &str, extra: usize) -> Vec<u8> {
    debug_assert!(
        !workspace_id.as_bytes().contains(&0),
        "workspace ids hold no NUL"
    );
    let mut k = Vec::with_capacity(2 + workspace_id.len() + extra);
    k.push(tag);
    k.extend_from_slice(workspace_id.as_bytes());
    k.push(0);
    k
}

/// Key of a client token's name; `folded` is [`fold`] of the name.
pub fn name(workspace_id: &str, folded: &str) -> Vec<u8> {
    let mut k = in_workspace(NAME, workspace_id, folded.len());
    k.extend_from_slice(folded.as_bytes());
    k
}

/// Key of a client token's provided resource id (compared exactly).
pub fn provided_id(workspace_id: &str, provided_id: &str) -> Vec<u8> {
    let mut k = in_workspace(PROVIDED_ID, workspace_id, provided_id.len());
    k.extend_from_slice(provided_id.as_bytes());
    k
}

/// Prefix of every access token of a user in a workspace.
pub fn user_prefix(workspace_id: &str, user_id: &Uuid) -> Vec<u8> {
    let mut k = in_workspace(USER, workspace_id, 16);
    k.extend_from_slice(user_id.as_bytes());
    k
}

/// Prefix of a user's access tokens for one provider; `folded_provider` is [`fold`]ed.
pub fn user_provider_prefix(workspace_id: &str, user_id: &Uuid, folded_provider: &str) -> Vec<u8> {
    let mut k = user_prefix(workspace_id, user_id);
    k.extend_from_slice(folded_provider.as_bytes());
    k.push(0);
    k
}

/// Key of an access token in the user-and-provider index.
pub fn user(workspace_id: &str, user_id: &Uuid, folded_provider: &str, token: &Uuid) -> Vec<u8> {
    let mut k = user_provider_prefix(workspace_id, user_id, folded_provider);
    k.extend_from_slice(token.as_bytes());
    k
}

/// Prefix of a workspace's listing.
pub fn workspace_prefix(workspace_id: &str) -> Vec<u8> {
    in_workspace(WORKSPACE, workspace_id, 8)
}

/// Key of a token in its workspace's listing, by the position that created it.
pub fn workspace(workspace_id: &str, created_position: u64) -> Vec<u8> {
    let mut k = workspace_prefix(workspace_id);
    k.extend_from_slice(&created_position.to_be_bytes());
    k
}

/// The fields of a live token its index entries derive from.
#[derive(Clone, Copy, Debug)]
pub enum Indexed<'a> {
    /// A client token.
    Client {
        /// Its name, as given.
        name: Option<&'a str>,
        /// Its provided resource id.
        provided_resource_id: Option<&'a str>,
    },
    /// An access token.
    Access {
        /// Its owner.
        user_id: &'a Uuid,
        /// Its provider, as given.
        provider: &'a str,
    },
}

/// The index entries (key, value) a token holds: none once purged.
///
/// Client names and provided ids stay while the token is trashed or revoked,
/// as its reservations do; listings filter those at read time.
pub fn index_entries(token: &TokenState, created_position: u64) -> Vec<crate::KeyValue> {
    if token.purged {
        return Vec::new();
    }
    let indexed = match &token.body {
        TokenBody::Client {
            name,
            provided_resource_id,
            ..
        } => Indexed::Client {
            name: name.as_deref(),
            provided_resource_id: provided_resource_id.as_deref(),
        },
        TokenBody::Access {
            user_id, provider, ..
        } => Indexed::Access { user_id, provider },
    };
    entries_of(&token.workspace_id, &token.id, created_position, indexed)
}

/// The index entries of a live token of workspace `ws`.
pub fn entries_of(
    ws: &str,
    token: &Uuid,
    created_position: u64,
    indexed: Indexed<'_>,
) -> Vec<crate::KeyValue> {
    let id = token.as_bytes().to_vec();
    let mut out = Vec::with_capacity(3);
    out.push((workspace(ws, created_position), id.clone()));
    match indexed {
        Indexed::Client {
            name: token_name,
            provided_resource_id,
        } => {
            if let Some(n) = token_name {
                out.push((name(ws, &fold(n)), id.clone()));
            }
            if let Some(p) = provided_resource_id {
                out.push((provided_id(ws, p), id));
            }
        }
        Indexed::Access { user_id, provider } => {
            out.push((user(ws, user_id, &fold(provider), token), Vec::new()))
        }
    }
    out
}

/// Decodes a 16-byte token id stored as an index value or key tail.
pub fn token_id(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_sort_by_creation_position() {
        let positions = [1u64, 2, 255, 256, 65_536, u64::MAX - 1];
        let keys: Vec<Vec<u8>> = positions.iter().map(|p| workspace("acme", *p)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn workspace_prefixes_do_not_overlap() {
        // "a" must not see "a-b"'s keys: the NUL ends the workspace id.
        let a = workspace_prefix("a");
        assert!(!workspace("a-b", 1).starts_with(&a));
        assert!(workspace("a", 1).starts_with(&a));
        let n = name("a", "x");
        assert!(!name("ab", "x").starts_with(&n[..2 + 1]));
    }

    #[test]
    fn user_keys_nest_under_their_prefixes() {
        let user_id = Uuid::from_u128(7);
        let token = Uuid::from_u128(9);
        let key = user("acme", &user_id, "google", &token);
        assert!(key.starts_with(&user_prefix("acme", &user_id)));
        assert!(key.starts_with(&user_provider_prefix("acme", &user_id, "google")));
        assert!(!key.starts_with(&user_provider_prefix("acme", &user_id, "goo")));
        assert_eq!(token_id(&key[key.len() - 16..]), Some(token));
    }
}
