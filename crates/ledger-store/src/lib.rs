//! The event log of tokenledger, in sled.
//!
//! One writer thread owns the in-memory [`ledger_core::LedgerState`] and the
//! `log` tree. Commands queue to it; it takes every command waiting, decides
//! each against the state, and writes all their events (and the data keys of
//! new access tokens) in ONE `apply_batch`. A flusher thread then flushes
//! once for the group and only then answers every caller (group commit),
//! while the writer already decides the next group (a commit pipeline:
//! deciding group n+1 overlaps the fsync of group n, and groups are answered
//! in order). The event record carries the `commandId` and everything the
//! reservations and stream index derive from, so one record is one whole
//! command; the derived indices are rebuilt by the replay on open. A storage
//! failure stops the writer for good (fail-stop): the state in memory may be
//! ahead of the disk, so only a reopen, which replays the disk, may serve
//! again.
//!
//! **Architecture invariant**: only this crate writes the `log` tree; nothing
//! here knows about NATS or views.

mod datakeys;
mod error;
pub mod import;
pub mod key_history;
pub mod keys;
mod read;
pub mod snapshot;
pub mod verify;
mod writer;

pub use error::StoreError;

/// The log target of the audit records: secrets revealed, token strings
/// found inactive (with the reason the caller is not told). `serve` logs it
/// at `info` by default; nothing logged under it carries a secret.
pub const AUDIT_LOG_TARGET: &str = "tokenledger::audit";
pub use import::LogImport;
pub use key_history::{KeyEvent, KeyEventType};
pub use read::{Outgoing, StoredEvent};
pub use verify::Verifier;

use chrono::{DateTime, Utc};
use ledger_core::command::{ParsedCommand, SealedCommand};
use ledger_core::{Command, Rejection, SealedSecret, Secret, TokenBody, TokenView};
use ledger_crypto::jwt::{JwtClaims, KeyRing, SigningAlg};
use ledger_crypto::{DataKey, MasterKey};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// A source of time, so tests can drive the clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How to open a store.
#[derive(Clone)]
pub struct StoreConfig {
    /// Commands taken into one group commit, at most.
    pub batch_max: usize,
    /// Commands waiting for the writer, at most; callers wait beyond that.
    pub queue_max: usize,
    /// Master key; read from (or created in) `DIR/master.key` when `None`.
    pub master_key: Option<MasterKey>,
    /// Algorithm of the first signing key when the ring is created.
    pub signing_alg: SigningAlg,
    /// The clock.
    pub clock: Clock,
    /// A clean stop writes a state snapshot ([`snapshot`]) when the log grew
    /// by at least this many events since the last one, so that the next
    /// open replays only what follows it; `None` never writes one.
    pub snapshot_min_events: Option<u64>,
    /// Make missing key files even for a data dir that holds a ledger (a
    /// log rebuilt by `recover --new-keys`); otherwise open refuses, since
    /// new keys cannot open what the old ones made.
    pub new_keys_for_existing_data: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            batch_max: 4096,
            queue_max: 65_536,
            master_key: None,
            signing_alg: SigningAlg::EdDSA,
            clock: Arc::new(Utc::now),
            // A replay of 10k events takes about 50 ms: below that a
            // snapshot saves nothing worth a write at every CLI command.
            snapshot_min_events: Some(10_000),
            new_keys_for_existing_data: false,
        }
    }
}

/// The result of an accepted command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The token the command was about.
    pub token_id: Uuid,
    /// Positions of the events appended (empty for a reuse or no-op).
    pub positions: Vec<u64>,
    /// The token after the command (`None` once purged).
    pub view: Option<TokenView>,
    /// True when this is the recorded answer to an earlier identical `commandId`.
    pub replayed: bool,
}

/// How the last open rebuilt the writer's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Position of the state snapshot it started from (0: none, or none usable).
    pub snapshot: u64,
    /// Events replayed after it.
    pub replayed: u64,
}

/// The head of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Last position (0 when empty).
    pub position: u64,
    /// Its hash ([`ledger_core::event::GENESIS_HASH`] when empty).
    pub hash: String,
}

struct Shared {
    db: sled::Db,
    log: sled::Tree,
    /// Per-token stream index: positions in version order. Derived from the
    /// log on open; extended by the flusher after each flush, before it answers.
    streams: RwLock<ledger_core::sharded::ShardedMap<Uuid, Vec<u64>>>,
    /// Wrapped data keys of access tokens, outside sled so a purge can
    /// overwrite them in place (see `datakeys.rs`).
    data_keys: Mutex<datakeys::DataKeys>,
    master: MasterKey,
    ring: RwLock<KeyRing>,
    head: watch::Sender<u64>,
    /// How far the log found at open has had its hashes and links checked:
    /// its head once the replay, and the background check of the part a
    /// state snapshot stood in for, are done.
    verified: std::sync::atomic::AtomicU64,
    dir: PathBuf,
    clock: Clock,
    /// Asked by the writer before each group: see [`Store::set_append_gate`].
    append_gate: RwLock<Option<AppendGate>>,
}

