//! JSON Lines exports that verify on their own.
//!
//! An export file is, one JSON value per line:
//!
//! 1. a header: `{"format": "tokenledger-export/2", "from", "to",
//!    "workspaceId"?, "prevHash", "head": {"position", "hash"}, "checkpoint"?}`:
//!    the range, the hash of the event before `from` (so a range that does not
//!    start at 1 still starts from a known link), the log's head when it was
//!    exported, and the newest stored checkpoint inside the range, as its
//!    signed note;
//! 2. the envelopes of the range in position order, each byte for byte as
//!    chained (the published form: canonical JSON with `hash`), sealed
//!    secrets still sealed;
//! 3. with a checkpoint, inclusion proofs, one per line:
//!    `{"inclusionProof": {"leafIndex", "treeSize", "hashes"}}`;
//! 4. last, the manifest: `{"manifest": {"events": N, "positions": [[first,
//!    count], ...]}}`, the positions the file holds as runs (format
//!    `tokenledger-export/2`; a `/1` file has none and is read as before).
//!
//! Where an export is taken from ([`ExportSource`]): a data dir (its newest
//! stored checkpoint inside the range), or the JetStream stream `TOKENS` of
//! a running server, which needs no lock on the data dir (the head is the
//! stream's last sequence when the export starts; the checkpoint is the
//! server's newest, from `tokens.checkpoint.latest`, when its size is
//! inside the range; the stream must still hold sequence 1). Either way the
//! log is verified from position 1 as the range is written, against the
//! checkpoint's root, and the inclusion proofs are built from the event
//! hashes that pass saw: one format, and for one log one file, whatever
//! the source. A finding removes the partial file.
//!
//! What `verify_export` can prove:
//!
//! - **A whole range** (no `--workspace`): everything `audit verify` checks on
//!   a data dir: decode, schema, hashes, gap-free positions and the links
//!   from the header's `prevHash`, versions, and the domain rules (fully
//!   from position 1; from a later start, tokens created before it are
//!   followed by their versions only). Against the checkpoint: from position
//!   1 the Merkle root is recomputed; from a later start the export carries
//!   the inclusion proof of the checkpoint's last event, and since every hash
//!   commits to all events before it, that event's inclusion plus the
//!   verified links vouch for the whole range up to it.
//! - **One workspace** (`--workspace`): the events of other workspaces are
//!   absent, so links can only be checked between consecutive positions.
//!   What holds: each event's own hash; positions increase; every token's
//!   versions are gap-free (a token lives in one workspace, so its whole
//!   stream is there); the domain rules (uniqueness is per workspace, so from
//!   position 1 they are checked completely); and every event up to the
//!   checkpoint carries an inclusion proof against the signed root; and the
//!   file holds exactly the positions its manifest lists, so a line dropped
//!   (a whole token, or the end of a token's stream, which the links cannot
//!   show) is named by its position. The manifest is not signed: whoever
//!   edits the manifest along with the events is not caught, as a rewrite
//!   of a whole range is caught only by a checkpoint. Proving that the
//!   workspace has no other events needs the whole log.
//!
//! What a replay or a history can show from an export ([`crate::replay::gap`],
//! [`crate::history::gap`]), after verifying it whole as above: from position
//! 1, everything the file holds. A range from a later position lacks its
//! tokens' earlier events: refused. A workspace's export answers for that
//! workspace, at times only (a position it skips is another workspace's
//! event, whose time the views are judged at). An export that ends before
//! the log's head (its header's `head`) answers positions up to its end,
//! and no history (a token's later versions may be missing).

