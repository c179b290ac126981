//! `audit`: verify, checkpoint, prove, replay, history and export the log,
//! offline. Everything lives in `ledger-audit`; this module parses flags,
//! prints, and maps outcomes to exit codes.
//!
//! Read-only subcommands open the data dir's sled database themselves (not
//! through `Store::open`, which refuses a log that does not verify): they
//! take the data dir's lock like any command, so stop a server first. The
//! exceptions are `audit verify`, `audit replay` and `audit history`: with
//! `--file FILE` they read an export, and with `--nats URL` (or
//! TOKENLEDGER_NATS, and no `--file`) the JetStream stream `TOKENS` of a
//! running (or stopped) server; neither opens the data dir. `audit export`
//! reads that stream too with `--nats URL` (or TOKENLEDGER_NATS), into the
//! same file format.

use crate::app::Ctx;
use crate::failure::{
    Failure, EXIT_FINDING, EXIT_INVALID, EXIT_LOCKED, EXIT_RULE, EXIT_UNAVAILABLE,
};
use crate::output::{agent, print_json, print_text, table};
use clap::{ArgGroup, Args, Subcommand};
use ledger_audit::checkpoints::{read_checkpoint, CheckpointStore};
use ledger_audit::diff::show;
use ledger_audit::export::{self, ExportRequest, ExportSource, GivenCheckpoint};
use ledger_audit::merkle::{
    check_proof_tree_size, parse_hash, verify_consistency, verify_inclusion, ConsistencyProofJson,
    InclusionProofJson, ProofError, ProofTree,
};
use ledger_audit::replay::{diff_snapshots, Input, Point, Snapshot, Source, TokenChange};
use ledger_audit::verify::{ExpectedRoot, Progress, Report, VerifyOptions};
use ledger_audit::{
    AuditError, CheckpointKey, Finding, LogReader, Plan, SignedCheckpoint, VerifierKey,
};
use ledger_core::{validate, Envelope, Timestamp};
use ledger_store::Store;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AUDIT_HELP: &str = "\
Exit codes of audit: 0 verified; 5 a finding (the first bad position and what
is wrong are printed, code = the finding kind) or a proof that does not hold;
2 bad input; 3 storage errors; 4 the data dir is locked (stop the server).

Checkpoints are signed with the Ed25519 key DATA_DIR/checkpoint-key.json
(mode 0600) and stored in DATA_DIR/checkpoints/<size>.note; `audit key`
prints the verifier key to hand to auditors. `tokenledger serve` makes them
too (every N events or T seconds, and at shutdown) and publishes each note on
the NATS subject tokens.checkpoint.

`audit verify --nats URL` verifies the JetStream stream TOKENS itself, without
the data dir (stream sequence = position is checked too); `--from N` starts at
sequence N, `--checkpoint latest` asks the server for its newest checkpoint.

`audit replay` and `audit history` read the data dir, an export (`--file
FILE`), or the stream of a running server (`--nats URL` or TOKENLEDGER_NATS;
an explicit --file wins), verifying every event on the way: same answer from
each. Replay reads the stream only up to its last point. From an export they
answer only what it holds in full (see their --file) and refuse the rest
(exit 2).

`audit export --nats URL` (or TOKENLEDGER_NATS) takes the export from the
stream of a running server, up to its last sequence, without stopping it:
the same file as from the data dir, with the server's newest checkpoint
(tokens.checkpoint.latest) when it falls in the range, its signature checked
with --key, else the data dir's key if there is one here.";

/// `audit`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the log (or an export): hashes, links, positions, versions,
    /// schemas, domain rules and signed checkpoints; names the first bad position.
    Verify(VerifyArgs),
    /// Sign a checkpoint of the log now, store it, and print it.
    Checkpoint,
    /// Print the checkpoint verifier key (creating the key on first use).
    Key,
    /// Print the inclusion proof of one event in a checkpointed tree.
    Prove(ProveArgs),
    /// Check an inclusion proof with nothing but the event, the proof and the checkpoint.
    VerifyProof(VerifyProofArgs),
    /// Prove (and check) that checkpoint NEW extends checkpoint OLD.
    Consistency(ConsistencyArgs),
    /// Token views at a point, or what changed between two (all workspaces, or
    /// --workspace W), from the data dir, an export (--file) or the stream (--nats).
    Replay(ReplayArgs),
    /// Every version of a token: actor, time, event and field-level changes,
    /// from the data dir, an export (--file) or the stream (--nats).
    History(AuditHistoryArgs),
    /// Write a range of the log (or of --workspace W) as JSON Lines that `audit verify --file` checks alone,
    /// from the data dir or the stream (--nats).
    Export(ExportArgs),
}

/// The `audit` group.
#[derive(Args, Debug)]
#[command(after_help = AUDIT_HELP)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// `audit verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Verify this export file instead of the data dir.
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
    /// Also check this checkpoint file, or `latest` (the newest stored one;
    /// every stored checkpoint is checked on a data dir anyway).
    #[arg(long, value_name = "FILE|latest")]
    pub checkpoint: Option<String>,
    /// Verifier key to check checkpoint signatures with [default: the data dir's key; with
    /// --file, only for checkpoints of the data dir's own log].
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub key: Option<String>,
    /// Worker threads for decoding, schema checks and hashing [default: 0, all on one thread].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// With --nats: the first stream sequence to verify [default: 1]; it
    /// links to the event before it, itself checked alone.
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// With --nats: how long to wait for the next message (or for the
    /// events a checkpoint vouches for that the stream has not got yet),
    /// and for the server's answers, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = NATS_WAIT.as_secs())]
    pub wait: u64,
}

/// `audit prove`.
#[derive(Args, Debug)]
pub struct ProveArgs {
    /// The event's id.
    #[arg(value_name = "EVENT_ID")]
    pub event_id: String,
    /// The checkpoint to prove against: a file, or `latest` [default: latest].
    #[arg(long, value_name = "FILE|latest")]
    pub checkpoint: Option<String>,
}

/// `audit verify-proof`.
#[derive(Args, Debug)]
pub struct VerifyProofArgs {
    /// The event, in its published form (from `history --json`, an export line, the stream).
    #[arg(long, value_name = "FILE")]
    pub event: PathBuf,
    /// The proof printed by `audit prove`.
    #[arg(long, value_name = "FILE")]
    pub proof: PathBuf,
    /// The checkpoint (signed note).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Verifier key to check the checkpoint's signature with (the output of
    /// `audit key`) [default: the data dir's key, if any].
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub key: Option<String>,
    /// Check the proof without the checkpoint's signature: it then shows
    /// nothing about who signed, and the answer says so.
    #[arg(long, conflicts_with = "key")]
    pub unsigned: bool,
}