/// Creates `dir` 0700 (with its parents when `recursive`, and nothing when it
/// exists). sled's files, made with the process's umask, hold the log: no
/// plaintext secret, but names and account e-mails nobody else needs.
pub(crate) fn create_private_dir(dir: &Path, recursive: bool) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(recursive);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether appends may go on now; `Err` is the refusal every command of the
/// group gets instead (nothing appended). See [`Store::set_append_gate`].
pub type AppendGate = Arc<dyn Fn() -> Result<(), Rejection> + Send + Sync>;

/// An open ledger: the writer thread plus read access to the log.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    opened: Opened,
    queue: std::sync::mpsc::SyncSender<writer::Msg>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Store {
    /// Opens (or creates) the ledger in `dir`, replaying and checking the log.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        create_private_dir(dir, true)?;
        let db = open_db(dir)?;
        let log = db.open_tree("log")?;
        refuse_new_keys_for_old_data(dir, &config, &log)?;
        let master = match config.master_key.clone() {
            Some(k) => k,
            None => match std::env::var(MASTER_KEY_ENV) {
                Ok(hex) => MasterKey::from_hex(&hex)?,
                Err(_) => MasterKey::load_or_create(dir)?,
            },
        };
        let ring = KeyRing::load_or_create(dir, config.signing_alg, (config.clock)())?;
        key_history::reconcile(&db, &ring)?;
        let mut recovered = recover(dir, &master, &log)?;
        let mut data_keys = datakeys::DataKeys::open(&dir.join("datakeys.bin"))?;
        // Finish what a crash interrupted: keys of tokens that never committed
        // or were purged are zeroed now.
        let stale: Vec<Uuid> = data_keys
            .tokens()
            .filter(|id| recovered.state.token(id).is_none_or(|t| t.purged))
            .copied()
            .collect();
        data_keys.shred(&stale)?;
        check_master_opens(dir, &master, &data_keys)?;
        let opened = Opened {
            snapshot: recovered.snapshot,
            replayed: recovered.head.position - recovered.snapshot,
        };
        let (head_tx, _) = watch::channel(recovered.head.position);
        let shared = Arc::new(Shared {
            db,
            log,
            streams: RwLock::new(std::mem::take(&mut recovered.streams)),
            data_keys: Mutex::new(data_keys),
            master,
            ring: RwLock::new(ring),
            head: head_tx,
            // Without a snapshot the replay checked the whole log; with one,
            // the writer checks the part before it in the background.
            verified: std::sync::atomic::AtomicU64::new(if recovered.snapshot == 0 {
                recovered.head.position
            } else {
                0
            }),
            dir: dir.to_path_buf(),
            clock: config.clock.clone(),
            append_gate: RwLock::new(None),
        });
        // The writer's clock starts at the head's time, not the wall clock's:
        // times along the log never run backwards, even across a restart
        // with the clock set back, since every "as of a time" answer stops
        // at the first event after that time.
        let head_time = match recovered.head.position {
            0 => None,
            position => shared
                .log
                .get(keys::event(position))?
                .map(|value| StoredEvent::from_record(position, &value)?.envelope())
                .transpose()?
                .map(|env| env.occurred_at),
        };
        let (queue, rx) = std::sync::mpsc::sync_channel(config.queue_max);
        let w = writer::Writer::new(shared.clone(), recovered, head_time, config);
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || w.run(rx))?;
        Ok(Store {
            shared,
            opened,
            queue,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Makes the writer ask `gate` right before it decides each group of
    /// commands, and refuse the whole group with its answer when it says no
    /// (`None` removes it). The NATS server sets its writer lease here, so
    /// that a command checked while the lease held, then queued past its
    /// expiry (a long queue, a paused process), is not appended by an
    /// instance that may no longer be the writer.
    pub fn set_append_gate(&self, gate: Option<AppendGate>) {
        *self.shared.append_gate.write().expect("gate lock poisoned") = gate;
    }

    /// How open rebuilt the state: from which snapshot, replaying how much.
    pub fn opened(&self) -> Opened {
        self.opened
    }

    /// How far the log found at open has had every hash and link checked:
    /// its head at open, once done. Opened from a state snapshot, the events
    /// before it are checked in the background after open; a problem there
    /// stops the writer (every later command is refused with the reason)
    /// and deletes the snapshot, so the next open replays and names it.
    pub fn verified_position(&self) -> u64 {
        self.shared
            .verified
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The sled database, for the projector's own trees.
    pub fn db(&self) -> &sled::Db {
        &self.shared.db
    }

    /// Executes a command and waits until its events are durable.
    pub async fn execute(&self, cmd: ParsedCommand) -> Result<Committed, Rejection> {
        let rx = self.submit(cmd)?;
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable("writer stopped".into()).to_rejection())
        })
    }

    /// [`Store::execute`] for synchronous callers (never from an async task).
    pub fn execute_blocking(&self, cmd: ParsedCommand) -> Result<Committed, Rejection> {
        let rx = self.submit(cmd)?;
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(StoreError::Unavailable("writer stopped".into()).to_rejection())
        })
    }

    fn submit(
        &self,
        cmd: ParsedCommand,
    ) -> Result<oneshot::Receiver<Result<Committed, Rejection>>, Rejection> {
        let new_token_id = Uuid::new_v4();
        let (cmd, wrapped_key, keyless) = self.seal(cmd, new_token_id)?;
        let (tx, rx) = oneshot::channel();
        let job = writer::Msg::Command(Box::new(writer::Job {
            cmd,
            wrapped_key,
            keyless,
            new_token_id,
            jti: Uuid::now_v7().to_string(),
            reply: tx,
        }));
        self.queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("writer stopped".into()).to_rejection())?;
        Ok(rx)
    }

    /// Seals provider secrets with the token's data key before the writer sees them.
    ///
    /// Sealing here, on the caller's thread, keeps AEAD work off the single
    /// writer. A register gets a fresh data key, which the writer stores in the
    /// same batch as the event; a refresh uses the stored key. When there is no
    /// key (unknown or purged token), a throwaway key seals the value and the
    /// command is marked `keyless`: the writer refuses it whatever the rules
    /// say, so nothing sealed with that key is kept. (The token may have
    /// been registered meanwhile, by a command queued before this one.)
    #[allow(clippy::type_complexity)]
    fn seal(
        &self,
        cmd: ParsedCommand,
        new_token_id: Uuid,
    ) -> Result<(SealedCommand, Option<Vec<u8>>, bool), Rejection> {
        let (token_id, key, wrapped, keyless) = match &cmd.command {
            Command::RegisterAccessToken { id, .. } => {
                let token_id = id.unwrap_or(new_token_id);
                let key = DataKey::generate();
                let wrapped = self.shared.master.wrap(&key, &token_id);
                (token_id, key, Some(wrapped), false)
            }
            Command::RefreshAccessToken { token_id, .. } => {
                let stored = self.data_key(token_id).map_err(|e| e.to_rejection())?;
                let keyless = stored.is_none();
                (
                    *token_id,
                    stored.unwrap_or_else(DataKey::generate),
                    None,
                    keyless,
                )
            }
            _ => {
                let sealed = cmd.try_map_secrets::<SealedSecret, Rejection>(|_, _| {
                    unreachable!("no secrets")
                })?;
                return Ok((sealed, None, false));
            }
        };
        let key_id = token_id.to_string();
        let sealed = cmd.try_map_secrets::<SealedSecret, Rejection>(|field, secret| {
            Ok(ledger_crypto::seal(
                &self.shared.master,
                &key,
                &key_id,
                &secret_aad(&token_id, field),
                &secret,
            ))
        })?;
        Ok((sealed, wrapped, keyless))
    }

    /// A token's data key, if it has one (access tokens until purged).
    pub fn data_key(&self, token_id: &Uuid) -> Result<Option<DataKey>, StoreError> {
        let wrapped = self
            .shared
            .data_keys
            .lock()
            .expect("data keys lock poisoned")
            .get(token_id)?;
        match wrapped {
            Some(wrapped) => Ok(Some(self.shared.master.unwrap(token_id, &wrapped)?)),
            None => Ok(None),
        }
    }

    /// Decrypts a sealed secret of a token; fails once the token is purged.
    pub fn open_secret(
        &self,
        token_id: &Uuid,
        field: &str,
        sealed: &SealedSecret,
    ) -> Result<Secret, StoreError> {
        let key = self.data_key(token_id)?.ok_or_else(|| {
            StoreError::Crypto(ledger_crypto::CryptoError::MalformedSealed(
                "no data key: the token was purged (crypto-shredded) or never had secrets",
            ))
        })?;
        Ok(ledger_crypto::open(
            &key,
            &secret_aad(token_id, field),
            sealed,
        )?)
    }

    /// A token's current view with its secrets in plaintext, for a caller's
    /// explicit request: a client token's `tokenStr`, an access token's
    /// `accessToken` and `refreshToken`. Which tokens reveal is
    /// [`ledger_core::decide::may_reveal`]'s rule; `expired` is the caller's
    /// to set, who knows the time.
    ///
    /// The view and the secrets come from one fold of the token's durable
    /// events, so a concurrent refresh cannot pair one version's view with
    /// another's secret.
    pub fn reveal(&self, workspace_id: &str, token_id: &Uuid) -> Result<TokenView, Rejection> {
        let durable = self.head_position();
        let events = self
            .token_events(token_id, None)
            .map_err(|e| e.to_rejection())?;
        let state = ledger_core::state::fold_token(events.iter().filter(|e| e.position <= durable));
        let token = ledger_core::decide::may_reveal(state.as_ref(), workspace_id)?;
        let mut view = TokenView::of(token).expect("a token that may reveal is not purged");
        let open = |field: &str, sealed: &SealedSecret| {
            self.open_secret(token_id, field, sealed)
                .map(|s| s.expose().to_owned())
                .map_err(|e| e.to_rejection())
        };
        match &token.body {
            TokenBody::Client { .. } => {
                view.token_str = self.token_str(&view).map_err(|e| e.to_rejection())?;
            }
            TokenBody::Access {
                access_token,
                refresh_token,
                ..
            } => {
                view.access_token = Some(open("accessToken", access_token)?);
                view.refresh_token = refresh_token
                    .as_ref()
                    .map(|sealed| open("refreshToken", sealed))
                    .transpose()?;
            }
        }
        Ok(view)
    }

    /// Re-mints a client token's string from the claims recorded in its
    /// view; `None` without claims, and once the token is purged.
    ///
    /// The string is deterministic, so it could be re-minted from an old
    /// view forever: a purge must end that too, as it ends the sealed
    /// secrets of an access token (crypto-shredding).
    pub fn token_str(&self, view: &TokenView) -> Result<Option<String>, StoreError> {
        let Some(jwt) = &view.jwt else {
            return Ok(None);
        };
        // A view of the latest version is of a live token (a purge leaves
        // none), which spares the issue and rotate replies a log read.
        let id = view.token_id();
        if self.token_version(&id) != view.version && self.purged(&id)? {
            return Ok(None);
        }
        let claims = JwtClaims {
            sub: view.token_id().to_string(),
            iat: jwt.iat,
            exp: jwt.exp,
            jti: jwt.jti.clone(),
            ws: view.workspace_id.clone(),
        };
        let ring = self.shared.ring.read().expect("key ring lock poisoned");
        Ok(Some(ring.mint_with(&jwt.kid, &claims)?))
    }

    /// The signing key ring.
    pub fn key_ring(&self) -> &RwLock<KeyRing> {
        &self.shared.ring
    }

    /// A receiver of the head position, updated after every durable commit.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// The last durable position.
    pub fn head_position(&self) -> u64 {
        *self.shared.head.borrow()
    }

    /// Stops the writer after the commands already queued, and flushes.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        // A stop job drains everything queued before it.
        if self.queue.send(writer::Msg::Stop(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(handle) = self.thread.lock().expect("lock").take() {
            let _ = handle.join();
        }
        self.shared.db.flush()?;
        Ok(())
    }
}

