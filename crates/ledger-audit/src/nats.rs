//! The JetStream stream `TOKENS` as a source of events, and the core NATS
//! subjects the server publishes its checkpoints on.
//!
//! The server publishes event `p` of its log as stream sequence `p`, in its
//! published form (canonical JSON with `hash` in its sorted place). This
//! module reads a range of the stream with an ordered consumer (ephemeral,
//! in memory, no acks, pulled 500 messages at a time and re-created by
//! async-nats after a gap or a lost heartbeat) and yields each message as
//! [`Record::Published`] `{ sequence: Some(stream sequence), bytes }`, so the
//! verifier checks everything it checks in a data dir or an export, plus
//! that the stream sequence is the event's position. Nothing here needs the
//! data dir: an auditor with read access to the stream verifies it alone,
//! replays it or reads a token's history from it
//! ([`crate::replay::Source::Stream`]), and exports it
//! ([`crate::export::ExportSource::Stream`]), while the server runs.
//!
//! It lives in ledger-audit, behind no feature flag, so that the CLI, the
//! benches and tests share one reader; the rest of the crate stays
//! synchronous, and [`verify_stream`] bridges the two (the consumer runs on
//! a tokio runtime, the verifier on the calling thread).
//!
//! Where a read ends: at [`StreamPlan::until`] (the stream's last sequence
//! when the read starts, or the size of a checkpoint ahead of it, which a
//! live server's publisher is about to reach), or when the server says
//! nothing is left (`pending == 0`) below the last sequence its state
//! announced (a deleted tail: a `truncated` finding), or when nothing has
//! come for [`StreamPlan::idle_timeout`] after the stream's last sequence
//! (the checkpoint's events never came: a `truncated` finding too). A
//! stream that stops delivering before its own last sequence is an error
//! ([`AuditError::Source`]), not a finding. A pass whose observer has seen
//! enough ([`Observer::done`], a replay past its last point) ends the read
//! there: the consumer's task stops with the iterator that is dropped.

use crate::source::{MessageMeta, Record};
use crate::verify::{DeclaredEnd, ExpectedRoot, Observer, Plan, Progress, Report, VerifyOptions};
use crate::{AuditError, Hash};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use ledger_core::Envelope;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;

pub use ledger_core::event::STREAM_NAME;
/// Core NATS subject the server publishes each new checkpoint's signed note on.
pub const CHECKPOINT_SUBJECT: &str = "tokens.checkpoint";
/// Core NATS subject the server answers with its newest checkpoint:
/// `{"ok": true, "result": {"note", "size", "root"}}`, or a `not_found` error.
pub const CHECKPOINT_LATEST_SUBJECT: &str = "tokens.checkpoint.latest";
/// How long a read waits for the next message, by default.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Records handed from the consumer's task to the verifier at once, at most.
const CHUNK_RECORDS: usize = 512;
/// Chunks queued between the consumer's task and the verifier.
const CHUNKS_IN_FLIGHT: usize = 16;

/// The stream's state when a read starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    /// Messages held.
    pub messages: u64,
    /// The lowest sequence still held (0 when empty).
    pub first_sequence: u64,
    /// The last sequence assigned.
    pub last_sequence: u64,
}

fn source(what: impl std::fmt::Display) -> AuditError {
    AuditError::Source(what.to_string())
}

/// Reads the state of [`STREAM_NAME`].
pub async fn stream_state(js: &jetstream::Context) -> Result<StreamState, AuditError> {
    let stream = js.get_stream(STREAM_NAME).await.map_err(|e| {
        source(format!(
            "stream {STREAM_NAME} (is a ledger server publishing to this NATS?): {e}"
        ))
    })?;
    let state = &stream.cached_info().state;
    Ok(StreamState {
        messages: state.messages,
        first_sequence: state.first_sequence,
        last_sequence: state.last_sequence,
    })
}

/// The hash of the event at `position`, read from the stream and checked:
/// it must decode, sit at its own sequence and hash to what it claims. A
/// read from position `p > 1` links its first event to this hash of `p - 1`.
pub async fn event_hash(js: &jetstream::Context, position: u64) -> Result<Hash, AuditError> {
    if position == 0 {
        return Ok([0u8; 32]);
    }
    checked_hash(js, position).await?.map_err(|why| {
        AuditError::Invalid(format!(
            "the event at sequence {position}, which the range links to, {why}: verify from an earlier position"
        ))
    })
}

