//! The single writer: decide, stamp, batch, flush, answer.

use crate::keys;
use crate::read::StoredEvent;
use crate::{Committed, Head, Shared, StoreConfig, StoreError};
use ledger_core::command::SealedCommand;
use ledger_core::event::GENESIS_HASH;
use ledger_core::sharded::ShardedMap;
use ledger_core::{
    decide, Command, CommandName, Context, Envelope, ErrorCode, EventType, LedgerState, Rejection,
    StampMeta, Timestamp, TokenBody, TokenView,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<Committed, Rejection>>;

/// One queued command.
pub(crate) struct Job {
    pub cmd: SealedCommand,
    pub wrapped_key: Option<Vec<u8>>,
    /// Its secrets were sealed with a throwaway key: the token had no
    /// stored data key when it was sealed.
    pub keyless: bool,
    pub new_token_id: Uuid,
    pub jti: String,
    pub reply: Reply,
}

/// The refusal of a command whose secrets were sealed with a throwaway key
/// (see [`Job::keyless`]).
fn sealed_without_key() -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        "the token's data key was stored after this command was sealed; send it again",
    )
}

/// What the writer's queue carries.
pub(crate) enum Msg {
    /// A command to commit.
    Command(Box<Job>),
    /// Finish what was queued before, then stop; answered once stopped.
    Stop(oneshot::Sender<()>),
}

/// What the log remembers of an accepted command that appended nothing.
#[derive(Serialize, Deserialize)]
struct NoEventRecord {
    /// Command name.
    c: CommandName,
    /// Token.
    t: Uuid,
    /// Token version at the time.
    v: u64,
}

/// What the log remembers of a command the rules refused, so that its
/// `commandId` answers that refusal again ("the same id again returns the
/// first result and appends nothing"), even once the state would allow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Refused {
    /// Command name.
    c: CommandName,
    /// Workspace: the refusal answers only there, as an accepted command does.
    w: String,
    /// The token the command named: by `tokenId`, a register's chosen `id`
    /// or an import's original id (none for a plain issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<Uuid>,
    /// An issue's `providedResourceId`, which names a token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    /// The refusal.
    r: Rejection,
}

impl Refused {
    /// The token a command names, as a refusal records it.
    fn names<S>(command: &Command<S>) -> (Option<Uuid>, Option<String>) {
        match command {
            Command::IssueClientToken {
                import,
                provided_resource_id,
                ..
            } => (
                import.as_ref().map(|i| i.resource_id),
                provided_resource_id.clone(),
            ),
            other => (other.token_id(), None),
        }
    }
}

/// Tells the two shapes of a `C` record apart: only a refusal has `r`.
#[derive(Deserialize)]
struct RecordShape {
    r: Option<serde::de::IgnoredAny>,
}

/// What answers a retried `commandId`.
///
/// Serialized in the state snapshot without `command`, which a replay of
/// the log does not know either: a snapshot gives what a replay gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Idempotency {
    token: Uuid,
    /// The command's events are at `first`, `first + 1`, … `count` of them
    /// (a command's events are appended together); none when `count` is 0.
    /// Two integers rather than a `Vec`: one entry stays for every command
    /// the log holds, and a vector's heap block doubled its size.
    first: u64,
    count: u32,
    version: u64,
    /// The command, when known; after a restart it is inferred from the event type.
    #[serde(skip)]
    command: Option<CommandName>,
    first_event: Option<EventType>,
}

impl Idempotency {
    /// The positions of the command's events.
    fn positions(&self) -> Vec<u64> {
        (self.first..self.first + u64::from(self.count)).collect()
    }

    /// Whether the command appended events.
    pub(crate) fn appended(&self) -> bool {
        self.count > 0
    }

    fn accepts(&self, name: CommandName) -> Result<(), Rejection> {
        let ok = match (self.command, self.first_event) {
            (Some(c), _) => c == name,
            (None, Some(ty)) => producers(ty).contains(&name),
            (None, None) => true,
        };
        if ok {
            return Ok(());
        }
        let first = self
            .command
            .map(|c| c.as_str().to_owned())
            .or(self
                .first_event
                .map(|t| format!("a command that produced {t}")))
            .unwrap_or_default();
        Err(reused::for_command(&first, name))
    }
}

