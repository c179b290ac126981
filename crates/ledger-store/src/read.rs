//! Reading the log: events by position and by token stream.

use crate::{keys, Head, Store, StoreError};
use ledger_core::event::{hash_hex, GENESIS_HASH};
use ledger_core::Envelope;
use uuid::Uuid;

/// One event as stored: its hash and canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Global position.
    pub position: u64,
    /// SHA-256 of `bytes`, hex.
    pub hash: String,
    /// Canonical envelope JSON without `hash`.
    pub bytes: Vec<u8>,
}

impl StoredEvent {
    /// The record value: raw 32-byte hash, then the canonical bytes.
    pub(crate) fn record(hash_hex_str: &str, bytes: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + bytes.len());
        v.extend_from_slice(&hex::decode(hash_hex_str).expect("hash is hex"));
        v.extend_from_slice(bytes);
        v
    }

    /// Splits a record value.
    pub fn from_record(position: u64, value: &[u8]) -> Result<StoredEvent, StoreError> {
        if value.len() <= 32 {
            return Err(StoreError::Corrupt {
                position,
                reason: "event record too short".into(),
            });
        }
        Ok(StoredEvent {
            position,
            hash: hex::encode(&value[..32]),
            bytes: value[32..].to_vec(),
        })
    }

    /// Decodes the envelope, with `hash` filled in, without checking it.
    pub fn envelope(&self) -> Result<Envelope, StoreError> {
        let mut env = Envelope::from_json(&self.bytes).map_err(|e| StoreError::Corrupt {
            position: self.position,
            reason: e.to_string(),
        })?;
        env.hash = self.hash.clone();
        Ok(env)
    }

    /// Checks the stored hash, the link to `prev_hash` and the position, then decodes.
    pub fn check(&self, position: u64, prev_hash: &str) -> Result<Envelope, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        if hash_hex(&self.bytes) != self.hash {
            return Err(corrupt("hash does not match the event's bytes".into()));
        }
        let env = self.envelope()?;
        if env.position != position {
            return Err(corrupt(format!("envelope says position {}", env.position)));
        }
        if env.prev_hash != prev_hash {
            return Err(corrupt(
                "prevHash does not link to the previous event".into(),
            ));
        }
        Ok(env)
    }

    /// The published form: canonical JSON with `hash` added.
    pub fn published_bytes(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.envelope()?.to_json_bytes())
    }
}

/// A token's events in version order, up to `max_version` if given.
pub(crate) fn token_events(
    log: &sled::Tree,
    token: &Uuid,
    max_version: Option<u64>,
) -> Result<Vec<Envelope>, StoreError> {
    let mut out = Vec::new();
    for item in log.scan_prefix(keys::stream_prefix(token)) {
        let (key, pos) = item?;
        let version = u64::from_be_bytes(key[17..25].try_into().expect("stream key"));
        if max_version.is_some_and(|m| version > m) {
            break;
        }
        let position =
            u64::from_be_bytes(pos.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                position: 0,
                reason: "malformed stream index entry".into(),
            })?);
        let value = log
            .get(keys::event(position))?
            .ok_or_else(|| StoreError::Corrupt {
                position,
                reason: "stream index points at a missing event".into(),
            })?;
        out.push(StoredEvent::from_record(position, &value)?.envelope()?);
    }
    Ok(out)
}

impl Store {
    /// Events from `from` (inclusive), at most `limit`, in position order.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self
            .shared
            .log
            .range(keys::event(from.max(1))..=keys::event(u64::MAX))
            .take(limit)
        {
            let (key, value) = item?;
            out.push(StoredEvent::from_record(
                keys::event_position(&key),
                &value,
            )?);
        }
        Ok(out)
    }

    /// Iterates every event from `from` (inclusive) in position order.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<StoredEvent, StoreError>> {
        self.shared
            .log
            .range(keys::event(from.max(1))..=keys::event(u64::MAX))
            .map(|item| {
                let (key, value) = item?;
                StoredEvent::from_record(keys::event_position(&key), &value)
            })
    }

    /// One event by position.
    pub fn event(&self, position: u64) -> Result<Option<StoredEvent>, StoreError> {
        self.shared
            .log
            .get(keys::event(position))?
            .map(|v| StoredEvent::from_record(position, &v))
            .transpose()
    }

    /// A token's events in version order (its stream), up to `max_version`.
    pub fn token_events(
        &self,
        token: &Uuid,
        max_version: Option<u64>,
    ) -> Result<Vec<Envelope>, StoreError> {
        token_events(&self.shared.log, token, max_version)
    }

    /// The last durable event's position and hash.
    pub fn head(&self) -> Result<Head, StoreError> {
        match self.shared.log.scan_prefix([keys::EVENT]).next_back() {
            None => Ok(Head {
                position: 0,
                hash: GENESIS_HASH.to_owned(),
            }),
            Some(item) => {
                let (key, value) = item?;
                let ev = StoredEvent::from_record(keys::event_position(&key), &value)?;
                Ok(Head {
                    position: ev.position,
                    hash: ev.hash,
                })
            }
        }
    }

    /// True when the log holds an idempotency record for `command_id`.
    pub fn has_command(&self, command_id: &Uuid) -> Result<bool, StoreError> {
        Ok(self.shared.log.contains_key(keys::command(command_id))?)
    }

    /// Every stored reservation key with its holder (for checks and tests).
    pub fn stored_reservations(&self) -> Result<Vec<(Vec<u8>, Uuid)>, StoreError> {
        let mut out = Vec::new();
        for item in self.shared.log.scan_prefix([keys::RESERVATION]) {
            let (k, v) = item?;
            let id = Uuid::from_slice(&v).map_err(|_| StoreError::Corrupt {
                position: 0,
                reason: "malformed reservation".into(),
            })?;
            out.push((k[1..].to_vec(), id));
        }
        Ok(out)
    }
}