/// The event at `position` checked alone (it decodes, sits at its own
/// sequence and hashes to its `hash`): its hash, or what is wrong with it.
/// `Err` only when the stream cannot be read there.
pub(crate) async fn checked_hash(
    js: &jetstream::Context,
    position: u64,
) -> Result<Result<Hash, String>, AuditError> {
    let stream = js
        .get_stream_no_info(STREAM_NAME)
        .await
        .map_err(|e| source(format!("stream {STREAM_NAME}: {e}")))?;
    let message = stream
        .get_raw_message(position)
        .await
        .map_err(|e| source(format!("message {position} of {STREAM_NAME}: {e}")))?;
    let env = match Envelope::from_json(&message.payload) {
        Ok(env) => env,
        Err(e) => return Ok(Err(format!("does not decode ({e})"))),
    };
    if env.position != position {
        return Ok(Err(format!("says position {}", env.position)));
    }
    if env.hash != env.computed_hash() {
        return Ok(Err("does not hash to its `hash`".into()));
    }
    Ok(crate::merkle::parse_hash(&env.hash))
}

/// What [`stream_records`] reads.
#[derive(Clone, Debug)]
pub struct ReadRange {
    /// The first sequence (1 for the whole stream).
    pub from: u64,
    /// The last sequence the stream's state announced: a read that the
    /// server ends before it (`pending == 0`) ends there; one that stalls
    /// before it fails.
    pub last: u64,
    /// The last sequence to read (at least `last`; more to wait for events
    /// a checkpoint vouches for that the publisher has not published yet).
    pub until: u64,
    /// How long to wait for a message before giving up.
    pub idle_timeout: Duration,
}

/// The messages of [`STREAM_NAME`] in `range`, as records, in sequence
/// order, each once (an ordered consumer's redeliveries are dropped).
///
/// The consumer is created on the first poll. See the module docs for
/// where the stream ends.
pub fn stream_records(
    js: jetstream::Context,
    range: ReadRange,
) -> impl Stream<Item = Result<Record, AuditError>> + Send + 'static {
    let state = Reader {
        js,
        range,
        messages: None,
        next: 0,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next_record().await?;
        Some((item, state))
    })
}

struct Reader {
    js: jetstream::Context,
    range: ReadRange,
    messages: Option<BoxStream<'static, Result<jetstream::Message, String>>>,
    /// The next sequence wanted (0 before the first message).
    next: u64,
    done: bool,
}

impl Reader {
    async fn next_record(&mut self) -> Option<Result<Record, AuditError>> {
        let from = self.range.from.max(1);
        if self.done || from > self.range.until {
            return None;
        }
        if self.next == 0 {
            self.next = from;
        }
        if self.messages.is_none() {
            match open(&self.js, from).await {
                Ok(m) => self.messages = Some(m),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let messages = self.messages.as_mut().expect("opened above");
        loop {
            let next = match tokio::time::timeout(self.range.idle_timeout, messages.next()).await {
                Ok(n) => n,
                Err(_) => {
                    self.done = true;
                    // Past the stream's last sequence, only a checkpoint's
                    // events were awaited: the verifier reports them missing.
                    if self.next > self.range.last {
                        return None;
                    }
                    return Some(Err(source(format!(
                            "{STREAM_NAME} delivered nothing for {:?} at sequence {} (its last sequence is {})",
                            self.range.idle_timeout, self.next, self.range.last
                        ))));
                }
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(source(format!(
                        "consuming {STREAM_NAME} at sequence {}: {e}",
                        self.next
                    ))));
                }
                None => {
                    self.done = true;
                    return Some(Err(source(format!(
                        "the consumer on {STREAM_NAME} ended at sequence {}",
                        self.next
                    ))));
                }
            };
            let (sequence, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => {
                    self.done = true;
                    return Some(Err(source(format!(
                        "a message of {STREAM_NAME} without JetStream metadata: {e}"
                    ))));
                }
            };
            if sequence < self.next {
                // A redelivery by a re-created consumer.
                continue;
            }
            self.next = sequence + 1;
            if sequence >= self.range.until || (pending == 0 && sequence < self.range.last) {
                self.done = true;
            }
            if sequence > self.range.until {
                return None;
            }
            let meta = MessageMeta {
                subject: message.message.subject.to_string(),
                msg_id: message
                    .message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_owned()),
            };
            let bytes = Vec::from(message.message.payload);
            return Some(Ok(Record::Published {
                sequence: Some(sequence),
                bytes,
                message: Some(meta),
            }));
        }
    }
}

