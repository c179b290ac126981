//! Queries on the views: one token by id, name or provided id; pages of a
//! workspace's tokens with filters.

use crate::index::Shared;
use crate::{keys, KeyValue, ProjectorError, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, LIST_SCAN_MAX};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ledger_core::validate::fold;
use ledger_core::{Timestamp, TokenKind, TokenView};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::sync::Arc;
use uuid::Uuid;

/// Index entries a listing copies out of the index at a time, so the
/// projector is never held up for a whole scan.
const LIST_CHUNK: usize = 256;

/// How [`Views::get`] finds a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Lookup {
    /// By token id (`resourceId` / `id`).
    #[serde(rename = "tokenId")]
    Id(Uuid),
    /// By client token name, case-insensitively.
    #[serde(rename = "name")]
    Name(String),
    /// By client token `providedResourceId`, exactly.
    #[serde(rename = "providedResourceId")]
    ProvidedId(String),
}

impl Lookup {
    /// The query field it comes from, for a `not_found` naming it.
    pub fn field(&self) -> &'static str {
        match self {
            Lookup::Id(_) => "tokenId",
            Lookup::Name(_) => "name",
            Lookup::ProvidedId(_) => "providedResourceId",
        }
    }
}

/// Which trashed tokens a listing shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrashedFilter {
    /// Only tokens not in the trash (the default).
    #[default]
    Exclude,
    /// Both.
    Include,
    /// Only tokens in the trash.
    Only,
}

/// Filters and paging of [`Views::list`]; every filter given must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ListFilter {
    /// Only this kind.
    pub kind: Option<TokenKind>,
    /// Only access tokens of this user (served by the user index), in
    /// lowercase canonical form as everywhere else.
    #[serde(deserialize_with = "canonical_uuid")]
    pub user_id: Option<Uuid>,
    /// Only access tokens of this provider, case-insensitively.
    pub provider: Option<String>,
    /// Trashed tokens: excluded by default.
    pub trashed: TrashedFilter,
    /// Only revoked (`true`) or only not revoked (`false`) tokens.
    pub revoked: Option<bool>,
    /// Only expired (`true`) or only unexpired (`false`) tokens, at `now`.
    pub expired: Option<bool>,
    /// Page size, `1..=LIST_LIMIT_MAX`.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// The serving side's cap on a page's size: the items' JSON, in bytes.
    /// A page ends early (with a `next_cursor`) rather than grow past it,
    /// though its first item always goes in. Not part of the query body.
    #[serde(skip)]
    pub max_bytes: Option<usize>,
}

fn canonical_uuid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    ledger_core::validate::uuid("userId", &text)
        .map(Some)
        .map_err(|r| serde::de::Error::custom(r.message))
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            kind: None,
            user_id: None,
            provider: None,
            trashed: TrashedFilter::Exclude,
            revoked: None,
            expired: None,
            limit: LIST_LIMIT_DEFAULT,
            cursor: None,
            max_bytes: None,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Page {
    /// The tokens, each with `expired` filled in.
    pub items: Vec<TokenView>,
    /// The cursor of the next page; `None` when there is none.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// What the part of an index key after the scanned prefix looks like; a
/// cursor must have the same shape.
#[derive(Clone, Copy, Debug)]
enum Tail {
    /// Workspace listing: creation position, 8 bytes.
    Position,
    /// A user's listing: `fold(provider) NUL tokenId`.
    ProviderToken,
    /// A user-and-provider listing: tokenId.
    Token,
}

impl Tail {
    fn check(self, tail: &[u8]) -> Result<(), &'static str> {
        let ok = match self {
            Tail::Position => tail.len() == 8,
            Tail::Token => tail.len() == 16,
            Tail::ProviderToken => tail.len() >= 18 && tail[tail.len() - 17] == 0,
        };
        ok.then_some(())
            .ok_or("it does not belong to a listing with these filters")
    }

    /// The token an index entry names.
    fn token(self, key_tail: &[u8], value: &[u8]) -> Option<Uuid> {
        match self {
            Tail::Position => keys::token_id(value),
            Tail::ProviderToken | Tail::Token => {
                keys::token_id(key_tail.get(key_tail.len().checked_sub(16)?..)?)
            }
        }
    }
}

/// Read access to the views; cheap to clone, safe to share between threads.
#[derive(Clone, Debug)]
pub struct Views {
    shared: Arc<Shared>,
}

impl Views {
    /// Queries on `tree` (as written by a [`crate::Projector`]).
    ///
    /// This handle builds its own index from the tree when a query first
    /// needs one, and again whenever the tree's checkpoint has moved since:
    /// correct, but slow on a tree that changes. [`crate::Projector::views`]
    /// shares the projector's index, which it keeps up to date.
    pub fn new(tree: sled::Tree) -> Views {
        Views::shared(Arc::new(Shared::new(tree)))
    }