use crate::checkpoints::CheckpointStore;
use crate::merkle::{parse_hash, verify_inclusion, InclusionProofJson, ProofTree};
use crate::nats::{
    checked_hash, stream_records, stream_state, BlockingRecords, ReadRange,
    CHECKPOINT_LATEST_SUBJECT, STREAM_NAME,
};
use crate::note::SignedCheckpoint;
use crate::source::{find, LogReader, Record};
use crate::verify::{
    verify, DeclaredEnd, ExpectedRoot, KeepHashes, NoObserver, Observer, Plan, Progress, Report,
    VerifiedEvent, VerifyOptions,
};
use crate::{AuditError, Finding, FindingKind, Hash};
use ledger_core::LedgerState;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header's `format`.
pub const FORMAT: &str = "tokenledger-export/2";
/// The format before the manifest, still read.
pub const FORMAT_V1: &str = "tokenledger-export/1";
/// A line's length, at most (events are at most 64 KiB of command plus envelope).
pub const LINE_BYTES_MAX: usize = 1 << 20;
/// The prefix of a proof line.
const PROOF_PREFIX: &[u8] = b"{\"inclusionProof\":";
/// The prefix of the manifest line.
const MANIFEST_PREFIX: &[u8] = b"{\"manifest\":";

/// The log's head, as an export header states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHead {
    /// Position.
    pub position: u64,
    /// Hash, hex.
    pub hash: String,
}

/// The first line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportHeader {
    /// [`FORMAT`].
    pub format: String,
    /// The first position of the range.
    pub from: u64,
    /// The last position of the range.
    pub to: u64,
    /// Only this workspace's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// The hash of position `from - 1`.
    pub prev_hash: String,
    /// The log's head when exported.
    pub head: ExportHead,
    /// A signed checkpoint inside the range, as a signed note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProofLine {
    inclusion_proof: InclusionProofJson,
}

/// What an export holds: its last line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Event lines.
    pub events: u64,
    /// Their positions, as runs `[first, count]` in increasing order.
    pub positions: Vec<(u64, u64)>,
}

impl Manifest {
    fn push(&mut self, position: u64) {
        self.events += 1;
        match self.positions.last_mut() {
            Some((first, count)) if *first + *count == position => *count += 1,
            _ => self.positions.push((position, 1)),
        }
    }

    fn listed(&self) -> impl Iterator<Item = u64> + '_ {
        self.positions
            .iter()
            .flat_map(|&(first, count)| first..first.saturating_add(count))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLine {
    manifest: Manifest,
}

/// What to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRequest {
    /// First position (at least 1).
    pub from: u64,
    /// Last position (`None`: the head).
    pub to: Option<u64>,
    /// Only this workspace.
    pub workspace: Option<String>,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportOutcome {
    /// The header.
    pub header: ExportHeader,
    /// Events written.
    pub events: u64,
    /// Inclusion proofs written.
    pub proofs: u64,
}

/// Where an export reads the log. Either is verified from position 1 as
/// it is written, and the same writer makes the same file of it: a data
/// dir and the stream of the server that holds it give equal exports.
#[derive(Clone, Copy)]
pub enum ExportSource<'a> {
    /// The `log` tree of a data dir (locked while a server runs), with the
    /// newest checkpoint stored there inside the range.
    DataDir {
        /// The data dir (its `checkpoints/`).
        data_dir: &'a Path,
        /// Its log.
        reader: &'a LogReader,
    },
    /// The JetStream stream `TOKENS` (see [`crate::nats`]), a running
    /// server's: from sequence 1 to its last sequence when the export
    /// starts, which is the head. It must still hold sequence 1.
    Stream {
        /// A multi-thread runtime that drives the consumer (the pass runs on
        /// the calling thread, which must not be one of its).
        runtime: &'a tokio::runtime::Handle,
        /// The JetStream context.
        js: &'a async_nats::jetstream::Context,
        /// The server's newest checkpoint ([`crate::nats::latest_checkpoint`]),
        /// embedded when its size is inside the range. Its signature is the
        /// caller's business, checked before.
        checkpoint: Option<&'a SignedCheckpoint>,
        /// How long to wait for a message.
        idle_timeout: Duration,
    },
}