/// The refusals of a `commandId` used before for something else, the same
/// for an id whose first run was accepted and for one whose first run was
/// refused.
mod reused {
    use ledger_core::{CommandName, Rejection};

    /// Used first in another workspace (which is not named).
    pub(super) fn in_another_workspace() -> Rejection {
        Rejection::invalid(
            "commandId",
            "commandId was already used in another workspace; use a new id",
        )
    }

    /// Used first for the command `first`.
    pub(super) fn for_command(first: &str, name: CommandName) -> Rejection {
        Rejection::invalid(
            "commandId",
            format!("commandId was already used for {first}; use a new id for {name}"),
        )
    }

    /// Used first for another token.
    pub(super) fn for_another_token() -> Rejection {
        Rejection::invalid(
            "commandId",
            "commandId was already used for another token; use a new id",
        )
    }
}

/// Whether a retried command names another token than its first run did:
/// by `tokenId` (or a register's chosen `id`), an import's original id, or
/// an issue's `providedResourceId` that the first token does not hold.
fn names_another_token<S>(command: &Command<S>, first: Uuid, state: &LedgerState) -> bool {
    match command {
        Command::IssueClientToken {
            import: Some(import),
            ..
        } => import.resource_id != first,
        Command::IssueClientToken {
            provided_resource_id: Some(wanted),
            ..
        } => !matches!(
            state.token(&first).map(|t| &t.body),
            Some(TokenBody::Client { provided_resource_id: Some(held), .. }) if held == wanted
        ),
        other => other.token_id().is_some_and(|named| named != first),
    }
}

/// The commands that can produce an event type (re-issue by provided id updates).
fn producers(ty: EventType) -> &'static [CommandName] {
    use CommandName as C;
    match ty {
        EventType::ClientTokenIssued => &[C::IssueClientToken],
        EventType::ClientTokenUpdated => &[C::UpdateClientToken, C::IssueClientToken],
        EventType::PermissionGroupsAssigned => &[C::AssignPermissionGroups],
        EventType::PermissionGroupsUnassigned => &[C::UnassignPermissionGroups],
        EventType::ClientTokenRotated => &[C::RotateClientToken],
        EventType::AccessTokenRegistered => &[C::RegisterAccessToken],
        EventType::AccessTokenRefreshed => &[C::RefreshAccessToken],
        EventType::AccessTokenUpdated => &[C::UpdateAccessToken],
        EventType::TokenTrashed => &[C::TrashToken],
        EventType::TokenRestored => &[C::RestoreToken],
        EventType::TokenRevoked => &[C::RevokeToken],
        EventType::TokenPurged => &[C::PurgeToken],
    }
}

/// Everything the replay of the log rebuilds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub state: LedgerState,
    pub head: Head,
    pub idempotency: ShardedMap<Uuid, Idempotency>,
    /// Commands the rules refused, by `commandId`.
    pub refused: HashMap<Uuid, Refused>,
    pub streams: ShardedMap<Uuid, Vec<u64>>,
    /// The position of the snapshot the replay started from (0: none).
    pub snapshot: u64,
}

