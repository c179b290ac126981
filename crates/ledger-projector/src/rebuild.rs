//! Rebuilding the views from the whole log, in memory.
//!
//! Each event is decoded once and folded into a `HashMap` of token states; no
//! sled read happens per event. Decoding (JSON) is most of the work, so it
//! runs on every core, a chunk of records at a time, while folding stays
//! sequential in position order. Only the final state of each token is
//! written, in batches; the checkpoint goes in the last one.

use crate::{keys, ProjectorError, Tracked};
use ledger_core::state::apply_event;
use ledger_core::Envelope;
use ledger_store::{Store, StoredEvent};
use std::collections::HashMap;
use uuid::Uuid;

/// Records read from the log and decoded together, at most.
const DECODE_CHUNK: usize = 16_384;
/// Tokens written in one `apply_batch`, at most.
const WRITE_BATCH_TOKENS: usize = 8192;

/// Returns the checkpoint written and the final state of every live token.
pub(crate) fn rebuild(
    store: &Store,
    tree: &sled::Tree,
) -> Result<(u64, HashMap<Uuid, Tracked>), ProjectorError> {
    tree.clear()?;
    let head = store.head_position();
    let mut tokens: HashMap<Uuid, Tracked> = HashMap::new();
    let mut position = 0u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut records = store.iter_from(1);
    let mut chunk: Vec<StoredEvent> = Vec::with_capacity(DECODE_CHUNK);
    while position < head {
        chunk.clear();
        let want = usize::try_from(head - position)
            .unwrap_or(usize::MAX)
            .min(DECODE_CHUNK);
        for record in records.by_ref().take(want) {
            chunk.push(record?);
        }
        if chunk.len() != want {
            return Err(ProjectorError::Store(ledger_store::StoreError::Corrupt {
                position: position + 1 + chunk.len() as u64,
                reason: format!("the log ends before its head {head}"),
            }));
        }
        for event in decode(&chunk, threads)? {
            assert_eq!(
                event.position,
                position + 1,
                "event positions must be gap-free"
            );
            position = event.position;
            fold(&mut tokens, &event);
        }
    }

    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    for tracked in tokens.values() {
        tracked.write(&mut batch);
        in_batch += 1;
        if in_batch == WRITE_BATCH_TOKENS {
            tree.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    // An empty log leaves an empty tree, as an idle incremental projector does.
    if position > 0 {
        batch.insert(keys::CHECKPOINT, &position.to_be_bytes()[..]);
    }
    tree.apply_batch(batch)?;
    Ok((position, tokens))
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

/// Decodes records in order, splitting the work over `threads`.
fn decode(records: &[StoredEvent], threads: usize) -> Result<Vec<Envelope>, ProjectorError> {
    let one = |part: &[StoredEvent]| -> Result<Vec<Envelope>, ProjectorError> {
        part.iter()
            .map(|r| r.envelope().map_err(ProjectorError::from))
            .collect()
    };
    if threads <= 1 || records.len() < 1024 {
        return one(records);
    }
    let part_len = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(part_len)
            .map(|part| scope.spawn(move || one(part)))
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for handle in handles {
            let part = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            out.extend(part);
        }
        Ok(out)
    })
}
