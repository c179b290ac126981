//! Reading the log: events by position and by token stream.

use crate::{keys, Head, Shared, Store, StoreError};
use ledger_core::event::{event_subject, hash_hex, GENESIS_HASH};
use ledger_core::{Envelope, EventType};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An event ready to publish: where it goes and what is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Global position (the stream sequence it must get).
    pub position: u64,
    /// `tokens.evt.{workspaceId}.{tokenId}.{type}`.
    pub subject: String,
    /// The event id (`Nats-Msg-Id`).
    pub event_id: Uuid,
    /// The published form: canonical JSON with `hash`.
    pub bytes: Vec<u8>,
}

/// The envelope fields that address an event, borrowed from its bytes.
#[derive(Deserialize)]
struct Address<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(rename = "eventId")]
    event_id: Uuid,
    #[serde(rename = "tokenId")]
    token_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(rename = "workspaceId")]
    workspace_id: &'a str,
}

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

/// Checks that `env` names `prev_hash`, the hash of the event before it.
pub(crate) fn links(env: &Envelope, prev_hash: &str) -> Result<(), StoreError> {
    if env.prev_hash == prev_hash {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        position: env.position,
        reason: "prevHash does not link to the previous event".into(),
    })
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
        let env = self.checked(position)?;
        links(&env, prev_hash)?;
        Ok(env)
    }

    /// Checks the stored hash against the bytes and the envelope's position
    /// against `position`, and decodes (the link to the event before is the
    /// caller's to check).
    pub(crate) fn checked(&self, position: u64) -> Result<Envelope, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        if hash_hex(&self.bytes) != self.hash {
            return Err(corrupt("hash does not match the event's bytes".into()));
        }
        let mut env = Envelope::from_json(&self.bytes).map_err(|e| corrupt(e.to_string()))?;
        if env.position != position {
            return Err(corrupt(format!("envelope says position {}", env.position)));
        }
        env.hash.clone_from(&self.hash);
        Ok(env)
    }

    /// The published form: canonical JSON with `hash` added.
    pub fn published_bytes(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.outgoing()?.bytes)
    }

    /// What the publisher sends for this event.
    ///
    /// The published form is the canonical form with `"hash":"…"` in its
    /// sorted place, right after `eventId`, which itself follows `data`. So
    /// instead of decoding the whole envelope and encoding it again (about
    /// 6 µs, on the publisher's path for every event) the hash is spliced in
    /// after locating `data` with a borrowing parse. The splice point is
    /// checked; anything unexpected takes the full decode and re-encode.
    pub fn outgoing(&self) -> Result<Outgoing, StoreError> {
        if let Some(fast) = self.outgoing_spliced() {
            return Ok(fast);
        }
        let env = self.envelope()?;
        Ok(Outgoing {
            position: self.position,
            subject: env.subject(),
            event_id: env.event_id,
            bytes: env.to_json_bytes(),
        })
    }

    fn outgoing_spliced(&self) -> Option<Outgoing> {
        let address: Address<'_> = serde_json::from_slice(&self.bytes).ok()?;
        let event_type = EventType::parse(address.event_type)?;
        let data = address.data.get().as_bytes();
        // `data` borrows from `self.bytes`: its end is an offset into them.
        let data_end =
            (data.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)? + data.len();
        let id = address.event_id.hyphenated().to_string();
        let event_id_member = format!(",\"eventId\":\"{id}\"");
        let at = data_end + event_id_member.len();
        let canonical = &self.bytes;
        if canonical.get(data_end..at)? != event_id_member.as_bytes()
            || !canonical[at..].starts_with(b",\"occurredAt\":")
        {
            return None;
        }
        let mut bytes = Vec::with_capacity(canonical.len() + 80);
        bytes.extend_from_slice(&canonical[..at]);
        bytes.extend_from_slice(b",\"hash\":\"");
        bytes.extend_from_slice(self.hash.as_bytes());
        bytes.push(b'"');
        bytes.extend_from_slice(&canonical[at..]);
        Some(Outgoing {
            position: self.position,
            subject: event_subject(address.workspace_id, &address.token_id, event_type),
            event_id: address.event_id,
            bytes,
        })
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
    /// The event records from `from` (inclusive), at most `limit`, in
    /// position order, as sled holds them.
    fn records(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StoreError>> + '_ {
        self.shared
            .log
            .range(keys::event(from.max(1))..=keys::event(u64::MAX))
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((keys::event_position(&key), value))
            })
    }

    /// Events from `from` (inclusive), at most `limit`, in position order.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        for record in self.records(from, limit) {
            let (position, value) = record?;
            out.push(StoredEvent::from_record(position, &value)?);
        }
        Ok(out)
    }

    /// Calls `each` with the position and canonical bytes of the events from
    /// `from` (inclusive), at most `limit`, in position order, straight from
    /// sled's buffers: for readers that need neither the hash nor a copy (a
    /// rebuild decodes every event once and keeps only the decoded form).
    /// Returns how many it saw.
    pub fn scan_from(
        &self,
        from: u64,
        limit: usize,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut seen = 0;
        for record in self.records(from, limit) {
            let (position, value) = record?;
            // The record is the 32-byte hash, then the canonical bytes.
            let bytes =
                value
                    .get(32..)
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| StoreError::Corrupt {
                        position,
                        reason: "event record too short".into(),
                    })?;
            each(position, bytes)?;
            seen += 1;
        }
        Ok(seen)
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

    /// Whether a token's stream ends with its purge.
    pub fn purged(&self, token: &Uuid) -> Result<bool, StoreError> {
        let last = {
            let streams = self.shared.streams.read().expect("streams lock poisoned");
            streams.get(token).and_then(|s| s.last().copied())
        };
        let Some(position) = last else {
            return Ok(false);
        };
        let event = self.event(position)?.ok_or_else(|| StoreError::Corrupt {
            position,
            reason: "stream index points at a missing event".into(),
        })?;
        Ok(event.envelope()?.event_type() == EventType::TokenPurged)
    }

    /// The number of events in a token's stream.
    pub fn token_version(&self, token: &Uuid) -> u64 {
        let streams = self.shared.streams.read().expect("streams lock poisoned");
        streams.get(token).map_or(0, |s| s.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every golden example of the catalogue, as the log would store it.
    fn stored_examples() -> Vec<(Envelope, StoredEvent)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/examples");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read(entry.unwrap().path()).unwrap();
            let env = Envelope::from_json(&text).unwrap();
            let bytes = env.canonical_bytes();
            let stored = StoredEvent {
                position: env.position,
                hash: hash_hex(&bytes),
                bytes,
            };
            out.push((env, stored));
        }
        assert!(out.len() >= 12, "one example per event type at least");
        out
    }

    #[test]
    fn the_spliced_published_form_equals_a_full_re_encoding() {
        for (mut env, stored) in stored_examples() {
            env.hash = stored.hash.clone();
            let fast = stored
                .outgoing_spliced()
                .expect("canonical bytes take the fast path");
            assert_eq!(fast.subject, env.subject());
            assert_eq!(fast.event_id, env.event_id);
            assert_eq!(
                String::from_utf8(fast.bytes).unwrap(),
                String::from_utf8(env.to_json_bytes()).unwrap()
            );
        }
    }

    #[test]
    fn bytes_not_in_the_expected_layout_take_the_full_decode() {
        let (mut env, stored) = stored_examples().remove(0);
        env.hash = stored.hash.clone();
        // Valid JSON, same envelope, but not compact: no splice point.
        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&stored.bytes).unwrap(),
        )
        .unwrap();
        let loose = StoredEvent {
            bytes: pretty,
            ..stored
        };
        assert!(loose.outgoing_spliced().is_none());
        let out = loose.outgoing().unwrap();
        assert_eq!(out.bytes, env.to_json_bytes());
        assert_eq!(out.subject, env.subject());
    }
}
