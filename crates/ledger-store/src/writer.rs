//! The single writer: decide, stamp, batch, flush, answer.

use crate::keys;
use crate::read::StoredEvent;
use crate::{Committed, Head, Shared, StoreConfig, StoreError};
use ledger_core::command::SealedCommand;
use ledger_core::event::GENESIS_HASH;
use ledger_core::state::fold_token;
use ledger_core::{
    decide, Context, ErrorCode, LedgerState, Rejection, StampMeta, Timestamp, TokenView,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<Committed, Rejection>>;

/// One queued command, or a stop request.
pub(crate) struct Job {
    pub cmd: SealedCommand,
    pub wrapped_key: Option<Vec<u8>>,
    pub new_token_id: Uuid,
    pub jti: String,
    pub reply: Reply,
}

/// A stop request travels as a job with this command id.
const STOP: Uuid = Uuid::nil();

impl Job {
    pub(crate) fn stop(reply: Reply) -> Job {
        Job {
            cmd: SealedCommand {
                command_id: STOP,
                workspace_id: String::new(),
                actor: ledger_core::Agent::system(),
                expected_version: None,
                correlation_id: None,
                command: ledger_core::Command::RestoreToken {
                    token_id: Uuid::nil(),
                },
            },
            wrapped_key: None,
            new_token_id: Uuid::nil(),
            jti: String::new(),
            reply,
        }
    }
}

/// What the log remembers of an accepted command, to answer a retry.
#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    /// Command name.
    c: String,
    /// Token.
    t: Uuid,
    /// Positions appended.
    p: Vec<u64>,
    /// Token version right after the command.
    v: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    state: LedgerState,
    head_hash: String,
    last_now: Timestamp,
    config: StoreConfig,
}

