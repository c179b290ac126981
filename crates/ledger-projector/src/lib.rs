//! Current views of every token, folded from the log into the sled tree `views`.
//!
//! The [`Projector`] reads the log from its checkpoint to the head, folds each
//! event into the token's [`TokenState`] with
//! [`ledger_core::state::apply_event`], and writes the token's
//! [`TokenView`] and the new checkpoint in ONE `apply_batch`, so a crash never
//! leaves views and checkpoint disagreeing: on restart,
//! [`Projector::catch_up`] resumes from the checkpoint. The index entries
//! (names, provided ids, users, listings) are derived from the views and kept
//! in memory (`index.rs`): built from the tree when a query first needs
//! them, updated with every batch. The views are derived data;
//! [`Projector::rebuild`] recreates them from the log alone, and produces the
//! same bytes as the incremental path.
//!
//! **Architecture invariant**: the projector never writes the `log` tree and
//! never decides anything; deleting the `views` tree loses nothing.
//!
//! **Architecture invariant**: views only cover durable events: reads stop at
//! [`Store::head_position`], which the writer announces after its flush.
//!
//! # Key layout of the `views` tree and of the index
//!
//! `ws` is the workspace id's bytes, always followed by a NUL byte (which
//! validated text never contains). Integers are big-endian, so byte order is
//! numeric order. Token and user ids are their 16 raw bytes. Only `V` and
//! `#checkpoint-2` are stored in the tree (one sled key per token: each key
//! costs several microseconds to write); `N`, `P`, `U` and `W` are the
//! in-memory index, with the same keys and values ([`Projector::dump`] shows
//! both).
//!
//! | key | value |
//! | --- | --- |
//! | `V` tokenId creationPosition(u64) | the view: compact JSON of [`TokenView::of`], without `expired` (computed when read) |
//! | `N` ws NUL fold(name) | tokenId: client tokens with a name, until purged (trashed and revoked keep it) |
//! | `P` ws NUL providedResourceId | tokenId: client tokens with a provided id, until purged |
//! | `U` ws NUL userId fold(provider) NUL tokenId | empty: access tokens by user and provider, until purged |
//! | `W` ws NUL creationPosition(u64) | tokenId: every token of the workspace in creation order, until purged |
//! | `#checkpoint-2` | u64: position of the last event applied (the name carries the views' format) |
//!
//! `fold` is [`ledger_core::validate::fold`] (Unicode case folding), so names
//! and providers are matched case-insensitively. A purged token has no view and
//! no index entry (the seeds' cascade REMOVE); a rename, or a change of
//! provider, moves the token's keys in the same step as its view.
//!
//! A tree written by an earlier build is cleared on open too, and refolded
//! from the log by the next catch-up. Every earlier build named its
//! checkpoint `#checkpoint`, whatever it stored: the earlier layout (index
//! entries in the tree, view keys without the creation position) or the
//! earlier format (imported tokens showing the import's time as `updatedAt`).
//!
//! A tree with views but no `#checkpoint-2` can only be the leftover of
//! an interrupted [`Projector::rebuild`] (the incremental path always writes
//! the checkpoint with the views); [`Projector::open_tree`] clears it.
//!
//! # Listing cursors
//!
//! A list cursor is the base64url (no padding) of the last returned entry's
//! key after the scanned prefix: the creation position (8 bytes) for a
//! workspace listing, `fold(provider) NUL tokenId` for a user's listing, and
//! the tokenId for a user-and-provider listing.

mod as_of;
mod error;
mod follow;
mod index;
pub mod keys;
mod query;
mod rebuild;

pub use as_of::{get_as_of, AsOf};
pub use error::ProjectorError;
pub use follow::run_follower;
pub use query::{ListFilter, Lookup, Page, PageBudget, TrashedFilter, Views};

use ledger_core::state::{apply_event, fold_token};
use ledger_core::{Envelope, Timestamp, TokenState, TokenView};
use ledger_store::Store;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

