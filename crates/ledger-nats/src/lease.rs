//! The writer lease: at most one ledger instance serves a stream `TOKENS`.
//!
//! Every instance serves in one queue group, and each has its own log. Two
//! instances with different data dirs on one NATS would both acknowledge
//! commands; the stream accepts only one log's events (its expected-sequence
//! check), so the other's acknowledged commands would never reach a
//! subscriber. The stream check at start catches a log that differs from
//! the stream, but not two logs that are equal (both empty, or a copied
//! data dir). So, before it serves anything, an instance takes a lease: the
//! key `writer` in the JetStream KV bucket [`BUCKET`], created only if
//! absent, renewed by a revision-checked update every `ttl / 5`, and gone
//! `ttl` after its last renewal (the bucket's `max_age`) if its holder
//! dies. A clean stop deletes it, so the next instance starts at once; after
//! a crash the next one waits for the expiry.
//!
//! Commands are acknowledged only while the lease is known valid: until
//! two thirds of `ttl` after the last renewal was *sent* (the server starts
//! its clock no earlier), so an instance that cannot renew (NATS gone, the
//! process paused) stops appending well before another can take over.

use crate::{Metrics, NatsError};
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The JetStream KV bucket holding the lease.
pub const BUCKET: &str = "TOKENS_WRITER";
/// The lease's key in [`BUCKET`].
const KEY: &str = "writer";
/// How long a lease outlives its last renewal, by default.
pub const TTL_DEFAULT: Duration = Duration::from_secs(10);
/// The shortest lease accepted (nats-server expires messages on a timer).
pub const TTL_MIN: Duration = Duration::from_secs(1);
/// How often a waiting instance says who holds the lease.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(30);

/// Who holds the lease, as stored under the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// Random per process.
    pub instance: String,
    /// The holder's data dir, as it named it.
    pub data_dir: String,
    /// The holder's process id.
    pub pid: u32,
    /// When it took the lease (RFC 3339).
    pub since: String,
}

