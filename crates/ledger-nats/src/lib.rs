//! The NATS surface of tokenledger.
//!
//! [`run`] connects to NATS and serves, until its shutdown signal:
//!
//! * the micro service `tokenledger` (`$SRV.PING/INFO/STATS.tokenledger`),
//!   one endpoint per command on `tokens.cmd.*.{command}` and one per query
//!   on `tokens.query.*.{get|list|history|reveal}`, all in the queue group
//!   [`subjects::QUEUE_GROUP`], so instances share the load; two catch-alls
//!   (`tokens.cmd.*.*`, `tokens.query.*.*`, in their own queue group, see
//!   [`subjects::CATCH_ALL_QUEUE_GROUP`]) answer requests naming an unknown
//!   operation;
//! * in the same service and queue group, verification and signing keys:
//!   `tokens.verify`, `tokens.jwks`, `tokens.snapshot` and
//!   `tokens.admin.keys.{rotate|list}` (see the `verify` module);
//! * the publisher, which copies the sled log into the JetStream stream
//!   `TOKENS` so that stream sequence = log position (see [`publisher`]'s
//!   docs for why the log, not the stream, is the durable copy);
//! * signed checkpoints of the log every N events, every T seconds and at
//!   shutdown, stored in the data dir and published on `tokens.checkpoint`
//!   (see [`checkpoints`]).
//!
//! Replies: `{"ok": true, "result": ...}`, or `{"ok": false, "error":
//! {"code", "message", "field"?, "currentVersion"?}}` with the
//! `Nats-Service-Error` and `Nats-Service-Error-Code` headers (see [`reply`]).
//!
//! **Architecture invariants**: nothing but the publisher (and the stream
//! setup it uses) talks to JetStream; this crate never writes the log except
//! through `Store::execute`; a success reply is sent only after the store
//! reported the events durable; the views are read only after being caught
//! up to the head, so a caller reads its own writes.

/// The NATS access settings every tokenledger process shares (its own crate, so that
/// ledger-client connects the same way).
pub use ledger_access as access;
pub mod checkpoints;
mod commands;
mod error;
pub mod lease;
mod metrics;
pub mod publisher;
mod queries;
pub mod reply;
mod stream;
pub mod subjects;
mod verify;

pub use access::{AccessError, NatsAccess};
pub use error::NatsError;
pub use metrics::{Metrics, PublisherStatus, RequestCounters};
pub use stream::StreamSettings;

use async_nats::jetstream;
use async_nats::service::endpoint::Endpoint;
use async_nats::service::ServiceExt;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use commands::CommandContext;
use futures_util::StreamExt;
use ledger_core::{CommandName, Rejection};
use ledger_store::Store;
use queries::{Query, QueryContext};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// NATS servers to connect to (any of them; the client fails over).
    pub nats_urls: Vec<String>,
    /// How to authenticate to them and secure the connection.
    pub access: NatsAccess,
    /// Replicas of the stream `TOKENS` (1 on a single server).
    pub stream_replicas: usize,
    /// JetStream's deduplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Largest accepted request body, in bytes; larger ones get `invalid_input`.
    pub max_payload_bytes: usize,
    /// Publish acks the publisher keeps un-awaited, at most (1..=[`publisher::ACK_WINDOW_MAX`]).
    pub ack_window: usize,
    /// Requests handled at once, at most; more wait in the subscription buffers.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests, and again for the
    /// publisher to reach the head; what is left is published at the next start.
    pub drain_timeout: Duration,
    /// Micro service name.
    pub service_name: String,
    /// Micro service version (semver).
    pub version: String,
    /// Counters, shared with whoever keeps a clone.
    pub metrics: Metrics,
    /// A signed checkpoint after this many new events (0: no count trigger).
    pub checkpoint_every_events: u64,
    /// A signed checkpoint this often when the log grew (zero: no timer).
    /// One is made at shutdown in any case (see [`checkpoints`]).
    pub checkpoint_every: Duration,
    /// While there is nothing to publish, the stream is looked at this
    /// often, so that one deleted or rolled back while the ledger is idle is
    /// recreated and refilled without waiting for the next command.
    pub stream_check_every: Duration,
    /// How long the writer lease outlives its last renewal: after a crash,
    /// the next instance waits this long (see [`lease`]).
    pub writer_lease: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let stream = StreamSettings::default();
        ServeConfig {
            nats_urls: vec!["nats://127.0.0.1:4222".to_owned()],
            access: NatsAccess::default(),
            stream_replicas: stream.replicas,
            duplicate_window: stream.duplicate_window,
            max_payload_bytes: ledger_core::validate::COMMAND_BYTES_MAX,
            ack_window: 512,
            max_in_flight: 4096,
            drain_timeout: Duration::from_secs(10),
            service_name: subjects::SERVICE_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            metrics: Metrics::default(),
            checkpoint_every_events: checkpoints::EVERY_EVENTS_DEFAULT,
            checkpoint_every: checkpoints::EVERY_DEFAULT,
            stream_check_every: Duration::from_secs(10),
            writer_lease: lease::TTL_DEFAULT,
        }
    }
}