/// An ordered consumer on [`STREAM_NAME`] from sequence `from`.
async fn open(
    js: &jetstream::Context,
    from: u64,
) -> Result<BoxStream<'static, Result<jetstream::Message, String>>, AuditError> {
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: from,
        },
        ..OrderedConfig::default()
    };
    let consumer = js
        .create_consumer_on_stream(config, STREAM_NAME)
        .await
        .map_err(|e| source(format!("creating a consumer on {STREAM_NAME}: {e}")))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| source(format!("consuming {STREAM_NAME}: {e}")))?;
    Ok(messages.map(|m| m.map_err(|e| e.to_string())).boxed())
}

/// A stream of records driven by a task on a tokio runtime, read as a
/// blocking iterator (chunks of ready records cross a bounded channel).
///
/// Do not iterate it on a thread of that runtime: it blocks. Dropping it
/// stops the task (and with it the consumer).
pub struct BlockingRecords {
    rx: mpsc::Receiver<Vec<Result<Record, AuditError>>>,
    chunk: std::vec::IntoIter<Result<Record, AuditError>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for BlockingRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingRecords").finish_non_exhaustive()
    }
}

impl BlockingRecords {
    /// Drives `stream` on `runtime`.
    pub fn new(
        runtime: &tokio::runtime::Handle,
        stream: impl Stream<Item = Result<Record, AuditError>> + Send + 'static,
    ) -> BlockingRecords {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let task = runtime.spawn(async move {
            let mut chunks = std::pin::pin!(stream.ready_chunks(CHUNK_RECORDS));
            while let Some(chunk) = chunks.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        BlockingRecords {
            rx,
            chunk: Vec::new().into_iter(),
            task,
        }
    }
}

impl Iterator for BlockingRecords {
    type Item = Result<Record, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.chunk.next() {
                return Some(r);
            }
            self.chunk = self.rx.blocking_recv()?.into_iter();
        }
    }
}

impl Drop for BlockingRecords {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`verify_stream`] checks.
#[derive(Clone, Debug)]
pub struct StreamPlan {
    /// The first position (1 for the whole stream). From a later one the
    /// first event links to the hash of the event before it, read from the
    /// stream and checked on its own; domain rules then follow only the
    /// tokens created inside the range, and signed roots cannot be checked.
    pub from: u64,
    /// Signed roots the tree over the stream must have (needs `from == 1`).
    pub roots: Vec<ExpectedRoot>,
    /// How long to wait for a message.
    pub idle_timeout: Duration,
}

impl StreamPlan {
    /// The whole stream, no signed roots.
    pub fn whole_stream() -> StreamPlan {
        StreamPlan {
            from: 1,
            roots: Vec::new(),
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
        }
    }

    /// The last sequence to read: the stream's last, or the largest signed
    /// tree if that is larger.
    pub fn until(&self, state: &StreamState) -> u64 {
        self.roots
            .iter()
            .map(|r| r.size)
            .max()
            .unwrap_or(0)
            .max(state.last_sequence)
    }
}

/// A verified stream.
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// The stream's state when the read started.
    pub state: StreamState,
    /// The verifier's report.
    pub report: Report,
}

