//! What every subcommand shares: the global flags and an open ledger.
//!
//! [`Ledger::with`] opens the store and the projector, runs the work, and
//! always shuts the store down afterwards (flushing everything), whether the
//! work succeeded or was refused. Commands go through [`Ledger::execute`],
//! which catches the projector up before returning, so a following `get` or
//! `list` sees the change.

use crate::failure::Failure;
use crate::input;
use ledger_core::command::ParsedCommand;
use ledger_core::{validate, Timestamp};
use ledger_projector::Projector;
use ledger_store::{Committed, Store, StoreConfig};
use serde_json::Value;
use std::path::PathBuf;

/// The global flags, resolved.
pub struct Ctx {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Machine output.
    pub json: bool,
    /// `--workspace`, if given.
    pub workspace: Option<String>,
    /// Whether that came from `TOKENLEDGER_WORKSPACE` rather than the command line.
    pub workspace_from_env: bool,
    /// `--actor`, if given.
    pub actor: Option<String>,
    /// `--nats`: the server URLs; commands and queries then go over NATS.
    pub nats: Option<Vec<String>>,
    /// `--nats-creds`, `--nats-nkey`, `--nats-tls-*`: how to authenticate to NATS.
    pub nats_access: ledger_nats::NatsAccess,
    /// `--snapshot-min-events`.
    pub snapshot_min_events: u64,
}

impl Ctx {
    /// How every subcommand opens the store on the data dir.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            snapshot_min_events: Some(self.snapshot_min_events),
            ..StoreConfig::default()
        }
    }
}

impl Ctx {
    /// The workspace, required by every command and query; checked like the wire checks it.
    pub fn workspace(&self) -> Result<&str, Failure> {
        let ws = self.workspace.as_deref().ok_or_else(|| {
            Failure::invalid(
                "workspaceId",
                "give --workspace W (or set TOKENLEDGER_WORKSPACE)",
            )
        })?;
        validate::workspace_id("workspaceId", ws)?;
        Ok(ws)
    }

    /// The actor as the JSON agent a command body carries.
    pub fn actor_json(&self) -> Result<Value, Failure> {
        input::actor(self.actor.as_deref())
    }

    /// The current time, as the ledger records it.
    pub fn now(&self) -> Timestamp {
        Timestamp::new(chrono::Utc::now())
    }
}

/// An open data dir: the event log and its views.
pub struct Ledger {
    /// The event log.
    pub store: Store,
    /// The views, kept in the same sled database.
    pub projector: Projector,
}

impl Ledger {
    /// Opens the data dir, runs `work`, and shuts the store down whatever happened.
    pub fn with<T>(
        ctx: &Ctx,
        work: impl FnOnce(&mut Ledger) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let store = Store::open(&ctx.data_dir, ctx.store_config())?;
        let projector = match Projector::open(store.db()) {
            Ok(p) => p,
            Err(e) => {
                let _ = store.shutdown();
                return Err(e.into());
            }
        };
        let mut ledger = Ledger { store, projector };
        let result = work(&mut ledger);
        let closed = ledger.store.shutdown();
        match (result, closed) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e.into()),
            // The work's own failure says more than a failed flush after it.
            (Err(f), closed) => {
                if let Err(e) = closed {
                    tracing::error!(error = %e, "shutting the store down failed");
                }
                Err(f)
            }
        }
    }

    /// Catches the views up with the log.
    pub fn catch_up(&mut self) -> Result<(), Failure> {
        self.projector.catch_up(&self.store)?;
        Ok(())
    }

    /// Executes a command durably, then brings the views up to date.
    pub fn execute(&mut self, cmd: ParsedCommand) -> Result<Committed, Failure> {
        let name = cmd.command.name();
        let command_id = cmd.command_id;
        let committed = self.store.execute_blocking(cmd).inspect_err(|r| {
            tracing::info!(command = %name, %command_id, code = %r.code, "command refused");
        })?;
        tracing::info!(
            command = %name,
            %command_id,
            token_id = %committed.token_id,
            positions = ?committed.positions,
            replayed = committed.replayed,
            "command committed"
        );
        self.catch_up()?;
        Ok(committed)
    }
}
