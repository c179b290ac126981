//! A real nats-server, a real store on a temporary directory, `ledger_nats::run`
//! serving it in-process, and a `ledger_client::Client` connected to it.

#![allow(dead_code)]

use futures_util::{Stream, StreamExt};
use ledger_client::{Agent, AgentType, Client, ClientError, Envelope};
use ledger_nats::{Metrics, NatsError, ServeConfig};
use ledger_store::{Store, StoreConfig};
use ledger_testkit::{wait_for_async, NatsServer};
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The workspace of most tests.
pub const WS: &str = "acme";

/// Everything a test needs; dropped in field order (client, server, store, NATS).
pub struct Env {
    pub client: Client,
    pub server: Option<Server>,
    pub store: Store,
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    /// The store's master key, to open its data dir again.
    pub master: ledger_crypto::MasterKey,
}

impl Env {
    /// A nats-server, a store and a ledger server, ready to answer.
    pub async fn start() -> Env {
        Env::start_on(nats_server().await).await
    }

    /// [`Env::start`] on a nats-server whose `max_payload` is `bytes`.
    pub async fn start_with_max_payload(bytes: usize) -> Env {
        let nats = tokio::task::spawn_blocking(move || {
            NatsServer::start_with_max_payload(bytes).expect("start nats-server")
        })
        .await
        .unwrap();
        Env::start_on(nats).await
    }

    /// [`Env::start`] with the server's config changed by `adjust`.
    pub async fn start_configured(adjust: impl FnOnce(&mut ServeConfig)) -> Env {
        Env::start_on_with(nats_server().await, adjust).await
    }

    async fn start_on(nats: NatsServer) -> Env {
        Env::start_on_with(nats, |_| {}).await
    }

    async fn start_on_with(nats: NatsServer, adjust: impl FnOnce(&mut ServeConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let master = ledger_crypto::MasterKey::generate();
        let store = Store::open(
            dir.path(),
            StoreConfig {
                master_key: Some(master.clone()),
                ..StoreConfig::default()
            },
        )
        .expect("open store");
        let mut config = ServeConfig::new(vec![nats.url()]);
        adjust(&mut config);
        let server = Server::start_with(store.clone(), config).await;
        let client = connect(&nats.url()).await;
        Env {
            client,
            server: Some(server),
            store,
            nats,
            dir,
            master,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Waits until the stream holds every event of the log.
    pub async fn wait_published(&self) {
        let server = self.server();
        let ok = wait_for_async(DEADLINE, || async {
            server.metrics.published_position() == self.store.head_position()
        })
        .await;
        assert!(
            ok,
            "publication stuck at {} of {}",
            server.metrics.published_position(),
            self.store.head_position()
        );
    }

    /// Stops the ledger server cleanly.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }
}

/// A client acting as user alice, with a generous request timeout.
pub async fn connect(url: &str) -> Client {
    let nats = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(20)))
        .connect(url)
        .await
        .expect("connect");
    Client::new(nats).with_actor(Agent {
        agent_id: "alice".into(),
        agent_type: AgentType::User,
    })
}

/// One `ledger_nats::run` in a task.
pub struct Server {
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NatsError>>,
}

impl Server {
    /// Starts serving and waits until the endpoints are subscribed.
    pub async fn start(store: Store, url: String) -> Server {
        Server::start_with(store, ServeConfig::new(vec![url])).await
    }

    /// [`Server::start`] with this config.
    pub async fn start_with(store: Store, config: ServeConfig) -> Server {
        let metrics = config.metrics.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ledger_nats::run(store, config, async move {
            let _ = rx.await;
        }));
        let server = Server {
            metrics,
            stop: Some(tx),
            task,
        };
        assert!(
            wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await,
            "the ledger server did not become ready"
        );
        server
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), NatsError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returned before the deadline")
            .expect("run did not panic")
    }
}

/// A nats-server, started off the async runtime's workers.
pub async fn nats_server() -> NatsServer {
    tokio::task::spawn_blocking(|| NatsServer::start().expect("start nats-server"))
        .await
        .unwrap()
}

/// Awaits `f`, failing the test after [`DEADLINE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {DEADLINE:?}"))
}

/// The next `n` items of a subscription, each required to be an event.
pub async fn take_events<S>(sub: &mut S, n: usize) -> Vec<Envelope>
where
    S: Stream<Item = Result<Envelope, ClientError>> + Unpin,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = within(&format!("event {} of {n}", out.len() + 1), sub.next())
            .await
            .expect("a subscription never ends");
        out.push(item.unwrap_or_else(|e| panic!("error item after {} events: {e}", out.len())));
    }
    out
}

/// Asserts that nothing more arrives: everything the ledger has published
/// up to `head` was taken, and the subscription yields nothing below it.
/// (Waits on a position, not a timer: the caller issues a marker event past
/// `head` and this returns once that marker comes, failing if anything
/// else comes first.)
pub async fn next_is<S>(sub: &mut S, position: u64) -> Envelope
where
    S: Stream<Item = Result<Envelope, ClientError>> + Unpin,
{
    let e = take_events(sub, 1).await.remove(0);
    assert_eq!(
        e.position, position,
        "expected position {position}, got {e:?}"
    );
    e
}

/// The log's envelopes from `from` to the head.
pub fn log_from(store: &Store, from: u64) -> Vec<Envelope> {
    store
        .read_from(from, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.envelope().unwrap())
        .collect()
}

/// Issues a client token in [`WS`]; its id.
pub async fn issue(c: &Client, cmd: ledger_client::IssueClientToken) -> uuid::Uuid {
    c.issue_client_token(WS, cmd)
        .await
        .expect("issued")
        .token
        .expect("a view")
        .token_id()
}