/// `audit consistency`.
#[derive(Args, Debug)]
pub struct ConsistencyArgs {
    /// The older checkpoint file.
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The newer checkpoint file.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// Check this proof (from an earlier run) instead of computing one from the data dir.
    #[arg(long, value_name = "FILE")]
    pub proof: Option<PathBuf>,
    /// Verifier key to check both signatures with [default: the data dir's key, if any].
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub key: Option<String>,
    /// Check without the checkpoints' signatures: the answer then shows
    /// nothing about who signed them, and says so.
    #[arg(long, conflicts_with = "key")]
    pub unsigned: bool,
}

/// `audit replay`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("point").required(true).args(["as_of", "position", "diff"])))]
pub struct ReplayArgs {
    /// The views as they were at this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// The views as they were after this position.
    #[arg(long, value_name = "N")]
    pub position: Option<u64>,
    /// What changed from point A to point B (each a position or an RFC 3339 time).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub diff: Option<Vec<String>>,
    /// Replay this export instead of the data dir (wins over --nats). It
    /// must start at position 1; a workspace's export shows that workspace
    /// only (--workspace W), at times only (--as-of, or --diff of two
    /// times), its `position` being the last of its own events replayed; an
    /// export that ends before the log's head shows positions up to its end
    /// only. Anything else would be incomplete and is refused (exit 2).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `audit history`.
#[derive(Args, Debug)]
pub struct AuditHistoryArgs {
    /// The token id.
    #[arg(value_name = "TOKEN")]
    pub token: String,
    /// Read this export instead of the data dir (wins over --nats). It must
    /// run from position 1 to the log's head when exported (`audit export`
    /// without --from or --to), else a token's versions may be missing and
    /// it is refused (exit 2); a workspace's export holds that workspace's
    /// tokens only.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `audit export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// First position.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub from: u64,
    /// Last position [default: the head].
    #[arg(long, value_name = "M")]
    pub to: Option<u64>,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// With --nats: the verifier key to check the server's checkpoint with
    /// [default: the data dir's key, if there is one here; else unchecked,
    /// with a warning].
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub key: Option<String>,
    /// With --nats: how long to wait for the next message and for the
    /// server's checkpoint, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = NATS_WAIT.as_secs())]
    pub wait: u64,
}

/// Runs an `audit` subcommand.
pub fn run(args: AuditArgs, ctx: &Ctx) -> Result<(), Failure> {
    // `verify`, `replay`, `history` and `export` read the stream; the others
    // read the data dir, and with `--nats` given they would quietly read (or
    // create) `./data` instead of the server's ledger.
    let reads_data_dir = match &args.command {
        AuditCommand::Verify(_)
        | AuditCommand::VerifyProof(_)
        | AuditCommand::Replay(_)
        | AuditCommand::History(_)
        | AuditCommand::Export(_) => None,
        AuditCommand::Consistency(a) if a.proof.is_some() => None,
        AuditCommand::Checkpoint => Some("checkpoint"),
        AuditCommand::Key => Some("key"),
        AuditCommand::Prove(_) => Some("prove"),
        AuditCommand::Consistency(_) => Some("consistency"),
    };
    // A ledger in the data dir (given with --data-dir, say, while
    // TOKENLEDGER_NATS is set) is what the caller means.
    let no_ledger = !ledger_store::holds_ledger(&ctx.data_dir);
    if let (Some(name), Some(_), true) = (reads_data_dir, &ctx.nats, no_ledger) {
        return Err(Failure::invalid(
            "nats",
            format!(
                "audit {name} reads a data dir, not a server, and {} holds no ledger: stop the \
                 server and give its --data-dir (over NATS, from --nats or TOKENLEDGER_NATS, \
                 only `audit verify`, `replay`, `history` and `export` read the stream; \
                 verify-proof and consistency --proof need neither)",
                ctx.data_dir.display()
            ),
        ));
    }
    match args.command {
        AuditCommand::Verify(a) => verify(a, ctx),
        AuditCommand::Checkpoint => checkpoint(ctx),
        AuditCommand::Key => key(ctx),
        AuditCommand::Prove(a) => prove(a, ctx),
        AuditCommand::VerifyProof(a) => verify_proof(a, ctx),
        AuditCommand::Consistency(a) => consistency(a, ctx),
        AuditCommand::Replay(a) => replay(a, ctx),
        AuditCommand::History(a) => history(a, ctx),
        AuditCommand::Export(a) => export_cmd(a, ctx),
    }
}

pub(crate) fn fail(e: AuditError) -> Failure {
    let exit = match &e {
        AuditError::Locked(_) => EXIT_LOCKED,
        AuditError::NoLedger(_) | AuditError::NotFound(_) => EXIT_RULE,
        AuditError::Note(_) | AuditError::Invalid(_) | AuditError::Incomplete(_) => EXIT_INVALID,
        AuditError::Proof(ProofError::Mismatch) => EXIT_FINDING,
        AuditError::Proof(_) => EXIT_INVALID,
        _ => EXIT_UNAVAILABLE,
    };
    let exit = match e.code() {
        "bad_signature" => EXIT_FINDING,
        _ => exit,
    };
    Failure {
        code: e.code(),
        message: e.to_string(),
        field: None,
        current_version: None,
        exit,
    }
}

pub(crate) fn finding_failure(f: &Finding) -> Failure {
    Failure {
        code: f.kind.as_str(),
        message: f.to_string(),
        field: None,
        current_version: None,
        exit: EXIT_FINDING,
    }
}

/// Prints progress on stderr once a run has lasted a second, then every second.
pub(crate) struct Ticker {
    started: Instant,
    last: Instant,
    what: &'static str,
}

impl Ticker {
    pub(crate) fn new(what: &'static str) -> Ticker {
        let now = Instant::now();
        Ticker {
            started: now,
            last: now,
            what,
        }
    }

    pub(crate) fn tick(&mut self, p: Progress) {
        let now = Instant::now();
        if now.duration_since(self.last) >= Duration::from_secs(1) {
            self.last = now;
            let secs = now.duration_since(self.started).as_secs_f64();
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}: {} events, position {} ({:.0} events/s)",
                self.what,
                p.events,
                p.position,
                p.events as f64 / secs.max(1e-9)
            );
        }
    }
}

fn options(threads: Option<usize>) -> VerifyOptions {
    let mut o = VerifyOptions::default();
    if let Some(t) = threads {
        o.threads = t;
    }
    o
}

fn parse_key(text: &str) -> Result<VerifierKey, Failure> {
    VerifierKey::parse(text).map_err(|e| Failure::invalid("key", e.to_string()))
}