/// Replays the log: rebuilds the state, checks the chain, and checks that the
/// stored reservations are exactly those the events imply.
pub(crate) fn recover(log: &sled::Tree) -> Result<(LedgerState, Head), StoreError> {
    let mut state = LedgerState::new();
    let mut prev = GENESIS_HASH.to_owned();
    for item in log.scan_prefix([keys::EVENT]) {
        let (key, value) = item?;
        let position = keys::event_position(&key);
        let stored = StoredEvent::from_record(position, &value)?;
        let env = stored.check(position, &prev)?;
        if env.position != state.position + 1 {
            return Err(StoreError::Corrupt {
                position,
                reason: format!("expected position {}", state.position + 1),
            });
        }
        if let Some(token) = state.token(&env.token_id) {
            if token.version + 1 != env.version {
                return Err(StoreError::Corrupt {
                    position,
                    reason: format!("token version gap: {} after {}", env.version, token.version),
                });
            }
        }
        prev = env.hash.clone();
        state.evolve(&env);
    }
    let mut stored: HashMap<Vec<u8>, Uuid> = HashMap::new();
    for item in log.scan_prefix([keys::RESERVATION]) {
        let (key, value) = item?;
        let holder = Uuid::from_slice(&value).map_err(|_| StoreError::Corrupt {
            position: state.position,
            reason: "malformed reservation record".into(),
        })?;
        stored.insert(key[1..].to_vec(), holder);
    }
    let derived: HashMap<Vec<u8>, Uuid> = state
        .reservations()
        .map(|(k, v)| (k.storage_key(), *v))
        .collect();
    if stored != derived {
        return Err(StoreError::Corrupt {
            position: state.position,
            reason: format!(
                "reservations on disk ({}) differ from those the events imply ({})",
                stored.len(),
                derived.len()
            ),
        });
    }
    let head = Head {
        position: state.position,
        hash: prev,
    };
    Ok((state, head))
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: LedgerState,
        head: Head,
        config: StoreConfig,
    ) -> Writer {
        let last_now = Timestamp::new((config.clock)());
        Writer {
            shared,
            state,
            head_hash: head.hash,
            last_now,
            config,
        }
    }

    pub(crate) fn run(mut self, rx: Receiver<Job>) {
        let mut failed: Option<String> = None;
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.config.batch_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let stop_at = jobs.iter().position(|j| j.cmd.command_id == STOP);
            let stop_reply = stop_at.map(|i| jobs.remove(i).reply);
            // Jobs queued after a stop are refused rather than silently run.
            let after_stop = stop_at.map(|i| jobs.split_off(i)).unwrap_or_default();
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
            for job in after_stop {
                let _ = job.reply.send(Err(
                    StoreError::Unavailable("shutting down".into()).to_rejection()
                ));
            }
            if let Some(reply) = stop_reply {
                let _ = reply.send(Err(Rejection::new(ErrorCode::Unavailable, "stopped")));
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
        let mut batch = sled::Batch::default();
        let mut answers: Vec<(Reply, Result<Committed, Rejection>)> =
            Vec::with_capacity(jobs.len());
        let mut in_group: HashMap<Uuid, (String, Committed)> = HashMap::new();
        let first_position = self.state.position + 1;
        for job in jobs {
            let answer = self.one(&job, now, &kid, &mut batch, &mut in_group);
            answers.push((job.reply, answer));
        }
        if self.state.position >= first_position || !in_group.is_empty() {
            self.shared.log.apply_batch(batch)?;
            self.shared.db.flush()?;
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
        batch: &mut sled::Batch,
        in_group: &mut HashMap<Uuid, (String, Committed)>,
    ) -> Result<Committed, Rejection> {
        let cmd = &job.cmd;
        let name = cmd.command.name().as_str();
        if let Some((first_name, committed)) = in_group.get(&cmd.command_id) {
            return same_command(first_name, name).map(|_| Committed {
                replayed: true,
                ..committed.clone()
            });
        }
        if let Some(record) = self
            .shared
            .log
            .get(keys::command(&cmd.command_id))
            .map_err(|e| StoreError::from(e).to_rejection())?
        {
            let record: IdempotencyRecord = serde_json::from_slice(&record).map_err(|e| {
                Rejection::new(ErrorCode::Internal, format!("bad idempotency record: {e}"))
            })?;
            same_command(&record.c, name)?;
            let view =
                view_as_of(&self.shared.log, &record.t, record.v).map_err(|e| e.to_rejection())?;
            return Ok(Committed {
                token_id: record.t,
                positions: record.p,
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
        let before = self
            .state
            .token(&token_id)
            .map(|t| t.reservations())
            .unwrap_or_default();
        let mut positions = Vec::with_capacity(decision.events.len());
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
            batch.insert(
                &keys::event(env.position),
                StoredEvent::record(&env.hash, &bytes),
            );
            batch.insert(
                &keys::stream(&env.token_id, env.version),
                &env.position.to_be_bytes(),
            );
            self.state.evolve(&env);
            self.head_hash = env.hash;
            positions.push(env.position);
        }
        let token = self
            .state
            .token(&token_id)
            .expect("a decided token exists after its events");
        if !positions.is_empty() {
            let after = token.reservations();
            for key in before.iter().filter(|k| !after.contains(k)) {
                batch.remove(keys::reservation(&key.storage_key()));
            }
            for key in after.iter().filter(|k| !before.contains(k)) {
                batch.insert(keys::reservation(&key.storage_key()), token_id.as_bytes());
            }
            if let (Some(wrapped), 1) = (&job.wrapped_key, token.version) {
                batch.insert(&keys::data_key(&token_id), wrapped.as_slice());
            }
            if token.purged {
                // Crypto-shredding: without the data key the sealed secrets
                // in the log can never be opened again.
                batch.remove(&keys::data_key(&token_id));
            }
        }
        let record = IdempotencyRecord {
            c: name.to_owned(),
            t: token_id,
            p: positions.clone(),
            v: token.version,
        };
        batch.insert(
            &keys::command(&cmd.command_id),
            serde_json::to_vec(&record).expect("record serializes"),
        );
        let committed = Committed {
            token_id,
            positions,
            view: TokenView::of(token),
            replayed: false,
        };
        in_group.insert(cmd.command_id, (name.to_owned(), committed.clone()));
        Ok(committed)
    }
}

fn same_command(first: &str, now: &str) -> Result<(), Rejection> {
    if first == now {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "commandId",
            format!("commandId was already used for {first}; use a new id for {now}"),
        ))
    }
}

/// A token's view right after its `version`-th event (`None` if purged by then).
pub(crate) fn view_as_of(
    log: &sled::Tree,
    token: &Uuid,
    version: u64,
) -> Result<Option<TokenView>, StoreError> {
    let events = crate::read::token_events(log, token, Some(version))?;
    Ok(fold_token(events.iter()).and_then(|t| TokenView::of(&t)))
}