    pub(crate) fn shared(shared: Arc<Shared>) -> Views {
        Views { shared }
    }

    /// Position of the last event the views cover (0 before any).
    pub fn checkpoint(&self) -> Result<u64, ProjectorError> {
        match self.shared.tree.get(keys::CHECKPOINT)? {
            Some(bytes) => crate::decode_checkpoint(&bytes),
            None => Ok(0),
        }
    }

    /// A token's current view, with `expired` computed at `now`.
    ///
    /// A token of another workspace, and a purged one, is not found.
    pub fn get(
        &self,
        workspace_id: &str,
        by: Lookup,
        now: Timestamp,
    ) -> Result<Option<TokenView>, ProjectorError> {
        let id = match &by {
            Lookup::Id(id) => Some(*id),
            Lookup::Name(name) => self.index(&keys::name(workspace_id, &fold(name)))?,
            Lookup::ProvidedId(provided) => {
                self.index(&keys::provided_id(workspace_id, provided))?
            }
        };
        let Some(id) = id else {
            return Ok(None);
        };
        // The index and the view are two reads; a batch applied in between
        // (a rename, a purge) must not yield a token that no longer matches.
        Ok(self
            .view(&id)?
            .filter(|v| v.workspace_id == workspace_id)
            .filter(|v| match &by {
                Lookup::Id(_) => true,
                Lookup::Name(name) => v.name.as_deref().is_some_and(|n| fold(n) == fold(name)),
                Lookup::ProvidedId(p) => v.provided_resource_id.as_ref() == Some(p),
            })
            .map(|v| v.with_expired(now)))
    }

