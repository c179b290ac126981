//! `debug-load` (hidden): a load generator for crash tests.
//!
//! N writer threads issue client tokens with unique names straight through
//! the store. After each acknowledged (durable) command one JSON line
//! `{"commandId", "tokenId", "positions"}` goes to stdout and stdout is
//! flushed at once, so a test that kills the process knows exactly which
//! commands were acknowledged before the kill and can check none was lost.

use crate::app::Ctx;
use crate::failure::Failure;
use clap::Args;
use ledger_core::command::parse_value;
use ledger_core::CommandName;
use ledger_store::Store;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Workspace used when no `--workspace` is given.
pub const DEFAULT_WORKSPACE: &str = "debug-load";
/// Writer threads, at most.
pub const WRITERS_MAX: usize = 1024;

/// `debug-load`.
#[derive(Args, Debug)]
pub struct DebugLoadArgs {
    /// Threads issuing commands concurrently.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=WRITERS_MAX as u64))]
    pub writers: u64,
    /// Commands to get acknowledged before exiting; 0 runs until killed.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// Runs `debug-load`.
pub fn run(args: DebugLoadArgs, ctx: &Ctx) -> Result<(), Failure> {
    let workspace = match &ctx.workspace {
        Some(_) => ctx.workspace()?.to_owned(),
        None => DEFAULT_WORKSPACE.to_owned(),
    };
    let actor = ctx.actor_json()?;
    let store = Store::open(&ctx.data_dir, ctx.store_config())?;
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_failure: Arc<Mutex<Option<Failure>>> = Arc::new(Mutex::new(None));

    let threads: Vec<_> = (0..args.writers)
        .map(|_| {
            let store = store.clone();
            let claimed = claimed.clone();
            let stop = stop.clone();
            let first_failure = first_failure.clone();
            let workspace = workspace.clone();
            let actor = actor.clone();
            std::thread::spawn(move || {
                let result = writer(&store, &workspace, &actor, args.count, &claimed, &stop);
                if let Err(f) = result {
                    stop.store(true, Ordering::SeqCst);
                    first_failure.lock().expect("lock").get_or_insert(f);
                }
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            first_failure
                .lock()
                .expect("lock")
                .get_or_insert(Failure::internal("a writer thread panicked"));
        }
    }
    let closed = store.shutdown();
    if let Some(f) = first_failure.lock().expect("lock").take() {
        return Err(f);
    }
    closed?;
    Ok(())
}

fn writer(
    store: &Store,
    workspace: &str,
    actor: &Value,
    count: u64,
    claimed: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    while !stop.load(Ordering::SeqCst) {
        let slot = claimed.fetch_add(1, Ordering::SeqCst);
        if count > 0 && slot >= count {
            return Ok(());
        }
        let command_id = Uuid::new_v4();
        let body = json!({
            "commandId": command_id.to_string(),
            "workspaceId": workspace,
            "actor": actor,
            "name": format!("load-{command_id}"),
        });
        let parsed = parse_value(CommandName::IssueClientToken, body)?;
        let committed = store.execute_blocking(parsed)?;
        let line = json!({
            "commandId": command_id,
            "tokenId": committed.token_id,
            "positions": committed.positions,
        });
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // Nobody is reading any more (the test went away): stop quietly.
            stop.store(true, Ordering::SeqCst);
        }
    }
    Ok(())
}
