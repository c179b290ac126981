//! The history of the JWT signing keys: who added which key, and when.
//!
//! Kept in the sled tree `key_events` of the ledger's database, apart from
//! the token log (a key is not a token, and the log's events, positions and
//! stream are about tokens only). Each record is hash-chained like the log:
//! `hash` is the SHA-256 of the record's canonical JSON without `hash`, and
//! `prevHash` is the previous record's `hash` ([`GENESIS_HASH`] for the
//! first). Key: `seq` as a big-endian u64, from 1.
//!
//! * `key_created`: a key entered the ring without a rotation: the first key
//!   of a new data dir, or a key found in `jwt-keys.json` that the history
//!   does not name (a data dir from before the history, or a crash between
//!   the ring file's replacement and the record); the latter are recorded at
//!   the next open with `recovered: true` and the `system` actor.
//! * `key_rotated`: `kid` became the active key, `previousKid` was retired.
//!
//! Only public facts are recorded (kid, algorithm, times, actor); private
//! keys never leave `jwt-keys.json`.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use ledger_core::event::{hash_hex, GENESIS_HASH};
use ledger_core::{Agent, Timestamp};
use ledger_crypto::jwt::{KeyRing, SigningAlg};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Name of the sled tree holding the key history.
pub const KEY_EVENTS_TREE: &str = "key_events";

/// What happened to the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEventType {
    /// A key entered the ring without a rotation.
    KeyCreated,
    /// A key became active, retiring the previous one.
    KeyRotated,
}

/// One record of the key history. Fields are in alphabetical order of their
/// JSON names, so serde's output is the canonical form the hash covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyEvent {
    /// Who.
    pub actor: Agent,
    /// The key's algorithm.
    pub alg: SigningAlg,
    /// When the key was created (for a rotation: when it became active).
    pub at: Timestamp,
    /// SHA-256 of the canonical record without this field, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// The key the record is about.
    pub kid: String,
    /// `hash` of the record before (the genesis hash for the first).
    pub prev_hash: String,
    /// For a rotation: the key it retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_kid: Option<String>,
    /// True when found in the ring file at open rather than recorded as it happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// Sequence number, from 1, gap-free.
    pub seq: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: KeyEventType,
}

impl KeyEvent {
    /// The hash of the record's canonical bytes (without `hash`).
    pub fn computed_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash.clear();
        hash_hex(&serde_json::to_vec(&unhashed).expect("a key event serializes"))
    }
}

fn tree(store: &Store) -> Result<sled::Tree, StoreError> {
    Ok(store.db().open_tree(KEY_EVENTS_TREE)?)
}

/// Every record, oldest first, each checked (hash, link, sequence).
pub(crate) fn read(tree: &sled::Tree) -> Result<Vec<KeyEvent>, StoreError> {
    let mut out: Vec<KeyEvent> = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        let seq = out.len() as u64 + 1;
        let corrupt = |reason: String| StoreError::Corrupt {
            position: seq,
            reason: format!("key history record {seq}: {reason}"),
        };
        if key.as_ref() != seq.to_be_bytes() {
            return Err(corrupt("sequence numbers are not gap-free".into()));
        }
        let event: KeyEvent = serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
        if event.seq != seq {
            return Err(corrupt(format!("says seq {}", event.seq)));
        }
        if event.hash != event.computed_hash() {
            return Err(corrupt("hash does not match the record".into()));
        }
        let prev = out.last().map_or(GENESIS_HASH, |e| e.hash.as_str());
        if event.prev_hash != prev {
            return Err(corrupt(
                "prevHash does not link to the record before".into(),
            ));
        }
        out.push(event);
    }
    Ok(out)
}

/// Appends records after `history` (already read and checked), then flushes.
fn append(
    tree: &sled::Tree,
    history: &[KeyEvent],
    drafts: Vec<KeyEvent>,
) -> Result<Vec<KeyEvent>, StoreError> {
    let mut prev = history
        .last()
        .map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash.clone());
    let mut seq = history.len() as u64;
    let mut batch = sled::Batch::default();
    let mut out = Vec::with_capacity(drafts.len());
    for mut event in drafts {
        seq += 1;
        event.seq = seq;
        event.prev_hash = prev;
        event.hash = String::new();
        event.hash = event.computed_hash();
        prev = event.hash.clone();
        batch.insert(
            &seq.to_be_bytes()[..],
            serde_json::to_vec(&event).expect("a key event serializes"),
        );
        out.push(event);
    }
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(out)
}

fn draft(
    event_type: KeyEventType,
    kid: &str,
    alg: SigningAlg,
    at: DateTime<Utc>,
    actor: Agent,
) -> KeyEvent {
    KeyEvent {
        actor,
        alg,
        at: Timestamp::new(at),
        hash: String::new(),
        kid: kid.to_owned(),
        prev_hash: String::new(),
        previous_kid: None,
        recovered: false,
        seq: 0,
        event_type,
    }
}

/// Records every key of the ring the history does not name yet (at open).
///
/// On a new data dir that is the first key, recorded as created by the
/// system; any other is `recovered`.
pub(crate) fn reconcile(db: &sled::Db, ring: &KeyRing) -> Result<(), StoreError> {
    let tree = db.open_tree(KEY_EVENTS_TREE)?;
    let history = read(&tree)?;
    let known: HashSet<&str> = history.iter().map(|e| e.kid.as_str()).collect();
    let fresh = history.is_empty();
    let keys = ring.keys();
    let drafts: Vec<KeyEvent> = keys
        .iter()
        .filter(|k| !known.contains(k.kid.as_str()))
        .map(|k| {
            let mut d = draft(
                KeyEventType::KeyCreated,
                &k.kid,
                k.alg,
                k.created_at,
                Agent::system(),
            );
            d.recovered = !(fresh && keys.len() == 1);
            d
        })
        .collect();
    if !drafts.is_empty() {
        append(&tree, &history, drafts)?;
    }
    Ok(())
}

impl Store {
    /// Makes a new `alg` key the active one, retiring the current one, and
    /// records who did it; returns the record.
    ///
    /// The ring file is replaced first (a key nobody recorded is found and
    /// recorded at the next open; a record of a key that does not exist
    /// would be a lie). Commands committed after this returns are signed
    /// with the new key; strings signed by the retired one keep verifying.
    pub fn rotate_key(&self, alg: SigningAlg, actor: Agent) -> Result<KeyEvent, StoreError> {
        let now = (self.shared.clock)();
        let mut ring = self.shared.ring.write().expect("key ring lock poisoned");
        let tree = tree(self)?;
        let history = read(&tree)?;
        let previous = ring.active_kid().to_owned();
        let kid = ring.rotate(alg, now)?;
        let mut d = draft(KeyEventType::KeyRotated, &kid, alg, now, actor);
        d.previous_kid = Some(previous);
        let mut out = append(&tree, &history, vec![d])?;
        Ok(out.pop().expect("one record appended"))
    }

    /// The key history, oldest first, with its chain checked.
    pub fn key_history(&self) -> Result<Vec<KeyEvent>, StoreError> {
        read(&tree(self)?)
    }
}