/// The key to check signatures with: `--key`, else the data dir's, else none.
pub(crate) fn trusted_key(
    arg: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<Option<VerifierKey>, Failure> {
    if let Some(k) = arg {
        return parse_key(k).map(Some);
    }
    match data_dir {
        Some(d) => Ok(CheckpointKey::load(d)
            .map_err(fail)?
            .map(|k| k.verifier().clone())),
        None => Ok(None),
    }
}

pub(crate) fn check_signature(
    signed: &SignedCheckpoint,
    key: Option<&VerifierKey>,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    match key {
        Some(k) => signed.verify(k).map_err(|e| Failure {
            code: "bad_signature",
            message: format!("{label}: {e}"),
            field: None,
            current_version: None,
            exit: EXIT_FINDING,
        }),
        None => {
            warnings.push(format!(
                "{label}: signature NOT checked (no verifier key: pass --key)"
            ));
            Ok(())
        }
    }
}

/// The key a proof's checkpoints are checked with ([`trusted_key`]). A
/// proof's verdict stands on the signature: without a key it is refused,
/// unless the caller asked for the unsigned check (`--unsigned`: no key).
fn proof_key(
    arg: Option<&str>,
    data_dir: Option<&Path>,
    unsigned: bool,
) -> Result<Option<VerifierKey>, Failure> {
    if unsigned {
        return Ok(None);
    }
    trusted_key(arg, data_dir)?.map(Some).ok_or_else(|| {
        Failure::invalid(
            "key",
            "no verifier key: pass --key (the output of `tokenledger audit key`), or \
             --unsigned to check the proof alone (it then says nothing about who signed)",
        )
    })
}

pub(crate) fn warn(warnings: &[String]) {
    let mut err = std::io::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "warning: {w}");
    }
}

/// A checkpoint file the caller named: one that is not there is a usage
/// error (exit 2), not a storage failure.
fn checkpoint_file(path: &Path) -> Result<SignedCheckpoint, Failure> {
    readable_file(path, "checkpoint")?;
    read_checkpoint(path).map_err(fail_on("checkpoint"))
}

/// An input file that cannot be opened is the caller's to fix: refused on
/// `field`, not reported as the ledger's storage failing.
fn readable_file(path: &Path, field: &str) -> Result<(), Failure> {
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .and_then(|m| {
            m.is_file()
                .then_some(())
                .ok_or_else(|| std::io::Error::other("not a file"))
        })
        .map_err(|e| Failure::invalid(field, format!("cannot read {}: {e}", path.display())))
}

/// [`fail`], naming `field` when the input given there is what is wrong (a
/// malformed file, or a path that cannot be opened or written).
fn fail_on(field: &'static str) -> impl Fn(AuditError) -> Failure {
    move |e| {
        let path_refused = matches!(&e, AuditError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::IsADirectory
                | std::io::ErrorKind::NotADirectory));
        let mut f = fail(e);
        if path_refused {
            f.code = "invalid_input";
            f.exit = EXIT_INVALID;
        }
        if f.exit == EXIT_INVALID {
            f.field = Some(field.into());
        }
        f
    }
}

pub(crate) fn load_checkpoint_arg(
    arg: &str,
    data_dir: &Path,
) -> Result<(String, SignedCheckpoint), Failure> {
    if arg == "latest" {
        let (path, signed) = CheckpointStore::new(data_dir)
            .latest()
            .map_err(fail)?
            .ok_or_else(|| {
                Failure::not_found(format!(
                    "no stored checkpoint in {}: make one with `tokenledger audit checkpoint`",
                    data_dir.display()
                ))
            })?;
        return Ok((path.display().to_string(), signed));
    }
    let path = PathBuf::from(arg);
    let signed = checkpoint_file(&path)?;
    Ok((path.display().to_string(), signed))
}

fn summary_json(report: &Report) -> Value {
    serde_json::to_value(&report.summary).expect("summaries serialize")
}

