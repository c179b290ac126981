//! The single writer: decide, stamp, batch, flush, answer.

use crate::keys;
use crate::read::StoredEvent;
use crate::{Committed, Head, Shared, StoreConfig, StoreError};
use ledger_core::command::SealedCommand;
use ledger_core::event::GENESIS_HASH;
use ledger_core::{
    decide, CommandName, Context, Envelope, EventType, LedgerState, Rejection, StampMeta,
    Timestamp, TokenView,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<Committed, Rejection>>;

/// One queued command.
pub(crate) struct Job {
    pub cmd: SealedCommand,
    pub wrapped_key: Option<Vec<u8>>,
    pub new_token_id: Uuid,
    pub jti: String,
    pub reply: Reply,
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

/// What answers a retried `commandId`.
#[derive(Clone, Debug)]
pub(crate) struct Idempotency {
    token: Uuid,
    positions: Vec<u64>,
    version: u64,
    /// The command, when known; after a restart it is inferred from the event type.
    command: Option<CommandName>,
    first_event: Option<EventType>,
}

impl Idempotency {
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
        Err(Rejection::invalid(
            "commandId",
            format!("commandId was already used for {first}; use a new id for {name}"),
        ))
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
pub(crate) struct Recovered {
    pub state: LedgerState,
    pub head: Head,
    pub idempotency: HashMap<Uuid, Idempotency>,
    pub streams: HashMap<Uuid, Vec<u64>>,
}

/// Replays the log: checks every hash, link, position and version, and
/// rebuilds the state, the idempotency map and the per-token stream index.
pub(crate) fn recover(log: &sled::Tree) -> Result<Recovered, StoreError> {
    let mut state = LedgerState::new();
    let mut idempotency: HashMap<Uuid, Idempotency> = HashMap::new();
    let mut streams: HashMap<Uuid, Vec<u64>> = HashMap::new();
    let mut prev = GENESIS_HASH.to_owned();
    for item in log.scan_prefix([keys::EVENT]) {
        let (key, value) = item?;
        let position = keys::event_position(&key);
        let stored = StoredEvent::from_record(position, &value)?;
        let env = stored.check(position, &prev)?;
        check_order(&state, &env)?;
        prev = env.hash.clone();
        remember(&mut idempotency, &mut streams, &env, None);
        state.evolve(&env);
    }
    for item in log.scan_prefix([keys::COMMAND]) {
        let (key, value) = item?;
        let record: NoEventRecord =
            serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                position: state.position,
                reason: format!("malformed idempotency record: {e}"),
            })?;
        let id = Uuid::from_slice(&key[1..]).map_err(|_| StoreError::Corrupt {
            position: state.position,
            reason: "malformed idempotency key".into(),
        })?;
        idempotency.insert(
            id,
            Idempotency {
                token: record.t,
                positions: Vec::new(),
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
        streams,
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

fn remember(
    idempotency: &mut HashMap<Uuid, Idempotency>,
    streams: &mut HashMap<Uuid, Vec<u64>>,
    env: &Envelope,
    command: Option<CommandName>,
) {
    streams.entry(env.token_id).or_default().push(env.position);
    let entry = idempotency
        .entry(env.command_id)
        .or_insert_with(|| Idempotency {
            token: env.token_id,
            positions: Vec::new(),
            version: env.version,
            command,
            first_event: Some(env.event_type()),
        });
    entry.positions.push(env.position);
    entry.version = env.version;
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
    /// The answer to every command accepted in the group, for a retry of one
    /// within the same group.
    answered: HashMap<Uuid, Committed>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    state: LedgerState,
    idempotency: HashMap<Uuid, Idempotency>,
    head_hash: String,
    last_now: Timestamp,
    config: StoreConfig,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, recovered: Recovered, config: StoreConfig) -> Writer {
        let last_now = Timestamp::new((config.clock)());
        Writer {
            shared,
            state: recovered.state,
            idempotency: recovered.idempotency,
            head_hash: recovered.head.hash,
            last_now,
            config,
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut failed: Option<String> = None;
        while let Ok(first) = rx.recv() {
            let mut stop = None;
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
            if let Some(reason) = &failed {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(reason.clone()).to_rejection()));
                }
            } else if let Err(e) = self.commit_group(jobs) {
                tracing::error!(error = %e, "group commit failed; the writer stops");
                failed = Some(e.to_string());
            }
            if let Some(reply) = stop {
                // Commands queued after the stop are refused, never silently run.
                drop(rx);
                let _ = reply.send(());
                return;
            }
        }
    }

    fn now(&mut self) -> Timestamp {
        // Never let time run backwards along the log, whatever the wall clock does.
        let now = Timestamp::new((self.config.clock)()).max(self.last_now);
        self.last_now = now;
        now
    }

    fn commit_group(&mut self, jobs: Vec<Job>) -> Result<(), StoreError> {
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
            let answer = self.one(&job, now, &kid, &mut group);
            answers.push((job.reply, answer));
        }
        if group.writes > 0 {
            // New data keys are durable before the events that use them.
            self.shared
                .data_keys
                .lock()
                .expect("data keys lock poisoned")
                .add(&group.keys_added)?;
            self.shared.log.apply_batch(group.batch)?;
            self.shared.db.flush()?;
            // Purged keys are destroyed after the purge is durable and before
            // anyone is told it happened.
            self.shared
                .data_keys
                .lock()
                .expect("data keys lock poisoned")
                .shred(&group.keys_shredded)?;
            let mut streams = self.shared.streams.write().expect("streams lock poisoned");
            for (token, position) in group.appended {
                streams.entry(token).or_default().push(position);
            }
            drop(streams);
            self.shared.head.send_replace(self.state.position);
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        Ok(())
    }

    fn one(
        &mut self,
        job: &Job,
        now: Timestamp,
        kid: &str,
        group: &mut Group,
    ) -> Result<Committed, Rejection> {
        let cmd = &job.cmd;
        let name = cmd.command.name();
        if let Some(first) = self.idempotency.get(&cmd.command_id) {
            first.accepts(name)?;
            if let Some(answer) = group.answered.get(&cmd.command_id) {
                // Its first run is in this very group: not on disk yet, and
                // the token may have changed since within the group.
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
                positions: first.positions,
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
        let decision = decide(&self.state, cmd, &ctx)?;
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
                positions: positions.clone(),
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
        group.answered.insert(cmd.command_id, committed.clone());
        Ok(committed)
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