/// One key and its value in the `views` tree.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Events read from the log and applied in one batch, at most.
pub const CATCH_UP_CHUNK: usize = 4096;
/// Token states kept in memory, at most; the cache is cleared beyond that.
pub const CACHE_TOKENS_MAX: usize = 100_000;
/// Default page size of [`Views::list`].
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// Largest page size of [`Views::list`].
pub const LIST_LIMIT_MAX: usize = 1000;
/// Index entries one [`Views::list`] call examines, at most; past that it
/// returns what it found with a cursor to continue from, so a page may hold
/// fewer than `limit` items and still not be the last.
pub const LIST_SCAN_MAX: usize = 100_000;

/// A token's state with the position of the event that created it (the key
/// of its workspace listing entry, which the state itself does not record).
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) state: TokenState,
    pub(crate) created_position: u64,
}

impl Tracked {
    /// The view's bytes, or `None` once purged.
    pub(crate) fn view_bytes(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::with_capacity(512);
        TokenView::write_json_of(&self.state, &mut bytes).then_some(bytes)
    }

    /// The key of its view.
    pub(crate) fn view_key(&self) -> [u8; 25] {
        keys::view(&self.state.id, self.created_position)
    }

    pub(crate) fn index_entries(&self) -> Vec<KeyValue> {
        keys::index_entries(&self.state, self.created_position)
    }

    /// Adds this token's view (or its removal) to `batch`.
    pub(crate) fn write(&self, batch: &mut sled::Batch) {
        let view_key = self.view_key();
        match self.view_bytes() {
            Some(bytes) => batch.insert(&view_key[..], bytes),
            None => batch.remove(&view_key[..]),
        }
    }
}

/// One token touched by a batch of events.
struct Touched {
    /// Index entries the token held before the batch.
    before: Vec<KeyValue>,
    /// Its state after the events seen so far.
    current: Option<Tracked>,
}