/// The longest period a setting may have (a year): past it, adding the
/// period to the clock can overflow, and no deployment means it.
pub const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

impl ServeConfig {
    /// The defaults, with these servers.
    pub fn new(nats_urls: Vec<String>) -> ServeConfig {
        ServeConfig {
            nats_urls,
            ..ServeConfig::default()
        }
    }

    fn validate(&self) -> Result<(), NatsError> {
        let bad = |m: String| Err(NatsError::Config(m));
        if self.nats_urls.is_empty() {
            return bad("no NATS URL given".into());
        }
        if !(1..=publisher::ACK_WINDOW_MAX).contains(&self.ack_window) {
            return bad(format!(
                "ack_window {} is outside 1..={}",
                self.ack_window,
                publisher::ACK_WINDOW_MAX
            ));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return bad(format!(
                "stream_replicas {} is outside 1..=5",
                self.stream_replicas
            ));
        }
        if self.max_payload_bytes == 0 || self.max_in_flight == 0 {
            return bad("max_payload_bytes and max_in_flight must be positive".into());
        }
        if u32::try_from(self.max_in_flight).is_err() {
            return bad("max_in_flight must fit in 32 bits".into());
        }
        for (name, period) in [
            ("duplicate_window", self.duplicate_window),
            ("checkpoint_every", self.checkpoint_every),
            ("writer_lease", self.writer_lease),
        ] {
            if period > DURATION_MAX {
                return bad(format!("{name} {period:?} is longer than {DURATION_MAX:?}"));
            }
        }
        if self.writer_lease < lease::TTL_MIN {
            return bad(format!(
                "writer_lease {:?} is shorter than {:?}",
                self.writer_lease,
                lease::TTL_MIN
            ));
        }
        Ok(())
    }

    fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: self.stream_replicas,
            duplicate_window: self.duplicate_window,
        }
    }
}

