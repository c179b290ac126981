//! The publisher against a real nats-server: the stream `TOKENS` always ends
//! up holding exactly the log (sequence = position, `Nats-Msg-Id` = eventId),
//! across server stops, crashes and publisher restarts.

mod common;

use async_nats::jetstream::{self, message::PublishMessage};
use common::*;
use ledger_core::CommandName;
use ledger_crypto::MasterKey;
use ledger_nats::{NatsError, ServeConfig, StreamSettings};
use ledger_store::Store;
use serde_json::json;
use std::time::Duration;

async fn issue_directly(store: &Store, n: usize, prefix: &str) {
    for i in 0..n {
        execute(
            store,
            CommandName::IssueClientToken,
            json!({"name": format!("{prefix}-{i}")}),
        )
        .await;
    }
}

async fn js(url: &str) -> jetstream::Context {
    jetstream::new(client(url).await)
}

/// Publishes the log's event at `position` the way the publisher does.
async fn publish_like_the_publisher(js: &jetstream::Context, store: &Store, position: u64) {
    let event = store.event(position).unwrap().unwrap();
    let env = event.envelope().unwrap();
    let ack = js
        .send_publish(
            ledger_nats::subjects::event_subject(&env),
            PublishMessage::build()
                .payload(event.published_bytes().unwrap().into())
                .message_id(env.event_id.to_string())
                .expected_last_sequence(position - 1),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, position);
}

