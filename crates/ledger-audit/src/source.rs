//! Where events come from: the data dir's `log` tree, or published envelopes
//! (an export file today, the JetStream stream `TOKENS` later).
//!
//! The verifier takes any `Iterator<Item = Result<Record, AuditError>>`. A
//! [`Record::Stored`] is the store's own record (the hash it stored, then the
//! canonical bytes it hashed); a [`Record::Published`] is the published form
//! of an envelope (canonical JSON with `hash` in its sorted place), as an
//! export line or a JetStream message body carries it. A JetStream source
//! plugs in by yielding `Published { sequence: Some(stream_seq), bytes }`: the
//! verifier then also checks that the stream sequence equals the position.

use crate::{AuditError, Hash};
use ledger_store::keys;
use std::path::Path;

/// One event as a source yields it.
#[derive(Clone, Debug)]
pub enum Record {
    /// A `log` tree record: `E` + position -> 32-byte hash ++ canonical bytes.
    Stored {
        /// The position in the record's key.
        position: u64,
        /// The record's value.
        value: sled::IVec,
    },
    /// A published envelope.
    Published {
        /// The transport's own sequence number, when it has one that must
        /// equal the position (a JetStream stream sequence); `None` for files.
        sequence: Option<u64>,
        /// The envelope's bytes.
        bytes: Vec<u8>,
        /// What the message said of itself besides its body (a JetStream
        /// message's subject and `Nats-Msg-Id`), checked against the body;
        /// `None` for files.
        message: Option<MessageMeta>,
    },
}

/// A message's subject and id, which must agree with the envelope it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    /// Its subject: `tokens.evt.{workspaceId}.{tokenId}.{type}` of the body.
    pub subject: String,
    /// Its `Nats-Msg-Id` header: the body's `eventId`. A message without the
    /// header is not a finding (the publisher always sets it, the stream's
    /// deduplication needs it; streams written by other tools may lack it).
    pub msg_id: Option<String>,
}

/// Read access to the `log` tree of a data dir, without the store's writer.
///
/// The audit tools open the sled database themselves rather than through
/// `Store::open`, which refuses a log that does not verify (the very logs an
/// auditor needs to look at) and would create key files in the data dir.
/// They only read the tree; its layout is `ledger_store::keys`.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
    db: sled::Db,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl LogReader {
    /// Opens the ledger in `data_dir` for reading. Fails with
    /// [`AuditError::Locked`] while a server (or another command) holds it.
    pub fn open(data_dir: &Path) -> Result<LogReader, AuditError> {
        if !ledger_store::holds_ledger(data_dir) {
            return Err(AuditError::NoLedger(data_dir.to_path_buf()));
        }
        let db = ledger_store::open_db(data_dir).map_err(|e| match e {
            ledger_store::StoreError::Locked(_) => AuditError::Locked(data_dir.to_path_buf()),
            ledger_store::StoreError::Sled(e) => AuditError::Sled(e),
            other => AuditError::Store(other),
        })?;
        LogReader::from_db(&db)
    }

    /// Reads the `log` tree of an open database (e.g. `Store::db()`).
    pub fn from_db(db: &sled::Db) -> Result<LogReader, AuditError> {
        Ok(LogReader {
            log: db.open_tree("log")?,
            db: db.clone(),
        })
    }

    /// The sled database (tests look at the data keys through it).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The records from position `from` to `to` (inclusive), in key order.
    pub fn records(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<Record, AuditError>> + Send + 'static {
        self.log
            .range(keys::event(from.max(1))..=keys::event(to))
            .map(|item| {
                let (key, value) = item?;
                Ok(Record::Stored {
                    position: keys::event_position(&key),
                    value,
                })
            })
    }

    /// Every record from position 1.
    pub fn all_records(&self) -> impl Iterator<Item = Result<Record, AuditError>> + Send + 'static {
        self.records(1, u64::MAX)
    }

    /// The position of the last record (0 when the log is empty).
    pub fn last_position(&self) -> Result<u64, AuditError> {
        Ok(self
            .log
            .scan_prefix([keys::EVENT])
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| keys::event_position(&k)))
    }

    /// The stored hashes of positions `1..=to`, unchecked, in position order.
    ///
    /// Fails when a position is missing: a tree over a log with a hole would
    /// number its leaves wrongly.
    pub fn hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
        let mut out =
            Vec::with_capacity(to.saturating_sub(from).saturating_add(1).min(1 << 24) as usize);
        let mut expected = from.max(1);
        for item in self.log.range(keys::event(expected)..=keys::event(to)) {
            let (key, value) = item?;
            let position = keys::event_position(&key);
            if position != expected || value.len() < 32 {
                return Err(AuditError::Invalid(format!(
                    "the log is damaged at position {expected}: run `tokenledger audit verify`"
                )));
            }
            out.push(value[..32].try_into().expect("32 bytes"));
            expected += 1;
        }
        if expected <= to {
            return Err(AuditError::Invalid(format!(
                "the log ends at position {} before {to}",
                expected - 1
            )));
        }
        Ok(out)
    }

    /// One record's value by position.
    pub fn record(&self, position: u64) -> Result<Option<sled::IVec>, AuditError> {
        Ok(self.log.get(keys::event(position))?)
    }
}