    /// One page of a workspace's tokens matching `filter`, `expired` computed at `now`.
    ///
    /// Without `userId` the order is creation order; with it, the user index
    /// is scanned, in order of case-folded provider, then token id (so a
    /// token whose provider changes between two pages of a listing by user
    /// alone can be listed twice or not at all; the creation order cannot
    /// move, and a user has few tokens). A page
    /// may be short and still have a `next_cursor` when [`LIST_SCAN_MAX`]
    /// entries did not match; follow cursors until there is none.
    pub fn list(
        &self,
        workspace_id: &str,
        filter: &ListFilter,
        now: Timestamp,
    ) -> Result<Page, ProjectorError> {
        if !(1..=LIST_LIMIT_MAX).contains(&filter.limit) {
            return Err(ProjectorError::InvalidLimit(filter.limit));
        }
        let provider = filter.provider.as_deref().map(fold);
        let (prefix, tail) = match (&filter.user_id, &provider) {
            (Some(user), Some(p)) => (
                keys::user_provider_prefix(workspace_id, user, p),
                Tail::Token,
            ),
            (Some(user), None) => (keys::user_prefix(workspace_id, user), Tail::ProviderToken),
            (None, _) => (keys::workspace_prefix(workspace_id), Tail::Position),
        };
        let mut start = match &filter.cursor {
            None => Bound::Included(prefix.clone()),
            Some(cursor) => {
                let after = decode_cursor(cursor, tail)?;
                let mut key = prefix.clone();
                key.extend_from_slice(&after);
                Bound::Excluded(key)
            }
        };

        let mut items = Vec::new();
        let mut last_tail: Option<Vec<u8>> = None;
        let mut next_cursor = None;
        let mut scanned = 0usize;
        let mut budget = PageBudget::new(filter.max_bytes);
        // Entries are copied out a chunk at a time; the index may change
        // between chunks, as the tree could between the reads of a scan.
        'chunks: loop {
            let chunk = self.index_range(&start, &prefix)?;
            let Some((last_key, _)) = chunk.last() else {
                break;
            };
            start = Bound::Excluded(last_key.clone());
            for (key, value) in &chunk {
                let key_tail = &key[prefix.len()..];
                let id = tail.token(key_tail, value).ok_or_else(|| {
                    ProjectorError::Corrupt(format!("malformed index entry {key:?}"))
                })?;
                scanned += 1;
                // Index entry and view are two reads: a purge applied in between
                // leaves an entry without a view, which is simply gone now.
                let view = self.view(&id)?;
                if let Some(view) = view.filter(|v| matches(v, filter, provider.as_deref(), now)) {
                    let item = view.with_expired(now);
                    if items.len() == filter.limit || !budget.admits(&item, items.is_empty()) {
                        // One more match exists: the page ends at the last item.
                        next_cursor = last_tail.as_deref().map(|t| URL_SAFE_NO_PAD.encode(t));
                        break 'chunks;
                    }
                    items.push(item);
                    last_tail = Some(key_tail.to_vec());
                } else if scanned >= LIST_SCAN_MAX {
                    next_cursor = Some(URL_SAFE_NO_PAD.encode(key_tail));
                    break 'chunks;
                }
            }
        }
        Ok(Page { items, next_cursor })
    }

    /// Up to [`LIST_CHUNK`] index entries from `start` that begin with `prefix`.
    fn index_range(
        &self,
        start: &Bound<Vec<u8>>,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, ProjectorError> {
        self.shared.read(|index| {
            index
                .range::<Vec<u8>, _>((start.clone(), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(LIST_CHUNK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Every token's view, of every workspace, in token id order: at most
    /// `limit` of those after the token `after` (from the first when `None`).
    /// Fewer when `max_bytes` (of views' JSON) would be passed, but never
    /// none while one is left; with whether more views follow. `expired` is
    /// not filled in. For snapshots of the whole ledger (a gateway's
    /// verifier); a page is as consistent as the tree is while it is read,
    /// so hold the projector still to pair it with a checkpoint.
    pub fn every_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
        max_bytes: Option<usize>,
    ) -> Result<(Vec<TokenView>, bool), ProjectorError> {
        let mut budget = PageBudget::new(max_bytes);
        let start = match after {
            // Past every key of `id`: its prefix followed by the largest tail.
            Some(id) => {
                let mut last = keys::view_prefix(&id).to_vec();
                last.extend_from_slice(&[0xff; 8]);
                Bound::Excluded(last)
            }
            None => Bound::Included(vec![keys::VIEW]),
        };
        let mut out = Vec::with_capacity(limit.min(LIST_LIMIT_MAX));
        for entry in self
            .shared
            .tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (key, value) = entry?;
            if key.first() != Some(&keys::VIEW) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let view = decode_view(&value)
                .map_err(|e| ProjectorError::Corrupt(format!("view at {key:?}: {e}")))?;
            if !budget.admits(&view, out.is_empty()) {
                return Ok((out, true));
            }
            out.push(view);
        }
        Ok((out, false))
    }

    fn index(&self, key: &[u8]) -> Result<Option<Uuid>, ProjectorError> {
        self.shared
            .read(|index| index.get(key).map(|v| keys::token_id(v)))?
            .map(|id| {
                id.ok_or_else(|| {
                    ProjectorError::Corrupt(format!("malformed index value at {key:?}"))
                })
            })
            .transpose()
    }

    fn view(&self, id: &Uuid) -> Result<Option<TokenView>, ProjectorError> {
        // A token has one view key; its tail (the creation position) is
        // not known here.
        self.shared
            .tree
            .scan_prefix(keys::view_prefix(id))
            .next()
            .transpose()?
            .map(|(_, bytes)| {
                decode_view(&bytes)
                    .map_err(|e| ProjectorError::Corrupt(format!("view of {id}: {e}")))
            })
            .transpose()
    }
}

/// The view in a `V` value.
fn decode_view(value: &[u8]) -> Result<TokenView, String> {
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

fn matches(
    view: &TokenView,
    f: &ListFilter,
    folded_provider: Option<&str>,
    now: Timestamp,
) -> bool {
    let trashed = view.trash_item.is_some();
    f.kind.is_none_or(|k| view.kind == k)
        && f.user_id
            .is_none_or(|u| view.user.as_ref().is_some_and(|user| user.id == u))
        && folded_provider.is_none_or(|p| view.provider.as_deref().is_some_and(|vp| fold(vp) == p))
        && match f.trashed {
            crate::TrashedFilter::Exclude => !trashed,
            crate::TrashedFilter::Include => true,
            crate::TrashedFilter::Only => trashed,
        }
        && f.revoked.is_none_or(|r| view.revoked == r)
        && f.expired.is_none_or(|e| view.is_expired_at(now) == e)
}

fn decode_cursor(cursor: &str, tail: Tail) -> Result<Vec<u8>, ProjectorError> {
    if cursor.is_empty() {
        return Err(ProjectorError::InvalidCursor(
            "empty: give the previous page's nextCursor, or no cursor for the first page".into(),
        ));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ProjectorError::InvalidCursor("not base64url".into()))?;
    tail.check(&bytes)
        .map_err(|reason| ProjectorError::InvalidCursor(reason.into()))?;
    Ok(bytes)
}

/// The bytes left in a page capped in size (a listing's
/// [`ListFilter::max_bytes`], a history page): items are measured as JSON.
pub struct PageBudget {
    left: Option<usize>,
}

impl PageBudget {
    /// A page of at most `max_bytes` of items (`None`: no cap).
    pub fn new(max_bytes: Option<usize>) -> PageBudget {
        PageBudget { left: max_bytes }
    }

    /// Whether `item` still fits, taking its bytes (and a separating comma)
    /// if so; the first item of a page always fits.
    pub fn admits<T: Serialize>(&mut self, item: &T, first: bool) -> bool {
        let Some(left) = self.left else {
            return true;
        };
        let size = serde_json::to_vec(item).map_or(0, |b| b.len()) + 1;
        if size > left && !first {
            return false;
        }
        self.left = Some(left.saturating_sub(size));
        true
    }
}
