//! Key layout of the `log` tree (see docs/format.md).
//!
//! One tree holds everything a command writes, so a single `apply_batch`
//! makes a whole group of commands atomic. A one-byte tag separates the
//! kinds of record; integers are big-endian so byte order is numeric order.
//!
//! The event record is the unit of atomicity: it carries the `commandId`
//! (the idempotency record) and every field the uniqueness reservations and
//! the per-token stream index are derived from. Those indices live in memory
//! and are rebuilt by the replay on open, so a command costs one sled record
//! (measured: each extra record per command costs about a third of the
//! throughput; BENCHMARKS.md).

use uuid::Uuid;

/// `E` + position(u64 BE) -> hash(32) ++ canonical envelope JSON.
pub const EVENT: u8 = b'E';
/// `C` + command id(16) -> idempotency record (JSON), only for commands
/// that appended no event: accepted ones (a reuse or a no-op) and ones the
/// rules refused. The others are remembered by their events.
pub const COMMAND: u8 = b'C';

/// Key of the event at `position`.
pub fn event(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT;
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

/// Position encoded in an event key.
pub fn event_position(key: &[u8]) -> u64 {
    assert!(key.len() == 9 && key[0] == EVENT, "not an event key");
    u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"))
}

/// Key of a command's idempotency record.
pub fn command(id: &Uuid) -> [u8; 17] {
    tagged(COMMAND, id)
}

fn tagged(tag: u8, id: &Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..].copy_from_slice(id.as_bytes());
    k
}
