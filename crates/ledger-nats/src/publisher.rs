//! The publisher: brings the stream `TOKENS` to exactly the log, and keeps it there.
//!
//! # Why the log is the outbox
//!
//! JetStream acknowledges a message before it is on disk (`sync_interval`
//! defaults to two minutes), so an acknowledged message can still be lost
//! by an OS crash, and a command acknowledged to its caller must never
//! depend on NATS being up. The sled log is therefore the durable copy and
//! the outbox at once: a command is answered once its events are flushed to
//! the log, and this task copies the log into the stream afterwards, in
//! position order. The stream is a replica that is always brought back to
//! exactly the log, never the other way round.
//!
//! # The invariant: stream sequence = log position
//!
//! Event `p` is published with `Nats-Expected-Last-Sequence: p - 1`, so
//! JetStream can store it only as sequence `p`. Nothing else writes to the
//! stream and it denies deletes and purges, so sequence `p` holds event `p`
//! or nothing, for every `p`: no gap, no duplicate, no reordering can
//! happen, whatever is retried, lost or delivered late. `Nats-Msg-Id` is the
//! event id as a second line of defence (deduplication inside the window).
//!
//! # The loop
//!
//! 1. *Sync*: read the stream's last sequence `S` (creating the stream if it
//!    is gone). `S` above the log's head means the stream is not ours:
//!    fatal. Otherwise check that the message at `S` carries the log's
//!    event id for `S`, and resume at `S + 1`: whatever the stream lost
//!    (a crash of an R1 server) is published again, whatever it already
//!    has (a publish whose ack was lost) is skipped.
//! 2. *Pump*: publish the next events, keeping at most `ack_window`
//!    messages in flight. One message in `ACK_EVERY`, and the last of each
//!    burst, asks for an ack; the others are plain publishes with the same
//!    headers. Acks are awaited oldest first and each must come back with
//!    sequence = position, which confirms every message before it too: each
//!    names its predecessor's sequence, so none can be stored unless all
//!    before it were. (An ack is two messages through nats-server; asking
//!    for all of them cost about a sixth of its CPU per command.) Anything else (`WrongLastSequence` 10071, which
//!    on nats-server 2.12+ is also what a retry of an already stored message
//!    gets; a timeout; a disconnect; a sequence mismatch) drops the window
//!    and goes back to 1. Messages of a dropped window that still arrive
//!    late carry their expected sequence, so they are stored at their own
//!    position or refused.
//! 3. When caught up, sleep until the head moves, the connection is
//!    re-established (go back to 1), or shutdown asks to drain.

use crate::metrics::Metrics;
use crate::stream::{self, EnsureError, StreamSettings};
use crate::subjects::STREAM_NAME;
use crate::NatsError;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self};
use ledger_store::{Outgoing, Store};
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::sync::watch;

/// Events read from the log in one go, at most.
const READ_BATCH_MAX: usize = 512;
/// One message in this many asks JetStream for an ack (besides the last of
/// each burst). Acks are a message each way through nats-server; since each
/// publish names its predecessor's sequence, one ack confirms everything
/// before it.
const ACK_EVERY: u64 = 32;
/// Largest `ack_window` accepted: async-nats holds at most 5,000 acks in
/// flight per context and blocks `publish` beyond; dropped windows also
/// hold permits until their acks arrive, so stay well below.
pub const ACK_WINDOW_MAX: usize = 2048;
/// First pause after a resync that made no progress; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest pause between resyncs that make no progress.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What stopped a pump or a sync.
enum Interrupt {
    /// Drop the window, re-read the stream, go on.
    Resync(String),
    /// Stop publishing for good.
    Fatal(NatsError),
}

/// Resyncs in a row without progress before an operator is told.
const STUCK_AFTER: u32 = 3;
/// Least time between two warnings about the same stall.
const STUCK_WARN_EVERY: Duration = Duration::from_secs(30);

/// Publication that does not move: commands are still acknowledged (the log
/// is the outbox), so nobody notices unless the server says so. Resyncs are
/// routine (a reconnection), a run of them without progress is not.
#[derive(Default)]
struct Stuck {
    resyncs: u32,
    warned: Option<std::time::Instant>,
}

