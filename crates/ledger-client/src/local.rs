//! A verifier for gateways: token strings checked in memory, no round trip.
//!
//! [`LocalVerifier::start`] fetches the JWKS, takes a snapshot of every client
//! token's status (`tokens.snapshot`, paged; each page says which log
//! position it is consistent with), then follows the JetStream stream from
//! the first page's position + 1. Events the snapshot already covers are
//! recognised by the token's version and skipped, so nothing between the
//! snapshot and the stream is missed or applied twice.
//!
//! [`LocalVerifier::verify`] applies the same rules as the ledger's
//! `tokens.verify` ([`ledger_verify::decide`]): the signature against the
//! JWKS keys (EdDSA only: HMAC keys are never published, so HS256 strings
//! are inactive here), the JWT's `exp`, then the token's cached status.
//! A `token_revoked`, `token_trashed`, `client_token_rotated`, `token_purged`
//! or `client_token_updated` event changes the status the moment it is
//! applied, so the old string stops verifying then.
//!
//! A string whose `kid` the key set does not know, or an event naming such
//! a key, triggers a JWKS refresh (at most one per [`JWKS_REFRESH_INTERVAL`];
//! a request inside the interval is served at its end, not dropped).
//!
//! A verified signature is cached per exact string: it stays valid as long
//! as its key is in the key set (the cache is cleared when a refresh drops a
//! key); `exp` and the token's status are re-checked on every call.
//!
//! An event that fails its checks (a tampered or undecodable message), or
//! events gone from the stream before it read them (an operator's retention
//! limits on `TOKENS`), make the verifier start over from a fresh snapshot:
//! it cannot know which tokens they were about, and skipping them could skip
//! a revocation.
//! Meanwhile, and while NATS is unreachable, it answers from what it has.
//!
//! **Freshness.** A silent stream cannot tell "nothing happened" from "I am
//! cut off", so every [`VerifierOptions::probe_every`] the verifier proves
//! it holds every event committed before the probe began: it asks the
//! ledger for its head position (or, when no ledger is running, the stream
//! for its last sequence; a ledger that is there but does not answer in
//! time fails the probe), then asks the stream for the first event
//! of its scope after the last one applied. None up to the head (and the
//! stream holds the head): the verifier was complete at the probe's start.
//! [`LocalVerifier::staleness`] is the time since the last such proof; it
//! grows while NATS is unreachable, while the ledger's publication is
//! behind (a revocation acknowledged but not yet on the stream), or while
//! the verifier lags. With [`VerifierOptions::max_staleness`] set, no
//! string is accepted past that bound: [`Reason::Stale`] (fail closed);
//! without, it answers from what it has (fail open). (A refusal is given
//! with its own reason either way: only an acceptance could rest on a
//! revocation not yet seen.) A ledger that is down
//! does not make the verifier stale: nothing can be revoked then, and the
//! stream's last sequence stands in for the ledger's head.

use crate::subscribe::{EventFilter, StartFrom, Subscription};
use crate::{Client, ClientError};
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::StreamExt;
use ledger_core::event::STREAM_NAME;
use ledger_core::{Envelope, EventData};
use ledger_verify::jwks::KeySet;
use ledger_verify::{
    decide, subject, Active, Applied, Introspection, Reason, TokenStatus, VerifiedJwt,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use uuid::Uuid;

/// Least time between two JWKS fetches.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Verified signatures kept, at most; the cache is cleared beyond that.
pub const SIGNATURE_CACHE_MAX: usize = 65_536;
/// Statuses per snapshot page.
const SNAPSHOT_PAGE: usize = 1000;
/// How often, by default, a verifier proves it holds every event.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Probes failed in a row before the verifier logs that it is behind.
const BEHIND_WARN_AFTER: u32 = 3;

/// How a [`LocalVerifier`] runs; the default is what [`LocalVerifier::start`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Statuses per snapshot page (1 to 1000).
    pub page: usize,
    /// How often it proves it holds every event ([`LocalVerifier::staleness`]).
    pub probe_every: Duration,
    /// Past this staleness no string is accepted: one that would be active
    /// is refused with [`Reason::Stale`] (fail closed); `None` answers from
    /// what it has, however old.
    pub max_staleness: Option<Duration>,
}

impl Default for VerifierOptions {
    fn default() -> VerifierOptions {
        VerifierOptions {
            page: SNAPSHOT_PAGE,
            probe_every: PROBE_EVERY,
            max_staleness: None,
        }
    }
}