fn summary_text(report: &Report, extra: &[(String, String)]) -> String {
    let s = &report.summary;
    let mut rows: Vec<(String, String)> = vec![
        ("events".into(), s.events.to_string()),
        ("tokens".into(), s.tokens.to_string()),
        (
            "positions".into(),
            match s.first_position {
                Some(f) => format!("{f}..={}", s.head_position),
                None => "-".into(),
            },
        ),
        ("head hash".into(), s.head_hash.clone()),
    ];
    if let Some(r) = &s.merkle_root {
        rows.push(("merkle root".into(), r.clone()));
    }
    for c in &s.checkpoints {
        rows.push((
            "checkpoint".into(),
            format!("size {} ({}): {}", c.size, c.label, c.outcome),
        ));
    }
    if let Some(r) = &s.time_reversals {
        rows.push((
            "warning".into(),
            format!(
                "{} events stamped earlier than the event before them, the first at position {}: \
                 answers as of a time may leave events out",
                r.count, r.first
            ),
        ));
    }
    rows.extend(extra.iter().cloned());
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn verify(args: VerifyArgs, ctx: &Ctx) -> Result<(), Failure> {
    let opts = options(args.threads);
    let mut ticker = Ticker::new("verify");
    let mut warnings = Vec::new();
    // An explicit --file wins over --nats (which may come from TOKENLEDGER_NATS).
    if let (None, Some(urls)) = (&args.file, &ctx.nats) {
        return verify_nats(&args, urls, ctx, &opts, &mut ticker);
    }
    if args.from.is_some() {
        return Err(Failure::invalid(
            "from",
            "--from applies to the stream (with --nats URL); an export states its own range",
        ));
    }
    match &args.file {
        Some(file) => {
            readable_file(file, "file")?;
            // --key, or the data dir's key, but only for checkpoints of its
            // own log (its name is their origin): an export from elsewhere,
            // checked in a directory that holds another ledger, is
            // unchecked, not a bad signature.
            let explicit = args.key.as_deref().map(parse_key).transpose()?;
            let dir_key = match &explicit {
                Some(_) => None,
                None => trusted_key(
                    None,
                    ctx.data_dir.is_dir().then_some(ctx.data_dir.as_path()),
                )?,
            };
            let key_for = |signed: &SignedCheckpoint| {
                explicit.clone().or_else(|| {
                    dir_key
                        .clone()
                        .filter(|k| k.name() == signed.checkpoint.origin)
                })
            };
            let mut given = Vec::new();
            if let Some(arg) = &args.checkpoint {
                if arg == "latest" {
                    return Err(Failure::invalid(
                        "checkpoint",
                        "with --file, give a checkpoint FILE (latest means the data dir's)",
                    ));
                }
                let (label, signed) = load_checkpoint_arg(arg, &ctx.data_dir)?;
                check_signature(&signed, key_for(&signed).as_ref(), &label, &mut warnings)?;
                given.push(GivenCheckpoint { signed, label });
            }
            let outcome = export::verify_export(file, &given, &opts, &mut |p| ticker.tick(p))
                .map_err(fail_on("file"))?;
            let key = outcome.embedded.as_ref().and_then(key_for);
            if let Some(c) = &outcome.embedded {
                check_signature(c, key.as_ref(), "the export's checkpoint", &mut warnings)?;
            }
            if outcome.header.workspace_id.is_some() && !outcome.manifest {
                warnings.push(format!(
                    "{}: no manifest (format {}): a line dropped from this workspace export cannot be detected",
                    file.display(),
                    outcome.header.format
                ));
            }
            warn(&warnings);
            let h = &outcome.header;
            let mut extra = vec![(
                "export".to_owned(),
                format!(
                    "positions {}..={}{}",
                    h.from,
                    h.to,
                    h.workspace_id
                        .as_ref()
                        .map(|w| format!(", workspace {w} only"))
                        .unwrap_or_default()
                ),
            )];
            if let Some(c) = &outcome.embedded {
                extra.push((
                    "checkpoint".into(),
                    format!(
                        "size {} ({}), {} inclusion proof(s) hold",
                        c.checkpoint.size,
                        if key.is_some() {
                            "signature verified"
                        } else {
                            "signature not checked"
                        },
                        outcome.proofs_verified
                    ),
                ));
            }
            finish_verify(
                &outcome.report,
                ctx,
                &extra,
                Some(json!({
                    "export": h,
                    "proofsVerified": outcome.proofs_verified,
                })),
            )
        }
        None => {
            let key = trusted_key(args.key.as_deref(), Some(&ctx.data_dir))?;
            let mut roots = Vec::new();
            let stored = CheckpointStore::new(&ctx.data_dir).list().map_err(fail)?;
            for (path, signed) in &stored {
                let label = path.display().to_string();
                check_signature(signed, key.as_ref(), &label, &mut warnings)?;
                roots.push(ExpectedRoot {
                    size: signed.checkpoint.size,
                    root: signed.checkpoint.root,
                    label,
                });
            }
            if let Some(arg) = &args.checkpoint {
                let (label, signed) = load_checkpoint_arg(arg, &ctx.data_dir)?;
                if arg != "latest" {
                    check_signature(&signed, key.as_ref(), &label, &mut warnings)?;
                    roots.push(ExpectedRoot {
                        size: signed.checkpoint.size,
                        root: signed.checkpoint.root,
                        label,
                    });
                }
            }
            warn(&warnings);
            let reader = LogReader::open(&ctx.data_dir).map_err(fail)?;
            let plan = Plan {
                roots,
                ..Plan::whole_log()
            };
            let report = ledger_audit::verify(
                reader.all_records(),
                plan,
                &opts,
                &mut ledger_audit::verify::NoObserver,
                &mut |p| ticker.tick(p),
            )
            .map_err(fail)?;
            finish_verify(&report, ctx, &[], None)
        }
    }
}

/// How long `audit verify --nats` waits for a message, or for
/// `tokens.checkpoint.latest`, by default (`--wait`).
const NATS_WAIT: Duration = Duration::from_secs(10);

/// `audit verify --nats URL`: the JetStream stream `TOKENS` itself, without
/// the data dir (see `ledger_audit::nats`). `--checkpoint latest` asks the
/// server (`tokens.checkpoint.latest`); a file is read as usual. The
/// checkpoint's signature is checked with `--key`, else the data dir's key
/// if there is one here, else not at all (with a warning).
fn verify_nats(
    args: &VerifyArgs,
    urls: &[String],
    ctx: &Ctx,
    opts: &VerifyOptions,
    ticker: &mut Ticker,
) -> Result<(), Failure> {
    use ledger_audit::nats::{self as source, StreamPlan, CHECKPOINT_LATEST_SUBJECT};
    let mut warnings = Vec::new();
    let key = trusted_key(args.key.as_deref(), Some(&ctx.data_dir))?;
    let shown = ledger_nats::access::shown(urls);
    let wait = Duration::from_secs(args.wait.max(1));
    let (runtime, client) = stream_connection(urls, &ctx.nats_access, wait)?;
    let mut roots = Vec::new();
    if let Some(arg) = &args.checkpoint {
        let (label, signed) = if arg == "latest" {
            let signed = runtime
                .block_on(source::latest_checkpoint(&client, wait))
                .map_err(fail)?
                .ok_or_else(|| {
                    Failure::not_found(format!("the server on {shown} has made no checkpoint yet"))
                })?;
            (CHECKPOINT_LATEST_SUBJECT.to_owned(), signed)
        } else {
            load_checkpoint_arg(arg, &ctx.data_dir)?
        };
        check_signature(&signed, key.as_ref(), &label, &mut warnings)?;
        roots.push(ExpectedRoot {
            size: signed.checkpoint.size,
            root: signed.checkpoint.root,
            label,
        });
    }
    warn(&warnings);
    let plan = StreamPlan {
        from: args.from.unwrap_or(1).max(1),
        roots,
        idle_timeout: wait,
    };
    let js = {
        // The context spawns its acker task on the current runtime.
        let _entered = runtime.enter();
        async_nats::jetstream::new(client)
    };
    let verified = source::verify_stream(
        runtime.handle(),
        &js,
        plan,
        opts,
        &mut ledger_audit::verify::NoObserver,
        &mut |p| ticker.tick(p),
    )
    .map_err(fail)?;
    let st = verified.state;
    let extra = vec![(
        "stream".to_owned(),
        format!(
            "{} on {shown}: {} message(s), sequences {}..={}",
            source::STREAM_NAME,
            st.messages,
            st.first_sequence,
            st.last_sequence
        ),
    )];
    finish_verify(
        &verified.report,
        ctx,
        &extra,
        Some(json!({
            "stream": {
                "name": source::STREAM_NAME,
                "urls": urls.iter().map(|u| ledger_nats::access::redact(u)).collect::<Vec<_>>(),
                "state": st,
            }
        })),
    )
}

/// A connection for reading the stream with ledger-audit: its consumer runs
/// on the runtime's one worker, the verifier on the calling thread.
pub(crate) fn stream_connection(
    urls: &[String],
    access: &ledger_nats::NatsAccess,
    wait: Duration,
) -> Result<(tokio::runtime::Runtime, async_nats::Client), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("tokio runtime: {e}")))?;
    let client = runtime.block_on(nats_connect(urls, access, wait))?;
    Ok((runtime, client))
}