/// Verifies [`STREAM_NAME`] from `plan.from` to its last sequence (or the
/// largest signed tree): the consumer runs on `runtime` (a multi-thread
/// runtime: its handle must drive I/O by itself), the verifier on the calling
/// thread, which must not be one of the runtime's.
pub fn verify_stream(
    runtime: &tokio::runtime::Handle,
    js: &jetstream::Context,
    plan: StreamPlan,
    options: &VerifyOptions,
    observer: &mut dyn Observer,
    progress: &mut dyn FnMut(Progress),
) -> Result<StreamReport, AuditError> {
    let from = plan.from.max(1);
    if from > 1 && !plan.roots.is_empty() {
        return Err(AuditError::Invalid(
            "a signed checkpoint covers the stream from position 1: verify from position 1 to check it"
                .into(),
        ));
    }
    let state = runtime.block_on(stream_state(js))?;
    let prev_hash = if from > 1 {
        if from - 1 > state.last_sequence {
            return Err(AuditError::Invalid(format!(
                "the stream ends at sequence {}: there is nothing to verify from {from}",
                state.last_sequence
            )));
        }
        runtime.block_on(event_hash(js, from - 1))?
    } else {
        [0u8; 32]
    };
    let range = ReadRange {
        from,
        last: state.last_sequence,
        until: plan.until(&state),
        idle_timeout: plan.idle_timeout,
    };
    let records = BlockingRecords::new(runtime, stream_records(js.clone(), range));
    let verify_plan = Plan {
        from,
        prev_hash,
        roots: plan.roots,
        declared_end: (state.last_sequence >= from).then_some(DeclaredEnd {
            position: state.last_sequence,
            hash: None,
            source: "the stream's state",
        }),
        ..Plan::whole_log()
    };
    let report = crate::verify(records, verify_plan, options, observer, progress)?;
    Ok(StreamReport { state, report })
}

/// Asks a server for its newest checkpoint on [`CHECKPOINT_LATEST_SUBJECT`];
/// `None` when it has made none yet. The signature is not checked here.
pub async fn latest_checkpoint(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<Option<crate::SignedCheckpoint>, AuditError> {
    let reply = tokio::time::timeout(
        timeout,
        client.request(CHECKPOINT_LATEST_SUBJECT, "".into()),
    )
    .await
    .map_err(|_| {
        source(format!(
            "no answer on {CHECKPOINT_LATEST_SUBJECT} within {timeout:?}"
        ))
    })?
    .map_err(|e| source(format!("{CHECKPOINT_LATEST_SUBJECT}: {e}")))?;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
        AuditError::Invalid(format!(
            "the reply on {CHECKPOINT_LATEST_SUBJECT} is not JSON: {e}"
        ))
    })?;
    if body["ok"] != serde_json::Value::Bool(true) {
        if body["error"]["code"] == "not_found" {
            return Ok(None);
        }
        return Err(source(format!(
            "{CHECKPOINT_LATEST_SUBJECT} failed: {}",
            body["error"]
        )));
    }
    let note = body["result"]["note"].as_str().ok_or_else(|| {
        AuditError::Invalid(format!(
            "the reply on {CHECKPOINT_LATEST_SUBJECT} has no note"
        ))
    })?;
    Ok(Some(crate::SignedCheckpoint::parse(note)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Result<Record, AuditError> {
        Ok(Record::Published {
            sequence: Some(i),
            bytes: i.to_be_bytes().to_vec(),
            message: None,
        })
    }

    #[test]
    fn a_blocking_iterator_yields_the_stream_in_order_and_stops_it_when_dropped() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let n = 3 * CHUNK_RECORDS as u64 + 7;
        let records = futures_util::stream::iter((1..=n).map(record));
        let seen: Vec<u64> = BlockingRecords::new(runtime.handle(), records)
            .map(|r| match r.unwrap() {
                Record::Published {
                    sequence: Some(s), ..
                } => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());

        // An endless source: the verifier stops early, the task ends with it.
        let endless = futures_util::stream::iter((1..).map(record));
        let mut it = BlockingRecords::new(runtime.handle(), endless);
        assert!(it.next().is_some());
        let task = it.task.abort_handle();
        drop(it);
        assert!(runtime.block_on(async {
            ledger_testkit::wait_for_async(Duration::from_secs(10), || {
                let finished = task.is_finished();
                async move { finished }
            })
            .await
        }));
    }

    #[test]
    fn a_read_reaches_the_largest_signed_tree_beyond_the_stream() {
        let state = StreamState {
            messages: 5,
            first_sequence: 1,
            last_sequence: 5,
        };
        let mut plan = StreamPlan::whole_stream();
        assert_eq!(plan.until(&state), 5);
        for size in [3, 8] {
            plan.roots.push(ExpectedRoot {
                size,
                root: [0; 32],
                label: String::new(),
            });
        }
        assert_eq!(plan.until(&state), 8);
    }
}