/// Replays the log after `start` (a snapshot's fold of a prefix of it; the
/// empty ledger when `None`): checks every hash, link, position and version
/// on the way, and rebuilds the state, the idempotency map and the
/// per-token stream index.
pub(crate) fn recover(
    log: &sled::Tree,
    start: Option<crate::snapshot::Start>,
) -> Result<Recovered, StoreError> {
    let (mut state, mut prev, mut idempotency, mut streams) = match start {
        Some(s) => (s.state, s.hash, s.idempotency, s.streams),
        None => (
            LedgerState::new(),
            GENESIS_HASH.to_owned(),
            ShardedMap::new(),
            ShardedMap::new(),
        ),
    };
    let snapshot = state.position;
    replay_tail(log, state.position + 1, |env| {
        crate::read::links(&env, &prev)?;
        check_order(&state, &env)?;
        remember(&mut idempotency, &mut streams, &env)?;
        // A log is bytes on disk, and a well-chained log can still hold an
        // event that breaks an invariant (its chain is not keyed): refuse it
        // by position like any corruption, not abort the process. The state
        // is thrown away with the error, so a half-applied event goes nowhere.
        state.try_evolve(&env).map_err(|why| StoreError::Corrupt {
            position: env.position,
            reason: format!("an event the ledger's rules could not have produced: {why}"),
        })?;
        prev = env.hash;
        Ok(())
    })?;
    let mut refused = HashMap::new();
    for item in log.scan_prefix([keys::COMMAND]) {
        let (key, value) = item?;
        let malformed = |e: serde_json::Error| StoreError::Corrupt {
            position: state.position,
            reason: format!("malformed idempotency record: {e}"),
        };
        let id = Uuid::from_slice(&key[1..]).map_err(|_| StoreError::Corrupt {
            position: state.position,
            reason: "malformed idempotency key".into(),
        })?;
        let shape: RecordShape = serde_json::from_slice(&value).map_err(malformed)?;
        if shape.r.is_some() {
            refused.insert(id, serde_json::from_slice(&value).map_err(malformed)?);
            continue;
        }
        let record: NoEventRecord = serde_json::from_slice(&value).map_err(malformed)?;
        idempotency.insert(
            id,
            Idempotency {
                token: record.t,
                first: 0,
                count: 0,
                version: record.v,
                command: Some(record.c),
                first_event: None,
            },
        );
    }
    let head = Head {
        position: state.position,
        hash: prev,
    };
    Ok(Recovered {
        state,
        head,
        idempotency,
        refused,
        streams,
        snapshot,
    })
}

/// Checks the events a state snapshot stood in for at open (positions 1 to
/// `upto`): each hash against its bytes, each position, each link. Runs on
/// its own thread while the writer serves; a stop waits for it to finish,
/// since a process that opens, runs one command and stops (the CLI) would
/// otherwise never finish it, and would write a new snapshot over a prefix
/// nobody checked. A problem stops the writer as a failed flush does, and
/// deletes the snapshot, so the next open replays the whole log and
/// refuses it by name.
fn verify_before_snapshot(shared: &Shared, progress: &Progress, upto: u64, head: u64) {
    let mut prev = GENESIS_HASH.to_owned();
    let mut expected = 1u64;
    let checked = (|| {
        for record in shared.log.range(keys::event(1)..=keys::event(upto)) {
            let (key, value) = record?;
            let position = keys::event_position(&key);
            if position != expected {
                return Err(StoreError::Corrupt {
                    position,
                    reason: format!("expected position {expected}"),
                });
            }
            let env = StoredEvent::from_record(position, &value)?.check(position, &prev)?;
            prev = env.hash;
            expected += 1;
        }
        if expected != upto + 1 {
            return Err(StoreError::Corrupt {
                position: expected,
                reason: "the log ends before the state snapshot".into(),
            });
        }
        Ok(())
    })();
    match checked {
        Ok(()) => {
            shared.verified.store(head, Ordering::Release);
            tracing::info!(upto, "the log before the state snapshot verifies");
        }
        Err(e) => {
            let reason = format!("the log before the state snapshot does not verify: {e}");
            tracing::error!(%reason, "the writer stops");
            *progress.failed.lock().expect("lock") = Some(reason);
            let _ = std::fs::remove_file(shared.dir.join(crate::snapshot::FILE));
        }
    }
}

/// Events per chunk a replay worker reads, hashes and decodes.
const REPLAY_CHUNK: u64 = 2048;
/// Replay workers, at most.
const REPLAY_WORKERS_MAX: usize = 4;