/// Verifies client token strings locally; see the [module docs](self).
///
/// Dropping it stops following the stream.
pub struct LocalVerifier {
    inner: Arc<Inner>,
    follower: tokio::task::JoinHandle<()>,
    prober: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LocalVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalVerifier")
            .field("workspace", &self.inner.workspace)
            .field("position", &self.position())
            .field("tokens", &self.token_count())
            .field("staleness", &self.staleness())
            .finish_non_exhaustive()
    }
}

impl Drop for LocalVerifier {
    fn drop(&mut self) {
        self.follower.abort();
        self.prober.abort();
    }
}

struct Inner {
    client: Client,
    workspace: Option<String>,
    /// Statuses per snapshot page.
    page: usize,
    keys: RwLock<Arc<KeySet>>,
    tokens: RwLock<HashMap<Uuid, TokenStatus>>,
    signatures: RwLock<HashMap<Box<str>, Arc<VerifiedJwt>>>,
    /// Last log position applied (the snapshot's, then each event's).
    position: watch::Sender<u64>,
    /// The stream subject of every event in scope (all, or the workspace's).
    scope: String,
    /// Epoch ms at which the verifier last provably held every event.
    confirmed_ms: AtomicI64,
    /// [`VerifierOptions::max_staleness`] in ms.
    max_staleness_ms: Option<i64>,
    probe_every: Duration,
    /// When the JWKS was last fetched.
    refreshed: Mutex<Instant>,
    /// A refresh is scheduled or running.
    refresh_pending: AtomicBool,
    /// The probe found the log behind what was applied: start over.
    reset: tokio::sync::Notify,
    /// The last head the ledger itself has told (its snapshot's position,
    /// then each probe's answer): what it acknowledged, published or not.
    told_head: AtomicU64,
    runtime: tokio::runtime::Handle,
}

impl LocalVerifier {
    /// Loads the JWKS and a snapshot (of one workspace, or all), then
    /// follows the stream in a task of the current tokio runtime.
    ///
    /// Fails when the ledger does not answer or the stream does not exist.
    pub async fn start(
        client: Client,
        workspace: Option<&str>,
    ) -> Result<LocalVerifier, ClientError> {
        LocalVerifier::start_paged(client, workspace, SNAPSHOT_PAGE).await
    }

    /// [`LocalVerifier::start`] with snapshot pages of `page` statuses (1 to 1000).
    pub async fn start_paged(
        client: Client,
        workspace: Option<&str>,
        page: usize,
    ) -> Result<LocalVerifier, ClientError> {
        let options = VerifierOptions {
            page,
            ..VerifierOptions::default()
        };
        LocalVerifier::start_with(client, workspace, options).await
    }

    /// [`LocalVerifier::start`] with other [`VerifierOptions`].
    pub async fn start_with(
        client: Client,
        workspace: Option<&str>,
        options: VerifierOptions,
    ) -> Result<LocalVerifier, ClientError> {
        let keys = fetch_keys(&client).await?;
        let workspace = workspace.map(str::to_owned);
        let scope = scope(workspace.as_deref())?;
        let sent = now_ms();
        let (tokens, position) = snapshot(&client, workspace.as_deref(), options.page).await?;
        let subscription = follow(&client, workspace.as_deref(), position).await?;
        let inner = Arc::new(Inner {
            client,
            workspace,
            page: options.page,
            keys: RwLock::new(Arc::new(keys)),
            tokens: RwLock::new(tokens),
            signatures: RwLock::new(HashMap::new()),
            position: watch::channel(position).0,
            scope,
            // The snapshot holds everything committed before it was asked for.
            confirmed_ms: AtomicI64::new(sent),
            max_staleness_ms: options
                .max_staleness
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            probe_every: options.probe_every.max(Duration::from_millis(1)),
            refreshed: Mutex::new(Instant::now()),
            refresh_pending: AtomicBool::new(false),
            reset: tokio::sync::Notify::new(),
            told_head: AtomicU64::new(position),
            runtime: tokio::runtime::Handle::current(),
        });
        let follower = tokio::spawn(run(inner.clone(), subscription));
        let prober = tokio::spawn(probe(inner.clone()));
        Ok(LocalVerifier {
            inner,
            follower,
            prober,
        })
    }

    /// The caller's answer: `Active` with the claims, or `Inactive`.
    pub fn verify(&self, token: &str) -> Introspection {
        Introspection::from_outcome(self.check(token))
    }

    /// The answer with the reason of a refusal, for the gateway's own log.
    pub fn check(&self, token: &str) -> Result<Active, Reason> {
        self.check_at(token, now_ms())
    }

