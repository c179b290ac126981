//! The verifier: one pass over a source of events, stopping at the first
//! position where the log is not what the ledger would have written.
//!
//! Each event goes through, in order:
//!
//! 1. **decode**: the bytes are an envelope this build reads;
//! 2. **schema**: the published form validates against `events/` (ledger-catalogue);
//! 3. **hash**: SHA-256 of the canonical bytes is the hash the event carries
//!    (the store's own record, or `hash` in the published form);
//! 4. **position**: positions are gap-free from the start (a missing event is
//!    reported at its own position; a moved one where it sits);
//! 5. **link**: `prevHash` is the hash of the event before;
//! 6. **version**: the token's versions are gap-free from 1;
//! 7. **rules**: the domain rules would have produced the event (the `rules` module);
//! 8. **tree**: the event hash is the next Merkle leaf; when the tree reaches
//!    the size of a signed checkpoint its root must be the signed root.
//!
//! Steps 1-3 depend on the event alone and run on worker threads
//! ([`VerifyOptions::threads`]); steps 4-8 run in order on the calling thread.
//! Stored records are hashed as they are, never re-serialised; published
//! bytes are hashed after cutting `"hash"` out (re-serialising only when they
//! are not in canonical form, which the documented procedure allows).

use crate::merkle::{leaf_hash, Accumulator};
use crate::rules;
use crate::source::{canonical_from_published, published_from_canonical, MessageMeta, Record};
use crate::{AuditError, Hash};
use ledger_catalogue::Catalogue;
use ledger_core::{Envelope, LedgerState, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use uuid::Uuid;

/// Events per chunk handed to a worker thread.
const CHUNK_EVENTS: usize = 1024;
/// Chunks queued per worker, each way.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Worker threads, at most.
pub const THREADS_MAX: usize = 16;
/// Events between two progress reports.
pub const PROGRESS_EVERY: u64 = 1 << 16;

/// What kind of problem a finding is: a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// The bytes are not an envelope this build can read.
    Decode,
    /// The envelope breaks the catalogue's schemas.
    Schema,
    /// The hash does not match the event's canonical bytes.
    HashMismatch,
    /// A position is missing.
    MissingEvent,
    /// An event sits at a position other than its own (moved, swapped, duplicated).
    PositionMismatch,
    /// `prevHash` does not link to the event before.
    ChainBroken,
    /// A token's versions are not gap-free from 1.
    VersionGap,
    /// An event for a token no event created.
    UnknownToken,
    /// A creation event for a token that exists.
    TokenExists,
    /// An event after `token_purged`.
    AfterPurge,
    /// An event in another workspace than its token's.
    WorkspaceMismatch,
    /// An event type or `tokenKind` that does not fit the token's kind.
    KindMismatch,
    /// A change to a token in the trash.
    Trashed,
    /// A change to a revoked token other than trash or purge.
    Revoked,
    /// `token_restored` on a token not in the trash.
    NotTrashed,
    /// `token_trashed` on a token already in the trash.
    AlreadyTrashed,
    /// A duplicate name in a workspace.
    NameTaken,
    /// A duplicate provided resource id in a workspace.
    ProvidedIdTaken,
    /// A second live access token for one user, provider and account.
    AccountTaken,
    /// An event that changes nothing (the ledger appends none for a no-op).
    NoChange,
    /// Any other event the rules would not have produced.
    IllegalEvent,
    /// The log's tree does not have the root a signed checkpoint vouches for.
    CheckpointMismatch,
    /// The log ends before a position a checkpoint or header vouches for.
    Truncated,
    /// The source's own header disagrees with its events.
    HeaderMismatch,
    /// A message's subject or `Nats-Msg-Id` disagrees with the event it carries.
    MessageMismatch,
    /// The domain fold failed on an event the checks let through (a gap in
    /// the checks: please report it).
    ReplayPanicked,
}