/// Feeds `fold` every event from `from` to the log's end, in position order,
/// each with its stored hash checked against its bytes, decoded, and its
/// envelope's position checked against its key; what needs the events
/// before it (the link, the order, the state) is `fold`'s.
///
/// Hashing and decoding are most of a replay's cost and need no state, so
/// worker threads do them chunk by chunk (worker `w` of `k` takes chunks
/// `w`, `w + k`, …) while this thread folds the chunks in order. A chunk
/// stops at its first bad record and `fold` sees everything before it, so
/// the first problem reported is the one at the lowest position, as in a
/// plain loop.
fn replay_tail(
    log: &sled::Tree,
    from: u64,
    mut fold: impl FnMut(Envelope) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let last = match log
        .range(keys::event(from)..=keys::event(u64::MAX))
        .next_back()
    {
        Some(item) => keys::event_position(&item?.0),
        None => return Ok(()),
    };
    let chunks = (last - from + 1).div_ceil(REPLAY_CHUNK);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, REPLAY_WORKERS_MAX)
        .min(usize::try_from(chunks).unwrap_or(usize::MAX));
    let read = |chunk: u64| -> Vec<Result<Envelope, StoreError>> {
        let start = from + chunk * REPLAY_CHUNK;
        let end = (start + REPLAY_CHUNK).min(last + 1);
        let mut out = Vec::with_capacity((end - start) as usize);
        for item in log.range(keys::event(start)..keys::event(end)) {
            let checked = item.map_err(StoreError::from).and_then(|(key, value)| {
                let position = keys::event_position(&key);
                StoredEvent::from_record(position, &value)?.checked(position)
            });
            let failed = checked.is_err();
            out.push(checked);
            if failed {
                break;
            }
        }
        out
    };
    if workers <= 1 {
        for chunk in 0..chunks {
            for env in read(chunk) {
                fold(env?)?;
            }
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        let mut from_workers = Vec::with_capacity(workers);
        for worker in 0..workers as u64 {
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let read = &read;
            scope.spawn(move || {
                for chunk in (worker..chunks).step_by(workers) {
                    if tx.send(read(chunk)).is_err() {
                        return;
                    }
                }
            });
            from_workers.push(rx);
        }
        for chunk in 0..chunks {
            let worker = (chunk % workers as u64) as usize;
            let events = from_workers[worker]
                .recv()
                .expect("a replay worker sends every chunk it owns");
            for env in events {
                fold(env?)?;
            }
        }
        // On an error the receivers drop here, which stops the workers.
        Ok(())
    })
}

/// Positions and versions must be gap-free; checked before `evolve`, which
/// would treat a violation as a bug and panic rather than report it.
fn check_order(state: &LedgerState, env: &Envelope) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        position: env.position,
        reason,
    };
    if env.position != state.position + 1 {
        return Err(corrupt(format!("expected position {}", state.position + 1)));
    }
    let expected = state.token(&env.token_id).map_or(1, |t| t.version + 1);
    if env.version != expected {
        return Err(corrupt(format!(
            "token {} version {} where {expected} was due",
            env.token_id, env.version
        )));
    }
    if state.token(&env.token_id).is_some_and(|t| t.purged) {
        return Err(corrupt("an event follows token_purged".into()));
    }
    Ok(())
}

/// Adds an event to the stream index and to its command's idempotency entry.
fn remember(
    idempotency: &mut ShardedMap<Uuid, Idempotency>,
    streams: &mut ShardedMap<Uuid, Vec<u64>>,
    env: &Envelope,
) -> Result<(), StoreError> {
    streams
        .get_or_insert_with(env.token_id, Vec::new)
        .push(env.position);
    let entry = idempotency.get_or_insert_with(env.command_id, || Idempotency {
        token: env.token_id,
        first: env.position,
        count: 0,
        version: env.version,
        command: None,
        first_event: Some(env.event_type()),
    });
    // The writer appends a command's events together, under one id.
    if env.position != entry.first + u64::from(entry.count) || env.token_id != entry.token {
        return Err(StoreError::Corrupt {
            position: env.position,
            reason: format!(
                "command {} has events apart from each other or on two tokens",
                env.command_id
            ),
        });
    }
    entry.count += 1;
    entry.version = env.version;
    Ok(())
}

/// What one group of commands writes, gathered before the single commit.
#[derive(Default)]
struct Group {
    /// Event records (and idempotency records of commands without events).
    batch: sled::Batch,
    /// Records in `batch`.
    writes: usize,
    /// (token, position) of every event, for the stream index.
    appended: Vec<(Uuid, u64)>,
    /// Data keys of tokens the group creates.
    keys_added: Vec<(Uuid, Vec<u8>)>,
    /// Tokens the group purges, whose keys are destroyed.
    keys_shredded: Vec<Uuid>,
}

/// A group applied to sled, on its way to the flusher.
struct Applied {
    /// Sequence number of the group, from 1.
    seq: u64,
    /// Whether there is anything to flush.
    writes: bool,
    appended: Vec<(Uuid, u64)>,
    keys_shredded: Vec<Uuid>,
    /// The log's last position once the group is durable.
    head: u64,
    answers: Vec<(Reply, Result<Committed, Rejection>)>,
}