impl Holder {
    /// This process, serving `data_dir` (named absolute, for an operator
    /// reading it from another machine).
    pub fn this_process(data_dir: &std::path::Path) -> Holder {
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        Holder {
            instance: uuid::Uuid::new_v4().to_string(),
            data_dir: data_dir.display().to_string(),
            pid: std::process::id(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    fn describe(value: &[u8]) -> String {
        serde_json::from_slice::<Holder>(value)
            .map_or_else(|_| "an unknown holder".to_owned(), |h| h.to_string())
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "instance {} (pid {}, data dir {}, since {})",
            self.instance, self.pid, self.data_dir, self.since
        )
    }
}

/// Who holds the lease now, as the bucket says: `None` when nobody does
/// (no bucket, never taken, released, or expired).
pub async fn holder(js: &jetstream::Context) -> Result<Option<Holder>, String> {
    let Ok(kv) = js.get_key_value(BUCKET).await else {
        return Ok(None);
    };
    match kv.entry(KEY).await.map_err(|e| e.to_string())? {
        Some(entry) if entry.operation == kv::Operation::Put => {
            serde_json::from_slice(&entry.value)
                .map(Some)
                .map_err(|_| format!("the key {KEY} in {BUCKET} holds an unknown value"))
        }
        _ => Ok(None),
    }
}

/// Whether this instance may append now; cheap to clone and to check.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    base: Instant,
    /// Nanoseconds after `base` until which the lease is known valid.
    valid_until_ns: Arc<AtomicU64>,
}

impl Default for LeaseGuard {
    fn default() -> Self {
        LeaseGuard {
            base: Instant::now(),
            valid_until_ns: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LeaseGuard {
    /// True while the lease is known to be this instance's.
    pub fn is_valid(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.valid_until_ns.load(Ordering::Acquire)
    }

    /// `unavailable` unless [`LeaseGuard::is_valid`]: checked before anything is appended.
    pub(crate) fn check(&self) -> Result<(), ledger_core::Rejection> {
        if self.is_valid() {
            return Ok(());
        }
        Err(ledger_core::Rejection::new(
            ledger_core::ErrorCode::Unavailable,
            "this ledger instance cannot be sure it still holds the writer lease (NATS \
             unreachable for a while, or another instance took over); nothing was appended",
        ))
    }

    fn extend_to(&self, until: Instant) {
        let ns = u64::try_from(until.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX);
        self.valid_until_ns.store(ns, Ordering::Release);
    }

    fn revoke(&self) {
        self.valid_until_ns.store(0, Ordering::Release);
    }
}

/// A lease this instance holds.
pub(crate) struct Lease {
    kv: kv::Store,
    value: Vec<u8>,
    revision: u64,
    /// How long after a renewal is sent the lease counts as valid here.
    validity: Duration,
    renew_every: Duration,
}

/// Creates the bucket if needed; its `max_age` as the server has it (an
/// existing bucket keeps the TTL it was made with, and that is what counts).
async fn bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<(kv::Store, Duration), String> {
    let config = kv::Config {
        bucket: BUCKET.to_owned(),
        description: "tokenledger: which instance writes the stream TOKENS".to_owned(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        ..kv::Config::default()
    };
    let store = match js.create_key_value(config).await {
        Ok(store) => store,
        // Made before with another TTL or replicas: use it as it is.
        Err(created) => js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| format!("KV bucket {BUCKET}: {created}; {e}"))?,
    };
    let status = store
        .status()
        .await
        .map_err(|e| format!("KV bucket {BUCKET}: {e}"))?;
    let max_age = status.max_age();
    if max_age < TTL_MIN {
        return Err(format!(
            "KV bucket {BUCKET} has max_age {max_age:?}, but a lease must expire after at \
             least {TTL_MIN:?} (else a crashed holder would block every successor); delete \
             the bucket (nats kv rm {BUCKET}) and it is made again with --writer-lease-secs"
        ));
    }
    if max_age != ttl {
        tracing::warn!(
            bucket_max_age = ?max_age,
            configured = ?ttl,
            "the writer lease bucket was made with another TTL; it counts"
        );
    }
    Ok((store, max_age))
}

/// Takes the lease, waiting while another instance holds it (saying who,
/// every [`WAITING_LOG_EVERY`]) or while NATS does not answer.
pub(crate) async fn acquire(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
    holder: &Holder,
    metrics: &Metrics,
) -> Lease {
    let guard = metrics.lease_guard();
    let value = serde_json::to_vec(holder).expect("a holder serializes");
    let mut said: Option<Instant> = None;
    loop {
        let (why, pause) = match bucket(js, ttl, replicas).await {
            Err(e) => (e, Duration::from_secs(1)),
            Ok((kv, max_age)) => {
                let renew_every = max_age / 5;
                let sent = Instant::now();
                match kv.create(KEY, value.clone().into()).await {
                    Ok(revision) => {
                        let validity = max_age * 2 / 3;
                        guard.extend_to(sent + validity);
                        if said.is_some() {
                            tracing::info!("took the writer lease");
                        }
                        metrics.set_waiting_for_lease(false);
                        return Lease {
                            kv,
                            value,
                            revision,
                            validity,
                            renew_every,
                        };
                    }
                    Err(e) => {
                        let why = match kv.entry(KEY).await {
                            Ok(Some(entry)) if entry.operation == kv::Operation::Put => format!(
                                "another ledger instance holds the writer lease: {}",
                                Holder::describe(&entry.value)
                            ),
                            _ => format!("cannot take the writer lease: {e}"),
                        };
                        (why, renew_every)
                    }
                }
            }
        };
        metrics.set_waiting_for_lease(true);
        if said.is_none_or(|t| t.elapsed() >= WAITING_LOG_EVERY) {
            tracing::warn!(
                reason = %why,
                "not serving until this instance holds the writer lease (it expires at most \
                 the lease TTL after its holder stops)"
            );
            said = Some(Instant::now());
        }
        tokio::time::sleep(pause).await;
    }
}

/// Checks the stream against the log, as [`crate::run`] does at start:
/// `Ok(Some)` when it holds nothing but this log's events, `Ok(None)` when
/// JetStream does not answer, `Err` when it is ahead of the log or diverged.
pub(crate) type StreamCheck = Box<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Option<u64>, NatsError>>
        + Send
        + Sync,
>;

impl Lease {
    /// Renews until `stop` turns true (then returns the lease, to release)
    /// or until another instance is found holding it (then the guard is
    /// revoked and the error says who).
    ///
    /// `stream_is_ours` is asked before a lease that expired is taken again
    /// (see [`Lease::recover`]).
    pub(crate) async fn hold(
        mut self,
        guard: LeaseGuard,
        mut stop: watch::Receiver<bool>,
        stream_is_ours: StreamCheck,
    ) -> Result<Lease, NatsError> {
        let mut tick = tokio::time::interval(self.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return Ok(self),
            }
            let sent = Instant::now();
            let renewed = match self
                .kv
                .update(KEY, self.value.clone().into(), self.revision)
                .await
            {
                Ok(revision) => Ok(revision),
                Err(e) => self.recover(e.to_string(), &stream_is_ours).await,
            };
            match renewed {
                Ok(revision) => {
                    self.revision = revision;
                    guard.extend_to(sent + self.validity);
                    if failing.take().is_some() {
                        tracing::info!("the writer lease is renewed again");
                    }
                }
                Err(Some(lost)) => {
                    guard.revoke();
                    return Err(lost);
                }
                Err(None) => {
                    if failing.is_none() {
                        tracing::warn!(
                            "cannot renew the writer lease; commands are refused once it may \
                             have expired"
                        );
                        failing = Some(sent);
                    }
                }
            }
        }
    }

    /// After a failed renewal: `Ok` with a new revision if the lease expired
    /// with nobody else taking it (NATS was gone longer than the TTL) and is
    /// ours again, `Err(Some)` if another instance holds or held it, and
    /// `Err(None)` if NATS does not say (retry at the next tick).
    ///
    /// An absent key does not prove that nobody held it: another instance
    /// may have taken it, appended, and released it, and its delete marker
    /// expires too. So the stream is checked against this log first, as at
    /// start: if anyone else published, it is ahead of the log or diverged
    /// from it, and the lease is lost.
    async fn recover(
        &self,
        failed: String,
        stream_is_ours: &StreamCheck,
    ) -> Result<u64, Option<NatsError>> {
        match self.kv.entry(KEY).await {
            Ok(Some(entry)) if entry.revision == self.revision => {
                tracing::debug!(error = %failed, "renewing the writer lease failed; retrying");
                Err(None)
            }
            // Another holder's value, or its delete marker (it released a
            // lease it had taken while ours had expired): not ours anymore.
            Ok(Some(entry)) => Err(Some(NatsError::LeaseLost {
                holder: match entry.operation {
                    kv::Operation::Put => Holder::describe(&entry.value),
                    _ => "another instance, which has released it since".to_owned(),
                },
            })),
            Ok(None) => match stream_is_ours().await {
                Ok(Some(_)) => self.take_again().await,
                Ok(None) => Err(None),
                Err(e) => Err(Some(NatsError::LeaseLost {
                    holder: format!(
                        "another instance, which held it while NATS was unreachable and \
                         published to the stream ({e})"
                    ),
                })),
            },
            Err(_) => Err(None),
        }
    }

    async fn take_again(&self) -> Result<u64, Option<NatsError>> {
        match self.kv.create(KEY, self.value.clone().into()).await {
            Ok(revision) => {
                tracing::warn!(
                    "the writer lease had expired (NATS was unreachable for longer than its \
                         TTL) and nobody took it: taken again"
                );
                Ok(revision)
            }
            Err(_) => Err(None),
        }
    }

    /// Gives the lease up, so that the next instance starts at once.
    pub(crate) async fn release(self) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(KEY, Some(self.revision))
            .await
        {
            tracing::warn!(error = %e, "could not release the writer lease; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_until_extended_and_after_revocation() {
        let guard = LeaseGuard::default();
        let refused = guard.check().unwrap_err();
        assert_eq!(refused.code, ledger_core::ErrorCode::Unavailable);
        assert!(refused.message.contains("nothing was appended"));
        guard.extend_to(Instant::now() + Duration::from_secs(3600));
        assert!(guard.check().is_ok());
        let clone = guard.clone();
        guard.revoke();
        assert!(!clone.is_valid(), "clones share the validity");
        guard.extend_to(Instant::now());
        assert!(!guard.is_valid(), "valid strictly before the deadline");
    }

    /// The key absent after an outage does not prove nobody held the lease:
    /// it is taken again only when the stream is still this log's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_absent_key_is_taken_again_only_if_the_stream_is_ours() {
        let nats = ledger_testkit::NatsServer::start().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        let holder = Holder::this_process(std::path::Path::new("/tmp/a"));
        let lease = acquire(&js, TTL_MIN, 1, &holder, &Metrics::default()).await;
        // Gone, marker and all: as after another holder's release expired.
        lease.kv.purge(KEY).await.unwrap();
        let absent = ledger_testkit::wait_for_async(Duration::from_secs(30), || async {
            matches!(lease.kv.entry(KEY).await, Ok(None))
        })
        .await;
        assert!(absent, "the purge marker never expired");

        let published_elsewhere: StreamCheck =
            Box::new(|| Box::pin(async { Err(NatsError::Config("stream_ahead (test)".into())) }));
        match lease
            .recover("renewal failed".into(), &published_elsewhere)
            .await
        {
            Err(Some(NatsError::LeaseLost { holder })) => {
                assert!(holder.contains("stream_ahead"), "{holder}")
            }
            other => panic!("taken again over a stream someone else wrote: {other:?}"),
        }
        assert!(
            matches!(lease.kv.entry(KEY).await, Ok(None)),
            "the key was created"
        );

        let not_answering: StreamCheck = Box::new(|| Box::pin(async { Ok(None) }));
        assert!(matches!(
            lease.recover("renewal failed".into(), &not_answering).await,
            Err(None)
        ));
        let ours: StreamCheck = Box::new(|| Box::pin(async { Ok(Some(0)) }));
        let revision = lease.recover("renewal failed".into(), &ours).await.unwrap();
        let entry = lease.kv.entry(KEY).await.unwrap().expect("taken again");
        assert_eq!(entry.revision, revision);
    }

    #[test]
    fn a_holder_reads_back_and_an_unknown_value_is_described_as_such() {
        let h = Holder::this_process(std::path::Path::new("/var/lib/tokenledger"));
        let text = Holder::describe(&serde_json::to_vec(&h).unwrap());
        assert!(text.contains(&h.instance) && text.contains("/var/lib/tokenledger"));
        assert_eq!(Holder::describe(b"not json"), "an unknown holder");
    }
}