impl FindingKind {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Decode => "decode",
            FindingKind::Schema => "schema",
            FindingKind::HashMismatch => "hash_mismatch",
            FindingKind::MissingEvent => "missing_event",
            FindingKind::PositionMismatch => "position_mismatch",
            FindingKind::ChainBroken => "chain_broken",
            FindingKind::VersionGap => "version_gap",
            FindingKind::UnknownToken => "unknown_token",
            FindingKind::TokenExists => "token_exists",
            FindingKind::AfterPurge => "after_purge",
            FindingKind::WorkspaceMismatch => "workspace_mismatch",
            FindingKind::KindMismatch => "kind_mismatch",
            FindingKind::Trashed => "trashed",
            FindingKind::Revoked => "revoked",
            FindingKind::NotTrashed => "not_trashed",
            FindingKind::AlreadyTrashed => "already_trashed",
            FindingKind::NameTaken => "name_taken",
            FindingKind::ProvidedIdTaken => "provided_id_taken",
            FindingKind::AccountTaken => "account_taken",
            FindingKind::NoChange => "no_change",
            FindingKind::IllegalEvent => "illegal_event",
            FindingKind::CheckpointMismatch => "checkpoint_mismatch",
            FindingKind::Truncated => "truncated",
            FindingKind::HeaderMismatch => "header_mismatch",
            FindingKind::MessageMismatch => "message_mismatch",
            FindingKind::ReplayPanicked => "replay_panicked",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first thing wrong with the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The first bad position. With `until`, the earliest position the bad
    /// event can be at: a rewritten history that recomputed every hash can
    /// only be narrowed down to the positions between two checkpoints.
    pub position: u64,
    /// What is wrong, as a stable code.
    pub kind: FindingKind,
    /// What is wrong, for a person.
    pub message: String,
    /// When the bad event is somewhere in `position..=until`, the range's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.until {
            Some(u) if u > self.position => write!(
                f,
                "positions {}..={}: {}: {}",
                self.position, u, self.kind, self.message
            ),
            _ => write!(
                f,
                "position {}: {}: {}",
                self.position, self.kind, self.message
            ),
        }
    }
}

/// A root the log's tree must have at a size (from a signed checkpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRoot {
    /// Tree size: the first `size` events.
    pub size: u64,
    /// The signed root.
    pub root: Hash,
    /// Where it comes from, for messages (`checkpoints/…`, a file name).
    pub label: String,
}

/// Where the source says it ends (an export header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredEnd {
    /// The last position it claims to hold.
    pub position: u64,
    /// That event's hash, when the source states it.
    pub hash: Option<Hash>,
    /// What states it, for messages (`the header`, `the stream's state`).
    pub source: &'static str,
}

/// What a pass expects of its source.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The first position (1 for a whole log).
    pub from: u64,
    /// The hash of position `from - 1` (64 zero bits before position 1).
    pub prev_hash: Hash,
    /// Positions may skip (one workspace's events): links are checked only
    /// between consecutive positions, and every event's own hash always.
    pub subset: bool,
    /// Signed roots to compare the tree with. Needs `from == 1`, no subset.
    pub roots: Vec<ExpectedRoot>,
    /// Positions whose event hash to keep for [`Report::kept_hashes`]
    /// (inclusion proofs checked after the pass).
    pub keep_hashes: KeepHashes,
    /// Where the source claims to end.
    pub declared_end: Option<DeclaredEnd>,
}

/// Which event hashes a pass keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeepHashes {
    /// None.
    #[default]
    None,
    /// Those positions.
    At(HashSet<u64>),
    /// Every event's.
    All,
}

impl Plan {
    /// A whole log, from position 1.
    pub fn whole_log() -> Plan {
        Plan {
            from: 1,
            prev_hash: [0u8; 32],
            subset: false,
            roots: Vec::new(),
            keep_hashes: KeepHashes::None,
            declared_end: None,
        }
    }
}

/// How to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Check every event against the catalogue's schemas (the most
    /// expensive check; replays that only present data turn it off).
    pub schema: bool,
    /// Threads for the per-event work (decode, schema, hash); 0 does
    /// everything on the calling thread.
    pub threads: usize,
}