/// Replays the log after the state snapshot, or the whole log when there is
/// no usable snapshot.
fn recover(
    dir: &Path,
    master: &MasterKey,
    log: &sled::Tree,
) -> Result<writer::Recovered, StoreError> {
    let start = match snapshot::load(dir, master, log) {
        Ok(start) => start,
        Err(reason) => {
            tracing::warn!(%reason, "state snapshot ignored; replaying the whole log");
            None
        }
    };
    let Some(start) = start else {
        return writer::recover(log, None);
    };
    let position = start.state.position;
    match writer::recover(log, Some(start)) {
        Ok(recovered) => {
            tracing::info!(
                snapshot = position,
                replayed = recovered.head.position - position,
                "state recovered from the snapshot and the log after it"
            );
            Ok(recovered)
        }
        // The tail did not fit the snapshot: the log alone decides whether
        // it is sound.
        Err(e) => {
            tracing::warn!(error = %e, "state snapshot does not fit the log; replaying the whole log");
            writer::recover(log, None)
        }
    }
}

/// How long [`open_db`] keeps trying while the data dir's lock is held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where open takes the master key from when the config gives none (64
/// hex characters), before the data dir's file.
pub const MASTER_KEY_ENV: &str = "TOKENLEDGER_MASTER_KEY";