/// Connects to NATS for `audit verify --nats`; unreachable is `unavailable`
/// (exit 3), refused credentials or TLS `unauthorized` (exit 1).
async fn nats_connect(
    urls: &[String],
    access: &ledger_nats::NatsAccess,
    wait: Duration,
) -> Result<async_nats::Client, Failure> {
    let options = async_nats::ConnectOptions::new()
        .name("tokenledger-audit")
        .connection_timeout(wait);
    crate::remote::open(urls, access, options, |e| {
        Failure::from(ledger_core::Rejection::new(
            ledger_core::ErrorCode::Unavailable,
            format!(
                "cannot connect to NATS on {} ({e})",
                ledger_nats::access::shown(urls)
            ),
        ))
    })
    .await
}

fn finish_verify(
    report: &Report,
    ctx: &Ctx,
    extra: &[(String, String)],
    extra_json: Option<Value>,
) -> Result<(), Failure> {
    if ctx.json {
        let mut v = json!({
            "ok": report.finding.is_none(),
            "summary": summary_json(report),
        });
        if let Some(f) = &report.finding {
            v["finding"] = serde_json::to_value(f).expect("findings serialize");
        }
        if let Some(Value::Object(m)) = extra_json {
            for (k, x) in m {
                v[k] = x;
            }
        }
        print_json(&v)?;
    } else {
        let head = match &report.finding {
            None => "verified: no finding".to_owned(),
            Some(f) => format!("NOT VERIFIED: {f}"),
        };
        print_text(&format!("{head}\n{}", summary_text(report, extra)))?;
    }
    match &report.finding {
        None => Ok(()),
        Some(f) => Err(finding_failure(f)),
    }
}

fn checkpoint(ctx: &Ctx) -> Result<(), Failure> {
    // A checkpoint of a ledger that is not there would create one.
    if !ledger_store::holds_ledger(&ctx.data_dir) {
        return Err(fail(AuditError::NoLedger(ctx.data_dir.clone())));
    }
    let store = Store::open(&ctx.data_dir, ctx.store_config())?;
    let made = ledger_audit::make_checkpoint(&store, ctx.now());
    let closed = store.shutdown();
    let signed = made.map_err(fail)?;
    closed?;
    let path = CheckpointStore::new(&ctx.data_dir).path(signed.checkpoint.size);
    if ctx.json {
        print_json(&json!({
            "path": path.display().to_string(),
            "size": signed.checkpoint.size,
            "root": signed.checkpoint.root_hex(),
            "note": signed.note,
        }))
    } else {
        print_text(&format!("{}\n(stored in {})", signed.note, path.display()))
    }
}

fn key(ctx: &Ctx) -> Result<(), Failure> {
    std::fs::create_dir_all(&ctx.data_dir)
        .map_err(|e| Failure::internal(format!("cannot create {}: {e}", ctx.data_dir.display())))?;
    let key = CheckpointKey::load_or_create(&ctx.data_dir).map_err(fail)?;
    if ctx.json {
        print_json(&json!({ "verifierKey": key.verifier().to_string(), "origin": key.origin() }))
    } else {
        print_text(&key.verifier().to_string())
    }
}

fn prove(args: ProveArgs, ctx: &Ctx) -> Result<(), Failure> {
    let event_id = validate::uuid("eventId", &args.event_id)?;
    let (label, signed) = load_checkpoint_arg(
        args.checkpoint.as_deref().unwrap_or("latest"),
        &ctx.data_dir,
    )?;
    let reader = LogReader::open(&ctx.data_dir).map_err(fail)?;
    let size = signed.checkpoint.size;
    // The event's position: its record holds `"eventId":"<id>"`.
    let needle = format!("\"eventId\":\"{event_id}\"");
    let mut position = None;
    for record in reader.records(1, u64::MAX) {
        let ledger_audit::Record::Stored { position: p, value } = record.map_err(fail)? else {
            unreachable!("the data dir yields stored records");
        };
        if value.len() > 32 && contains(&value[32..], needle.as_bytes()) {
            position = Some(p);
            break;
        }
    }
    let position =
        position.ok_or_else(|| Failure::not_found(format!("no event {event_id} in the log")))?;
    if position > size {
        return Err(Failure::not_found(format!(
            "event {event_id} is at position {position}, after the checkpoint's {size} events: make a newer checkpoint"
        )));
    }
    check_proof_tree_size(size).map_err(fail_on("checkpoint"))?;
    let tree = ProofTree::new(reader.hashes(1, size).map_err(fail)?);
    if tree.root() != signed.checkpoint.root {
        return Err(Failure {
            code: "checkpoint_mismatch",
            message: format!("the log's first {size} events do not have the root signed in {label}: run `tokenledger audit verify`"),
            field: None,
            current_version: None,
            exit: EXIT_FINDING,
        });
    }
    let proof = tree.prove_inclusion(position - 1);
    let leaf = reader.hashes(position, position).map_err(fail)?[0];
    let out = json!({
        "eventId": event_id,
        "position": position,
        "eventHash": hex::encode(leaf),
        "leafIndex": proof.leaf_index,
        "treeSize": proof.tree_size,
        "hashes": proof.hashes,
        "checkpoint": signed.note,
    });
    // Always JSON: the proof is meant to be saved and handed over.
    print_json(&out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A consistency proof as `audit consistency` prints it: the bare proof,
/// the `--json` answer around it, or the human answer (a status line, then
/// the proof).
fn read_consistency_proof(path: &Path) -> Result<ConsistencyProofJson, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid("proof", format!("cannot read {}: {e}", path.display())))?;
    let json = text.find('{').map_or(&text[..], |start| &text[start..]);
    let mut value: Value = serde_json::from_str(json)
        .map_err(|e| Failure::invalid("proof", format!("{} is not JSON: {e}", path.display())))?;
    if let Some(inner) = value.get("proof").cloned() {
        value = inner;
    }
    serde_json::from_value(value)
        .map_err(|e| Failure::invalid("proof", format!("not a consistency proof: {e}")))
}

fn read_json(path: &Path, what: &str) -> Result<Value, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::invalid(what, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::invalid(what, format!("{} is not JSON: {e}", path.display())))
}

