//! Rebuilding the views from the whole log, in memory.
//!
//! Each event is decoded once and folded into a `HashMap` of token states; no
//! sled read happens per event besides the scan of the log itself. Reading
//! and decoding (JSON) are most of the cost, so worker threads each read and
//! decode chunks of positions (worker `w` of `k` takes chunks `w`, `w + k`,
//! …) while the calling thread folds them in position order, taking chunks
//! from the workers round-robin, so order needs no bookkeeping. Then every token's final view and index entries are
//! serialized (in parallel), sorted by key, and written in batches from
//! several threads; the checkpoint is written last, alone.

use crate::{keys, KeyValue, ProjectorError, Tracked};
use ledger_core::state::apply_event;
use ledger_core::Envelope;
use ledger_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use uuid::Uuid;

/// Events per chunk a worker reads and decodes.
const CHUNK_RECORDS: usize = 2048;
/// Decoded chunks waiting for the folder, per worker.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Keys written in one `apply_batch`, at most.
const WRITE_BATCH_KEYS: usize = 4096;
/// Threads decoding, serializing or writing, at most.
const THREADS_MAX: usize = 8;

type Chunk<T> = Result<Vec<T>, ProjectorError>;

/// Returns the checkpoint written and the final state of every live token.
pub(crate) fn rebuild(
    store: &Store,
    tree: &sled::Tree,
) -> Result<(u64, HashMap<Uuid, Tracked>), ProjectorError> {
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

    let tracked: Vec<&Tracked> = tokens.values().collect();
    let mut entries: Vec<KeyValue> = in_parallel(&tracked, threads, |part| {
        let mut out = Vec::with_capacity(part.len() * 3);
        for t in part {
            let view = t.view_bytes().expect("purged tokens were dropped");
            out.push((keys::view(&t.state.id).to_vec(), view));
            out.extend(t.index_entries());
        }
        Ok(out)
    })?;
    // In key order, sled fills its pages one after another.
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    debug_assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "no two tokens hold the same key"
    );
    let ranges: Vec<&[KeyValue]> = entries.chunks(WRITE_BATCH_KEYS).collect();
    in_parallel(&ranges, threads, |part| {
        for range in part {
            let mut batch = sled::Batch::default();
            for (k, v) in *range {
                batch.insert(k.as_slice(), v.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        Ok(Vec::<()>::new())
    })?;
    // Last and alone: a tree without it is an interrupted rebuild, which
    // `open_tree` clears. An empty log leaves an empty tree, as an idle
    // incremental projector does.
    if position > 0 {
        tree.insert(keys::CHECKPOINT, &position.to_be_bytes()[..])?;
    }
    Ok((position, tokens))
}

/// Reads, decodes and folds the log up to `head`.
fn fold_log(
    store: &Store,
    head: u64,
    workers: usize,
) -> Result<(u64, HashMap<Uuid, Tracked>), ProjectorError> {
    let chunk_len = CHUNK_RECORDS as u64;
    let chunks = head.div_ceil(chunk_len);
    let mut tokens: HashMap<Uuid, Tracked> = HashMap::new();
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

/// Reads and decodes the `want` events from position `from`.
fn read_chunk(store: &Store, from: u64, want: u64) -> Chunk<Envelope> {
    let want = usize::try_from(want).expect("a chunk fits in memory");
    let records = store.read_from(from, want)?;
    if records.len() != want {
        return Err(ProjectorError::Store(StoreError::Corrupt {
            position: from + records.len() as u64,
            reason: "the log ends before its head".into(),
        }));
    }
    records
        .iter()
        .map(|r| r.envelope().map_err(ProjectorError::from))
        .collect()
}

/// Folds one event; a purged token is dropped, since nothing follows a purge
/// and it has neither view nor index entry.
fn fold(tokens: &mut HashMap<Uuid, Tracked>, event: &Envelope) {
    let prior = tokens.remove(&event.token_id);
    let created_position = prior
        .as_ref()
        .map_or(event.position, |t| t.created_position);
    let state = apply_event(prior.map(|t| t.state), event);
    if !state.purged {
        tokens.insert(
            event.token_id,
            Tracked {
                state,
                created_position,
            },
        );
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