/// Serves the ledger over NATS until `shutdown` completes, then stops taking
/// requests, finishes those in flight, lets the publisher drain to the head
/// and shuts the store down (on every exit path, errors included).
///
/// Unreachable servers are retried with backoff, before and after the first
/// connection; an error is returned only for what retrying cannot fix (see
/// [`NatsError`]), in particular a stream that is ahead of, or diverged
/// from, the log.
///
/// `run` owns the projector of the store's `views` tree (queries catch it up
/// before answering): nothing else may run a projector on the same store
/// while it serves.
pub async fn run(
    store: Store,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NatsError> {
    let served = serve(&store, config, shutdown).await;
    let closing = store.clone();
    let closed = tokio::task::spawn_blocking(move || closing.shutdown())
        .await
        .map_err(|e| NatsError::Task(e.to_string()))
        .and_then(|r| r.map_err(NatsError::Store));
    served.and(closed)
}

/// Which handler an endpoint feeds.
#[derive(Clone, Copy, Debug)]
enum Route {
    Command(CommandName),
    Query(Query),
    AnyCommand,
    AnyQuery,
    Keys(verify::KeyRoute),
}

/// What every request handler shares.
struct Shared {
    /// Largest request body any endpoint accepts.
    max_payload_bytes: usize,
    commands: CommandContext,
    queries: QueryContext,
    verify: verify::VerifyContext,
    metrics: Metrics,
    in_flight: Arc<Semaphore>,
    /// The server's `max_payload`, which every reply must fit in.
    reply_limit: reply::ReplyLimit,
}

async fn serve(
    store: &Store,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NatsError> {
    config.validate()?;
    tokio::pin!(shutdown);
    let metrics = config.metrics.clone();
    let reply_limit = reply::ReplyLimit::default();
    let guard = metrics.lease_guard();
    let shared = Arc::new(Shared {
        max_payload_bytes: config.max_payload_bytes,
        commands: CommandContext {
            store: store.clone(),
            reply_limit: reply_limit.clone(),
            lease: guard.clone(),
        },
        queries: QueryContext::new(store.clone(), reply_limit.clone())?,
        verify: verify::VerifyContext::new(store.clone(), guard.clone()),
        metrics: metrics.clone(),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        reply_limit,
    });
    // Bumped on every reconnection; the publisher re-reads the stream then.
    let (epoch_tx, epoch_rx) = watch::channel(0u64);
    let epoch_tx = Arc::new(epoch_tx);

    let client = tokio::select! {
        c = connect(&config, epoch_tx.clone()) => c?,
        () = &mut shutdown => return Ok(()),
    };
    shared.reply_limit.set(client.server_info().max_payload);
    let js = jetstream::new(client.clone());

    // One writer per stream: nothing is served before the lease is ours.
    let holder = lease::Holder::this_process(store.dir());
    let taken = lease::acquire(
        &js,
        config.writer_lease,
        config.stream_replicas,
        &holder,
        &metrics,
    );
    let held = tokio::select! {
        l = taken => l,
        () = &mut shutdown => return Ok(()),
    };
    let (lease_stop_tx, lease_stop_rx) = watch::channel(false);
    let stream_is_ours: lease::StreamCheck = {
        let (js, store, settings) = (js.clone(), store.clone(), config.stream_settings());
        Box::new(move || {
            let (js, store, settings) = (js.clone(), store.clone(), settings.clone());
            Box::pin(async move { publisher::check_stream(&js, &store, &settings).await })
        })
    };
    let mut lease = tokio::spawn(held.hold(guard.clone(), lease_stop_rx, stream_is_ours));
    // Dropping `run` (an embedding program gave up on it) stops renewing.
    let _renewing = AbortOnDrop(lease.abort_handle());
    // The handlers check the lease before they queue a command; the writer
    // checks it again before each group, so that time spent in the queue (or
    // a paused process) cannot carry a command past the lease's end.
    let _gated = AppendGated::new(store, &guard);
    let served = serve_holding(
        store,
        &config,
        &js,
        shared,
        epoch_rx,
        &mut lease,
        &mut shutdown,
    )
    .await;
    // The lease goes last, once the publisher is done, so that the next
    // instance finds the stream complete; unless it is lost already.
    if !lease.is_finished() {
        if connected(&client) {
            let _ = lease_stop_tx.send(true);
            if let Ok(Ok(held)) = lease.await {
                held.release().await;
            }
        } else {
            // A renewal in flight would wait out its request timeout first.
            lease.abort();
            tracing::warn!(
                "NATS is unreachable: the writer lease is not released; it expires by itself"
            );
        }
    }
    served
}

/// The store's append gate set to the writer lease while `run` holds it,
/// and removed when `run` ends.
struct AppendGated(Store);

impl AppendGated {
    fn new(store: &Store, guard: &lease::LeaseGuard) -> AppendGated {
        let guard = guard.clone();
        store.set_append_gate(Some(Arc::new(move || guard.check())));
        AppendGated(store.clone())
    }
}

impl Drop for AppendGated {
    fn drop(&mut self) {
        self.0.set_append_gate(None);
    }
}

/// How long a stop waits for the requests in flight when NATS is
/// unreachable: their replies cannot leave anyway, and the store's part is
/// local and quick.
const DISCONNECTED_DRAIN: Duration = Duration::from_secs(1);

/// Whether the connection is up now. A stop skips what needs NATS when it
/// is not, rather than wait out a timeout at each step (a stop with NATS
/// gone took about 37 s, past the grace most supervisors give).
pub(crate) fn connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// [`serve`] once the writer lease is held: the stream check, the
/// publisher, checkpoints and requests, until shutdown or a fatal end.
async fn serve_holding(
    store: &Store,
    config: &ServeConfig,
    js: &jetstream::Context,
    shared: Arc<Shared>,
    epoch_rx: watch::Receiver<u64>,
    lease: &mut tokio::task::JoinHandle<Result<lease::Lease, NatsError>>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), NatsError> {
    let metrics = config.metrics.clone();
    let settings = config.stream_settings();
    let client = &js.client();
    // Refuse to serve on a stream that is not this log's, before any request.
    let mut backoff = Backoff::new();
    loop {
        let checked = tokio::select! {
            r = publisher::check_stream(js, store, &settings) => r?,
            () = shutdown.as_mut() => return Ok(()),
        };
        if checked.is_some() {
            break;
        }
        tokio::select! {
            () = backoff.sleep() => {}
            () = shutdown.as_mut() => return Ok(()),
        }
    }

    // What an earlier run in this process published says nothing about the
    // stream now; the publisher sets it again once it has read the stream.
    metrics.set_published(0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (last_tx, last_rx) = watch::channel(checkpoints::Stop::Running);
    let checkpoints = checkpoints::start(client, store, config, last_rx).await;
    let mut publisher = tokio::spawn(
        publisher::Publisher {
            js: js.clone(),
            store: store.clone(),
            settings,
            ack_window: config.ack_window,
            check_every: config.stream_check_every,
            metrics: metrics.clone(),
            epoch: epoch_rx,
        }
        .run(stop_rx),
    );
    let served = serve_requests(client, config, shared, &mut publisher, lease, shutdown).await;

    // Requests have stopped (or never started): let the publisher drain to
    // the head, unless it already ended, which is fatal.
    let _ = stop_tx.send(true);
    let clean = matches!(served, Ok(None));
    let ended = match served {
        Ok(Some(Ended::Publisher(ended))) => flatten(ended),
        Ok(Some(Ended::Lease(lost))) => {
            // Another instance writes now: publishing this log further
            // could only fail or interleave.
            publisher.abort();
            let _ = publisher.await;
            Err(lost)
        }
        Err(e) => {
            publisher.abort();
            let _ = publisher.await;
            Err(e)
        }
        Ok(None) if !connected(client) => {
            publisher.abort();
            let _ = publisher.await;
            if metrics.published_position() < store.head_position() {
                tracing::warn!(
                    published = metrics.published_position(),
                    head = store.head_position(),
                    "NATS is unreachable: the rest of the log is published at the next start"
                );
            }
            Ok(())
        }
        Ok(None) => match tokio::time::timeout(config.drain_timeout, &mut publisher).await {
            Ok(r) => flatten(r),
            Err(_) => {
                publisher.abort();
                let _ = publisher.await;
                tracing::warn!(
                    published = metrics.published_position(),
                    head = store.head_position(),
                    "the publisher did not reach the head before the drain timeout; the rest \
                     is published at the next start"
                );
                Ok(())
            }
        },
    };
    // Last, so the final note covers what the drained publisher put in the
    // stream; none after a lost lease or a failure (see `checkpoints`).
    // The lease may also have been lost during the drain.
    let still_writer = metrics.lease_guard().is_valid();
    let _ = last_tx.send(if clean && ended.is_ok() && still_writer {
        checkpoints::Stop::WithLast
    } else {
        checkpoints::Stop::WithoutLast
    });
    checkpoints.finish().await;
    ended
}

fn flatten(r: Result<Result<(), NatsError>, tokio::task::JoinError>) -> Result<(), NatsError> {
    r.map_err(|e| NatsError::Task(e.to_string()))
        .and_then(|r| r)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What ended serving before a shutdown was asked for.
enum Ended {
    /// The publisher, with its outcome.
    Publisher(Result<Result<(), NatsError>, tokio::task::JoinError>),
    /// The writer lease, lost to another instance.
    Lease(NatsError),
}

/// Serves requests until `shutdown` (returns `None`) or until the publisher
/// or the lease ends by itself (returns which, and why); then stops taking
/// requests and waits for those in flight.
async fn serve_requests(
    client: &Client,
    config: &ServeConfig,
    shared: Arc<Shared>,
    publisher: &mut tokio::task::JoinHandle<Result<(), NatsError>>,
    lease: &mut tokio::task::JoinHandle<Result<lease::Lease, NatsError>>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Ended>, NatsError> {
    let metrics = shared.metrics.clone();
    let (service, loops) = start_service(client, config, shared.clone()).await?;
    round_trip(client).await;
    metrics.set_ready(true);
    tracing::info!(service = %config.service_name, "serving");

    let ended = tokio::select! {
        () = shutdown.as_mut() => None,
        r = &mut *publisher => Some(Ended::Publisher(r)),
        r = &mut *lease => Some(Ended::Lease(match r {
            Err(e) => NatsError::Task(format!("writer lease: {e}")),
            Ok(Err(lost)) => lost,
            Ok(Ok(_)) => NatsError::Task("the writer lease ended unasked".to_owned()),
        })),
    };
    if let Some(Ended::Lease(lost)) = &ended {
        tracing::error!(error = %lost, code = lost.code(), "writer lease lost");
    }
    metrics.set_ready(false);

    // Stop taking requests, then let those in flight finish and be answered.
    let _ = service.stop().await;
    let finish = async {
        for l in loops {
            let _ = l.await;
        }
        let permits = u32::try_from(config.max_in_flight).expect("validated");
        let _ = shared.in_flight.acquire_many(permits).await;
        let _ = client.flush().await;
    };
    let budget = if connected(client) {
        config.drain_timeout
    } else {
        DISCONNECTED_DRAIN
    };
    if tokio::time::timeout(budget, finish).await.is_err() {
        if shared.in_flight.available_permits() < config.max_in_flight {
            tracing::warn!("requests still in flight after the drain timeout; stopping anyway");
        } else if !connected(client) {
            tracing::info!("NATS is unreachable: not waiting for it to confirm the unsubscribes");
        }
    }
    Ok(ended)
}

/// Sends a message to ourselves through the server and waits for it: once it
/// is back, the server has registered every subscription made before (it
/// handles one connection's protocol in order), so the endpoints are live.
async fn round_trip(client: &Client) {
    let inbox = client.new_inbox();
    let echoed = async {
        let mut sub = client.subscribe(inbox.clone()).await.ok()?;
        client.publish(inbox, "".into()).await.ok()?;
        sub.next().await
    };
    if tokio::time::timeout(Duration::from_secs(5), echoed)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::warn!("no readiness round trip through NATS; serving anyway");
    }
}

/// Connects, retrying unreachable servers with backoff until one answers.
async fn connect(
    config: &ServeConfig,
    epoch: Arc<watch::Sender<u64>>,
) -> Result<Client, NatsError> {
    let mut backoff = Backoff::new();
    loop {
        let connects = Arc::new(AtomicU64::new(0));
        let (epoch, metrics) = (epoch.clone(), config.metrics.clone());
        let options = ConnectOptions::new()
            .name(&config.service_name)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let (epoch, metrics, connects) = (epoch.clone(), metrics.clone(), connects.clone());
                async move {
                    match event {
                        Event::Connected => {
                            if connects.fetch_add(1, Ordering::Relaxed) > 0 {
                                tracing::info!("reconnected to NATS");
                                metrics.reconnected();
                                epoch.send_modify(|e| *e += 1);
                            }
                        }
                        Event::Disconnected => tracing::warn!("disconnected from NATS"),
                        // A permission the server denies (a subject this
                        // user may not use): the service is deaf or mute
                        // there, which only the operator can fix.
                        Event::ServerError(e) => {
                            tracing::error!(error = %e, "NATS refused an operation")
                        }
                        other => tracing::info!(event = %other, "NATS client event"),
                    }
                }
            });
        let options = config.access.apply(options, &config.nats_urls).await?;
        match options.connect(config.nats_urls.as_slice()).await {
            Ok(client) => return Ok(client),
            Err(e) if e.kind() == ConnectErrorKind::ServerParse => {
                return Err(NatsError::Connect(e.to_string()))
            }
            // A server that answers and refuses: the settings are wrong, and
            // retrying them forever would only hide it.
            Err(e) if access::is_refusal(&e) => {
                return Err(NatsError::Refused {
                    urls: access::shown(&config.nats_urls),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                let urls = access::shown(&config.nats_urls);
                tracing::warn!(error = %e, %urls, "cannot reach NATS; retrying");
                backoff.sleep().await;
            }
        }
    }
}

/// Delay before reconnection attempt `n`: at once, then 10 ms doubling to 1 s.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(7);
    Duration::from_millis(10 << exp).min(Duration::from_secs(1))
}

/// Doubling pauses from 50 ms to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }
    async fn sleep(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Starts the micro service and one task per endpoint.
async fn start_service(
    client: &Client,
    config: &ServeConfig,
    shared: Arc<Shared>,
) -> Result<
    (
        async_nats::service::Service,
        Vec<tokio::task::JoinHandle<()>>,
    ),
    NatsError,
> {
    let service_error = |e: async_nats::Error| NatsError::Service(e.to_string());
    let mut routes: Vec<(String, String, Option<&str>, Route)> = Vec::new();
    for name in CommandName::ALL {
        routes.push((
            name.as_str().to_owned(),
            subjects::command_endpoint(name),
            None,
            Route::Command(name),
        ));
    }
    for query in Query::ALL {
        routes.push((
            query.name().to_owned(),
            subjects::query_endpoint(query.name()),
            None,
            Route::Query(query),
        ));
    }
    for key_route in verify::KeyRoute::ALL {
        let (name, subject) = key_route.endpoint();
        routes.push((name.into(), subject.into(), None, Route::Keys(key_route)));
    }
    routes.push((
        "unknown_command".into(),
        subjects::ANY_COMMAND.into(),
        Some(subjects::CATCH_ALL_QUEUE_GROUP),
        Route::AnyCommand,
    ));
    routes.push((
        "unknown_query".into(),
        subjects::ANY_QUERY.into(),
        Some(subjects::CATCH_ALL_QUEUE_GROUP),
        Route::AnyQuery,
    ));
    // Error replies per endpoint, shown as each endpoint's `data` in
    // `$SRV.STATS`: the micro API counts (`num_errors`) only the errors it
    // sends itself, with an empty body, and ours carry one (see `reply`).
    let rejected: HashMap<String, Arc<AtomicU64>> = routes
        .iter()
        .map(|(name, ..)| (name.clone(), Arc::new(AtomicU64::new(0))))
        .collect();
    let rejected_of = rejected.clone();
    let service = client
        .service_builder()
        .description("tokenledger: commands and queries on access tokens")
        .queue_group(subjects::QUEUE_GROUP)
        .stats_handler(move |endpoint, _| {
            json!({ "rejected": rejected_of.get(&endpoint).map_or(0, |n| n.load(Ordering::Relaxed)) })
        })
        .start(&config.service_name, &config.version)
        .await
        .map_err(service_error)?;
    let mut loops = Vec::with_capacity(routes.len());
    for (name, subject, queue_group, route) in routes {
        let rejected = rejected[&name].clone();
        let mut builder = service.endpoint_builder().name(name);
        if let Some(group) = queue_group {
            builder = builder.queue_group(group);
        }
        let endpoint = builder.add(subject).await.map_err(service_error)?;
        loops.push(tokio::spawn(serve_endpoint(
            endpoint,
            route,
            shared.clone(),
            rejected,
        )));
    }
    Ok((service, loops))
}

/// Takes requests off one endpoint and handles each in its own task, at
/// most `max_in_flight` at once across endpoints (so that concurrent
/// commands reach the store together and share a group commit).
async fn serve_endpoint(
    mut endpoint: Endpoint,
    route: Route,
    shared: Arc<Shared>,
    rejected: Arc<AtomicU64>,
) {
    while let Some(request) = endpoint.next().await {
        let subject = request.message.subject.as_str();
        let known = match route {
            Route::AnyCommand => subjects::request_parts(subject)
                .is_some_and(|(_, op)| CommandName::parse(op).is_some()),
            Route::AnyQuery => {
                subjects::request_parts(subject).is_some_and(|(_, op)| Query::parse(op).is_some())
            }
            Route::Command(_) | Route::Query(_) | Route::Keys(_) => false,
        };
        if known {
            // Its own endpoint answers it.
            continue;
        }
        if let Some(reply) = &request.message.reply {
            if !reply::reply_allowed(reply) {
                // Neither executed nor answered: the answer would land in
                // the ledger's own stream or lease (see `reply_allowed`).
                rejected.fetch_add(1, Ordering::Relaxed);
                shared.metrics.request_rejected();
                tracing::warn!(
                    subject = %request.message.subject,
                    reply = %reply,
                    "refused a request whose reply subject is one of the ledger's own or a system subject"
                );
                continue;
            }
        }
        let permit = shared
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        let shared = shared.clone();
        let rejected = rejected.clone();
        tokio::spawn(async move {
            let outcome = handle(&shared, route, &request).await;
            match (&outcome, route) {
                (Err(_), _) => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.request_rejected();
                }
                (Ok(_), Route::Command(_)) => shared.metrics.command_accepted(),
                (Ok(_), _) => shared.metrics.query_answered(),
            }
            reply::send(&request, &outcome, &shared.reply_limit).await;
            drop(permit);
        });
    }
}

async fn handle(
    shared: &Shared,
    route: Route,
    request: &async_nats::service::Request,
) -> Result<Box<RawValue>, Rejection> {
    let subject = request.message.subject.as_str();
    let payload = request.message.payload.as_ref();
    // One limit for every endpoint, checked before anything is parsed.
    if payload.len() > shared.max_payload_bytes {
        return Err(Rejection::invalid(
            "body",
            format!(
                "request is {} bytes, larger than the limit of {} bytes",
                payload.len(),
                shared.max_payload_bytes
            ),
        ));
    }
    match route {
        Route::Command(name) => commands::handle(&shared.commands, name, subject, payload).await,
        Route::Query(query) => {
            raw(queries::handle(&shared.queries, query, subject, payload).await?)
        }
        Route::AnyCommand => Err(commands::unknown_command(subject)),
        Route::AnyQuery => Err(queries::unknown_query(subject)),
        Route::Keys(r) => raw(verify::handle(&shared.verify, &shared.queries, r, payload).await?),
    }
}

/// A result built as a JSON tree, serialized for the reply.
fn raw(value: Value) -> Result<Box<RawValue>, Rejection> {
    serde_json::value::to_raw_value(&value)
        .map_err(|e| Rejection::new(ledger_core::ErrorCode::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_past_a_year_are_refused_before_anything_starts() {
        let ok = ServeConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        assert!(ok.validate().is_ok());
        let longer = DURATION_MAX + Duration::from_secs(1);
        type Set = fn(&mut ServeConfig, Duration);
        let fields: [(&str, Set); 3] = [
            ("duplicate_window", |c, d| c.duplicate_window = d),
            ("checkpoint_every", |c, d| c.checkpoint_every = d),
            ("writer_lease", |c, d| c.writer_lease = d),
        ];
        for (name, set) in fields {
            let mut c = ok.clone();
            set(&mut c, longer);
            match c.validate() {
                Err(NatsError::Config(m)) => assert!(m.starts_with(name), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
            set(&mut c, DURATION_MAX);
            assert!(c.validate().is_ok(), "{name} of a year is allowed");
        }
    }
}