impl std::fmt::Debug for ExportSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportSource::DataDir { data_dir, .. } => f
                .debug_struct("DataDir")
                .field("data_dir", data_dir)
                .finish_non_exhaustive(),
            ExportSource::Stream {
                checkpoint,
                idle_timeout,
                ..
            } => f
                .debug_struct("Stream")
                .field("checkpoint", &checkpoint.map(|c| c.checkpoint.size))
                .field("idle_timeout", idle_timeout)
                .finish_non_exhaustive(),
        }
    }
}

/// The inclusion proofs an export owes: the checkpoint's size, the
/// positions to prove, and the event hashes `1..=size` the pass saw (32
/// bytes an event, so the tree needs no second read of the source).
struct Prove {
    size: u64,
    positions: Vec<u64>,
    hashes: Vec<Hash>,
}

struct Writer<'a> {
    out: BufWriter<File>,
    header: ExportHeader,
    header_written: bool,
    workspace: Option<&'a str>,
    manifest: Manifest,
    prove: Option<Prove>,
    error: Option<std::io::Error>,
}

impl Writer<'_> {
    fn write_line(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self
                .out
                .write_all(bytes)
                .and_then(|()| self.out.write_all(b"\n"))
            {
                self.error = Some(e);
            }
        }
    }

    fn write_header(&mut self) {
        if !self.header_written {
            self.header_written = true;
            let line = serde_json::to_vec(&self.header).expect("the header serializes");
            self.write_line(&line);
        }
    }
}

impl Observer for Writer<'_> {
    fn before(&mut self, _state: &LedgerState, event: &VerifiedEvent) {
        if event.env.position == self.header.from {
            // Verified already: the link to the event before.
            self.header.prev_hash = event.env.prev_hash.clone();
        }
    }

    fn after(&mut self, _state: &LedgerState, event: &VerifiedEvent) {
        let env = &event.env;
        if let Some(prove) = &mut self.prove {
            // The pass is gap-free from position 1: hash i is position i + 1.
            if env.position <= prove.size {
                prove.hashes.push(event.hash);
            }
        }
        if env.position < self.header.from {
            return;
        }
        self.write_header();
        if self.workspace.is_some_and(|w| w != env.workspace_id) {
            return;
        }
        self.write_line(&event.published_bytes());
        self.manifest.push(env.position);
        if let Some(prove) = &mut self.prove {
            let wanted = if self.workspace.is_some() {
                env.position <= prove.size
            } else {
                env.position == prove.size
            };
            if wanted {
                prove.positions.push(env.position);
            }
        }
    }

    fn finish(&mut self, _state: &LedgerState) {
        self.write_header();
    }
}

/// The range of `request` in a log whose head is `head`.
fn range(request: &ExportRequest, head: u64) -> Result<(u64, u64), AuditError> {
    let from = request.from.max(1);
    let to = request.to.unwrap_or(head).min(head);
    if from > to {
        return Err(AuditError::Invalid(format!(
            "nothing to export: the range {from}..={to} is empty (the log's head is {head})"
        )));
    }
    Ok((from, to))
}