    /// [`LocalVerifier::check`] at `now_ms` (epoch ms).
    pub fn check_at(&self, token: &str, now_ms: i64) -> Result<Active, Reason> {
        let jwt = self.inner.signature(token)?;
        if self
            .inner
            .workspace
            .as_deref()
            .is_some_and(|ws| ws != jwt.claims.ws)
        {
            return Err(Reason::OtherWorkspace);
        }
        let id = subject(&jwt.claims)?;
        let outcome = {
            let tokens = self.inner.tokens.read().expect("tokens lock");
            let status = tokens.get(&id).ok_or(Reason::NotFound)?;
            decide(&jwt, status, now_ms)
        };
        // A refusal stays true however stale the statuses are; only an
        // acceptance could rest on a revocation not yet seen.
        match (outcome, self.inner.max_staleness_ms) {
            (Ok(_), Some(max)) if now_ms.saturating_sub(self.confirmed_at_ms()) > max => {
                Err(Reason::Stale)
            }
            (outcome, _) => outcome,
        }
    }

    /// The last log position applied.
    pub fn position(&self) -> u64 {
        *self.inner.position.borrow()
    }

    /// Epoch ms of the last moment at which the verifier provably held
    /// every event committed before it (see the [module docs](self)).
    pub fn confirmed_at_ms(&self) -> i64 {
        self.inner.confirmed_ms.load(Ordering::Acquire)
    }

    /// Time since [`LocalVerifier::confirmed_at_ms`]: how much of the
    /// ledger's recent history the verifier may be missing.
    pub fn staleness(&self) -> Duration {
        Duration::from_millis(u64::try_from(now_ms() - self.confirmed_at_ms()).unwrap_or(0))
    }

    /// A receiver of [`LocalVerifier::position`], notified after each event is applied.
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.inner.position.subscribe()
    }

    /// Waits until every event up to `position` that concerns the verifier
    /// has been applied (events of other workspaces or types never come, so
    /// wait only for positions of events you know it receives).
    pub async fn wait_for(&self, position: u64) {
        let mut rx = self.watch_position();
        let _ = rx.wait_for(|p| *p >= position).await;
    }

    /// Client tokens known.
    pub fn token_count(&self) -> usize {
        self.inner.tokens.read().expect("tokens lock").len()
    }

    /// The kids of the current key set.
    pub fn kids(&self) -> Vec<String> {
        self.inner.keys.read().expect("keys lock").kids()
    }

    /// Fetches the JWKS now (not rate-limited).
    pub async fn refresh_keys(&self) -> Result<(), ClientError> {
        self.inner.refresh().await
    }
}

