//! Rebuilding the views from the whole log, in memory.
//!
//! Each event is decoded once and folded into a `HashMap` of token states; no
//! sled read happens per event besides the scan of the log itself. Reading
//! and decoding (JSON) are most of the cost, so worker threads each read and
//! decode chunks of positions (worker `w` of `k` takes chunks `w`, `w + k`,
//! …) while the calling thread folds them in position order, taking chunks
//! from the workers round-robin, so order needs no bookkeeping. Then every
//! token's final view is serialized and written in key order from several
//! threads (each its own range), while another builds the in-memory index;
//! the checkpoint is written last, alone.

use crate::index::{self, IndexMap};
use crate::{keys, ProjectorError, Tracked};
use ledger_core::state::{apply_event, apply_to};
use ledger_core::Envelope;
use ledger_store::{Store, StoreError};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use uuid::Uuid;

/// Events per chunk a worker reads and decodes.
const CHUNK_RECORDS: usize = 2048;
/// Decoded chunks waiting for the folder, per worker.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Threads decoding, serializing or writing, at most.
const THREADS_MAX: usize = 8;

type Chunk<T> = Result<Vec<T>, ProjectorError>;
/// Every live token's state, boxed so growing the map moves pointers.
pub(crate) type Tokens = HashMap<Uuid, Box<Tracked>>;

/// Returns the checkpoint written, the final state of every live token and
/// their index entries.
pub(crate) fn rebuild(
    store: &Store,
    tree: &sled::Tree,
) -> Result<(u64, Tokens, IndexMap), ProjectorError> {
    // The checkpoint goes first, so that a crash while clearing leaves a
    // tree `open_tree` recognises as interrupted.
    tree.remove(keys::CHECKPOINT)?;
    tree.clear()?;
    let head = store.head_position();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, THREADS_MAX);
    let (position, tokens) = fold_log(store, head, threads)?;
    assert_eq!(position, head, "the rebuild covers the log up to its head");

    // In key order (`V`, the token id, its creation position): sled appends to its last
    // leaf, which costs much less than inserting all over the tree (written
    // as each token's stream ended, during the fold, the same views took
    // half as long again).
    let mut tracked: Vec<&Tracked> = tokens.values().map(|t| &**t).collect();
    tracked.sort_unstable_by_key(|t| t.state.id);
    let index = std::thread::scope(|scope| {
        // The index is built meanwhile, in memory.
        let index = scope.spawn(|| {
            index::from_entries(tracked.iter().flat_map(|t| t.index_entries()).collect())
        });
        // Each thread serializes and writes its own key range. Plain inserts,
        // not batches: `apply_batch` holds sled's global write lock, so
        // batches of several threads run one at a time, while inserts share
        // it and run side by side (100k views: 0.65 s against 0.8-0.9 s).
        // Nothing here needs a batch's atomicity: until the checkpoint is
        // written, the tree is an interrupted rebuild.
        let written = in_parallel(&tracked, threads, |part| {
            for t in part {
                let value = t.view_bytes().expect("purged tokens were dropped");
                tree.insert(&t.view_key()[..], value)?;
            }
            Ok(Vec::<()>::new())
        });
        let index = index
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written.map(|_| index)
    })?;
    // Last and alone: a tree without it is an interrupted rebuild, which
    // `open_tree` clears. An empty log leaves an empty tree, as an idle
    // incremental projector does.
    if position > 0 {
        tree.insert(keys::CHECKPOINT, &position.to_be_bytes()[..])?;
    }
    Ok((position, tokens, index))
}

/// Reads, decodes and folds the log up to `head`.
fn fold_log(store: &Store, head: u64, workers: usize) -> Result<(u64, Tokens), ProjectorError> {
    let chunk_len = CHUNK_RECORDS as u64;
    let chunks = head.div_ceil(chunk_len);
    let mut tokens: Tokens = HashMap::new();
    let mut position = 0u64;
    std::thread::scope(|scope| {
        let mut from_workers: Vec<Receiver<Chunk<Envelope>>> = Vec::new();
        for worker in 0..workers as u64 {
            let (tx, rx) = sync_channel::<Chunk<Envelope>>(CHUNKS_IN_FLIGHT);
            scope.spawn(move || {
                for chunk in (worker..chunks).step_by(workers) {
                    let from = chunk * chunk_len + 1;
                    let want = chunk_len.min(head - from + 1);
                    if tx.send(read_chunk(store, from, want)).is_err() {
                        return;
                    }
                }
            });
            from_workers.push(rx);
        }
        for chunk in 0..chunks {
            let worker = usize::try_from(chunk % workers as u64).expect("fewer workers than usize");
            let events = from_workers[worker]
                .recv()
                .expect("a worker sends every chunk it owns")?;
            for event in &events {
                assert_eq!(
                    event.position,
                    position + 1,
                    "event positions must be gap-free"
                );
                position = event.position;
                fold(&mut tokens, event);
            }
        }
        // On error the receivers drop here, which stops the workers early.
        Ok::<(), ProjectorError>(())
    })?;
    Ok((position, tokens))
}

/// Reads and decodes the `want` events from position `from` (without their
/// hashes, which no view holds).
fn read_chunk(store: &Store, from: u64, want: u64) -> Chunk<Envelope> {
    let want = usize::try_from(want).expect("a chunk fits in memory");
    let mut events = Vec::with_capacity(want);
    let seen = store.scan_from(from, want, |position, bytes| {
        let env = Envelope::from_json(bytes).map_err(|e| StoreError::Corrupt {
            position,
            reason: e.to_string(),
        })?;
        events.push(env);
        Ok(())
    })?;
    if seen != want {
        return Err(ProjectorError::Store(StoreError::Corrupt {
            position: from + seen as u64,
            reason: "the log ends before its head".into(),
        }));
    }
    Ok(events)
}

/// Folds one event; a purged token is dropped, since nothing follows a purge
/// and it has neither view nor index entry.
fn fold(tokens: &mut Tokens, event: &Envelope) {
    match tokens.entry(event.token_id) {
        Entry::Occupied(mut token) => {
            apply_to(&mut token.get_mut().state, event);
            if token.get().state.purged {
                token.remove();
            }
        }
        Entry::Vacant(slot) => {
            let state = apply_event(None, event);
            if !state.purged {
                slot.insert(Box::new(Tracked {
                    state,
                    created_position: event.position,
                }));
            }
        }
    }
}

/// Runs `work` on contiguous parts of `items` on up to `threads` threads and
/// concatenates the results in order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&[T]) -> Result<Vec<R>, ProjectorError> + Sync,
) -> Result<Vec<R>, ProjectorError> {
    if threads <= 1 || items.len() < 2 * threads {
        return work(items);
    }
    let part_len = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = items
            .chunks(part_len)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            let part = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            out.extend(part);
        }
        Ok(out)
    })
}
