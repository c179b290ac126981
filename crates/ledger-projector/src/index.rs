//! The index entries (names, provided ids, users and providers, workspace
//! listings), kept in memory beside the `views` tree.
//!
//! Every sled key costs several microseconds to write, whatever its size, so
//! the tree holds one key per token (its view, keyed by token id and
//! creation position) and the index entries, all derivable from the views, live in a
//! `BTreeMap` with exactly the keys and values the crate docs list. The map
//! is built from the tree the first time a query needs it (a scan of the
//! views), kept up to date by the projector that shares it, and built
//! directly from the folded tokens by a rebuild.
//!
//! Consistency: the projector applies its batch to the tree and updates the
//! map under the map's write lock, and records the checkpoint they agree on.
//! A reader compares that with the tree's checkpoint and reloads the map when
//! someone else (another projector, a rebuild into the same tree) moved it.

use crate::{keys, KeyValue, ProjectorError};
use ledger_core::event::UserRef;
use ledger_core::TokenKind;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};

/// Index key -> value, as in the crate docs' table.
pub(crate) type IndexMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The tree and the index entries derived from it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tree: sled::Tree,
    index: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// `None` until first needed, and after a failed write.
    entries: Option<IndexMap>,
    /// The tree's checkpoint `entries` agree with.
    checkpoint: u64,
}

impl Shared {
    /// The tree, with an index built when first needed.
    pub(crate) fn new(tree: sled::Tree) -> Shared {
        Shared {
            tree,
            index: RwLock::new(Index::default()),
        }
    }

    /// The tree, with its index already known to agree with `checkpoint`.
    pub(crate) fn with_index(tree: sled::Tree, entries: IndexMap, checkpoint: u64) -> Shared {
        Shared {
            tree,
            index: RwLock::new(Index {
                entries: Some(entries),
                checkpoint,
            }),
        }
    }

    fn tree_checkpoint(&self) -> Result<u64, ProjectorError> {
        match self.tree.get(keys::CHECKPOINT)? {
            Some(bytes) => crate::decode_checkpoint(&bytes),
            None => Ok(0),
        }
    }

    /// Runs `f` on index entries that agree with the tree.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&IndexMap) -> T) -> Result<T, ProjectorError> {
        let current = self.tree_checkpoint()?;
        {
            let index = self.read_lock();
            if let Some(entries) = index.entries.as_ref() {
                if index.checkpoint == current {
                    return Ok(f(entries));
                }
            }
        }
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let current = self.tree_checkpoint()?;
        if index.entries.is_none() || index.checkpoint != current {
            index.entries = None;
            index.entries = Some(load(&self.tree)?);
            index.checkpoint = current;
        }
        Ok(f(index.entries.as_ref().expect("just loaded")))
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `batch` (which moves the tree's checkpoint to `checkpoint`)
    /// and, when the index is loaded, removes `removed` from it, then inserts
    /// `inserted`, as one step for readers.
    pub(crate) fn apply(
        &self,
        batch: sled::Batch,
        removed: Vec<KeyValue>,
        inserted: Vec<KeyValue>,
        checkpoint: u64,
    ) -> Result<(), ProjectorError> {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        // The index must agree with the tree before this batch; an index
        // that does not (someone else wrote the tree) is rebuilt later.
        let agrees =
            index.entries.is_some() && self.tree_checkpoint().ok() == Some(index.checkpoint);
        if let Err(e) = self.tree.apply_batch(batch) {
            index.entries = None;
            return Err(e.into());
        }
        match index.entries.as_mut() {
            Some(entries) if agrees => {
                for (k, _) in removed {
                    entries.remove(&k);
                }
                entries.extend(inserted);
                index.checkpoint = checkpoint;
            }
            _ => index.entries = None,
        }
        Ok(())
    }

    /// Every index entry, loading them if needed (for [`crate::Projector::dump`]).
    pub(crate) fn entries(&self) -> Result<Vec<KeyValue>, ProjectorError> {
        self.read(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// The fields of a stored view its index entries derive from.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexedView<'a> {
    kind: TokenKind,
    #[serde(borrow)]
    workspace_id: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    provided_resource_id: Option<Cow<'a, str>>,
    #[serde(default)]
    user: Option<UserRef>,
    #[serde(default, borrow)]
    provider: Option<Cow<'a, str>>,
}

/// Builds the index from the views in `tree`.
fn load(tree: &sled::Tree) -> Result<IndexMap, ProjectorError> {
    let mut out: Vec<KeyValue> = Vec::new();
    for item in tree.scan_prefix([keys::VIEW]) {
        let (key, value) = item?;
        let corrupt = |why: String| ProjectorError::Corrupt(format!("view at {key:?}: {why}"));
        let (id, created) =
            keys::split_view_key(&key).ok_or_else(|| corrupt("malformed key".into()))?;
        let view: IndexedView<'_> =
            serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
        let indexed = match (view.kind, &view.user, &view.provider) {
            (TokenKind::Client, _, _) => keys::Indexed::Client {
                name: view.name.as_deref(),
                provided_resource_id: view.provided_resource_id.as_deref(),
            },
            (TokenKind::Access, Some(user), Some(provider)) => keys::Indexed::Access {
                user_id: &user.id,
                provider,
            },
            (TokenKind::Access, _, _) => {
                return Err(corrupt("an access token without user or provider".into()))
            }
        };
        out.extend(keys::entries_of(&view.workspace_id, &id, created, indexed));
    }
    Ok(from_entries(out))
}

/// The map of `entries`, which must not repeat a key.
pub(crate) fn from_entries(mut entries: Vec<KeyValue>) -> IndexMap {
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    debug_assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "no two tokens hold the same index key"
    );
    // From sorted input the map is built in one pass.
    entries.into_iter().collect()
}