impl Inner {
    /// A string's verified header and claims, from the cache or the key set.
    fn signature(self: &Arc<Self>, token: &str) -> Result<Arc<VerifiedJwt>, Reason> {
        if let Some(hit) = self.signatures.read().expect("lock").get(token) {
            return Ok(hit.clone());
        }
        let keys = self.keys.read().expect("keys lock").clone();
        let jwt = match keys.verify(token) {
            Ok(jwt) => Arc::new(jwt),
            Err(Reason::UnknownKid) => {
                // A rotation the key set has not seen yet, or a forgery: ask once.
                if ledger_verify::jwks::peek_kid(token).is_some() {
                    self.request_refresh();
                }
                return Err(Reason::UnknownKid);
            }
            Err(r) => return Err(r),
        };
        let mut cache = self.signatures.write().expect("lock");
        if cache.len() >= SIGNATURE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.into(), jwt.clone());
        Ok(jwt)
    }

    /// Schedules a JWKS refresh, no sooner than [`JWKS_REFRESH_INTERVAL`] after the last.
    fn request_refresh(self: &Arc<Self>) {
        if self.refresh_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        self.runtime.spawn(async move {
            let due = *inner.refreshed.lock().expect("lock") + JWKS_REFRESH_INTERVAL;
            tokio::time::sleep_until(due.into()).await;
            if let Err(e) = inner.refresh().await {
                tracing::warn!(error = %e, "cannot refresh the JWKS");
            }
            inner.refresh_pending.store(false, Ordering::Release);
        });
    }

    async fn refresh(&self) -> Result<(), ClientError> {
        *self.refreshed.lock().expect("lock") = Instant::now();
        let fresh = fetch_keys(&self.client).await?;
        let mut keys = self.keys.write().expect("keys lock");
        let dropped = keys.kids().iter().any(|k| !fresh.contains(k));
        *keys = Arc::new(fresh);
        if dropped {
            // A key left the set: what it verified no longer counts.
            self.signatures.write().expect("lock").clear();
        }
        Ok(())
    }

    /// Folds one event into the statuses.
    fn apply(self: &Arc<Self>, env: &Envelope) {
        let new_kid = match &env.data {
            EventData::ClientTokenIssued(e) => Some(&e.jwt.kid),
            EventData::ClientTokenRotated(e) => Some(&e.jwt.kid),
            _ => None,
        };
        {
            let mut tokens = self.tokens.write().expect("tokens lock");
            match tokens.get_mut(&env.token_id) {
                Some(status) => match status.apply(env) {
                    Applied::Applied | Applied::AlreadySeen => {}
                    Applied::Purged => {
                        tokens.remove(&env.token_id);
                    }
                    Applied::Gap => {
                        tracing::warn!(
                            token_id = %env.token_id,
                            position = env.position,
                            version = env.version,
                            "an event is missing before this one: the token is dropped until a \
                             fresh snapshot"
                        );
                        tokens.remove(&env.token_id);
                        // Refusing the token is safe; refusing it for good is not.
                        self.reset.notify_one();
                    }
                },
                None => {
                    if env.version == 1 {
                        if let Some(status) = TokenStatus::from_issued(env) {
                            tokens.insert(env.token_id, status);
                        }
                    }
                }
            }
        }
        if new_kid.is_some_and(|kid| !self.keys.read().expect("keys lock").contains(kid)) {
            self.request_refresh();
        }
        self.position.send_replace(env.position);
    }

    /// Replaces every status with a fresh snapshot; returns its position.
    async fn resync(&self) -> Result<u64, ClientError> {
        let sent = now_ms();
        let (tokens, position) =
            snapshot(&self.client, self.workspace.as_deref(), self.page).await?;
        *self.tokens.write().expect("tokens lock") = tokens;
        self.position.send_replace(position);
        // A fresh start: after a reset the old history's head means nothing.
        self.told_head.store(position, Ordering::Release);
        self.confirmed_ms.fetch_max(sent, Ordering::AcqRel);
        Ok(position)
    }

    /// Proves that every event committed before the call is applied, or
    /// says why it cannot, by `until`.
    async fn in_sync(&self, until: Instant) -> Result<(), String> {
        let stream = self
            .client
            .js
            .get_stream_no_info(STREAM_NAME)
            .await
            .map_err(|e| format!("stream {STREAM_NAME}: {e}"))?;
        let last_sequence = || async {
            stream
                .get_info()
                .await
                .map(|info| info.state.last_sequence)
                .map_err(|e| format!("NATS does not answer for stream {STREAM_NAME}: {e}"))
        };
        // The ledger's head covers what it committed but has not published
        // yet. When no ledger is there at all (no responders: it is down,
        // and nothing can be revoked while it is), the stream's end is the
        // head, unless the ledger told of a higher one before it went: then
        // it went down with acknowledged events unpublished (a revocation
        // among them, maybe), and the stream's end proves nothing. A ledger
        // that is there but slow proves nothing either: that is when
        // publication lags most, so the probe fails and staleness grows.
        // Read before asking: events applied while the answer travels are
        // past the head it names, and must not look like a log gone back.
        let applied_before = *self.position.borrow();
        let (head, published) = match self.client.head().await {
            Ok(head) => {
                // The live answer, not the highest: a ledger recovered from
                // its stream may honestly be behind what it said before.
                self.told_head.store(head, Ordering::Release);
                (head, false)
            }
            Err(ClientError::NoResponders { .. }) => {
                let last = last_sequence().await?;
                let told = self.told_head.load(Ordering::Acquire);
                if told > last {
                    return Err(format!(
                        "the ledger is down, and it told of position {told} while the stream \
                         ends at {last}: it acknowledged events that are not published"
                    ));
                }
                (last, true)
            }
            Err(e) => return Err(format!("the ledger does not tell its head: {e}")),
        };
        if applied_before > head {
            // Events this verifier applied are not in the log (or stream)
            // any more: it was restored from a backup, or the stream was
            // recreated from another log. The subscription waits past them
            // for positions the new history may take much later, and
            // revocations in between would never arrive: start over.
            self.reset.notify_one();
            return Err(format!(
                "the log's head {head} is behind the position {applied_before} this verifier applied: \
                 the log or the stream was reset; starting over from a snapshot"
            ));
        }
        loop {
            let applied = *self.position.borrow();
            if applied >= head {
                return Ok(());
            }
            let next = stream
                .raw_message_builder()
                .sequence(applied + 1)
                .next_by_subject(self.scope.clone())
                .send()
                .await;
            match next {
                // Nothing of ours up to the head, and the stream is past it.
                Ok(m) if m.sequence > head => return Ok(()),
                Ok(m) => {
                    let mut rx = self.position.subscribe();
                    let applied = rx.wait_for(|p| *p >= m.sequence);
                    if tokio::time::timeout_at(until.into(), applied)
                        .await
                        .is_err()
                    {
                        return Err(format!(
                            "the event at position {} is not applied yet (applied up to {})",
                            m.sequence,
                            *self.position.borrow()
                        ));
                    }
                }
                Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => {
                    if published {
                        return Ok(());
                    }
                    let last = last_sequence().await?;
                    return if last >= head {
                        Ok(())
                    } else {
                        Err(format!(
                            "the ledger is at position {head} but the stream at {last}: \
                             events are not published yet"
                        ))
                    };
                }
                Err(e) => return Err(format!("reading stream {STREAM_NAME}: {e}")),
            }
        }
    }
}