/// Finds `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                i += off;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The published form of canonical bytes: `"hash":"<hex>"` inserted in its
/// sorted place, right after `eventId` (docs/format.md), without re-serialising.
pub fn published_from_canonical(
    canonical: &[u8],
    event_id: &uuid::Uuid,
    hash_hex: &str,
) -> Vec<u8> {
    let needle = format!("\"eventId\":\"{event_id}\",");
    let at = find(canonical, needle.as_bytes())
        .map(|i| i + needle.len())
        .expect("a decoded envelope's bytes hold its eventId, followed by occurredAt");
    let mut out = Vec::with_capacity(canonical.len() + 76);
    out.extend_from_slice(&canonical[..at]);
    out.extend_from_slice(b"\"hash\":\"");
    out.extend_from_slice(hash_hex.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&canonical[at..]);
    out
}

/// Splits published bytes into (canonical bytes, claimed hash as its 64 hex
/// digits) by cutting the `"hash":"<64 hex>",` member out, when it is where
/// the published form puts it. The digits are left for the caller to
/// compare with the computed hash's: decoding them cost more than that.
pub(crate) fn canonical_from_published(bytes: &[u8]) -> Option<(Vec<u8>, [u8; 64])> {
    const KEY: &[u8] = b",\"hash\":\"";
    let at = find(bytes, KEY)?;
    let hex_start = at + KEY.len();
    let hex_end = hex_start + 64;
    if bytes.len() < hex_end + 2 || bytes[hex_end] != b'"' || bytes[hex_end + 1] != b',' {
        return None;
    }
    let hash: [u8; 64] = bytes[hex_start..hex_end].try_into().ok()?;
    let mut canonical = Vec::with_capacity(bytes.len() - 74);
    canonical.extend_from_slice(&bytes[..at + 1]);
    canonical.extend_from_slice(&bytes[hex_end + 2..]);
    Some((canonical, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_form_and_the_canonical_bytes_convert_both_ways() {
        let published = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/examples/client_token_issued.json"
        ))
        .unwrap();
        let env = ledger_core::Envelope::from_json(&published).unwrap();
        let canonical = env.canonical_bytes();
        let (cut, hash) = canonical_from_published(&published).unwrap();
        assert_eq!(cut, canonical);
        assert_eq!(&hash[..], env.hash.as_bytes());
        assert_eq!(
            published_from_canonical(&canonical, &env.event_id, &env.hash),
            published
        );
    }

    #[test]
    fn find_finds_the_first_occurrence() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"aaab", b"ab"), Some(2));
    }
}
