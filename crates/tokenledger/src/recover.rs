//! `tokenledger recover`: rebuilds a lost data dir from the JetStream stream
//! `TOKENS`.
//!
//! The stream holds every event of the log at its own position, byte for
//! byte as chained (the publisher's guarantee), and with replicas it
//! outlives the one disk the sled log is on. Recover reads it with the
//! checks of `audit verify --nats` (hashes, links, positions, versions,
//! schemas, the domain rules, and a signed checkpoint when given), writes
//! every event that passed into a staging log ([`ledger_store::LogImport`]),
//! and moves that into the data dir only once the whole stream verified.
//! Then it opens the ledger once, as `serve` would, and reports what the
//! stream cannot bring back: the keys. The master key, the JWT signing keys
//! and the data keys of access tokens live only in the data dir (that is
//! what makes a purge a crypto-shred), so they come from a backup of it.

use crate::app::Ctx;
use crate::audit::{self, Ticker};
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use clap::Args;
use ledger_audit::nats::{self as source, StreamPlan};
use ledger_audit::verify::{ExpectedRoot, Observer, VerifiedEvent, VerifyOptions};
use ledger_core::state::{LedgerState, TokenBody};
use ledger_core::{ErrorCode, Rejection};
use ledger_store::{LogImport, Store, StoreConfig, StoreError};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// `recover` options.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Recover although the data dir lacks the lost one's master.key or
    /// jwt-keys.json: new keys are made, so sealed provider secrets cannot be
    /// opened and strings issued before no longer verify (the report counts them)
    #[arg(long)]
    pub new_keys: bool,
    /// A signed checkpoint of the lost ledger (a file, e.g. from its
    /// checkpoints/ backup): the stream must hold the same tree, so a
    /// stream rewritten with recomputed hashes is refused
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint's verifier key (`tokenledger audit key`); else the
    /// data dir's checkpoint-key.json, if it was copied there
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub key: Option<String>,
    /// How long to wait for a message of the stream, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub wait: u64,
}