/// Proves the verifier in sync every [`VerifierOptions::probe_every`];
/// logs when it has not been for a while, and when it is again.
async fn probe(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.probe_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = 0u32;
    loop {
        tick.tick().await;
        let sent = now_ms();
        let until = Instant::now() + inner.probe_every.max(Duration::from_millis(100));
        match inner.in_sync(until).await {
            Ok(()) => {
                inner.confirmed_ms.fetch_max(sent, Ordering::AcqRel);
                if failed >= BEHIND_WARN_AFTER {
                    tracing::info!("the local verifier holds every event again");
                }
                failed = 0;
            }
            Err(why) => {
                failed += 1;
                if failed == BEHIND_WARN_AFTER {
                    tracing::warn!(
                        reason = %why,
                        "the local verifier cannot prove it holds every event: it may miss a revocation"
                    );
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The one stream subject of every event the verifier follows.
fn scope(workspace: Option<&str>) -> Result<String, ClientError> {
    followed(workspace).subject()
}

async fn fetch_keys(client: &Client) -> Result<KeySet, ClientError> {
    let jwks = client.jwks().await?;
    KeySet::from_jwks(&jwks).map_err(|e| ClientError::MalformedReply {
        subject: crate::verify::JWKS.to_owned(),
        message: e.to_string(),
    })
}

/// Every page of the snapshot; the position of the first page.
async fn snapshot(
    client: &Client,
    workspace: Option<&str>,
    page: usize,
) -> Result<(HashMap<Uuid, TokenStatus>, u64), ClientError> {
    let mut tokens = HashMap::new();
    let mut first = None;
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .snapshot(workspace, cursor.as_deref(), Some(page))
            .await?;
        first.get_or_insert(page.position);
        for status in page.tokens {
            tokens.insert(status.token_id, status);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok((tokens, first.unwrap_or(0)))
}

/// Follows every event in scope, not only those that change a status: each
/// advances the position, which is how a probe knows none is missing.
async fn follow(
    client: &Client,
    workspace: Option<&str>,
    position: u64,
) -> Result<Subscription, ClientError> {
    client
        .subscribe(followed(workspace), StartFrom::Position(position + 1))
        .await
}

/// Every event of the workspace (or all): the subscription and the
/// probe's [`scope`] must cover the same events.
fn followed(workspace: Option<&str>) -> EventFilter {
    match workspace {
        Some(ws) => EventFilter::all().workspace(ws),
        None => EventFilter::all(),
    }
}

/// Applies the stream's events; starts over from a snapshot after a bad
/// event or a gap.
async fn run(inner: Arc<Inner>, mut subscription: Subscription) {
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            () = inner.reset.notified() => {
                tracing::error!("the log is behind what the verifier applied: starting over from a snapshot");
                subscription = restart(&inner).await;
                continue;
            }
        };
        match item {
            Some(Ok(env)) => inner.apply(&env),
            // A bad event, or events gone from the stream (a revocation
            // among them, maybe): only a fresh snapshot is right again.
            Some(Err(e @ (ClientError::BadEvent { .. } | ClientError::EventsGone { .. }))) => {
                tracing::error!(error = %e, "the stream cannot be applied as it is: starting over from a snapshot");
                subscription = restart(&inner).await;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the event stream is interrupted; it resumes by itself")
            }
            None => return,
        }
    }
}

/// A fresh snapshot and a subscription from its position, retried until both work.
async fn restart(inner: &Inner) -> Subscription {
    loop {
        let restarted = async {
            let position = inner.resync().await?;
            follow(&inner.client, inner.workspace.as_deref(), position).await
        };
        match restarted.await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a snapshot; retrying");
                tokio::time::sleep(JWKS_REFRESH_INTERVAL).await;
            }
        }
    }
}