fn verify_proof(args: VerifyProofArgs, ctx: &Ctx) -> Result<(), Failure> {
    let mut warnings = Vec::new();
    let event_bytes = std::fs::read(&args.event).map_err(|e| {
        Failure::invalid(
            "event",
            format!("cannot read {}: {e}", args.event.display()),
        )
    })?;
    let mut event_json: Value = serde_json::from_slice(&event_bytes).map_err(|e| {
        Failure::invalid(
            "event",
            format!("not JSON: {}", ledger_core::json::error_text(&e)),
        )
    })?;
    // Accept a bare envelope or one wrapped as `history --json` prints them.
    if let Some(inner) = event_json.get("event").cloned() {
        event_json = inner;
    }
    let env = Envelope::from_json(event_json.to_string().as_bytes())
        .map_err(|e| Failure::invalid("event", e.to_string()))?;
    let computed = ledger_core::event::hash_hex(&env.canonical_bytes());
    if !env.hash.is_empty() && env.hash != computed {
        return Err(Failure {
            code: "hash_mismatch",
            message: format!(
                "the event's hash {} is not the hash of its content ({computed})",
                env.hash
            ),
            field: None,
            current_version: None,
            exit: EXIT_FINDING,
        });
    }
    let leaf = parse_hash(&computed).map_err(Failure::internal)?;
    let proof_json = read_json(&args.proof, "proof")?;
    let proof: InclusionProofJson = serde_json::from_value(json!({
        "leafIndex": proof_json["leafIndex"],
        "treeSize": proof_json["treeSize"],
        "hashes": proof_json["hashes"],
    }))
    .map_err(|e| Failure::invalid("proof", format!("not an inclusion proof: {e}")))?;
    let signed = checkpoint_file(&args.checkpoint)?;
    // As `consistency`: --key, else the data dir's key when there is one.
    let key = proof_key(
        args.key.as_deref(),
        ctx.data_dir.is_dir().then_some(ctx.data_dir.as_path()),
        args.unsigned,
    )?;
    check_signature(
        &signed,
        key.as_ref(),
        &args.checkpoint.display().to_string(),
        &mut warnings,
    )?;
    if proof.tree_size != signed.checkpoint.size {
        return Err(Failure::invalid(
            "proof",
            format!(
                "the proof is for a tree of {} events; the checkpoint has {}",
                proof.tree_size, signed.checkpoint.size
            ),
        ));
    }
    if proof.leaf_index.checked_add(1) != Some(env.position) {
        // Not proven: a finding, as a proof that fails to verify is.
        return Err(Failure {
            code: "proof_mismatch",
            message: format!(
                "the proof is for leaf {} but the event is at position {}",
                proof.leaf_index, env.position
            ),
            field: Some("proof".into()),
            current_version: None,
            exit: EXIT_FINDING,
        });
    }
    verify_inclusion(&leaf, &proof, &signed.checkpoint.root)
        .map_err(|e| fail_on("proof")(e.into()))?;
    warn(&warnings);
    let verdict = format!(
        "verified: event {} (position {}) is leaf {} of the tree of {} events signed by {}{}",
        env.event_id,
        env.position,
        proof.leaf_index,
        proof.tree_size,
        signed.checkpoint.origin,
        if key.is_some() {
            ""
        } else {
            " (signature not checked)"
        }
    );
    if ctx.json {
        print_json(
            &json!({"ok": true, "position": env.position, "treeSize": proof.tree_size, "signatureChecked": key.is_some()}),
        )
    } else {
        print_text(&verdict)
    }
}

fn consistency(args: ConsistencyArgs, ctx: &Ctx) -> Result<(), Failure> {
    let mut warnings = Vec::new();
    let old = checkpoint_file(&args.old)?;
    let new = checkpoint_file(&args.new)?;
    // The data dir's key also checks a given proof's checkpoints, when there
    // is a data dir (a proof can be checked far from any).
    let key = proof_key(
        args.key.as_deref(),
        (args.proof.is_none() || ctx.data_dir.is_dir()).then_some(ctx.data_dir.as_path()),
        args.unsigned,
    )?;
    check_signature(
        &old,
        key.as_ref(),
        &args.old.display().to_string(),
        &mut warnings,
    )?;
    check_signature(
        &new,
        key.as_ref(),
        &args.new.display().to_string(),
        &mut warnings,
    )?;
    let (o, n) = (&old.checkpoint, &new.checkpoint);
    if o.origin != n.origin {
        return Err(Failure::invalid(
            "checkpoint",
            format!(
                "the checkpoints are of two logs: {} and {}",
                o.origin, n.origin
            ),
        ));
    }
    if o.size > n.size {
        return Err(Failure::invalid(
            "checkpoint",
            format!(
                "OLD must be a tree no larger than NEW (sizes {} and {})",
                o.size, n.size
            ),
        ));
    }
    let proof = match &args.proof {
        Some(path) => read_consistency_proof(path)?,
        None => {
            check_proof_tree_size(n.size).map_err(fail_on("checkpoint"))?;
            let reader = LogReader::open(&ctx.data_dir).map_err(fail)?;
            let tree = ProofTree::new(reader.hashes(1, n.size).map_err(fail)?);
            if tree.root() != n.root {
                return Err(Failure {
                    code: "checkpoint_mismatch",
                    message: format!("the log's first {} events do not have the root signed in NEW: run `tokenledger audit verify`", n.size),
                    field: None,
                    current_version: None,
                    exit: EXIT_FINDING,
                });
            }
            tree.prove_consistency(o.size)
        }
    };
    if proof.old_size != o.size || proof.new_size != n.size {
        return Err(Failure::invalid(
            "proof",
            "the proof is for other tree sizes",
        ));
    }
    let checked = verify_consistency(&proof, &o.root, &n.root);
    warn(&warnings);
    let ok = checked.is_ok();
    if ctx.json {
        print_json(&json!({"ok": ok, "proof": proof}))?;
    } else {
        print_text(&format!(
            "{}\n{}",
            if ok {
                format!(
                    "consistent: the tree of {} events extends the tree of {}",
                    n.size, o.size
                )
            } else {
                format!(
                    "NOT CONSISTENT: the tree of {} events does not extend the signed tree of {}",
                    n.size, o.size
                )
            },
            serde_json::to_string_pretty(&proof).expect("proofs serialize")
        ))?;
    }
    checked.map_err(|e| match e {
        ProofError::Mismatch => Failure {
            code: "inconsistent",
            message: format!("NEW does not extend OLD: {e}"),
            field: None,
            current_version: None,
            exit: EXIT_FINDING,
        },
        // A proof that is not one proves nothing either way.
        malformed => fail_on("proof")(malformed.into()),
    })
}

fn workspace(ctx: &Ctx) -> Result<Option<String>, Failure> {
    match &ctx.workspace {
        Some(_) => Ok(Some(ctx.workspace()?.to_owned())),
        None => Ok(None),
    }
}

fn point(field: &str, text: &str) -> Result<Point, Failure> {
    Point::parse(text).ok_or_else(|| {
        Failure::invalid(
            field,
            format!("{text:?} is neither a position nor an RFC 3339 time"),
        )
    })
}

