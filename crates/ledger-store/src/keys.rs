//! Key layout of the `log` tree (see docs/format.md).
//!
//! One tree holds everything a command writes, so a single `apply_batch`
//! makes a whole group of commands atomic. A one-byte tag separates the
//! kinds of record; integers are big-endian so byte order is numeric order.

use uuid::Uuid;

/// `E` + position(u64 BE) -> hash(32) ++ canonical envelope JSON.
pub const EVENT: u8 = b'E';
/// `S` + token id(16) + version(u64 BE) -> position(u64 BE).
pub const STREAM: u8 = b'S';
/// `C` + command id(16) -> idempotency record (JSON).
pub const COMMAND: u8 = b'C';
/// `R` + reservation key -> holder token id(16).
pub const RESERVATION: u8 = b'R';
/// `K` + token id(16) -> data key wrapped by the master key.
pub const DATA_KEY: u8 = b'K';

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

/// Key of a token's `version`-th event in its stream index.
pub fn stream(token: &Uuid, version: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = STREAM;
    k[1..17].copy_from_slice(token.as_bytes());
    k[17..].copy_from_slice(&version.to_be_bytes());
    k
}

/// Prefix of a token's stream index.
pub fn stream_prefix(token: &Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = STREAM;
    k[1..].copy_from_slice(token.as_bytes());
    k
}

/// Key of a command's idempotency record.
pub fn command(id: &Uuid) -> [u8; 17] {
    tagged(COMMAND, id)
}

/// Key of a token's wrapped data key.
pub fn data_key(token: &Uuid) -> [u8; 17] {
    tagged(DATA_KEY, token)
}

/// Key of a uniqueness reservation.
pub fn reservation(storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + storage_key.len());
    k.push(RESERVATION);
    k.extend_from_slice(storage_key);
    k
}

fn tagged(tag: u8, id: &Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..].copy_from_slice(id.as_bytes());
    k
}