/// What the flusher's queue carries.
enum Flush {
    Group(Applied),
    Stop,
}

/// Groups applied but not yet flushed, at most, besides the one flushing:
/// enough to overlap deciding the next group with the current fsync, few
/// enough that a caller's wait stays about two flushes.
const PIPELINE_DEPTH: usize = 1;

/// State the writer and the flusher share.
#[derive(Default)]
struct Progress {
    /// The last group whose flush completed (and whose effects are visible).
    flushed: std::sync::atomic::AtomicU64,
    /// Set when a flush failed: every later command is refused.
    failed: Mutex<Option<String>>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    state: LedgerState,
    idempotency: ShardedMap<Uuid, Idempotency>,
    /// Commands the rules refused, by `commandId` (rare: a plain map).
    refused: HashMap<Uuid, Refused>,
    /// Answers of commands in groups not yet flushed, with their group: a
    /// retry of one is answered from here, since neither the stream index
    /// nor the disk has its events yet.
    pending: HashMap<Uuid, (u64, Committed)>,
    /// The last group handed to the flusher.
    seq: u64,
    progress: Arc<Progress>,
    head_hash: String,
    /// Position of the state snapshot in the data dir (0: none usable).
    snapshot_at: u64,
    /// The head of the log at open.
    opened_head: u64,
    last_now: Timestamp,
    config: StoreConfig,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        recovered: Recovered,
        head_time: Option<Timestamp>,
        config: StoreConfig,
    ) -> Writer {
        let wall = Timestamp::new((config.clock)());
        if let Some(head) = head_time.filter(|head| *head > wall) {
            // A clock set back, or a head stamped by a clock that ran ahead:
            // new events keep the head's time until the clock passes it.
            tracing::warn!(
                head = %head,
                clock = %wall,
                "the clock is behind the log's last event; new events take that event's time \
                 until the clock catches up"
            );
        }
        let last_now = head_time.map_or(wall, |head| wall.max(head));
        Writer {
            shared,
            state: recovered.state,
            idempotency: recovered.idempotency,
            refused: recovered.refused,
            pending: HashMap::new(),
            seq: 0,
            progress: Arc::new(Progress::default()),
            head_hash: recovered.head.hash,
            snapshot_at: recovered.snapshot,
            opened_head: recovered.head.position,
            last_now,
            config,
        }
    }

    /// Decides and applies groups on this thread while a flusher thread makes
    /// the previous group durable and answers it (a commit pipeline).
    ///
    /// Nobody is answered before the flush covering their command: the
    /// flusher answers groups in order, each after its own flush (a
    /// refusal's record is in its group's batch), and a group that writes
    /// nothing (retries) is answered after the flushes of the groups before
    /// it, whose state it was decided on.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let (to_flusher, flusher_rx) = std::sync::mpsc::sync_channel(PIPELINE_DEPTH);
        let flusher = {
            let shared = self.shared.clone();
            let progress = self.progress.clone();
            std::thread::Builder::new()
                .name("ledger-flusher".into())
                .spawn(move || flush_loop(&shared, &progress, flusher_rx))
        };
        let flusher = match flusher {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the flusher thread");
                return;
            }
        };
        let verifier = (self.snapshot_at > 0).then(|| {
            let (shared, progress) = (self.shared.clone(), self.progress.clone());
            let (upto, head) = (self.snapshot_at, self.opened_head);
            std::thread::Builder::new()
                .name("ledger-verify".into())
                .spawn(move || verify_before_snapshot(&shared, &progress, upto, head))
        });
        let mut failed: Option<String> = None;
        let mut stop = None;
        while let Ok(first) = rx.recv() {
            let mut jobs = Vec::new();
            // Take everything waiting, up to the batch limit or a stop.
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Command(job) => jobs.push(*job),
                    Msg::Stop(reply) => {
                        stop = Some(reply);
                        break;
                    }
                }
                if jobs.len() < self.config.batch_max {
                    next = rx.try_recv().ok();
                }
            }
            if failed.is_none() {
                failed = self.progress.failed.lock().expect("lock").clone();
            }
            if let Some(reason) = &failed {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(reason.clone()).to_rejection()));
                }
            } else if let Some(refusal) = self.gate_refusal() {
                // Not a failure of the store: the next group asks again.
                for job in jobs {
                    let _ = job.reply.send(Err(refusal.clone()));
                }
            } else {
                match self.apply_group(jobs) {
                    Ok(applied) => {
                        if to_flusher.send(Flush::Group(applied)).is_err() {
                            failed = Some("the flusher stopped".into());
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "group commit failed; the writer stops");
                        failed = Some(e.to_string());
                    }
                }
            }
            if stop.is_some() {
                break;
            }
        }
        // Commands queued after a stop are refused, never silently run.
        drop(rx);
        let _ = to_flusher.send(Flush::Stop);
        let _ = flusher.join();
        let unchecked = match verifier {
            Some(Ok(verifier)) => verifier.join().is_err(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot start the check of the log under the snapshot");
                true
            }
            None => false,
        };
        // Every group is durable now, unless a write or flush failed, when
        // the state in memory may be ahead of the disk. A new snapshot also
        // needs the old one's prefix checked.
        if failed.is_none() && !unchecked && self.progress.failed.lock().expect("lock").is_none() {
            self.save_snapshot();
        }
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    /// The append gate's refusal, if one is set and says no.
    fn gate_refusal(&self) -> Option<Rejection> {
        let gate = self.shared.append_gate.read().expect("gate lock poisoned");
        gate.as_ref().and_then(|allowed| allowed().err())
    }

    /// Writes a state snapshot if the log grew enough since the last one.
    fn save_snapshot(&self) {
        let Some(min) = self.config.snapshot_min_events else {
            return;
        };
        let position = self.state.position;
        if position <= self.snapshot_at || position - self.snapshot_at < min {
            return;
        }
        let started = std::time::Instant::now();
        let streams = self.shared.streams.read().expect("streams lock poisoned");
        let written = crate::snapshot::write(
            &self.shared.dir,
            &self.shared.master,
            &self.state,
            &self.head_hash,
            &self.idempotency,
            &streams,
        );
        match written {
            Ok(()) => tracing::info!(
                position,
                tokens = self.state.token_count(),
                ms = started.elapsed().as_millis() as u64,
                "state snapshot written"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot write the state snapshot; the next open replays the whole log"
            ),
        }
    }

    fn now(&mut self) -> Timestamp {
        // Never let time run backwards along the log, whatever the wall clock does.
        let now = Timestamp::new((self.config.clock)()).max(self.last_now);
        self.last_now = now;
        now
    }

    /// Forgets the answers of groups the flusher has finished: their events
    /// are on disk and in the stream index now.
    fn prune_pending(&mut self) {
        // At most the commands of the groups in the pipeline: a scan is cheap.
        let flushed = self.progress.flushed.load(Ordering::Acquire);
        self.pending.retain(|_, (seq, _)| *seq > flushed);
    }

    /// Decides every job against the state and applies the group's writes
    /// to sled (not yet durable); the flusher does the rest.
    fn apply_group(&mut self, jobs: Vec<Job>) -> Result<Applied, StoreError> {
        self.prune_pending();
        self.seq += 1;
        let seq = self.seq;
        let now = self.now();
        let kid = self
            .shared
            .ring
            .read()
            .expect("key ring lock poisoned")
            .active_kid()
            .to_owned();
        let mut answers: Vec<(Reply, Result<Committed, Rejection>)> =
            Vec::with_capacity(jobs.len());
        let mut group = Group::default();
        for job in jobs {
            let answer = self.one(&job, now, &kid, seq, &mut group);
            answers.push((job.reply, answer));
        }
        if group.writes > 0 {
            // New data keys are durable before the events that use them:
            // sled may write the batch out on its own at any moment.
            let written = self
                .shared
                .data_keys
                .lock()
                .expect("data keys lock poisoned")
                .add(&group.keys_added)
                .map_err(StoreError::from)
                .and_then(|()| Ok(self.shared.log.apply_batch(group.batch)?));
            if let Err(e) = written {
                // Tell the group what happened (a full disk, say), not just
                // that the writer went away.
                for (reply, _) in answers {
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string()).to_rejection()));
                }
                return Err(e);
            }
        }
        Ok(Applied {
            seq,
            writes: group.writes > 0,
            appended: group.appended,
            keys_shredded: group.keys_shredded,
            head: self.state.position,
            answers,
        })
    }

    fn one(
        &mut self,
        job: &Job,
        now: Timestamp,
        kid: &str,
        seq: u64,
        group: &mut Group,
    ) -> Result<Committed, Rejection> {
        let cmd = &job.cmd;
        let name = cmd.command.name();
        if let Some(first) = self.refused.get(&cmd.command_id) {
            // The same checks as for an accepted command's id, then its
            // refusal again, whatever the state is now.
            if first.w != cmd.workspace_id {
                return Err(reused::in_another_workspace());
            }
            if first.c != name {
                return Err(reused::for_command(first.c.as_str(), name));
            }
            if (first.t, first.p.clone()) != Refused::names(&cmd.command) {
                return Err(reused::for_another_token());
            }
            return Err(first.r.clone());
        }
        if let Some(first) = self.idempotency.get(&cmd.command_id) {
            // A commandId answers only in the workspace that first used it:
            // the answer holds the token's view (and may re-mint its string),
            // which must never cross tenants. The other workspace is not named.
            let home = self
                .state
                .token(&first.token)
                .map(|t| t.workspace_id.as_str());
            if home != Some(cmd.workspace_id.as_str()) {
                return Err(reused::in_another_workspace());
            }
            first.accepts(name)?;
            // Bodies are not compared (the id is the key, as an event id is
            // in EventStoreDB and a Nats-Msg-Id in JetStream), but a retry
            // naming another token is a reused id, not a retry: answering it
            // with the first token's result would report a change that never
            // happened to the token it names.
            if names_another_token(&cmd.command, first.token, &self.state) {
                return Err(reused::for_another_token());
            }
            if let Some((_, answer)) = self.pending.get(&cmd.command_id) {
                // Its first run is in this group or one still flushing: not
                // in the stream index yet, and the token may have changed
                // since. The answer goes out after that run's flush, since
                // groups are answered in order.
                return Ok(Committed {
                    replayed: true,
                    ..answer.clone()
                });
            }
            let first = first.clone();
            let view = self
                .view_as_of(&first.token, first.version)
                .map_err(|e| e.to_rejection())?;
            return Ok(Committed {
                token_id: first.token,
                positions: first.positions(),
                view,
                replayed: true,
            });
        }
        let ctx = Context {
            now,
            new_token_id: job.new_token_id,
            jti: job.jti.clone(),
            kid: kid.to_owned(),
        };
        let decision = match decide(&self.state, cmd, &ctx) {
            // The rules allow it only if the token was registered after the
            // command was sealed: its secrets are under a key nobody holds.
            // Refused as a retryable race, not remembered: sent again, it is
            // sealed with the stored key.
            Ok(_) if job.keyless => return Err(sealed_without_key()),
            Ok(decision) => decision,
            // `internal` (a fresh id that collided) says nothing about the
            // command: a retry draws another id, so it is not remembered.
            Err(rejection) if rejection.code == ErrorCode::Internal => return Err(rejection),
            Err(rejection) => {
                self.remember_refusal(cmd, &rejection, group);
                return Err(rejection);
            }
        };
        let token_id = decision.token_id;
        let mut positions = Vec::with_capacity(decision.events.len());
        let mut first_event = None;
        for draft in decision.events {
            let meta = StampMeta {
                event_id: Uuid::now_v7(),
                position: self.state.position + 1,
                occurred_at: now,
                actor: cmd.actor.clone(),
                command_id: cmd.command_id,
                correlation_id: cmd.correlation_id.clone(),
                prev_hash: std::mem::take(&mut self.head_hash),
            };
            let (env, bytes) = draft.stamp(meta);
            group.batch.insert(
                &keys::event(env.position),
                StoredEvent::record(&env.hash, &bytes),
            );
            group.writes += 1;
            self.state.evolve(&env);
            first_event.get_or_insert(env.event_type());
            group.appended.push((env.token_id, env.position));
            self.head_hash = env.hash;
            positions.push(env.position);
        }
        let token = self
            .state
            .token(&token_id)
            .expect("a decided token exists after its events");
        if positions.is_empty() {
            let record = NoEventRecord {
                c: name,
                t: token_id,
                v: token.version,
            };
            group.batch.insert(
                &keys::command(&cmd.command_id),
                serde_json::to_vec(&record).expect("record serializes"),
            );
            group.writes += 1;
        } else {
            if let (Some(wrapped), 1) = (&job.wrapped_key, token.version) {
                group.keys_added.push((token_id, wrapped.clone()));
            }
            if token.purged {
                // Crypto-shredding: without the data key the sealed secrets
                // in the log can never be opened again.
                group.keys_shredded.push(token_id);
            }
        }
        self.idempotency.insert(
            cmd.command_id,
            Idempotency {
                token: token_id,
                first: positions.first().copied().unwrap_or(0),
                count: u32::try_from(positions.len()).expect("a command appends a few events"),
                version: token.version,
                command: Some(name),
                first_event,
            },
        );
        let committed = Committed {
            token_id,
            positions,
            view: TokenView::of(token),
            replayed: false,
        };
        self.pending
            .insert(cmd.command_id, (seq, committed.clone()));
        Ok(committed)
    }

    /// Records a refusal by the rules in the group's batch (so it is durable
    /// before it is answered, with the group) and in memory (so a retry in
    /// this very group already gets it).
    fn remember_refusal(&mut self, cmd: &SealedCommand, rejection: &Rejection, group: &mut Group) {
        let (t, p) = Refused::names(&cmd.command);
        let record = Refused {
            c: cmd.command.name(),
            w: cmd.workspace_id.clone(),
            t,
            p,
            r: rejection.clone(),
        };
        group.batch.insert(
            &keys::command(&cmd.command_id),
            serde_json::to_vec(&record).expect("record serializes"),
        );
        group.writes += 1;
        self.refused.insert(cmd.command_id, record);
    }

    /// A token's view right after its `version`-th event, for a command
    /// retried after the group of its first run committed (so every event up
    /// to `version` is on disk and in the stream index).
    fn view_as_of(&self, token: &Uuid, version: u64) -> Result<Option<TokenView>, StoreError> {
        if let Some(current) = self.state.token(token).filter(|t| t.version == version) {
            return Ok(TokenView::of(current));
        }
        let events = crate::read::token_events(&self.shared, token, Some(version))?;
        Ok(ledger_core::state::fold_token(events.iter()).and_then(|t| TokenView::of(&t)))
    }
}