fn replay(args: ReplayArgs, ctx: &Ctx) -> Result<(), Failure> {
    let ws = workspace(ctx)?;
    let points: Vec<Point> = match (&args.as_of, args.position, &args.diff) {
        (Some(t), _, _) => vec![Point::Time(crate::input::timestamp("asOf", t)?)],
        (_, Some(p), _) => vec![Point::Position(p)],
        (_, _, Some(ab)) => vec![point("diff", &ab[0])?, point("diff", &ab[1])?],
        _ => unreachable!("clap requires one"),
    };
    let (field, flag) = match (&args.as_of, &args.diff) {
        (Some(_), _) => ("asOf", "--as-of"),
        (_, Some(_)) => ("diff", "--diff"),
        _ => ("position", "--position"),
    };
    let snapshots = read_views(args.file.as_deref(), ctx, |source, _| {
        let mut ticker = Ticker::new("replay");
        ledger_audit::replay::replay_from(
            source,
            &points,
            ws.as_deref(),
            &VerifyOptions::default(),
            &mut |p| ticker.tick(p),
        )
        .map_err(|e| fail_asking(e, (field, flag)))?
        .map_err(|f| finding_failure(&f))
    })?;
    if snapshots.len() == 2 {
        let changes = diff_snapshots(&snapshots[0], &snapshots[1]);
        if ctx.json {
            return print_json(&json!({
                "from": {"point": snapshots[0].point, "position": snapshots[0].position},
                "to": {"point": snapshots[1].point, "position": snapshots[1].position},
                "changes": changes,
            }));
        }
        return print_text(&diff_text(&snapshots[0], &snapshots[1], &changes));
    }
    let s = &snapshots[0];
    if ctx.json {
        return print_json(&json!({
            "point": s.point,
            "position": s.position,
            "at": s.at,
            "tokens": s.tokens.values().collect::<Vec<_>>(),
        }));
    }
    let now = s.at.unwrap_or_else(|| ctx.now());
    let views: Vec<_> = s.tokens.values().cloned().collect();
    let mut text = format!(
        "{} token(s){} at {} (log replayed to position {})\n",
        views.len(),
        ws.as_ref()
            .map(|w| format!(" of workspace {w}"))
            .unwrap_or_default(),
        s.point,
        s.position
    );
    if views.is_empty() {
        text.push_str("no tokens");
    } else {
        text.push_str(&token_table(&views, now));
    }
    print_text(&text)
}

/// Runs `read` on the source `audit replay` and `audit history` read, as
/// `audit verify` picks it: `--file FILE`, else the stream (`--nats URL` or
/// TOKENLEDGER_NATS), else the data dir. `read` also gets the source's
/// name for messages.
fn read_views<T>(
    file: Option<&Path>,
    ctx: &Ctx,
    read: impl FnOnce(&Source<'_>, &str) -> Result<T, Failure>,
) -> Result<T, Failure> {
    match (file, &ctx.nats) {
        (Some(file), _) => {
            readable_file(file, "file")?;
            read(&Source::Export(file), &file.display().to_string())
        }
        (None, Some(urls)) => {
            let (runtime, client) = stream_connection(urls, &ctx.nats_access, NATS_WAIT)?;
            let js = {
                // The context spawns its acker task on the current runtime.
                let _entered = runtime.enter();
                async_nats::jetstream::new(client)
            };
            let source = Source::Stream {
                runtime: runtime.handle(),
                js: &js,
                idle_timeout: NATS_WAIT,
            };
            let label = format!(
                "stream {} on {}",
                ledger_audit::nats::STREAM_NAME,
                ledger_nats::access::shown(urls)
            );
            read(&source, &label)
        }
        (None, None) => {
            let reader = LogReader::open(&ctx.data_dir).map_err(fail)?;
            read(&Source::DataDir(&reader), "the log")
        }
    }
}

/// [`fail`], with a question the source cannot answer in full
/// ([`AuditError::Incomplete`]) as a usage error on the flag to change
/// (`point`: the field and flag the points came from).
fn fail_asking(e: AuditError, point: (&'static str, &'static str)) -> Failure {
    let AuditError::Incomplete(why) = e else {
        return fail(e);
    };
    let (field, flag) = match why.input {
        Input::Source => ("file", "--file"),
        Input::Workspace => ("workspace", "--workspace"),
        Input::Point(_) => point,
    };
    Failure::invalid(field, format!("{flag}: {}", why.reason))
}

fn token_table(views: &[ledger_core::TokenView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.token_id().to_string(),
                v.workspace_id.clone(),
                v.kind.as_str().to_owned(),
                v.version.to_string(),
                crate::output::state(v, now).to_owned(),
                crate::output::label(v),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "WORKSPACE",
            "KIND",
            "VERSION",
            "STATE",
            "NAME/ACCOUNT",
        ],
        &rows,
    )
}

fn diff_text(a: &Snapshot, b: &Snapshot, changes: &[TokenChange]) -> String {
    let mut out = format!(
        "from {} (position {}) to {} (position {}): {} token(s) changed\n",
        a.point,
        a.position,
        b.point,
        b.position,
        changes.len()
    );
    for c in changes {
        match c {
            TokenChange::Added { token_id, token } => {
                out.push_str(&format!(
                    "+ {token_id} added ({}, {})\n",
                    token.kind.as_str(),
                    crate::output::label(token)
                ));
            }
            TokenChange::Removed { token_id, token } => {
                out.push_str(&format!(
                    "- {token_id} removed ({}, {})\n",
                    token.kind.as_str(),
                    crate::output::label(token)
                ));
            }
            TokenChange::Changed { token_id, changes } => {
                out.push_str(&format!("~ {token_id} changed\n"));
                for f in changes {
                    out.push_str(&format!(
                        "    {}: {} -> {}\n",
                        f.path,
                        show(f.from.as_ref()),
                        show(f.to.as_ref())
                    ));
                }
            }
        }
    }
    out
}

