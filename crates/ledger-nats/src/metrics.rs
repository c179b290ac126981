//! Counters of a running server, readable from another task (tests, `serve`'s logs).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lease::LeaseGuard;

/// A shared handle on the counters of one [`crate::run`]; clone it before
/// handing the config over, then read it while the server runs.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Read by the status and waited on by the checkpoint task.
    published_position: tokio::sync::watch::Sender<u64>,
    messages_sent: AtomicU64,
    resyncs: AtomicU64,
    publisher_running: AtomicBool,
    last_resync_reason: Mutex<Option<String>>,
    commands_accepted: AtomicU64,
    requests_rejected: AtomicU64,
    queries_answered: AtomicU64,
    reconnects: AtomicU64,
    ready: AtomicBool,
    /// Valid while this instance holds the writer lease.
    lease: LeaseGuard,
    waiting_for_lease: AtomicBool,
}

/// What the publisher has done so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherStatus {
    /// Highest position whose publication JetStream acknowledged (at that
    /// same stream sequence). Every position below it is in the stream too.
    pub published_position: u64,
    /// Messages handed to JetStream, retries included.
    pub messages_sent: u64,
    /// Times the publisher dropped its window and re-read the stream's last sequence.
    pub resyncs: u64,
    /// Why it last did so.
    pub last_resync_reason: Option<String>,
    /// True between the publisher's start and its end.
    pub running: bool,
}

/// Counters of the request side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCounters {
    /// Commands answered `ok: true` (idempotent replays included).
    pub commands_accepted: u64,
    /// Requests (commands or queries) answered `ok: false`.
    pub requests_rejected: u64,
    /// Queries answered `ok: true`.
    pub queries_answered: u64,
    /// Times the NATS connection was re-established after the first connect.
    pub reconnects: u64,
}

impl Metrics {
    /// A snapshot of the publisher's progress.
    pub fn publisher_status(&self) -> PublisherStatus {
        let i = &self.inner;
        PublisherStatus {
            published_position: *i.published_position.borrow(),
            messages_sent: i.messages_sent.load(Ordering::Relaxed),
            resyncs: i.resyncs.load(Ordering::Relaxed),
            last_resync_reason: i.last_resync_reason.lock().expect("metrics lock").clone(),
            running: i.publisher_running.load(Ordering::Acquire),
        }
    }

    /// Highest position known to be in the stream at its own sequence.
    pub fn published_position(&self) -> u64 {
        *self.inner.published_position.borrow()
    }

    /// True while every endpoint is subscribed and the server confirmed it.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// True while this instance knows it holds the writer lease (and so
    /// may append).
    pub fn holds_writer_lease(&self) -> bool {
        self.inner.lease.is_valid()
    }

    /// True while the server waits for another instance's writer lease to
    /// end before serving (see [`crate::lease`]).
    pub fn is_waiting_for_lease(&self) -> bool {
        self.inner.waiting_for_lease.load(Ordering::Acquire)
    }

    pub(crate) fn lease_guard(&self) -> LeaseGuard {
        self.inner.lease.clone()
    }

    pub(crate) fn set_waiting_for_lease(&self, waiting: bool) {
        self.inner
            .waiting_for_lease
            .store(waiting, Ordering::Release);
    }

    /// A snapshot of the request counters.
    pub fn requests(&self) -> RequestCounters {
        let i = &self.inner;
        RequestCounters {
            commands_accepted: i.commands_accepted.load(Ordering::Relaxed),
            requests_rejected: i.requests_rejected.load(Ordering::Relaxed),
            queries_answered: i.queries_answered.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    pub(crate) fn set_published(&self, position: u64) {
        self.inner.published_position.send_if_modified(|p| {
            let changed = *p != position;
            *p = position;
            changed
        });
    }

    /// Changes of [`Metrics::published_position`].
    pub(crate) fn watch_published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.published_position.subscribe()
    }

    pub(crate) fn add_sent(&self, n: u64) {
        self.inner.messages_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn resynced(&self, reason: &str) {
        self.inner.resyncs.fetch_add(1, Ordering::Relaxed);
        *self.inner.last_resync_reason.lock().expect("metrics lock") = Some(reason.to_owned());
    }

    pub(crate) fn set_publisher_running(&self, running: bool) {
        self.inner
            .publisher_running
            .store(running, Ordering::Release);
    }

    pub(crate) fn command_accepted(&self) {
        self.inner.commands_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_rejected(&self) {
        self.inner.requests_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn query_answered(&self) {
        self.inner.queries_answered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}