impl Default for VerifyOptions {
    /// Every check, on the calling thread. Worker threads pay for
    /// themselves only on idle cores: on the 2-core reference machine,
    /// under load, 2 workers made a 1M-event verify slower (envelopes
    /// allocated on a worker and freed on the calling thread contend in
    /// malloc), so they are opt-in (`--threads N`).
    fn default() -> Self {
        VerifyOptions {
            schema: true,
            threads: 0,
        }
    }
}

/// Progress of a long pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Events verified so far.
    pub events: u64,
    /// The last position verified.
    pub position: u64,
}

/// How a signed root fared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootCheck {
    /// Tree size.
    pub size: u64,
    /// Where it came from.
    pub label: String,
    /// `matches`, `differs`, or `beyond_log` (the log ends before it).
    pub outcome: &'static str,
}

/// What a pass saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Events verified.
    pub events: u64,
    /// Distinct tokens seen.
    pub tokens: u64,
    /// The first position verified.
    pub first_position: Option<u64>,
    /// The last position verified (0 when none).
    pub head_position: u64,
    /// Its hash, hex.
    pub head_hash: String,
    /// The Merkle root over positions `1..=head_position`, hex (whole logs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// Signed roots compared.
    pub checkpoints: Vec<RootCheck>,
    /// Events stamped earlier than the event before them, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_reversals: Option<TimeReversals>,
}

/// Events whose `occurredAt` is earlier than the event before's.
///
/// Not a finding: the chain covers the times, and builds before the writer
/// kept its clock across restarts stamped such events honestly (a restart
/// with the clock set back), so stopping at them would stop `recover`,
/// replay and export of honest logs. But answers "as of a time" assume
/// times rise with positions, so a log with reversals gets a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeReversals {
    /// The first such event's position.
    pub first: u64,
    /// How many.
    pub count: u64,
}

/// The outcome of a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The first thing wrong, if anything.
    pub finding: Option<Finding>,
    /// What was verified (up to the finding).
    pub summary: Summary,
    /// The hashes the plan asked to keep, by position.
    pub kept_hashes: BTreeMap<u64, Hash>,
}

/// An event that passed every check, as observers see it.
#[derive(Debug)]
pub struct VerifiedEvent {
    /// The envelope, `hash` filled in.
    pub env: Envelope,
    /// Its hash.
    pub hash: Hash,
    raw: Raw,
}

#[derive(Debug)]
enum Raw {
    Stored(sled::IVec),
    /// Published bytes, and whether they were in canonical form.
    Published(Vec<u8>, bool),
}

impl VerifiedEvent {
    /// The published form, byte for byte as chained (exports write this).
    pub fn published_bytes(&self) -> Vec<u8> {
        match &self.raw {
            Raw::Stored(value) => {
                published_from_canonical(&value[32..], &self.env.event_id, &self.env.hash)
            }
            Raw::Published(bytes, true) => bytes.clone(),
            Raw::Published(_, false) => self.env.to_json_bytes(),
        }
    }
}

