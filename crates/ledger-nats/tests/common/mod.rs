//! Helpers shared by the integration tests: a real nats-server, a real store
//! on a temporary directory, and a running [`ledger_nats::run`].

#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use async_nats::HeaderMap;
use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::CommandName;
use ledger_crypto::MasterKey;
use ledger_nats::{Metrics, NatsError, ServeConfig};
use ledger_store::{Committed, Store, StoreConfig};
use ledger_testkit::{wait_for_async, NatsServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Deadline for anything the tests wait for.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The workspace of most tests.
pub const WS: &str = "acme";

/// Opens a store with a fixed master key.
pub fn open_store(dir: &Path, master: &MasterKey) -> Store {
    Store::open(
        dir,
        StoreConfig {
            master_key: Some(master.clone()),
            ..StoreConfig::default()
        },
    )
    .expect("open store")
}

/// A command body with `commandId`, `workspaceId` and `actor` filled in when missing.
pub fn body(mut fields: Value) -> Value {
    let obj = fields.as_object_mut().expect("a JSON object");
    obj.entry("commandId")
        .or_insert_with(|| json!(Uuid::new_v4().to_string()));
    obj.entry("workspaceId").or_insert_with(|| json!(WS));
    obj.entry("actor")
        .or_insert_with(|| json!({"agentId": "alice", "agentType": "user"}));
    fields
}

/// The same, parsed for the store directly.
pub fn parsed(name: CommandName, fields: Value) -> ParsedCommand {
    parse_value(name, body(fields)).expect("valid command")
}

/// Executes a command on the store directly (no NATS involved).
pub async fn execute(store: &Store, name: CommandName, fields: Value) -> Committed {
    store
        .execute(parsed(name, fields))
        .await
        .expect("command accepted")
}

/// One `ledger_nats::run` in a task.
pub struct Server {
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NatsError>>,
}

impl Server {
    /// Starts serving `store` on `url` and waits until the endpoints are subscribed.
    pub async fn start(store: Store, url: String) -> Server {
        let server = Server::spawn(store, ServeConfig::new(vec![url]));
        assert!(
            wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await,
            "the server did not become ready"
        );
        server
    }

    /// Starts serving without waiting.
    pub fn spawn(store: Store, config: ServeConfig) -> Server {
        let metrics = config.metrics.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ledger_nats::run(store, config, async move {
            let _ = rx.await;
        }));
        Server {
            metrics,
            stop: Some(tx),
            task,
        }
    }

    /// Waits until everything up to the store's head is published.
    pub async fn wait_published(&self, store: &Store) {
        let ok = wait_for_async(DEADLINE, || async {
            self.metrics.published_position() == store.head_position()
        })
        .await;
        assert!(
            ok,
            "publication stuck at {} of {}: {:?}",
            self.metrics.published_position(),
            store.head_position(),
            self.metrics.publisher_status()
        );
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

    /// Waits for `run` to end by itself (a fatal error).
    pub async fn join(self) -> Result<(), NatsError> {
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returned before the deadline")
            .expect("run did not panic")
    }
}

/// A nats-server, started off the async runtime's worker.
pub async fn nats_server() -> NatsServer {
    tokio::task::spawn_blocking(|| NatsServer::start().expect("start nats-server"))
        .await
        .unwrap()
}

/// A plain client for the tests' own requests.
pub async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(20)))
        .connect(url)
        .await
        .expect("connect test client")
}

/// A request with its reply's body (as JSON) and headers.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    payload: Vec<u8>,
) -> (Value, Option<HeaderMap>) {
    let reply = client
        .request(subject.to_owned(), payload.into())
        .await
        .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
    let body: Value = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("reply on {subject} is not JSON ({e}): {:?}", reply.payload));
    (body, reply.headers)
}

/// Sends a command; returns the reply's `result`, panicking on an error reply.
pub async fn command(client: &async_nats::Client, name: &str, fields: Value) -> Value {
    let subject = format!("tokens.cmd.{WS}.{name}");
    let (reply, headers) =
        request(client, &subject, serde_json::to_vec(&body(fields)).unwrap()).await;
    assert_eq!(reply["ok"], true, "{name}: {reply}");
    assert!(headers.is_none_or(|h| h.get("Nats-Service-Error").is_none()));
    reply["result"].clone()
}

/// Sends a request expecting an error; returns the `error` object and checks the headers.
pub async fn rejected(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> Value {
    let (reply, headers) = request(client, subject, payload).await;
    assert_eq!(reply["ok"], false, "{subject}: {reply}");
    let error = reply["error"].clone();
    let headers = headers.expect("an error reply has headers");
    let message = headers
        .get("Nats-Service-Error")
        .expect("Nats-Service-Error header")
        .as_str();
    assert_eq!(message, error["message"].as_str().unwrap());
    let status = headers
        .get("Nats-Service-Error-Code")
        .expect("Nats-Service-Error-Code header")
        .as_str();
    let code = match error["code"].as_str().unwrap() {
        "invalid_input" => "400",
        "not_found" => "404",
        "conflict" | "name_taken" | "provided_id_taken" | "account_taken" | "trashed"
        | "revoked" | "not_trashed" => "409",
        "unavailable" => "503",
        _ => "500",
    };
    assert_eq!(status, code, "{error}");
    error
}

/// Checks that the stream `TOKENS` holds exactly the log: one message per
/// position, sequence = position, `Nats-Msg-Id` = `eventId`, the subject and
/// body of the event.
pub async fn check_stream_equals_log(js: &jetstream::Context, store: &Store) -> Result<()> {
    let head = store.head_position();
    let mut stream = js.get_stream("TOKENS").await.context("get stream")?;
    let info = stream.info().await.context("stream info")?;
    if info.state.last_sequence != head || info.state.messages != head {
        bail!(
            "stream has {} messages up to sequence {}, the log {head} events",
            info.state.messages,
            info.state.last_sequence
        );
    }
    for event in store.read_from(1, usize::MAX)? {
        let env = event.envelope()?;
        let msg = stream
            .get_raw_message(event.position)
            .await
            .with_context(|| format!("message {}", event.position))?;
        if msg.sequence != event.position {
            bail!("message {} has sequence {}", event.position, msg.sequence);
        }
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        if id.as_deref() != Some(env.event_id.to_string().as_str()) {
            bail!(
                "message {} has id {id:?}, expected {}",
                event.position,
                env.event_id
            );
        }
        let subject = format!(
            "tokens.evt.{}.{}.{}",
            env.workspace_id,
            env.token_id,
            env.event_type()
        );
        if msg.subject.as_str() != subject {
            bail!(
                "message {} on {}, expected {subject}",
                event.position,
                msg.subject
            );
        }
        if msg.payload.as_ref() != event.published_bytes()?.as_slice() {
            bail!(
                "message {} body differs from the published envelope",
                event.position
            );
        }
    }
    Ok(())
}
