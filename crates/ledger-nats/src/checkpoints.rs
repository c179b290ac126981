//! Signed checkpoints while serving: every [`ServeConfig::checkpoint_every_events`]
//! events, every [`ServeConfig::checkpoint_every`] when the log grew, and at
//! shutdown, the server signs a C2SP checkpoint of its durable log
//! (`ledger_audit::Checkpointer`), stores it as
//! `DATA_DIR/checkpoints/<size>.note`, and publishes the signed note on the
//! core NATS subject [`CHECKPOINT_SUBJECT`] (`tokens.checkpoint`). The newest
//! one answers requests on [`CHECKPOINT_LATEST_SUBJECT`]
//! (`tokens.checkpoint.latest`): `{"ok": true, "result": {"note", "size",
//! "root"}}`, or `not_found` before the first.
//!
//! A checkpoint covers the log up to the smaller of `Store::head_position`
//! (durable on this disk) and the publisher's acknowledged position (held by
//! the stream too). Signing past the stream would vouch for events that a
//! lost disk takes with it: `recover` rebuilds the log from the stream, the
//! recovered ledger appends different events at those positions, and the
//! same key would then sign two roots for one size, a fork that no auditor
//! could tell from tampering. For the same reason the note at shutdown is
//! made after the publisher drained, and not at all when the writer lease
//! was lost (another instance owns the log's future). Nothing is made when
//! that target has not grown since the last stored checkpoint (a restart
//! with nothing new publishes nothing).
//!
//! **Invariant**: checkpoint work (reading event hashes from sled, signing,
//! writing and fsyncing the note file) runs on the blocking pool
//! (`spawn_blocking`), one checkpoint at a time, never on the async workers
//! that serve commands, and a failure is logged and retried later, never
//! fatal to serving.

use crate::subjects::QUEUE_GROUP;
use crate::{Metrics, ServeConfig};
use async_nats::Client;
use futures_util::StreamExt;
use ledger_audit::{CheckpointStore, Checkpointer, SignedCheckpoint};
use ledger_core::{ErrorCode, Rejection, Timestamp};
use ledger_store::Store;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use ledger_audit::nats::{CHECKPOINT_LATEST_SUBJECT, CHECKPOINT_SUBJECT};

/// Default of [`ServeConfig::checkpoint_every_events`].
pub const EVERY_EVENTS_DEFAULT: u64 = 10_000;
/// Default of [`ServeConfig::checkpoint_every`].
pub const EVERY_DEFAULT: Duration = Duration::from_secs(60);
/// Pause after a failed checkpoint before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last note to reach the NATS server.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest checkpoint, shared with the responder.
type Latest = watch::Sender<Option<Arc<SignedCheckpoint>>>;

/// What the checkpoint tasks are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep making checkpoints.
    Running,
    /// Make the last checkpoint of what the stream holds, then end.
    WithLast,
    /// End without one: the lease was lost or serving failed.
    WithoutLast,
}

/// The running checkpoint tasks.
pub(crate) struct Checkpoints {
    maker: JoinHandle<()>,
    responder: Option<JoinHandle<()>>,
}