/// Sees every event that passed its checks, around its application to the state.
pub trait Observer {
    /// Before `event` is folded into `state`.
    fn before(&mut self, _state: &LedgerState, _event: &VerifiedEvent) {}
    /// After.
    fn after(&mut self, _state: &LedgerState, _event: &VerifiedEvent) {}
    /// True once the observer needs no more events: the pass stops there.
    fn done(&self) -> bool {
        false
    }
    /// At the end of the pass (after the last event, or the first finding).
    fn finish(&mut self, _state: &LedgerState) {}
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Verifies the events of `records` against `plan`.
///
/// Returns `Err` only when the source cannot be read; everything wrong with
/// its content is the report's finding.
pub fn verify(
    records: impl Iterator<Item = Result<Record, AuditError>> + Send,
    plan: Plan,
    options: &VerifyOptions,
    observer: &mut dyn Observer,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, AuditError> {
    let catalogue = options.schema.then(Catalogue::shared);
    let mut chain = Chain::new(plan);
    let threads = options.threads.min(THREADS_MAX);
    if threads == 0 {
        for record in records {
            let prepared = prepare(record?, catalogue);
            if chain.step(prepared, observer, progress).is_break() {
                break;
            }
        }
    } else {
        pipeline(records, threads, catalogue, &mut |prepared| {
            chain.step(prepared, observer, progress)
        })?;
    }
    observer.finish(&chain.state);
    Ok(chain.finish())
}

use std::ops::ControlFlow;

/// Reads on one thread, prepares on `threads` workers, and hands results to
/// `consume` in source order (chunks are dealt and collected round-robin).
fn pipeline(
    records: impl Iterator<Item = Result<Record, AuditError>> + Send,
    threads: usize,
    catalogue: Option<&'static Catalogue>,
    consume: &mut dyn FnMut(Prepared) -> ControlFlow<()>,
) -> Result<(), AuditError> {
    type In = Result<Vec<Record>, AuditError>;
    type Out = Result<Vec<Prepared>, AuditError>;
    std::thread::scope(|scope| {
        let mut to_workers: Vec<SyncSender<In>> = Vec::with_capacity(threads);
        let mut from_workers: Vec<Receiver<Out>> = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (in_tx, in_rx) = sync_channel::<In>(CHUNKS_IN_FLIGHT);
            let (out_tx, out_rx) = sync_channel::<Out>(CHUNKS_IN_FLIGHT);
            scope.spawn(move || {
                for chunk in in_rx {
                    let prepared =
                        chunk.map(|c| c.into_iter().map(|r| prepare(r, catalogue)).collect());
                    if out_tx.send(prepared).is_err() {
                        return;
                    }
                }
            });
            to_workers.push(in_tx);
            from_workers.push(out_rx);
        }
        scope.spawn(move || {
            let mut records = records;
            for turn in 0.. {
                let chunk: In = records.by_ref().take(CHUNK_EVENTS).collect();
                // A short (or failed) chunk is the last one.
                let last = chunk.as_ref().map_or(true, |c| c.len() < CHUNK_EVENTS);
                if to_workers[turn % threads].send(chunk).is_err() || last {
                    return;
                }
            }
        });
        for turn in 0.. {
            let Ok(chunk) = from_workers[turn % threads].recv() else {
                return Ok(());
            };
            let chunk = chunk?;
            let full = chunk.len() == CHUNK_EVENTS;
            for prepared in chunk {
                if consume(prepared).is_break() {
                    // Dropping the receivers on return stops the other threads.
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// The per-event work that needs no state: decode, schema, hash.
pub(crate) struct Prepared {
    /// The store key's position, or the transport's sequence.
    key: Option<u64>,
    stored: bool,
    outcome: Result<Decoded, String>,
    /// How the message's subject or id disagrees with the event.
    message: Option<String>,
}

/// How a message's subject or `Nats-Msg-Id` disagrees with its envelope.
fn message_problem(env: &Envelope, meta: &MessageMeta) -> Option<String> {
    let subject = env.subject();
    if meta.subject != subject {
        return Some(format!(
            "the message's subject is {}, but its event's is {subject}",
            meta.subject
        ));
    }
    let event_id = env.event_id.to_string();
    // The publisher sets the header on every message: without it the
    // stream's deduplication never covered the event.
    match &meta.msg_id {
        Some(id) if *id == event_id => None,
        Some(id) => Some(format!(
            "the message's Nats-Msg-Id is {id}, but its event's eventId is {event_id}"
        )),
        None => Some(format!(
            "the message has no Nats-Msg-Id; its event's eventId is {event_id}"
        )),
    }
}

pub(crate) struct Decoded {
    event: VerifiedEvent,
    computed: Hash,
    claimed: Hash,
    schema: Option<String>,
}

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Lowercase hex of a hash, without the `hex` crate's per-char iterator
/// (it showed in profiles: every event needs two of these).
fn hex64(hash: &Hash) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

fn hex_string(hash: &Hash) -> String {
    String::from_utf8(hex64(hash).to_vec()).expect("hex digits are ASCII")
}

fn prepare(record: Record, catalogue: Option<&Catalogue>) -> Prepared {
    match record {
        Record::Stored { position, value } => Prepared {
            key: Some(position),
            stored: true,
            outcome: prepare_stored(value, catalogue),
            message: None,
        },
        Record::Published {
            sequence,
            bytes,
            message,
        } => {
            let outcome = prepare_published(bytes, catalogue);
            let message = match (&outcome, message) {
                (Ok(d), Some(meta)) => message_problem(&d.event.env, &meta),
                _ => None,
            };
            Prepared {
                key: sequence,
                stored: false,
                outcome,
                message,
            }
        }
    }
}

fn prepare_stored(value: sled::IVec, catalogue: Option<&Catalogue>) -> Result<Decoded, String> {
    if value.len() <= 32 {
        return Err("the record is too short to hold a hash and an event".into());
    }
    let claimed: Hash = value[..32].try_into().expect("32 bytes");
    let canonical = &value[32..];
    let computed = sha256(canonical);
    let mut env = Envelope::from_json(canonical).map_err(|e| e.to_string())?;
    env.hash = hex_string(&claimed);
    let schema = catalogue.and_then(|c| {
        // The published form, checked without building a `Value`
        // (ledger-catalogue's fast path); any doubt takes the full path.
        let fast = c.check_fast_canonical(canonical, &env.hash);
        if fast == Some(true) {
            return None;
        }
        let mut json: serde_json::Value = match serde_json::from_slice(canonical) {
            Ok(v) => v,
            Err(e) => return Some(e.to_string()),
        };
        json["hash"] = serde_json::Value::String(env.hash.clone());
        schema_problems(c, &json, fast)
    });
    Ok(Decoded {
        event: VerifiedEvent {
            env,
            hash: computed,
            raw: Raw::Stored(value),
        },
        computed,
        claimed,
        schema,
    })
}

fn prepare_published(bytes: Vec<u8>, catalogue: Option<&Catalogue>) -> Result<Decoded, String> {
    // Lowercase digits equal to the computed hash's, or the documented
    // procedure below decides (and names what is wrong).
    let fast = canonical_from_published(&bytes).and_then(|(canonical, claimed)| {
        let computed = sha256(&canonical);
        (hex64(&computed) == claimed).then_some((canonical, computed))
    });
    let (env, computed, claimed, canonical_form) = match fast {
        Some((canonical, computed)) => {
            let mut env = Envelope::from_json(&canonical).map_err(|e| e.to_string())?;
            env.hash = hex_string(&computed);
            (env, computed, computed, true)
        }
        None => {
            // Not in canonical form, or altered: the documented procedure.
            let env = Envelope::from_json(&bytes).map_err(|e| e.to_string())?;
            if env.hash.is_empty() {
                return Err("the published envelope has no hash".into());
            }
            let claimed = crate::merkle::parse_hash(&env.hash)?;
            let computed = sha256(&env.canonical_bytes());
            (env, computed, claimed, false)
        }
    };
    let schema = catalogue.and_then(|c| {
        let fast = c.check_fast(&bytes);
        if fast == Some(true) {
            return None;
        }
        match serde_json::from_slice(&bytes) {
            Ok(json) => schema_problems(c, &json, fast),
            Err(e) => Some(e.to_string()),
        }
    });
    Ok(Decoded {
        event: VerifiedEvent {
            env,
            hash: computed,
            raw: Raw::Published(bytes, canonical_form),
        },
        computed,
        claimed,
        schema,
    })
}

/// The violations of `json`, for a person; `fast` is what the fast path said
/// of the same envelope (`Some(false)`: it failed it, so a pass here is a
/// disagreement, reported rather than let through).
fn schema_problems(
    catalogue: &Catalogue,
    json: &serde_json::Value,
    fast: Option<bool>,
) -> Option<String> {
    let violations = match catalogue.validate_envelope(json) {
        Ok(()) if fast == Some(false) => vec![ledger_catalogue::disagreement()],
        Ok(()) => return None,
        Err(violations) => violations,
    };
    let shown: Vec<String> = violations.iter().take(3).map(|v| v.to_string()).collect();
    let more = violations.len().saturating_sub(shown.len());
    let mut text = shown.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    Some(text)
}

/// The in-order half of the verifier.
struct Chain {
    plan_from: u64,
    subset: bool,
    /// The whole history is seen from position 1, so every token is known.
    full: bool,
    state: LedgerState,
    /// Tokens created before a partial range: their last version.
    foreign: HashMap<Uuid, u64>,
    last: Option<u64>,
    prev: Hash,
    /// `occurredAt` of the last event checked.
    last_time: Option<Timestamp>,
    time_reversals: Option<TimeReversals>,
    merkle: Option<Accumulator>,
    roots: VecDeque<ExpectedRoot>,
    /// Signed trees of size 0.
    empty_roots: Vec<ExpectedRoot>,
    last_matched_root: u64,
    root_checks: Vec<RootCheck>,
    keep: KeepHashes,
    kept: BTreeMap<u64, Hash>,
    declared_end: Option<DeclaredEnd>,
    events: u64,
    first_position: Option<u64>,
    finding: Option<Finding>,
    /// The observer had seen enough: the end-of-source checks do not apply.
    stopped_by_observer: bool,
}

impl Chain {
    fn new(plan: Plan) -> Chain {
        let whole = plan.from == 1 && !plan.subset;
        let mut roots: Vec<ExpectedRoot> = if whole { plan.roots } else { Vec::new() };
        roots.sort_by_key(|r| r.size);
        // A tree of no events has no last event to be checked at (and at the
        // front of the queue it would hold up the others): judged at the end.
        let empty_roots: Vec<ExpectedRoot> = roots.extract_if(.., |r| r.size == 0).collect();
        let mut state = LedgerState::new();
        state.position = plan.from.saturating_sub(1);
        Chain {
            plan_from: plan.from.max(1),
            subset: plan.subset,
            full: plan.from <= 1,
            state,
            foreign: HashMap::new(),
            last: None,
            prev: plan.prev_hash,
            last_time: None,
            time_reversals: None,
            merkle: whole.then(Accumulator::new),
            roots: roots.into(),
            empty_roots,
            last_matched_root: 0,
            root_checks: Vec::new(),
            keep: plan.keep_hashes,
            kept: BTreeMap::new(),
            declared_end: plan.declared_end,
            events: 0,
            first_position: None,
            finding: None,
            stopped_by_observer: false,
        }
    }

    fn expected(&self) -> u64 {
        self.last.map_or(self.plan_from, |l| l + 1)
    }

    fn step(
        &mut self,
        prepared: Prepared,
        observer: &mut dyn Observer,
        progress: &mut dyn FnMut(Progress),
    ) -> ControlFlow<()> {
        match self.check(prepared, observer) {
            Ok(()) => {
                if self.events.is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress {
                        events: self.events,
                        position: self.last.unwrap_or(0),
                    });
                }
                if observer.done() {
                    self.stopped_by_observer = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Err(finding) => {
                self.finding = Some(finding);
                ControlFlow::Break(())
            }
        }
    }

    fn check(&mut self, prepared: Prepared, observer: &mut dyn Observer) -> Result<(), Finding> {
        let expected = self.expected();
        let finding = |position: u64, kind: FindingKind, message: String| Finding {
            position,
            kind,
            message,
            until: None,
        };
        if let (Some(key), true, false) = (prepared.key, prepared.stored, self.subset) {
            if key > expected {
                return Err(finding(
                    expected,
                    FindingKind::MissingEvent,
                    format!("there is no event at position {expected}: the log goes on at {key}"),
                ));
            }
        }
        let d = prepared
            .outcome
            .map_err(|e| finding(expected, FindingKind::Decode, e))?;
        let env = &d.event.env;
        // Positions are reported where the event sits: in a gap-free source
        // that is the expected position; in a subset, the event's own.
        let at = if self.subset {
            env.position.max(expected)
        } else {
            expected
        };
        if let Some(problems) = d.schema {
            return Err(finding(at, FindingKind::Schema, problems));
        }
        if d.computed != d.claimed {
            return Err(finding(
                at,
                FindingKind::HashMismatch,
                format!(
                    "the hash does not match the event's bytes (recorded {}, computed {})",
                    hex::encode(d.claimed),
                    hex::encode(d.computed)
                ),
            ));
        }
        if prepared.stored {
            if env.position != expected && !self.subset {
                return Err(finding(
                    expected,
                    FindingKind::PositionMismatch,
                    format!(
                        "the record at position {expected} holds the event of position {}: events were moved or swapped",
                        env.position
                    ),
                ));
            }
        } else {
            if let Some(seq) = prepared.key {
                if seq != env.position {
                    return Err(finding(
                        at,
                        FindingKind::PositionMismatch,
                        format!(
                            "stream sequence {seq} holds the event of position {}",
                            env.position
                        ),
                    ));
                }
            }
            if env.position > expected && !self.subset {
                return Err(finding(
                    expected,
                    FindingKind::MissingEvent,
                    format!(
                        "there is no event at position {expected}: the next event is position {}",
                        env.position
                    ),
                ));
            }
        }
        if env.position < expected {
            return Err(finding(
                expected,
                FindingKind::PositionMismatch,
                format!(
                    "position {} comes again after position {}: events were duplicated or reordered",
                    env.position,
                    expected - 1
                ),
            ));
        }
        let at = env.position;
        if let Some(problem) = prepared.message {
            return Err(finding(at, FindingKind::MessageMismatch, problem));
        }
        if env.position == expected {
            let linked = env.prev_hash.as_bytes() == hex64(&self.prev);
            if !linked {
                return Err(finding(
                    at,
                    FindingKind::ChainBroken,
                    format!(
                        "prevHash {} is not the hash of position {} ({})",
                        env.prev_hash,
                        at - 1,
                        hex::encode(self.prev)
                    ),
                ));
            }
        }
        if self
            .last_time
            .is_some_and(|before| env.occurred_at < before)
        {
            let reversals = self.time_reversals.get_or_insert(TimeReversals {
                first: at,
                count: 0,
            });
            reversals.count += 1;
        }
        let creates = rules::creates(&env.data);
        let known = self.state.token(&env.token_id);
        let foreign = self.foreign.get(&env.token_id).copied();
        let due = match (known, foreign) {
            (Some(_), _) if creates => {
                return Err(finding(
                    at,
                    FindingKind::TokenExists,
                    format!(
                        "{} for token {}, which already exists",
                        env.event_type(),
                        env.token_id
                    ),
                ));
            }
            (Some(t), _) => Some(t.version + 1),
            (None, Some(v)) => Some(v + 1),
            (None, None) if creates => Some(1),
            // A full replay reports the unknown token below; a partial one
            // meets tokens created before its range at any version.
            (None, None) => None,
        };
        if let Some(due) = due {
            if env.version != due {
                return Err(finding(
                    at,
                    FindingKind::VersionGap,
                    format!(
                        "token {} has version {} where {due} was due",
                        env.token_id, env.version
                    ),
                ));
            }
        }
        if known.is_none() && !creates && !self.full {
            // A token from before the range: only its versions can be followed.
            self.foreign.insert(env.token_id, env.version);
        } else {
            if let Err((kind, message)) = rules::check(&self.state, env) {
                return Err(finding(at, kind, message));
            }
            observer.before(&self.state, &d.event);
            self.state.position = at - 1;
            if let Err(why) = self.state.try_evolve(env) {
                return Err(finding(at, FindingKind::ReplayPanicked, why));
            }
        }
        if let Some(acc) = &mut self.merkle {
            acc.push_leaf_hash(leaf_hash(&d.computed));
            while self.roots.front().is_some_and(|r| r.size == at) {
                let expected_root = self.roots.pop_front().expect("front exists");
                if acc.root() == expected_root.root {
                    self.last_matched_root = at;
                    self.root_checks.push(RootCheck {
                        size: at,
                        label: expected_root.label,
                        outcome: "matches",
                    });
                } else {
                    self.root_checks.push(RootCheck {
                        size: at,
                        label: expected_root.label.clone(),
                        outcome: "differs",
                    });
                    let from = self.last_matched_root + 1;
                    return Err(Finding {
                        position: from,
                        kind: FindingKind::CheckpointMismatch,
                        message: format!(
                            "the first {at} events do not have the root hash signed in {}{}; every hash and link recomputes, so the history was rewritten from position {from} or later",
                            expected_root.label,
                            if self.last_matched_root > 0 {
                                format!(" (the first {} still match an earlier checkpoint)", self.last_matched_root)
                            } else {
                                String::new()
                            }
                        ),
                        until: Some(at),
                    });
                }
            }
        }
        let keep = match &self.keep {
            KeepHashes::None => false,
            KeepHashes::All => true,
            KeepHashes::At(set) => set.contains(&at),
        };
        if keep {
            self.kept.insert(at, d.computed);
        }
        observer.after(&self.state, &d.event);
        self.last = Some(at);
        self.prev = d.computed;
        self.last_time = Some(env.occurred_at);
        self.events += 1;
        self.first_position.get_or_insert(at);
        Ok(())
    }

    fn finish(mut self) -> Report {
        let last = self.last.unwrap_or(self.plan_from - 1);
        let stopped_early = self.finding.is_some() || self.stopped_by_observer;
        if !stopped_early {
            if let Some(root) = self.roots.iter().find(|r| r.size > last) {
                self.finding = Some(Finding {
                    position: last + 1,
                    kind: FindingKind::Truncated,
                    message: format!(
                        "the log ends at position {last}, but {} vouches for {} events: positions {}..={} are missing",
                        root.label,
                        root.size,
                        last + 1,
                        root.size
                    ),
                    until: Some(root.size),
                });
            }
        }
        if self.finding.is_none() && !stopped_early {
            if let Some(end) = &self.declared_end {
                if last < end.position {
                    self.finding = Some(Finding {
                        position: last + 1,
                        kind: FindingKind::Truncated,
                        message: format!(
                            "the events end at position {last}, but {} says they run to {}",
                            end.source, end.position
                        ),
                        until: Some(end.position),
                    });
                } else if end
                    .hash
                    .is_some_and(|h| last == end.position && h != self.prev)
                {
                    self.finding = Some(Finding {
                        position: last,
                        kind: FindingKind::HeaderMismatch,
                        message: format!(
                            "the last event's hash is not the head hash {} states",
                            end.source
                        ),
                        until: None,
                    });
                }
            }
        }
        for r in &self.empty_roots {
            // Its root is the empty tree's, or it is not of this log.
            let matches = r.root == Accumulator::new().root();
            if !matches && self.finding.is_none() {
                self.finding = Some(Finding {
                    position: 1,
                    kind: FindingKind::CheckpointMismatch,
                    message: format!(
                        "{} signs a tree of no events whose root is not the empty tree's",
                        r.label
                    ),
                    until: Some(0),
                });
            }
            self.root_checks.push(RootCheck {
                size: 0,
                label: r.label.clone(),
                outcome: if matches { "matches" } else { "differs" },
            });
        }
        for r in &self.roots {
            self.root_checks.push(RootCheck {
                size: r.size,
                label: r.label.clone(),
                outcome: if stopped_early && r.size > last {
                    "not_reached"
                } else {
                    "beyond_log"
                },
            });
        }
        let summary = Summary {
            events: self.events,
            tokens: (self.state.token_count() + self.foreign.len()) as u64,
            first_position: self.first_position,
            head_position: self.last.unwrap_or(0),
            head_hash: hex::encode(self.prev),
            merkle_root: self.merkle.as_ref().map(|a| hex::encode(a.root())),
            checkpoints: self.root_checks,
            time_reversals: self.time_reversals,
        };
        Report {
            finding: self.finding,
            summary,
            kept_hashes: self.kept,
        }
    }
}