fn settings() -> StreamSettings {
    StreamSettings {
        replicas: 1,
        duplicate_window: Duration::from_secs(120),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_catches_up_exactly_after_the_nats_server_was_stopped() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    let c = client(&nats.url()).await;
    for i in 0..5 {
        command(&c, "issue_client_token", json!({"name": format!("a{i}")})).await;
    }
    server.wait_published(&store).await;

    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.stop().unwrap();
        nats
    })
    .await
    .unwrap();
    // NATS is down: commands still succeed, the log is the durable copy.
    issue_directly(&store, 20, "while-down").await;
    assert_eq!(store.head_position(), 25);
    assert!(server.metrics.published_position() <= 5);

    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.restart().unwrap();
        nats
    })
    .await
    .unwrap();
    server.wait_published(&store).await;
    check_stream_equals_log(&js(&nats.url()).await, &store)
        .await
        .unwrap();
    assert!(server.metrics.requests().reconnects >= 1);
    let status = server.metrics.publisher_status();
    assert!(status.resyncs >= 1, "{status:?}");

    // And it keeps going afterwards, over NATS again.
    let c = client(&nats.url()).await;
    command(&c, "issue_client_token", json!({"name": "after"})).await;
    server.wait_published(&store).await;
    check_stream_equals_log(&js(&nats.url()).await, &store)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_catches_up_exactly_after_the_nats_server_was_killed() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    issue_directly(&store, 50, "before").await;
    server.wait_published(&store).await;

    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.kill().unwrap();
        nats
    })
    .await
    .unwrap();
    issue_directly(&store, 30, "while-dead").await;
    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.restart().unwrap();
        nats
    })
    .await
    .unwrap();
    // Whatever JetStream lost in the crash (it acks before fsync) is
    // published again from the log; nothing twice.
    server.wait_published(&store).await;
    check_stream_equals_log(&js(&nats.url()).await, &store)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_resumes_a_partially_published_stream_without_duplicates() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();

    // First run: 5 events published, then a clean stop.
    let store = open_store(dir.path(), &master);
    let server = Server::start(store.clone(), nats.url()).await;
    issue_directly(&store, 5, "first").await;
    server.wait_published(&store).await;
    server.stop().await.unwrap();
    drop(store);

    // Offline: 10 more events; the first two of them reach the stream as
    // if a publisher had sent them and crashed before reading the acks.
    let store = open_store(dir.path(), &master);
    issue_directly(&store, 10, "offline").await;
    let js = js(&nats.url()).await;
    publish_like_the_publisher(&js, &store, 6).await;
    publish_like_the_publisher(&js, &store, 7).await;

    let server = Server::start(store.clone(), nats.url()).await;
    server.wait_published(&store).await;
    check_stream_equals_log(&js, &store).await.unwrap();
    let status = server.metrics.publisher_status();
    assert_eq!(status.published_position, 15);
    assert_eq!(
        status.messages_sent, 8,
        "only 8..=15 were sent by the second run: {status:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_publisher_drain_to_the_head() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    let metrics = server.metrics.clone();
    issue_directly(&store, 300, "burst").await;
    server.stop().await.unwrap();
    assert_eq!(metrics.published_position(), 300);
    check_stream_equals_log(&js(&nats.url()).await, &store)
        .await
        .unwrap();
    // The store was shut down by run: it takes no more commands.
    let refused = store
        .execute(parsed(CommandName::IssueClientToken, json!({})))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_a_nats_server_that_is_down_at_start() {
    let nats = nats_server().await;
    let url = nats.url();
    let nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.stop().unwrap();
        nats
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    issue_directly(&store, 3, "early").await;
    let server = Server::spawn(store.clone(), ServeConfig::new(vec![url.clone()]));

    let _nats = tokio::task::spawn_blocking(move || {
        let mut nats = nats;
        nats.restart().unwrap();
        nats
    })
    .await
    .unwrap();
    assert!(wait_for_async_ready(&server).await, "never became ready");
    let c = client(&url).await;
    command(&c, "issue_client_token", json!({"name": "late"})).await;
    server.wait_published(&store).await;
    check_stream_equals_log(&js(&url).await, &store)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

async fn wait_for_async_ready(server: &Server) -> bool {
    ledger_testkit::wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ahead_of_the_log_is_refused() {
    let nats = nats_server().await;
    let js = js(&nats.url()).await;
    js.create_stream(settings().config()).await.unwrap();
    for i in 0..3 {
        js.publish(format!("tokens.evt.acme.x.foreign{i}"), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    issue_directly(&store, 2, "mine").await;
    let server = Server::spawn(store.clone(), ServeConfig::new(vec![nats.url()]));
    let metrics = server.metrics.clone();
    let err = server.join().await.unwrap_err();
    assert!(
        matches!(
            err,
            NatsError::StreamAhead {
                stream_last: 3,
                log_head: 2
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), "stream_ahead");
    assert!(!metrics.is_ready(), "no request was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_diverged_from_the_log_is_refused() {
    let nats = nats_server().await;
    let js = js(&nats.url()).await;
    js.create_stream(settings().config()).await.unwrap();
    js.send_publish(
        "tokens.evt.acme.x.foreign",
        PublishMessage::build()
            .payload("{}".into())
            .message_id("not-an-event-of-this-log"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    issue_directly(&store, 2, "mine").await;
    let err = Server::spawn(store.clone(), ServeConfig::new(vec![nats.url()]))
        .join()
        .await
        .unwrap_err();
    assert_eq!(err.code(), "stream_diverged", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_gets_the_ledgers_settings() {
    let nats = nats_server().await;
    let js = js(&nats.url()).await;
    let mut loose = settings().config();
    loose.deny_delete = false;
    loose.deny_purge = false;
    loose.duplicate_window = Duration::from_secs(10);
    loose.max_age = Duration::from_secs(86_400);
    js.create_stream(loose).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    let mut stream = js.get_stream("TOKENS").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.deny_delete && config.deny_purge);
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(
        config.max_age,
        Duration::from_secs(86_400),
        "an operator's own settings are kept"
    );
    assert_eq!(config.subjects, ["tokens.evt.>"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_recreated_and_refilled_from_the_log() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::start(store.clone(), nats.url()).await;
    issue_directly(&store, 10, "before").await;
    server.wait_published(&store).await;

    let js = js(&nats.url()).await;
    js.delete_stream("TOKENS").await.unwrap();
    issue_directly(&store, 1, "after").await;
    server.wait_published(&store).await;
    check_stream_equals_log(&js, &store).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_while_the_ledger_is_idle_is_refilled_without_a_command() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::spawn(
        store.clone(),
        ServeConfig {
            stream_check_every: Duration::from_millis(100),
            ..ServeConfig::new(vec![nats.url()])
        },
    );
    assert!(wait_for_async_ready(&server).await);
    issue_directly(&store, 10, "before").await;
    server.wait_published(&store).await;

    let js = js(&nats.url()).await;
    js.delete_stream("TOKENS").await.unwrap();
    // No command follows: the idle publisher notices by itself.
    let refilled = ledger_testkit::wait_for_async(DEADLINE, || async {
        match js.get_stream("TOKENS").await {
            Ok(s) => s.cached_info().state.last_sequence == store.head_position(),
            Err(_) => false,
        }
    })
    .await;
    assert!(refilled, "the deleted stream was not recreated while idle");
    check_stream_equals_log(&js, &store).await.unwrap();
    server.stop().await.unwrap();
}