/// Exports a range of the log of `reader` (data dir `data_dir`) to `out`:
/// [`export_from`] a [`ExportSource::DataDir`].
pub fn export(
    data_dir: &Path,
    reader: &LogReader,
    request: &ExportRequest,
    out: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<ExportOutcome, Finding>, AuditError> {
    export_from(
        ExportSource::DataDir { data_dir, reader },
        request,
        out,
        options,
        progress,
    )
}

/// Exports a range of the log of `source` to `out`, in the one format
/// whatever the source.
///
/// The log is verified from position 1 as the range is written (schema per
/// `options`), with the checkpoint against its root; on a finding the
/// partial file is removed and the finding returned.
pub fn export_from(
    source: ExportSource<'_>,
    request: &ExportRequest,
    out: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<ExportOutcome, Finding>, AuditError> {
    // A checkpoint too large to build proofs for is left out, not a panic.
    let in_range = |size: u64, from: u64, to: u64| {
        size >= from && size <= to && crate::merkle::check_proof_tree_size(size).is_ok()
    };
    match source {
        ExportSource::DataDir { data_dir, reader } => {
            let head = reader.last_position()?;
            let (from, to) = range(request, head)?;
            let head_hash = match reader.record(head)? {
                Some(v) if v.len() > 32 => v[..32].try_into().expect("32 bytes"),
                _ => {
                    return Err(AuditError::Invalid(format!(
                        "the log has no readable event at its head {head}"
                    )))
                }
            };
            let checkpoint = CheckpointStore::new(data_dir)
                .list()?
                .into_iter()
                .rev()
                .map(|(_, c)| c)
                .find(|c| in_range(c.checkpoint.size, from, to))
                .map(|c| {
                    let label = format!("the stored checkpoint of size {}", c.checkpoint.size);
                    (c, label)
                });
            let setup = Setup {
                from,
                to,
                workspace: request.workspace.as_deref(),
                head,
                head_hash,
                checkpoint,
            };
            write_export(
                reader.records(1, to),
                Plan::whole_log(),
                setup,
                out,
                options,
                progress,
            )
        }
        ExportSource::Stream {
            runtime,
            js,
            checkpoint,
            idle_timeout,
        } => {
            let state = runtime.block_on(stream_state(js))?;
            if state.messages == 0 {
                return Err(AuditError::Invalid(format!(
                    "the stream {STREAM_NAME} holds no event: nothing to export"
                )));
            }
            if state.first_sequence != 1 {
                return Err(AuditError::Invalid(format!(
                    "the stream {STREAM_NAME} starts at sequence {} (positions 1 to {} are no longer in it): an export is verified from position 1, so it cannot be taken from this stream; export the data dir instead",
                    state.first_sequence,
                    state.first_sequence.saturating_sub(1)
                )));
            }
            let head = state.last_sequence;
            let (from, to) = range(request, head)?;
            let head_hash = match runtime.block_on(checked_hash(js, head))? {
                Ok(hash) => hash,
                // The head is in the range: the pass names what is wrong
                // with it, at its position (or earlier), as a finding.
                Err(_) if to == head => [0u8; 32],
                Err(why) => {
                    return Err(AuditError::Invalid(format!(
                        "the stream's last event, at sequence {head}, {why}: the export would state a bad head; run `tokenledger audit verify --nats`"
                    )))
                }
            };
            let checkpoint = checkpoint
                .filter(|c| in_range(c.checkpoint.size, from, to))
                .map(|c| {
                    let label = format!(
                        "the server's newest checkpoint (size {}, from {CHECKPOINT_LATEST_SUBJECT})",
                        c.checkpoint.size
                    );
                    (c.clone(), label)
                });
            let records = BlockingRecords::new(
                runtime,
                stream_records(
                    js.clone(),
                    ReadRange {
                        from: 1,
                        last: head,
                        until: to,
                        idle_timeout,
                    },
                ),
            );
            let plan = Plan {
                declared_end: Some(DeclaredEnd {
                    position: to,
                    hash: (to == head).then_some(head_hash),
                    source: "the stream's state",
                }),
                ..Plan::whole_log()
            };
            let setup = Setup {
                from,
                to,
                workspace: request.workspace.as_deref(),
                head,
                head_hash,
                checkpoint,
            };
            write_export(records, plan, setup, out, options, progress)
        }
    }
}

/// What a source decided before its export is written.
struct Setup<'a> {
    from: u64,
    to: u64,
    workspace: Option<&'a str>,
    /// The log's head and its hash.
    head: u64,
    head_hash: Hash,
    /// The checkpoint to embed (inside `from..=to`), and its label.
    checkpoint: Option<(SignedCheckpoint, String)>,
}

/// Writes an export of `setup`'s range while `records` (from position 1)
/// pass verification against `plan` and the checkpoint's root; then the
/// inclusion proofs, from the hashes the pass saw, and the manifest.
fn write_export(
    records: impl Iterator<Item = Result<Record, AuditError>> + Send,
    mut plan: Plan,
    setup: Setup<'_>,
    out: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<ExportOutcome, Finding>, AuditError> {
    let checkpoint = setup.checkpoint.as_ref().map(|(c, _)| c.checkpoint.clone());
    if let Some((c, label)) = &setup.checkpoint {
        plan.roots.push(ExpectedRoot {
            size: c.checkpoint.size,
            root: c.checkpoint.root,
            label: label.clone(),
        });
    }
    let file = File::create(out).map_err(|e| AuditError::io("create", out, e))?;
    let mut writer = Writer {
        out: BufWriter::new(file),
        header: ExportHeader {
            format: FORMAT.to_owned(),
            from: setup.from,
            to: setup.to,
            workspace_id: setup.workspace.map(str::to_owned),
            prev_hash: hex::encode([0u8; 32]),
            head: ExportHead {
                position: setup.head,
                hash: hex::encode(setup.head_hash),
            },
            checkpoint: setup.checkpoint.map(|(c, _)| c.note),
        },
        header_written: false,
        workspace: setup.workspace,
        manifest: Manifest::default(),
        prove: checkpoint.as_ref().map(|c| Prove {
            size: c.size,
            positions: Vec::new(),
            hashes: Vec::with_capacity(c.size.min(1 << 24) as usize),
        }),
        error: None,
    };
    let report = verify(records, plan, options, &mut writer, progress);
    let fail = |e| {
        let _ = std::fs::remove_file(out);
        e
    };
    let report = report.map_err(fail)?;
    if let Some(finding) = report.finding {
        let _ = std::fs::remove_file(out);
        return Ok(Err(finding));
    }
    let mut proofs = 0;
    if let (Some(c), Some(prove)) = (&checkpoint, writer.prove.take()) {
        assert_eq!(
            prove.hashes.len() as u64,
            c.size,
            "the pass reached the checkpoint"
        );
        let tree = ProofTree::new(prove.hashes);
        assert_eq!(tree.root(), c.root, "the pass checked this root");
        for p in prove.positions {
            let line = ProofLine {
                inclusion_proof: tree.prove_inclusion(p - 1),
            };
            writer.write_line(&serde_json::to_vec(&line).expect("proofs serialize"));
            proofs += 1;
        }
    }
    let manifest = ManifestLine {
        manifest: std::mem::take(&mut writer.manifest),
    };
    writer.write_line(&serde_json::to_vec(&manifest).expect("a manifest serializes"));
    if let Some(e) = writer.error.take() {
        return Err(fail(AuditError::io("write", out, e)));
    }
    let file = writer
        .out
        .into_inner()
        .map_err(|e| fail(AuditError::io("write", out, e.into_error())))?;
    file.sync_all()
        .map_err(|e| fail(AuditError::io("sync", out, e)))?;
    Ok(Ok(ExportOutcome {
        header: writer.header,
        events: manifest.manifest.events,
        proofs,
    }))
}

/// A checkpoint to check an export against, besides the one it embeds.
#[derive(Clone, Debug)]
pub struct GivenCheckpoint {
    /// The checkpoint.
    pub signed: SignedCheckpoint,
    /// Where it came from.
    pub label: String,
}

/// The outcome of verifying an export.
#[derive(Clone, Debug)]
pub struct ExportVerification {
    /// The header.
    pub header: ExportHeader,
    /// The embedded checkpoint, parsed.
    pub embedded: Option<SignedCheckpoint>,
    /// The pass, with proof findings folded in.
    pub report: Report,
    /// Inclusion proofs that held.
    pub proofs_verified: u64,
    /// Whether the file ended with a manifest (format `/2`); a `/1` file of
    /// one workspace cannot show a dropped line.
    pub manifest: bool,
}

fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<bool, String> {
    buf.clear();
    let n = std::io::Read::take(&mut *reader, LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > LINE_BYTES_MAX {
        return Err(format!("a line is longer than {LINE_BYTES_MAX} bytes"));
    }
    Ok(true)
}

/// Opens an export and reads its header, checked for its format and range;
/// the reader is left at the first event line.
fn open_export(path: &Path) -> Result<(ExportHeader, BufReader<File>), AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let invalid = |why: String| AuditError::Invalid(format!("{}: {why}", path.display()));
    if !read_line(&mut input, &mut line).map_err(invalid)? {
        return Err(invalid("the file is empty".into()));
    }
    let header: ExportHeader = serde_json::from_slice(&line)
        .map_err(|e| invalid(format!("the first line is not an export header: {e}")))?;
    if header.format != FORMAT && header.format != FORMAT_V1 {
        return Err(invalid(format!(
            "unknown export format {:?}",
            header.format
        )));
    }
    if header.from == 0 || header.from > header.to {
        return Err(invalid(format!(
            "the header's range {}..={} is empty",
            header.from, header.to
        )));
    }
    Ok((header, input))
}

/// The header of an export, unverified: what the file claims to hold
/// (a replay or a history decides from it whether the file can answer,
/// before reading the rest).
pub fn read_header(path: &Path) -> Result<ExportHeader, AuditError> {
    open_export(path).map(|(header, _)| header)
}

/// Verifies an export file on its own, and against `given` checkpoints.
///
/// Signatures are the caller's business: it checks the embedded
/// checkpoint's (in [`ExportVerification::embedded`]) with the key it trusts.
pub fn verify_export(
    path: &Path,
    given: &[GivenCheckpoint],
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportVerification, AuditError> {
    verify_export_with(path, given, options, &mut NoObserver, progress)
}

/// [`verify_export`], with `observer` seeing every event that passed its
/// checks (a replay's snapshots, a history's collector).
///
/// The file is always read whole, even once the observer is
/// [`done`](Observer::done): its manifest and inclusion proofs come after
/// its events, and what it vouches for is judged on all of them. A
/// finding anywhere in the file is the pass's finding.
pub fn verify_export_with(
    path: &Path,
    given: &[GivenCheckpoint],
    options: &VerifyOptions,
    observer: &mut dyn Observer,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportVerification, AuditError> {
    let (header, input) = open_export(path)?;
    let invalid = |why: String| AuditError::Invalid(format!("{}: {why}", path.display()));
    let manifest_due = header.format == FORMAT;
    let prev_hash = parse_hash(&header.prev_hash).map_err(|e| invalid(format!("prevHash: {e}")))?;
    let head_hash =
        parse_hash(&header.head.hash).map_err(|e| invalid(format!("head.hash: {e}")))?;
    let embedded = header
        .checkpoint
        .as_deref()
        .map(SignedCheckpoint::parse)
        .transpose()
        .map_err(|e| invalid(format!("checkpoint: {e}")))?;
    let subset = header.workspace_id.is_some();
    let whole = header.from == 1 && !subset;

    let mut roots = Vec::new();
    let mut keep: HashSet<u64> = HashSet::new();
    if let Some(c) = &embedded {
        let size = c.checkpoint.size;
        if size < header.from || size > header.to {
            return Err(invalid(format!(
                "the embedded checkpoint (size {size}) is outside the range {}..={}",
                header.from, header.to
            )));
        }
        keep.insert(size);
        if whole {
            roots.push(ExpectedRoot {
                size,
                root: c.checkpoint.root,
                label: "the export's checkpoint".into(),
            });
        }
    }
    for g in given {
        let c = &g.signed.checkpoint;
        let same_as_embedded = embedded.as_ref().is_some_and(|e| e.checkpoint == *c);
        if whole {
            roots.push(ExpectedRoot {
                size: c.size,
                root: c.root,
                label: g.label.clone(),
            });
        } else if !same_as_embedded {
            return Err(invalid(format!(
                "{} cannot be checked against this export: an export that starts after position 1, or holds one workspace, proves only the checkpoint it embeds",
                g.label
            )));
        }
    }
    let plan = Plan {
        from: header.from,
        prev_hash,
        subset,
        roots,
        keep_hashes: if subset {
            KeepHashes::All
        } else {
            KeepHashes::At(keep)
        },
        declared_end: (!subset).then(|| DeclaredEnd {
            position: header.to,
            hash: (header.head.position == header.to).then_some(head_hash),
            source: "the header",
        }),
    };

    // Proof lines and the manifest follow the events; the reader hands
    // them over when it meets them.
    let tail: Arc<Mutex<Tail>> = Arc::default();
    let records = LineRecords {
        input,
        line: Vec::new(),
        tail: tail.clone(),
        path: path.display().to_string(),
    };
    let mut report = verify(records, plan, options, &mut ReadWhole(observer), progress)?;
    let tail = std::mem::take(&mut *tail.lock().expect("lock"));
    if let Some(e) = tail.error {
        return Err(invalid(e));
    }
    let proofs = tail.proofs;
    let manifest = tail.manifest.is_some();
    let mut proofs_verified = 0;
    if report.finding.is_none() && manifest_due {
        report.finding = check_manifest(&report, tail.manifest.as_ref(), header.from, subset);
    }
    if report.finding.is_none() {
        if let Some(c) = &embedded {
            let (finding, verified) = check_proofs(&report, &proofs, c, subset);
            proofs_verified = verified;
            report.finding = finding;
        } else if !proofs.is_empty() {
            return Err(invalid(
                "inclusion proofs without a checkpoint in the header".into(),
            ));
        }
    }
    Ok(ExportVerification {
        header,
        embedded,
        report,
        proofs_verified,
        manifest,
    })
}

/// An observer that never ends a pass early (see [`verify_export_with`]).
struct ReadWhole<'a>(&'a mut dyn Observer);

impl Observer for ReadWhole<'_> {
    fn before(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        self.0.before(state, event);
    }

    fn after(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        self.0.after(state, event);
    }

    fn finish(&mut self, state: &LedgerState) {
        self.0.finish(state);
    }
}

/// Checks that the file holds exactly the positions its manifest lists.
fn check_manifest(
    report: &Report,
    manifest: Option<&Manifest>,
    from: u64,
    subset: bool,
) -> Option<Finding> {
    let last = report.summary.head_position;
    let Some(manifest) = manifest else {
        return Some(Finding {
            position: last + 1,
            kind: FindingKind::Truncated,
            message:
                "the export ends without its manifest (its last line): lines were cut from its end"
                    .into(),
            until: None,
        });
    };
    // A subset kept every hash; a whole range is gap-free from `from`.
    let mut seen: Box<dyn Iterator<Item = u64>> = if subset {
        Box::new(report.kept_hashes.keys().copied())
    } else {
        Box::new(from..=last)
    };
    let mut listed = manifest.listed();
    loop {
        match (listed.next(), seen.next()) {
            (None, None) => break,
            (Some(l), s) if s.is_none_or(|s| l < s) => {
                return Some(Finding {
                    position: l,
                    kind: FindingKind::MissingEvent,
                    message: format!("the export's manifest lists position {l}, but the file holds no event there: it was dropped"),
                    until: None,
                })
            }
            (Some(l), Some(s)) if l == s => {}
            (_, Some(s)) => {
                return Some(Finding {
                    position: s,
                    kind: FindingKind::HeaderMismatch,
                    message: format!("the file holds an event at position {s}, which the export's manifest does not list"),
                    until: None,
                })
            }
            (Some(_), None) => unreachable!("handled by the first arm"),
        }
    }
    (manifest.events != report.summary.events).then(|| Finding {
        position: last,
        kind: FindingKind::HeaderMismatch,
        message: format!(
            "the export's manifest counts {} events, the file holds {}",
            manifest.events, report.summary.events
        ),
        until: None,
    })
}

/// Checks the inclusion proofs against the embedded checkpoint.
fn check_proofs(
    report: &Report,
    proofs: &[InclusionProofJson],
    checkpoint: &SignedCheckpoint,
    subset: bool,
) -> (Option<Finding>, u64) {
    let size = checkpoint.checkpoint.size;
    let root = checkpoint.checkpoint.root;
    let finding = |position: u64, kind: FindingKind, message: String| Finding {
        position,
        kind,
        message,
        until: None,
    };
    let mut proven: HashSet<u64> = HashSet::new();
    let mut verified = 0;
    for proof in proofs {
        // Saturating: an index past every position names no exported event.
        let position = proof.leaf_index.saturating_add(1);
        let Some(hash) = report.kept_hashes.get(&position) else {
            return (
                Some(finding(
                    position,
                    FindingKind::HeaderMismatch,
                    "an inclusion proof names an event that is not in the export".into(),
                )),
                verified,
            );
        };
        if proof.tree_size != size {
            return (
                Some(finding(
                    position,
                    FindingKind::HeaderMismatch,
                    format!("an inclusion proof is for a tree of {} events, not the checkpoint's {size}", proof.tree_size),
                )),
                verified,
            );
        }
        if let Err(e) = verify_inclusion(hash, proof, &root) {
            return (
                Some(finding(
                    position,
                    FindingKind::CheckpointMismatch,
                    format!(
                        "the event is not leaf {} of the signed tree: {e}",
                        proof.leaf_index
                    ),
                )),
                verified,
            );
        }
        proven.insert(position);
        verified += 1;
    }
    // Every event the checkpoint covers needs its proof (a whole range: the last one).
    let needed: Vec<u64> = if subset {
        report
            .kept_hashes
            .keys()
            .copied()
            .filter(|p| *p <= size)
            .collect()
    } else {
        vec![size]
    };
    if let Some(p) = needed.into_iter().find(|p| !proven.contains(p)) {
        return (
            Some(finding(
                p,
                FindingKind::Truncated,
                format!("the export has no inclusion proof for position {p} in the checkpoint of size {size}"),
            )),
            verified,
        );
    }
    (None, verified)
}

/// What follows an export's events.
#[derive(Default)]
struct Tail {
    proofs: Vec<InclusionProofJson>,
    manifest: Option<Manifest>,
    /// A line out of place or malformed.
    error: Option<String>,
}

/// The event lines of an export, as published records.
struct LineRecords<R> {
    input: R,
    line: Vec<u8>,
    tail: Arc<Mutex<Tail>>,
    path: String,
}

impl<R: BufRead> Iterator for LineRecords<R> {
    type Item = Result<Record, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match read_line(&mut self.input, &mut self.line) {
                Err(e) => return Some(Err(AuditError::Invalid(format!("{}: {e}", self.path)))),
                Ok(false) => return None,
                Ok(true) => {}
            }
            if self.line.is_empty() {
                continue;
            }
            let starts = |prefix: &[u8]| {
                find(&self.line[..self.line.len().min(prefix.len())], prefix) == Some(0)
            };
            let mut tail = self.tail.lock().expect("lock");
            if tail.error.is_some() {
                return None;
            }
            if tail.manifest.is_some() {
                tail.error = Some("a line after the manifest".into());
                return None;
            }
            if starts(PROOF_PREFIX) {
                match serde_json::from_slice::<ProofLine>(&self.line) {
                    Ok(p) => tail.proofs.push(p.inclusion_proof),
                    Err(e) => tail.error = Some(format!("a malformed inclusion proof line: {e}")),
                }
                continue;
            }
            if starts(MANIFEST_PREFIX) {
                match serde_json::from_slice::<ManifestLine>(&self.line) {
                    Ok(m) => tail.manifest = Some(m.manifest),
                    Err(e) => tail.error = Some(format!("a malformed manifest line: {e}")),
                }
                continue;
            }
            if !tail.proofs.is_empty() {
                tail.error = Some("an event line after the inclusion proofs".into());
                return None;
            }
            drop(tail);
            return Some(Ok(Record::Published {
                sequence: None,
                bytes: std::mem::take(&mut self.line),
                message: None,
            }));
        }
    }
}