/// The flusher: makes each applied group durable, then publishes its effects
/// and answers its callers, in group order.
fn flush_loop(shared: &Shared, progress: &Progress, rx: Receiver<Flush>) {
    let mut failed: Option<String> = None;
    for msg in rx {
        let Flush::Group(applied) = msg else {
            return;
        };
        let outcome = match &failed {
            Some(reason) => Err(reason.clone()),
            None => make_durable(shared, &applied).map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(()) => {
                progress.flushed.store(applied.seq, Ordering::Release);
                for (reply, answer) in applied.answers {
                    let _ = reply.send(answer);
                }
            }
            Err(reason) => {
                if failed.is_none() {
                    tracing::error!(error = %reason, "flush failed; the writer stops");
                    *progress.failed.lock().expect("lock") = Some(reason.clone());
                    failed = Some(reason.clone());
                }
                // Decided on a state that may never reach the disk: nobody
                // in this group or after it is told anything but unavailable.
                for (reply, _) in applied.answers {
                    let _ = reply.send(Err(StoreError::Unavailable(reason.clone()).to_rejection()));
                }
            }
        }
    }
}

/// Flushes one applied group and makes it visible to readers.
fn make_durable(shared: &Shared, applied: &Applied) -> Result<(), StoreError> {
    if !applied.writes {
        return Ok(());
    }
    shared.db.flush()?;
    // Purged keys are destroyed after the purge is durable and before anyone
    // is told it happened.
    shared
        .data_keys
        .lock()
        .expect("data keys lock poisoned")
        .shred(&applied.keys_shredded)?;
    let mut streams = shared.streams.write().expect("streams lock poisoned");
    for (token, position) in &applied.appended {
        streams.get_or_insert_with(*token, Vec::new).push(*position);
    }
    drop(streams);
    shared.head.send_replace(applied.head);
    Ok(())
}