/// Starts the checkpoint tasks: subscribes to [`CHECKPOINT_LATEST_SUBJECT`]
/// (before returning, so a readiness round trip covers it) and spawns the
/// task that makes checkpoints until `stop` leaves [`Stop::Running`].
pub(crate) async fn start(
    client: &Client,
    store: &Store,
    config: &ServeConfig,
    stop: watch::Receiver<Stop>,
) -> Checkpoints {
    let (latest_tx, latest_rx) = watch::channel(None);
    let responder = match client
        .queue_subscribe(CHECKPOINT_LATEST_SUBJECT, QUEUE_GROUP.to_owned())
        .await
    {
        Ok(sub) => Some(tokio::spawn(respond(
            client.clone(),
            sub,
            latest_rx,
            stop.clone(),
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to {CHECKPOINT_LATEST_SUBJECT}");
            None
        }
    };
    let maker = Maker {
        client: client.clone(),
        store: store.clone(),
        metrics: config.metrics.clone(),
        every_events: config.checkpoint_every_events,
        every: config.checkpoint_every,
        latest: latest_tx,
        checkpointer: None,
        covered: 0,
        retry_at: None,
    };
    Checkpoints {
        maker: tokio::spawn(maker.run(stop)),
        responder,
    }
}

impl Checkpoints {
    /// Waits for the last checkpoint (once `stop` has left
    /// [`Stop::Running`]) to be stored and published, and stops answering
    /// requests.
    pub(crate) async fn finish(self) {
        if let Err(e) = self.maker.await {
            tracing::error!(error = %e, "the checkpoint task failed");
        }
        if let Some(r) = self.responder {
            r.abort();
            let _ = r.await;
        }
    }
}

struct Maker {
    client: Client,
    store: Store,
    /// Its published position bounds what a checkpoint may cover.
    metrics: Metrics,
    every_events: u64,
    every: Duration,
    latest: Latest,
    /// Opened on first use (it loads or creates the checkpoint key).
    checkpointer: Option<Checkpointer>,
    /// The size of the newest stored checkpoint.
    covered: u64,
    /// After a failure, no attempt before this.
    retry_at: Option<Instant>,
}

impl Maker {
    async fn run(mut self, mut stop: watch::Receiver<Stop>) {
        self.load_latest().await;
        // What the stream holds only grows after the log did, so its changes
        // are the count trigger's clock.
        let mut published_rx = self.metrics.watch_published();
        let period = (!self.every.is_zero()).then_some(self.every);
        let mut timer = period.map(|p| {
            let mut t = tokio::time::interval_at(Instant::now() + p, p);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        // A log that grew by N events while no server ran is checkpointed
        // once the publisher has put them in the stream.
        let mut due = self.due_by_count();
        loop {
            if *stop.borrow() != Stop::Running {
                break;
            }
            if due && self.retry_at.is_none_or(|t| Instant::now() >= t) {
                self.checkpoint().await;
                if let Some(t) = &mut timer {
                    t.reset();
                }
            }
            due = false;
            let tick = async {
                match &mut timer {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                changed = published_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    published_rx.borrow_and_update();
                    due = self.due_by_count();
                }
                () = tick => due = self.target() > self.covered,
            }
        }
        // Requests have stopped and the publisher has drained: the target is final.
        if *stop.borrow() == Stop::WithLast && self.target() > self.covered {
            self.checkpoint().await;
        }
        if !crate::connected(&self.client) {
            tracing::warn!(
                "NATS is unreachable: the last checkpoint note is stored, not published"
            );
            return;
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the last checkpoint note"),
            Err(_) => tracing::warn!("the last checkpoint note was not flushed in time"),
        }
    }

    fn due_by_count(&self) -> bool {
        self.every_events > 0 && self.target().saturating_sub(self.covered) >= self.every_events
    }

    /// The size the next checkpoint covers: durable here and in the stream.
    fn target(&self) -> u64 {
        self.store
            .head_position()
            .min(self.metrics.published_position())
    }

    /// Reads the newest stored checkpoint, for the responder and the count.
    async fn load_latest(&mut self) {
        let store = CheckpointStore::new(self.store.dir());
        match tokio::task::spawn_blocking(move || store.latest()).await {
            Ok(Ok(Some((_, signed)))) => {
                self.covered = signed.checkpoint.size;
                self.latest.send_replace(Some(Arc::new(signed)));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the stored checkpoints"),
            Err(e) => tracing::error!(error = %e, "reading the stored checkpoints failed"),
        }
    }

    /// Makes, stores and publishes one checkpoint of the durable log.
    async fn checkpoint(&mut self) {
        let store = self.store.clone();
        let target = self.target();
        // The published position can fall back (a NATS node that lost
        // acknowledged writes); nothing below the last checkpoint is signed.
        if target <= self.covered {
            return;
        }
        let opened = self.checkpointer.take();
        let now = Timestamp::new(chrono::Utc::now());
        let work = tokio::task::spawn_blocking(move || {
            let mut checkpointer = match opened {
                Some(c) => c,
                None => match Checkpointer::open(&store) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let made = checkpointer.checkpoint_at(target, now);
            (Some(checkpointer), made)
        });
        let (checkpointer, made) = match work.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the checkpoint work failed");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                return;
            }
        };
        self.checkpointer = checkpointer;
        let signed = match made {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, code = e.code(), "cannot make a checkpoint; retrying later");
                // A Checkpointer that failed midway may hold a partial tree.
                self.checkpointer = None;
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                return;
            }
        };
        self.retry_at = None;
        let size = signed.checkpoint.size;
        if size <= self.covered {
            return;
        }
        self.covered = size;
        tracing::info!(size, root = %signed.checkpoint.root_hex(), "checkpoint signed");
        let note = signed.note.clone();
        self.latest.send_replace(Some(Arc::new(signed)));
        if let Err(e) = self.client.publish(CHECKPOINT_SUBJECT, note.into()).await {
            tracing::warn!(error = %e, size, "cannot publish the checkpoint on {CHECKPOINT_SUBJECT}");
        }
    }
}

/// Answers [`CHECKPOINT_LATEST_SUBJECT`] until `stop` turns true.
async fn respond(
    client: Client,
    mut sub: async_nats::Subscriber,
    latest: watch::Receiver<Option<Arc<SignedCheckpoint>>>,
    mut stop: watch::Receiver<Stop>,
) {
    loop {
        if *stop.borrow() != Stop::Running {
            break;
        }
        let message = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => break,
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(reply) = message.reply else {
            continue;
        };
        let newest = latest.borrow().clone();
        let sent = match newest {
            Some(signed) => {
                let body = crate::reply::ok_body(&json!({
                    "note": signed.note,
                    "size": signed.checkpoint.size,
                    "root": signed.checkpoint.root_hex(),
                }));
                client.publish(reply, body.into()).await
            }
            None => {
                let rejection = Rejection::new(
                    ErrorCode::NotFound,
                    "no checkpoint yet: the server makes one every N events, every T seconds \
                     when the log grew, and at shutdown",
                );
                client
                    .publish_with_headers(
                        reply,
                        crate::reply::error_headers(&rejection),
                        crate::reply::error_body(&rejection).into(),
                    )
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot answer {CHECKPOINT_LATEST_SUBJECT}");
        }
    }
    let _ = sub.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subjects_stay_out_of_the_stream_and_the_request_namespaces() {
        assert!(!CHECKPOINT_SUBJECT.starts_with("tokens.evt."));
        assert!(!CHECKPOINT_LATEST_SUBJECT.starts_with("tokens.cmd."));
        assert!(!CHECKPOINT_LATEST_SUBJECT.starts_with("tokens.query."));
        let config = ServeConfig::default();
        assert_eq!(config.checkpoint_every_events, EVERY_EVENTS_DEFAULT);
        assert_eq!(config.checkpoint_every, EVERY_DEFAULT);
    }
}
