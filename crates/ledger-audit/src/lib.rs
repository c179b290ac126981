//! Audit tools of tokenledger: has the log been changed, dropped or
//! reordered; what did the tokens look like at a moment; who changed a token,
//! when, from what to what. Offline, from a data dir or an export file, or
//! from the JetStream stream `TOKENS` ([`nats`]), one more source of
//! published envelopes ([`source::Record::Published`]).
//!
//! - [`verify`](mod@verify): one pass that checks every event (decode, schema, hash,
//!   position, link, version, domain rules, Merkle root against signed
//!   checkpoints) and names the first bad position ([`Finding`]).
//! - [`merkle`]: the RFC 6962 tree over event hashes; proofs by `ct-merkle`.
//! - [`note`], [`checkpoints`]: C2SP signed-note checkpoints, the Ed25519 key
//!   in `DATA_DIR/checkpoint-key.json`, checkpoints in `DATA_DIR/checkpoints/`;
//!   [`make_checkpoint`] and [`Checkpointer`] for the server.
//! - [`replay`], [`history`], [`export`]: views at a point and their diff, a
//!   token's versions with field-level changes, and JSON Lines exports that
//!   verify on their own, taken from a data dir or the stream
//!   ([`export::ExportSource`]) into one format. Replays and histories read any
//!   [`replay::Source`] (a data dir, an export, the stream) through the
//!   verifier with their own observer, and refuse a question a partial
//!   source cannot answer in full ([`replay::gap`], [`history::gap`]).
//! - [`nats`]: the JetStream stream `TOKENS` as a source ([`nats::verify_stream`]),
//!   and the subjects the server publishes checkpoints on. The only async
//!   code of the crate (async-nats and tokio, behind no feature flag).
//!
//! **Architecture invariant**: the audit tools never write the `log` tree;
//! they read it with their own sled handle (the store's `Store::open` refuses
//! a log that does not verify, which is the log an auditor most needs to
//! read). The only files they write are the checkpoint key, the checkpoint
//! files and export files.
//!
//! **Architecture invariant**: a bad log is a [`Finding`], never a panic:
//! everything `LedgerState::evolve` asserts is checked before it runs.

pub mod checkpoints;
pub mod diff;
mod error;
pub mod export;
pub mod history;
pub mod keyfile;
pub mod merkle;
pub mod nats;
pub mod note;
pub mod replay;
mod rules;
pub mod source;
pub mod verify;

pub use checkpoints::{make_checkpoint, CheckpointStore, Checkpointer};
pub use error::AuditError;
pub use keyfile::CheckpointKey;
pub use note::{Checkpoint, SignedCheckpoint, VerifierKey};
pub use source::{LogReader, MessageMeta, Record};
pub use verify::{
    verify, ExpectedRoot, Finding, FindingKind, Observer, Plan, Progress, Report, Summary,
    TimeReversals, VerifyOptions,
};

/// A SHA-256 digest.
pub type Hash = [u8; 32];