/// Maintains the `views` tree: applies events, answers queries.
///
/// Queries go through [`Views`] (also reachable as [`Projector::get`] and
/// [`Projector::list`]), which any number of readers may clone while one
/// projector applies events.
pub struct Projector {
    shared: Arc<index::Shared>,
    checkpoint: u64,
    /// Boxed, so growing the map moves pointers, not whole states.
    cache: HashMap<Uuid, Box<Tracked>>,
    applied: watch::Sender<u64>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("checkpoint", &self.checkpoint)
            .field("cached_tokens", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// Opens the projector on the tree `views` of the store's database.
    pub fn open(db: &sled::Db) -> Result<Projector, ProjectorError> {
        Projector::open_tree(db.open_tree("views")?)
    }

    /// Opens the projector on any tree (tests and rebuild checks use scratch trees).
    pub fn open_tree(tree: sled::Tree) -> Result<Projector, ProjectorError> {
        // Every earlier build wrote `#checkpoint`, whatever its layout, so
        // its name alone tells views this build cannot use.
        if tree.get(keys::EARLIER_CHECKPOINT)?.is_some() {
            tracing::warn!(
                "views tree written by an earlier build (layout or format): clearing it, \
                 the views are refolded from the log"
            );
            // The checkpoint first, as a rebuild does: a crash while
            // clearing leaves an interrupted rebuild.
            tree.remove(keys::EARLIER_CHECKPOINT)?;
            tree.clear()?;
        }
        let checkpoint = match tree.get(keys::CHECKPOINT)? {
            Some(bytes) => decode_checkpoint(&bytes)?,
            None => {
                if !tree.is_empty() {
                    tracing::warn!(
                        entries = tree.len(),
                        "views tree without a checkpoint (an interrupted rebuild): clearing it"
                    );
                    tree.clear()?;
                }
                0
            }
        };
        Ok(Projector::with_state(
            index::Shared::new(tree),
            checkpoint,
            HashMap::new(),
        ))
    }

    fn with_state(
        shared: index::Shared,
        checkpoint: u64,
        cache: HashMap<Uuid, Box<Tracked>>,
    ) -> Projector {
        let (applied, _) = watch::channel(checkpoint);
        Projector {
            shared: Arc::new(shared),
            checkpoint,
            cache,
            applied,
        }
    }

    /// Position of the last event applied (0 before any).
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// A receiver of the checkpoint, updated after every applied batch, so a
    /// caller can wait until the views cover a position it just wrote.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// A read handle on the views, usable from other threads.
    pub fn views(&self) -> Views {
        Views::shared(self.shared.clone())
    }

    /// The tree the views live in.
    pub fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Drops every cached token state (they are refolded from the log on demand).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// One token's current view in a workspace; see [`Views::get`].
    pub fn get(
        &self,
        workspace_id: &str,
        by: Lookup,
        now: Timestamp,
    ) -> Result<Option<TokenView>, ProjectorError> {
        self.views().get(workspace_id, by, now)
    }

    /// One page of a workspace's tokens; see [`Views::list`].
    pub fn list(
        &self,
        workspace_id: &str,
        filter: &ListFilter,
        now: Timestamp,
    ) -> Result<Page, ProjectorError> {
        self.views().list(workspace_id, filter, now)
    }

    /// A token's view at an earlier point; see [`get_as_of`].
    pub fn get_as_of(
        store: &Store,
        token_id: Uuid,
        as_of: AsOf,
    ) -> Result<Option<TokenView>, ProjectorError> {
        get_as_of(store, token_id, as_of)
    }

    /// Applies events that directly follow the checkpoint, in one batch.
    ///
    /// Every view change of `events` and the new checkpoint go into ONE
    /// `apply_batch`, and the index changes are made with it, under the
    /// index's lock. The tree is not flushed: views are derived, and after a
    /// crash the checkpoint that survived still matches the views beside it.
    ///
    /// # Panics
    /// When `events` do not start at `checkpoint + 1` or have gaps, or break a
    /// token's version sequence: events come from the log, so that is a bug.
    pub fn apply(&mut self, store: &Store, events: &[Envelope]) -> Result<(), ProjectorError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        assert_eq!(
            events[0].position,
            self.checkpoint + 1,
            "events must start right after the checkpoint"
        );
        let mut touched: HashMap<Uuid, Touched> = HashMap::new();
        // Order of first touch, so batches are built deterministically.
        let mut order: Vec<Uuid> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.position,
                self.checkpoint + 1 + i as u64,
                "event positions must be gap-free"
            );
            let token = match touched.entry(event.token_id) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    let prior = prior_state(&mut self.cache, store, event)?;
                    order.push(event.token_id);
                    v.insert(Touched {
                        before: prior
                            .as_ref()
                            .map(Tracked::index_entries)
                            .unwrap_or_default(),
                        current: prior,
                    })
                }
            };
            let prior = token.current.take();
            let created_position = prior
                .as_ref()
                .map_or(event.position, |t| t.created_position);
            let state = apply_event(prior.map(|t| t.state), event);
            assert_eq!(
                state.workspace_id, event.workspace_id,
                "a token never changes workspace"
            );
            token.current = Some(Tracked {
                state,
                created_position,
            });
        }

        // Every index key the touched tokens held before goes first, then
        // every key they hold now. A key that moved between tokens (a name
        // freed by a purge and taken by a new token in the same batch) ends
        // up with its new holder.
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        let mut inserted = Vec::new();
        for id in &order {
            removed.append(&mut touched.get_mut(id).expect("touched").before);
        }
        for id in &order {
            let current = touched[id]
                .current
                .as_ref()
                .expect("touched tokens have a state");
            current.write(&mut batch);
            inserted.extend(current.index_entries());
        }
        batch.insert(keys::CHECKPOINT, &last.position.to_be_bytes()[..]);
        self.shared.apply(batch, removed, inserted, last.position)?;
        self.checkpoint = last.position;

        if self.cache.len() + order.len() > CACHE_TOKENS_MAX {
            self.cache.clear();
        }
        for id in order {
            let current = touched
                .remove(&id)
                .and_then(|t| t.current)
                .expect("touched tokens have a state");
            if !current.state.purged {
                self.cache.insert(id, Box::new(current));
            }
        }
        self.applied.send_replace(self.checkpoint);
        Ok(())
    }

    /// Applies every durable event after the checkpoint, in chunks of
    /// [`CATCH_UP_CHUNK`]; returns the new checkpoint (the head when called).
    pub fn catch_up(&mut self, store: &Store) -> Result<u64, ProjectorError> {
        let head = store.head_position();
        if self.checkpoint > head {
            return Err(ProjectorError::Ahead {
                checkpoint: self.checkpoint,
                head,
            });
        }
        while self.checkpoint < head {
            let want = usize::try_from(head - self.checkpoint)
                .unwrap_or(usize::MAX)
                .min(CATCH_UP_CHUNK);
            let stored = store.read_from(self.checkpoint + 1, want)?;
            if stored.len() != want {
                return Err(ProjectorError::Store(ledger_store::StoreError::Corrupt {
                    position: self.checkpoint + 1 + stored.len() as u64,
                    reason: format!("the log ends before its head {head}"),
                }));
            }
            let events = stored
                .iter()
                .map(|s| s.envelope())
                .collect::<Result<Vec<Envelope>, _>>()?;
            self.apply(store, &events)?;
        }
        Ok(self.checkpoint)
    }

    /// Recreates the views in `tree` from the whole log; see the crate docs.
    ///
    /// Clears `tree`, folds every durable event in memory (each decoded once,
    /// no sled read per event), then writes the views in batches (and builds
    /// the index in memory meanwhile) and, last and alone, the checkpoint, so an interrupted rebuild leaves a
    /// tree that [`Projector::open_tree`] recognises and clears. The result is
    /// byte-identical to what incremental application produces. A projector
    /// already open on `tree` is stale afterwards; use the one returned.
    /// Clearing a large tree costs about as much as writing it; a fresh tree
    /// rebuilds fastest.
    pub fn rebuild(store: &Store, tree: sled::Tree) -> Result<Projector, ProjectorError> {
        let (checkpoint, tokens, index) = rebuild::rebuild(store, &tree)?;
        let cache = if tokens.len() <= CACHE_TOKENS_MAX {
            tokens
        } else {
            HashMap::new()
        };
        Ok(Projector::with_state(
            index::Shared::with_index(tree, index, checkpoint),
            checkpoint,
            cache,
        ))
    }

    /// Every key and value of the tree and of the index, in key order (for
    /// comparisons). Loads the index from the tree if no query did yet.
    pub fn dump(&self) -> Result<Vec<KeyValue>, ProjectorError> {
        let mut out: Vec<KeyValue> = self
            .shared
            .tree
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect::<Result<_, ProjectorError>>()?;
        out.extend(self.shared.entries()?);
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// A token's state before `event`: from the cache, or folded from its stream.
fn prior_state(
    cache: &mut HashMap<Uuid, Box<Tracked>>,
    store: &Store,
    event: &Envelope,
) -> Result<Option<Tracked>, ProjectorError> {
    if event.version == 1 {
        assert!(
            !cache.contains_key(&event.token_id),
            "a token is created once (position {})",
            event.position
        );
        return Ok(None);
    }
    // Taken out: on success it goes back with its new state, on failure a
    // later call refolds it from the log.
    if let Some(tracked) = cache.remove(&event.token_id) {
        return Ok(Some(*tracked));
    }
    let stream = store.token_events(&event.token_id, Some(event.version - 1))?;
    let created_position = stream.first().map(|e| e.position).ok_or_else(|| {
        ProjectorError::Store(ledger_store::StoreError::Corrupt {
            position: event.position,
            reason: format!(
                "token {} has version {} but no stream",
                event.token_id, event.version
            ),
        })
    })?;
    let state = fold_token(&stream).expect("a non-empty stream folds to a state");
    assert_eq!(
        state.version,
        event.version - 1,
        "a token's stream is gap-free"
    );
    Ok(Some(Tracked {
        state,
        created_position,
    }))
}

fn decode_checkpoint(bytes: &[u8]) -> Result<u64, ProjectorError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| {
        ProjectorError::Corrupt(format!("checkpoint is {} bytes, not 8", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(raw))
}