impl Stuck {
    fn no_progress(&mut self, reason: &str, lag: u64) {
        self.resyncs += 1;
        let due = self
            .warned
            .is_none_or(|at| at.elapsed() >= STUCK_WARN_EVERY);
        if self.resyncs >= STUCK_AFTER && lag > 0 && due {
            self.warned = Some(std::time::Instant::now());
            tracing::warn!(
                %reason,
                unpublished = lag,
                attempts = self.resyncs,
                "publication to the stream TOKENS is not progressing; the events stay in the log \
                 and go out once it does (check the stream's limits and state)"
            );
        }
    }
}

fn resync(reason: impl Into<String>) -> Interrupt {
    Interrupt::Resync(reason.into())
}

/// The publisher task's state.
pub(crate) struct Publisher {
    pub js: jetstream::Context,
    pub store: Store,
    pub settings: StreamSettings,
    pub ack_window: usize,
    /// How often the stream is looked at while idle.
    pub check_every: Duration,
    pub metrics: Metrics,
    /// Bumped on every (re)connection of the client.
    pub epoch: watch::Receiver<u64>,
}

impl Publisher {
    /// Publishes until `stop` turns true (or its sender is dropped) and the
    /// stream holds every event up to the log's head; returns early only
    /// on a fatal divergence between stream and log.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), NatsError> {
        assert!((1..=ACK_WINDOW_MAX).contains(&self.ack_window));
        self.metrics.set_publisher_running(true);
        let outcome = self.run_loop(&mut stop).await;
        self.metrics.set_publisher_running(false);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, code = e.code(), "publisher stopped");
        }
        outcome
    }

    async fn run_loop(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), NatsError> {
        let mut backoff = BACKOFF_MIN;
        let mut stuck = Stuck::default();
        loop {
            self.epoch.borrow_and_update();
            let synced = tokio::select! {
                s = sync(&self.js, &self.store, &self.settings) => s,
                _ = self.epoch.changed() => Err(resync("reconnected during sync")),
            };
            let mut progressed = false;
            let interrupt = match synced {
                Ok(last) => {
                    // The stream may hold less than was acknowledged before
                    // (an R1 server that crashed): trust only what it says now.
                    self.metrics.set_published(last);
                    let pumped = self.pump(last, stop).await;
                    progressed = self.metrics.published_position() > last;
                    match pumped {
                        Ok(()) => return Ok(()),
                        Err(i) => i,
                    }
                }
                Err(i) => i,
            };
            match interrupt {
                Interrupt::Fatal(e) => return Err(e),
                Interrupt::Resync(reason) => {
                    tracing::debug!(%reason, "publisher resync");
                    self.metrics.resynced(&reason);
                    if !progressed {
                        let lag = self
                            .store
                            .head_position()
                            .saturating_sub(self.metrics.published_position());
                        stuck.no_progress(&reason, lag);
                    }
                }
            }
            if progressed {
                stuck = Stuck::default();
                backoff = BACKOFF_MIN;
                continue;
            }
            // No progress: wait a little, or less if the connection comes back.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.epoch.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The stream, looked at while idle, must still end at `published`:
    /// deleted, or rolled back by a NATS node that lost writes without the
    /// connection noticing, it is resynced (recreated, refilled) now, not
    /// at the next command. A failed lookup is left to the next look.
    async fn check_idle_stream(&self, published: u64) -> Result<(), Interrupt> {
        match self.js.get_stream(STREAM_NAME).await {
            Ok(stream) => {
                let last = stream.cached_info().state.last_sequence;
                if last != published {
                    return Err(resync(format!(
                        "the stream ends at sequence {last}, {published} was published"
                    )));
                }
                Ok(())
            }
            // JetStream answered, and not with the stream (not a timeout).
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(_)
                ) =>
            {
                Err(resync(format!("the stream is gone: {e}")))
            }
            Err(_) => Ok(()),
        }
    }

    /// Publishes from `last + 1` on; see the module docs.
    async fn pump(&mut self, last: u64, stop: &mut watch::Receiver<bool>) -> Result<(), Interrupt> {
        let mut head_rx = self.store.watch_head();
        let mut next = last + 1;
        // Messages in flight, oldest first, with the ack asked for (every
        // `ACK_EVERY`th message and the last one of each burst).
        let mut window: VecDeque<(u64, Option<PublishAckFuture>)> =
            VecDeque::with_capacity(self.ack_window);
        // Events read ahead, from `next` on: the log is read in batches, not
        // once per ack.
        let mut ahead: VecDeque<Outgoing> = VecDeque::with_capacity(READ_BATCH_MAX);
        let mut stopping = *stop.borrow();
        loop {
            let head = *head_rx.borrow_and_update();
            while window.len() < self.ack_window && next <= head {
                if ahead.is_empty() {
                    let want =
                        READ_BATCH_MAX.min(usize::try_from(head - next + 1).unwrap_or(usize::MAX));
                    ahead.extend(read_batch(&self.store, next, want).await?);
                }
                let event = ahead
                    .pop_front()
                    .expect("read_batch returns at least one event");
                assert_eq!(event.position, next, "the log is gap-free");
                // The last message before this loop stops always asks for
                // an ack, so every message in the window is covered by one.
                let want_ack = next.is_multiple_of(ACK_EVERY)
                    || next == head
                    || window.len() + 1 == self.ack_window;
                let ack = if want_ack {
                    Some(self.publish(&event).await?)
                } else {
                    self.publish_unacknowledged(&event).await?;
                    None
                };
                window.push_back((next, ack));
                next += 1;
            }
            // Up to the oldest message that asked for an ack: the ones before
            // it are confirmed with it.
            let mut acked = None;
            while let Some((position, ack)) = window.pop_front() {
                if let Some(ack) = ack {
                    acked = Some((position, ack));
                    break;
                }
            }
            let Some((position, ack)) = acked else {
                if stopping {
                    // Requests have stopped, so the head is final: drained.
                    return Ok(());
                }
                tokio::select! {
                    changed = head_rx.changed() => {
                        if changed.is_err() {
                            stopping = true;
                        }
                    }
                    _ = self.epoch.changed() => return Err(resync("reconnected")),
                    _ = stop.changed() => stopping = true,
                    () = tokio::time::sleep(self.check_every) => {
                        // Everything up to `next - 1` is acknowledged now.
                        self.check_idle_stream(next - 1).await?;
                    }
                }
                continue;
            };
            let ack = tokio::select! {
                ack = ack.into_future() => ack,
                _ = self.epoch.changed() => return Err(resync("reconnected")),
            };
            match ack {
                Ok(ack) if ack.sequence == position => self.metrics.set_published(position),
                Ok(ack) => {
                    return Err(resync(format!(
                        "event {position} acknowledged at sequence {} (duplicate: {})",
                        ack.sequence, ack.duplicate
                    )))
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(resync(format!(
                        "event {position}: wrong last sequence (already stored, or an earlier \
                         event is missing)"
                    )))
                }
                Err(e) => return Err(resync(format!("event {position}: {e}"))),
            }
        }
    }

    /// Sends one event; the returned future yields its ack.
    /// Publishes without asking for an ack: JetStream stores it or refuses
    /// it silently. A refusal cannot go unnoticed: the next message that
    /// asks for an ack expects this one's sequence before its own, so its
    /// ack fails (and the publisher resyncs) unless this one was stored.
    async fn publish_unacknowledged(&self, event: &Outgoing) -> Result<(), Interrupt> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event.event_id.to_string().as_str(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            (event.position - 1).to_string().as_str(),
        );
        self.js
            .client()
            .publish_with_headers(event.subject.clone(), headers, event.bytes.clone().into())
            .await
            .map_err(|e| resync(format!("publish event {}: {e}", event.position)))?;
        self.metrics.add_sent(1);
        Ok(())
    }

    async fn publish(&self, event: &Outgoing) -> Result<PublishAckFuture, Interrupt> {
        let message = PublishMessage::build()
            .payload(event.bytes.clone().into())
            .message_id(event.event_id.to_string())
            .expected_last_sequence(event.position - 1);
        let ack = self
            .js
            .send_publish(event.subject.clone(), message)
            .await
            .map_err(|e| resync(format!("publish event {}: {e}", event.position)))?;
        self.metrics.add_sent(1);
        Ok(ack)
    }
}