/// Runs `recover` (needs `--nats`, and a `--data-dir` that holds no ledger).
pub fn run(args: RecoverArgs, ctx: &Ctx) -> Result<(), Failure> {
    let Some(urls) = &ctx.nats else {
        return Err(Failure::invalid(
            "nats",
            "recover reads the stream TOKENS: give --nats URL (or set TOKENLEDGER_NATS)",
        ));
    };
    let dir = &ctx.data_dir;
    // Also refused by `LogImport::create`; here, before anything is read.
    if ledger_store::holds_ledger(dir) {
        return Err(holds_a_ledger(&dir.display().to_string()));
    }
    let absent = ledger_store::absent_key_files(dir, &ctx.store_config());
    if !absent.is_empty() && !args.new_keys {
        return Err(Failure::invalid(
            "new-keys",
            format!(
                "{} has no {}: copy them there from a backup of the lost data dir first \
                 (with datakeys.bin, and checkpoint-key.json to keep signing checkpoints \
                 under the same key); without them sealed provider secrets cannot be opened \
                 and strings issued before no longer verify. Or give --new-keys to recover \
                 the history with new keys",
                dir.display(),
                absent.join(" and ")
            ),
        ));
    }
    let mut warnings = Vec::new();
    let mut roots = Vec::new();
    if let Some(file) = &args.checkpoint {
        let key = audit::trusted_key(args.key.as_deref(), Some(dir))?;
        let (label, signed) = audit::load_checkpoint_arg(&file.display().to_string(), dir)?;
        audit::check_signature(&signed, key.as_ref(), &label, &mut warnings)?;
        roots.push(ExpectedRoot {
            size: signed.checkpoint.size,
            root: signed.checkpoint.root,
            label,
        });
    }
    audit::warn(&warnings);

    let shown = ledger_nats::access::shown(urls);
    let wait = Duration::from_secs(args.wait.max(1));
    let (runtime, client) = audit::stream_connection(urls, &ctx.nats_access, wait)?;
    let js = {
        // The context spawns its acker task on the current runtime.
        let _entered = runtime.enter();
        async_nats::jetstream::new(client)
    };
    // A ledger still appending would leave the recovered log behind its
    // stream (and serve would refuse it); more likely the data dir is not
    // lost at all.
    match runtime.block_on(ledger_nats::lease::holder(&js)) {
        Ok(None) => {}
        Ok(Some(holder)) => {
            return Err(Failure::from(Rejection::new(
                ErrorCode::Conflict,
                format!(
                    "a ledger holds the writer lease of the stream on {shown} ({holder}): it \
                     is serving; stop it before recovering; nothing was recovered"
                ),
            )))
        }
        Err(e) => {
            return Err(unavailable(format!(
                "cannot read the writer lease on {shown}: {e}"
            )))
        }
    }
    let state = runtime
        .block_on(source::stream_state(&js))
        .map_err(audit::fail)?;
    if state.last_sequence == 0 {
        return Err(Failure::not_found(format!(
            "stream {} on {shown} holds no event: nothing to recover",
            source::STREAM_NAME
        )));
    }
    if state.first_sequence > 1 {
        return Err(Failure::from(Rejection::new(
            ErrorCode::Conflict,
            format!(
                "stream {} on {shown} no longer holds positions 1 to {} (a retention limit \
                 removed them): the log cannot be rebuilt from it; nothing was recovered",
                source::STREAM_NAME,
                state.first_sequence - 1
            ),
        )));
    }

    let import = LogImport::create(dir).map_err(store_failure)?;
    let mut recovery = Recovery {
        import: Some(import),
        error: None,
        live: Live::default(),
    };
    let mut ticker = Ticker::new("recover");
    let plan = StreamPlan {
        from: 1,
        roots,
        idle_timeout: wait,
    };
    let verified = source::verify_stream(
        runtime.handle(),
        &js,
        plan,
        &VerifyOptions::default(),
        &mut recovery,
        &mut |p| ticker.tick(p),
    )
    .map_err(audit::fail)?;
    if let Some(finding) = &verified.report.finding {
        let mut failure = audit::finding_failure(finding);
        failure.message = format!(
            "the stream does not verify: {}; nothing was recovered",
            failure.message
        );
        return Err(failure);
    }
    if let Some(e) = recovery.error.take() {
        return Err(Failure::internal(format!(
            "writing the recovered log: {e}; nothing was recovered"
        )));
    }
    let import = recovery.import.take().expect("kept until here");
    if import.head() != state.last_sequence {
        return Err(unavailable(format!(
            "the stream gave positions up to {} of {}; nothing was recovered",
            import.head(),
            state.last_sequence
        )));
    }
    let head = import.finish().map_err(store_failure)?;

    // Opened once, as serve would: keys loaded (or made), every event
    // replayed and checked again by the store.
    let store = Store::open(
        dir,
        StoreConfig {
            // Refused above unless --new-keys asked for them.
            new_keys_for_existing_data: args.new_keys,
            ..ctx.store_config()
        },
    )?;
    let lost = recovery.live.lost(&store);
    store.shutdown()?;
    let summary = &verified.report.summary;
    if !lost.missing_kids.is_empty() {
        eprintln!(
            "warning: {} live client token(s) were signed with key(s) not in jwt-keys.json \
             ({}): their strings no longer verify; rotate them",
            lost.unverifiable_clients,
            lost.missing_kids
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if lost.sealed_lost > 0 {
        eprintln!(
            "warning: {} access token(s) have no data key in datakeys.bin under this \
             master key: their provider secrets cannot be opened; refresh them from the \
             provider",
            lost.sealed_lost
        );
    }
    let checkpoints: Vec<_> = summary
        .checkpoints
        .iter()
        .map(|c| json!({"size": c.size, "label": c.label, "outcome": c.outcome}))
        .collect();
    if ctx.json {
        print_json(&json!({
            "recovered": {
                "events": head,
                "headHash": summary.head_hash,
                "tokens": summary.tokens,
                "merkleRoot": summary.merkle_root,
                "dataDir": dir.display().to_string(),
                "stream": source::STREAM_NAME,
            },
            "checkpoints": checkpoints,
            "newKeyFiles": absent,
            "missingSigningKeys": lost.missing_kids,
            "clientTokensUnverifiable": lost.unverifiable_clients,
            "accessTokensWithoutDataKey": lost.sealed_lost,
        }))
    } else {
        let mut text = format!(
            "recovered {head} event(s) of {} token(s) from stream {} on {shown} into {}\n\
             head hash {}",
            summary.tokens,
            source::STREAM_NAME,
            dir.display(),
            summary.head_hash
        );
        for c in &summary.checkpoints {
            text.push_str(&format!(
                "\ncheckpoint {} (size {}): {}",
                c.label, c.size, c.outcome
            ));
        }
        if !absent.is_empty() {
            text.push_str(&format!("\nnew key files made: {}", absent.join(", ")));
        }
        print_text(&text)
    }
}

fn unavailable(message: String) -> Failure {
    Failure::from(Rejection::new(ErrorCode::Unavailable, message))
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Exists(dir) => holds_a_ledger(&dir),
        other => Failure::from(other),
    }
}

fn holds_a_ledger(dir: &str) -> Failure {
    Failure::invalid(
        "data-dir",
        format!("{dir} already holds a ledger: recover rebuilds a lost one; give a new or empty --data-dir"),
    )
}

/// Writes every event that passed the verifier's checks; stops the pass at
/// the first one the log refuses.
struct Recovery {
    import: Option<LogImport>,
    error: Option<StoreError>,
    live: Live,
}

impl Observer for Recovery {
    fn after(&mut self, _state: &LedgerState, event: &VerifiedEvent) {
        if self.error.is_some() {
            return;
        }
        if let Some(import) = &mut self.import {
            let canonical = event.env.canonical_bytes();
            if let Err(e) = import.append(&event.env, &canonical) {
                self.error = Some(e);
            }
        }
    }

    fn done(&self) -> bool {
        self.error.is_some()
    }

    fn finish(&mut self, state: &LedgerState) {
        for token in state.tokens().filter(|t| !t.purged) {
            match &token.body {
                TokenBody::Client { jwt, .. } if token.revoked.is_none() => {
                    self.live.client_kids.push(jwt.kid.clone());
                }
                TokenBody::Access { .. } => self.live.access.push(token.id),
                TokenBody::Client { .. } => {}
            }
        }
    }
}

/// The tokens whose keys matter: the signing key of each live client
/// token, and the access tokens not purged (whose secrets are sealed).
#[derive(Default)]
struct Live {
    client_kids: Vec<String>,
    access: Vec<Uuid>,
}

/// What the recovered ledger cannot do for lack of a key.
struct Lost {
    missing_kids: BTreeSet<String>,
    unverifiable_clients: usize,
    sealed_lost: usize,
}

impl Live {
    fn lost(&self, store: &Store) -> Lost {
        let kids: BTreeSet<String> = store
            .key_ring()
            .read()
            .expect("key ring lock poisoned")
            .keys()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        let unverifiable: Vec<&String> = self
            .client_kids
            .iter()
            .filter(|kid| !kids.contains(*kid))
            .collect();
        Lost {
            missing_kids: unverifiable.iter().map(|k| (*k).clone()).collect(),
            unverifiable_clients: unverifiable.len(),
            // A slot that will not unwrap under this master key is as lost as none.
            sealed_lost: self
                .access
                .iter()
                .filter(|id| !matches!(store.data_key(id), Ok(Some(_))))
                .count(),
        }
    }
}
