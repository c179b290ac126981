//! Reading the log: events by position and by token stream.

use crate::{keys, Head, Shared, Store, StoreError};
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
    shared: &Shared,
    token: &Uuid,
    max_version: Option<u64>,
) -> Result<Vec<Envelope>, StoreError> {
    let positions: Vec<u64> = {
        let streams = shared.streams.read().expect("streams lock poisoned");
        let all = streams.get(token).map(Vec::as_slice).unwrap_or_default();
        let n = max_version.map_or(all.len(), |m| all.len().min(m as usize));
        all[..n].to_vec()
    };
    positions
        .into_iter()
        .map(|position| {
            let value =
                shared
                    .log
                    .get(keys::event(position))?
                    .ok_or_else(|| StoreError::Corrupt {
                        position,
                        reason: "stream index points at a missing event".into(),
                    })?;
            StoredEvent::from_record(position, &value)?.envelope()
        })
        .collect()
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
        token_events(&self.shared, token, max_version)
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

    /// The number of events in a token's stream.
    pub fn token_version(&self, token: &Uuid) -> u64 {
        let streams = self.shared.streams.read().expect("streams lock poisoned");
        streams.get(token).map_or(0, |s| s.len() as u64)
    }
}