async fn sync(
    js: &jetstream::Context,
    store: &Store,
    settings: &StreamSettings,
) -> Result<u64, Interrupt> {
    let last = match stream::ensure(js, settings).await {
        Ok(last) => last,
        Err(EnsureError::Transient(e)) => return Err(resync(format!("reading the stream: {e}"))),
        Err(EnsureError::Permanent(e)) => return Err(Interrupt::Fatal(e)),
    };
    let head = store.head_position();
    if last > head {
        return Err(Interrupt::Fatal(NatsError::StreamAhead {
            stream_last: last,
            log_head: head,
        }));
    }
    if last > 0 {
        check_last_message(js, store, last).await?;
    }
    Ok(last)
}

/// The message at `sequence` must carry the log's event id for that position.
///
/// A message the stream no longer holds (expired by an operator's limits)
/// is not checked; any other failure to fetch it resyncs, so that a
/// foreign message never passes for want of an answer.
async fn check_last_message(
    js: &jetstream::Context,
    store: &Store,
    sequence: u64,
) -> Result<(), Interrupt> {
    let stream = js
        .get_stream_no_info(STREAM_NAME)
        .await
        .map_err(|e| resync(format!("stream handle: {e}")))?;
    let message = match stream.get_raw_message(sequence).await {
        Ok(m) => m,
        // Gone (an operator's limits expired it): nothing to compare.
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
            tracing::debug!(sequence, error = %e, "last stream message not checked");
            return Ok(());
        }
        // A timeout or an error is no answer: look again rather than let a
        // foreign message pass unchecked.
        Err(e) => return Err(resync(format!("reading stream message {sequence}: {e}"))),
    };
    let store = store.clone();
    let event = tokio::task::spawn_blocking(move || store.event(sequence))
        .await
        .map_err(|e| Interrupt::Fatal(NatsError::Task(e.to_string())))?
        .map_err(|e| Interrupt::Fatal(NatsError::Store(e)))?
        .expect("positions up to the head are in the log");
    let expected = event
        .envelope()
        .map_err(|e| Interrupt::Fatal(NatsError::Store(e)))?
        .event_id
        .to_string();
    let found = message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned());
    if found.as_deref() != Some(expected.as_str()) {
        return Err(Interrupt::Fatal(NatsError::StreamDiverged {
            sequence,
            expected,
            found,
        }));
    }
    Ok(())
}

/// Reads up to `limit` events from `from` off the async runtime.
async fn read_batch(store: &Store, from: u64, limit: usize) -> Result<Vec<Outgoing>, Interrupt> {
    let store = store.clone();
    let events = tokio::task::spawn_blocking(move || {
        store
            .read_from(from, limit)?
            .iter()
            .map(|event| event.outgoing())
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Interrupt::Fatal(NatsError::Task(e.to_string())))?
    .map_err(|e| Interrupt::Fatal(NatsError::Store(e)))?;
    assert!(
        !events.is_empty(),
        "the log has no event at {from} although its head is past it"
    );
    Ok(events)
}

/// The stream's last sequence checked against the log, for the start of
/// [`crate::run`]: `Ok(None)` when JetStream did not answer (retry later).
pub(crate) async fn check_stream(
    js: &jetstream::Context,
    store: &Store,
    settings: &StreamSettings,
) -> Result<Option<u64>, NatsError> {
    match sync(js, store, settings).await {
        Ok(last) => Ok(Some(last)),
        Err(Interrupt::Resync(reason)) => {
            tracing::warn!(%reason, "JetStream not ready; retrying");
            Ok(None)
        }
        Err(Interrupt::Fatal(e)) => Err(e),
    }
}