fn history(args: AuditHistoryArgs, ctx: &Ctx) -> Result<(), Failure> {
    let id = validate::uuid("tokenId", &args.token)?;
    let ws = workspace(ctx)?;
    let (history, label, held) = read_views(args.file.as_deref(), ctx, |source, label| {
        let extent = source.extent().map_err(fail)?;
        let mut ticker = Ticker::new("history");
        let history =
            ledger_audit::history::history_from(source, id, &VerifyOptions::default(), &mut |p| {
                ticker.tick(p)
            })
            .map_err(|e| fail_asking(e, ("file", "--file")))?
            .map_err(|f| finding_failure(&f))?;
        Ok((history, label.to_owned(), extent.workspace))
    })?;
    let belongs = history.workspace_id.is_some()
        && ws
            .as_ref()
            .is_none_or(|w| history.workspace_id.as_ref() == Some(w));
    if !belongs {
        return Err(Failure::not_found(format!(
            "no token {id} in {label}{}{}",
            ws.map(|w| format!(" of workspace {w}")).unwrap_or_default(),
            held.map(|w| format!(" (it holds workspace {w}'s events only)"))
                .unwrap_or_default()
        )));
    }
    if ctx.json {
        return print_json(&serde_json::to_value(&history).expect("histories serialize"));
    }
    let mut out = format!(
        "token {id} (workspace {}): {} version(s)\n",
        history.workspace_id.as_deref().unwrap_or("-"),
        history.entries.len()
    );
    for e in &history.entries {
        out.push_str(&format!(
            "v{} {} by {} at position {}: {}\n",
            e.version,
            e.occurred_at,
            agent(&e.actor),
            e.position,
            e.event_type
        ));
        for f in &e.changes {
            out.push_str(&format!(
                "    {}: {} -> {}\n",
                f.path,
                show(f.from.as_ref()),
                show(f.to.as_ref())
            ));
        }
    }
    print_text(&out)
}

fn export_cmd(args: ExportArgs, ctx: &Ctx) -> Result<(), Failure> {
    let ws = workspace(ctx)?;
    let mut ticker = Ticker::new("export");
    let request = ExportRequest {
        from: args.from,
        to: args.to,
        workspace: ws,
    };
    // As `audit verify` picks its source: the stream with --nats (or
    // TOKENLEDGER_NATS), else the data dir.
    let (outcome, no_checkpoint, stream) = match &ctx.nats {
        Some(urls) => export_nats(&args, urls, &request, ctx, &mut ticker)?,
        None => {
            if args.key.is_some() {
                return Err(Failure::invalid(
                    "key",
                    "--key checks the server's checkpoint of an export over NATS (--nats URL); \
                     a data dir's export embeds its own stored checkpoint",
                ));
            }
            let reader = LogReader::open(&ctx.data_dir).map_err(fail)?;
            let outcome = export::export(
                &ctx.data_dir,
                &reader,
                &request,
                &args.out,
                &VerifyOptions::default(),
                &mut |p| ticker.tick(p),
            )
            .map_err(fail_on("out"))?
            .map_err(|f| finding_failure(&f))?;
            let why = "no stored checkpoint inside the range: run `audit checkpoint` first to include one";
            (outcome, why.to_owned(), None)
        }
    };
    if ctx.json {
        let mut v = json!({
            "out": args.out.display().to_string(),
            "header": outcome.header,
            "events": outcome.events,
            "inclusionProofs": outcome.proofs,
        });
        if let Some(stream) = stream {
            v["stream"] = stream;
        }
        return print_json(&v);
    }
    let h = &outcome.header;
    print_text(&format!(
        "exported {} event(s) of positions {}..={}{} to {}{}",
        outcome.events,
        h.from,
        h.to,
        h.workspace_id
            .as_ref()
            .map(|w| format!(" (workspace {w})"))
            .unwrap_or_default(),
        args.out.display(),
        if h.checkpoint.is_some() {
            format!(
                ", with a signed checkpoint and {} inclusion proof(s)",
                outcome.proofs
            )
        } else {
            format!(" ({no_checkpoint})")
        }
    ))
}

/// `audit export --nats URL`: the stream `TOKENS` up to its last sequence,
/// with the server's newest checkpoint (`tokens.checkpoint.latest`) when it
/// falls in the range, its signature checked as `audit verify --nats
/// --checkpoint latest` checks it (`--key`, else the data dir's key if
/// there is one here, else not at all, with a warning). A server that does
/// not answer leaves the export without a checkpoint (a warning); a bad
/// signature is a finding, before anything is written.
///
/// Returns the outcome, why it has no checkpoint (for the text output),
/// and the stream for the JSON output.
fn export_nats(
    args: &ExportArgs,
    urls: &[String],
    request: &ExportRequest,
    ctx: &Ctx,
    ticker: &mut Ticker,
) -> Result<(export::ExportOutcome, String, Option<Value>), Failure> {
    use ledger_audit::nats::{self as source, CHECKPOINT_LATEST_SUBJECT};
    let mut warnings = Vec::new();
    let key = trusted_key(args.key.as_deref(), Some(&ctx.data_dir))?;
    let shown = ledger_nats::access::shown(urls);
    let wait = Duration::from_secs(args.wait.max(1));
    let (runtime, client) = stream_connection(urls, &ctx.nats_access, wait)?;
    let mut no_checkpoint = String::new();
    let latest = match runtime.block_on(source::latest_checkpoint(&client, wait)) {
        Ok(Some(signed)) => Some(signed),
        Ok(None) => {
            no_checkpoint = format!("the server on {shown} has made no checkpoint yet");
            None
        }
        // No server answers (it stopped, say): the stream alone.
        Err(AuditError::Source(e)) => {
            no_checkpoint = format!("no checkpoint: {e}");
            warnings.push(format!(
                "no checkpoint from the server on {shown} ({e}): the export carries none"
            ));
            None
        }
        Err(e) => return Err(fail(e)),
    };
    let mut unchecked = Vec::new();
    if let Some(signed) = &latest {
        check_signature(
            signed,
            key.as_ref(),
            CHECKPOINT_LATEST_SUBJECT,
            &mut unchecked,
        )?;
    }
    let js = {
        // The context spawns its acker task on the current runtime.
        let _entered = runtime.enter();
        async_nats::jetstream::new(client)
    };
    let outcome = export::export_from(
        ExportSource::Stream {
            runtime: runtime.handle(),
            js: &js,
            checkpoint: latest.as_ref(),
            idle_timeout: wait,
        },
        request,
        &args.out,
        &VerifyOptions::default(),
        &mut |p| ticker.tick(p),
    )
    .map_err(fail_on("out"))?
    .map_err(|f| finding_failure(&f))?;
    let h = &outcome.header;
    if let (Some(c), None) = (&latest, &h.checkpoint) {
        no_checkpoint = format!(
            "the server's newest checkpoint, of size {}, is not inside positions {}..={}",
            c.checkpoint.size, h.from, h.to
        );
    }
    if h.checkpoint.is_some() {
        warnings.extend(unchecked);
    }
    warn(&warnings);
    let stream = json!({
        "name": source::STREAM_NAME,
        "urls": urls.iter().map(|u| ledger_nats::access::redact(u)).collect::<Vec<_>>(),
        // null: no checkpoint in the export.
        "checkpointSignatureChecked": h.checkpoint.as_ref().map(|_| key.is_some()),
    });
    Ok((outcome, no_checkpoint, Some(stream)))
}