/// The key files [`Store::open`] would make anew in `dir` with `config`,
/// because they are not there: the master key (unless the config or
/// [`MASTER_KEY_ENV`] gives it) and the signing key ring. A data dir rebuilt
/// from the stream needs them from a backup of the lost one.
pub fn absent_key_files(dir: &Path, config: &StoreConfig) -> Vec<&'static str> {
    let master_given = config.master_key.is_some() || std::env::var_os(MASTER_KEY_ENV).is_some();
    let mut absent = Vec::new();
    if !master_given && !dir.join(ledger_crypto::MASTER_KEY_FILE).exists() {
        absent.push(ledger_crypto::MASTER_KEY_FILE);
    }
    if !dir.join(ledger_crypto::jwt::KEY_RING_FILE).exists() {
        absent.push(ledger_crypto::jwt::KEY_RING_FILE);
    }
    absent
}

/// A key file made anew for a data dir that already holds a ledger would
/// not be the one its data was made with: a new master key cannot open the
/// provider secrets sealed before (and they would be sealed under two keys
/// from then on), a new signing key ring makes every string issued before
/// inactive. So open makes keys only for a new ledger, and otherwise says
/// which file (or `TOKENLEDGER_MASTER_KEY`) to bring back.
fn refuse_new_keys_for_old_data(
    dir: &Path,
    config: &StoreConfig,
    log: &sled::Tree,
) -> Result<(), StoreError> {
    let sealed = std::fs::metadata(dir.join("datakeys.bin")).is_ok_and(|m| m.len() > 0);
    if config.new_keys_for_existing_data || (log.first()?.is_none() && !sealed) {
        return Ok(());
    }
    let absent = absent_key_files(dir, config);
    if absent.is_empty() {
        return Ok(());
    }
    Err(StoreError::Keys {
        dir: dir.display().to_string(),
        reason: format!(
            "it holds a ledger but not {}: restore {} from a backup of this data dir{}; new \
             keys would not open what the old ones made",
            absent.join(" or "),
            if absent.len() > 1 { "them" } else { "it" },
            if absent.contains(&ledger_crypto::MASTER_KEY_FILE) {
                format!(" (or give the master key in {MASTER_KEY_ENV})")
            } else {
                String::new()
            }
        ),
    })
}

/// The master key must open the data keys it wrapped: one that does not
/// (`TOKENLEDGER_MASTER_KEY` set to another key than `master.key`, say)
/// would make every sealed secret unreadable, and seal new ones under a
/// second key. The oldest and the newest live key tell, the same ones at
/// every open (a wrong key fails both; keys made under two master keys, as
/// older builds could, fail one).
fn check_master_opens(
    dir: &Path,
    master: &MasterKey,
    data_keys: &datakeys::DataKeys,
) -> Result<(), StoreError> {
    for token in data_keys.first_and_last() {
        let Some(wrapped) = data_keys.get(&token)? else {
            continue;
        };
        master
            .unwrap(&token, &wrapped)
            .map_err(|_| StoreError::Keys {
                dir: dir.display().to_string(),
                reason: format!(
                    "the master key does not open the data key of token {token} in datakeys.bin: \
                 it is not the key that made it; check {MASTER_KEY_ENV} and master.key"
                ),
            })?;
    }
    Ok(())
}

/// The sled database's directory in a data dir.
fn db_path(dir: &Path) -> std::path::PathBuf {
    dir.join("ledger.sled")
}

/// Whether `dir` holds a ledger (its sled database), without opening it.
pub fn holds_ledger(dir: &Path) -> bool {
    db_path(dir).is_dir()
}

/// Opens the sled database of a data dir (`DIR/ledger.sled`), as every tool
/// that reads the log must: `locked` when another process holds it.
///
/// sled releases its file lock when the last reference to the database goes,
/// and its own I/O threads can hold one for a moment after the handle is
/// dropped, so an in-process reopen right after a close would otherwise fail
/// now and then. A lock still held after [`LOCK_WAIT`] is another owner.
pub fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        let opened = sled::Config::new()
            .path(db_path(dir))
            .cache_capacity(256 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked(dir.display().to_string()));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(other) => return Err(StoreError::Sled(other)),
        }
    }
}

/// Associated data binding a ciphertext to its token and field, so sealed
/// values cannot be swapped between tokens or between access and refresh.
fn secret_aad(token_id: &Uuid, field: &str) -> Vec<u8> {
    let mut aad = token_id.as_bytes().to_vec();
    aad.extend_from_slice(field.as_bytes());
    aad
}
