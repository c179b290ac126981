//! Signed checkpoints while serving, against a real nats-server: every N
//! events, on a timer when the log grew, and at shutdown; each stored in the
//! data dir and published on `tokens.checkpoint`, the newest answered on
//! `tokens.checkpoint.latest`, across a restart too.

mod common;

use common::*;
use ledger_audit::{CheckpointKey, SignedCheckpoint};
use ledger_core::CommandName;
use ledger_nats::checkpoints::{CHECKPOINT_LATEST_SUBJECT, CHECKPOINT_SUBJECT};
use ledger_nats::ServeConfig;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

async fn issue(store: &ledger_store::Store, i: u64) {
    execute(
        store,
        CommandName::IssueClientToken,
        json!({"name": format!("token-{i}")}),
    )
    .await;
}

async fn next_note(sub: &mut async_nats::Subscriber) -> SignedCheckpoint {
    use futures_util::StreamExt;
    let m = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a checkpoint note in time")
        .expect("subscription open");
    SignedCheckpoint::parse(std::str::from_utf8(&m.payload).unwrap()).expect("a signed note")
}

fn stored(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn ready(server: &Server) {
    assert!(
        ledger_testkit::wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await,
        "the server did not become ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_n_events_and_at_shutdown_and_the_newest_across_a_restart() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let master = ledger_crypto::MasterKey::generate();
    let store = open_store(dir.path(), &master);
    let c = client(&nats.url()).await;
    let mut notes = c.subscribe(CHECKPOINT_SUBJECT).await.unwrap();
    c.flush().await.unwrap();
    let config = ServeConfig {
        checkpoint_every_events: 3,
        checkpoint_every: Duration::ZERO,
        ..ServeConfig::new(vec![nats.url()])
    };

    let server = Server::spawn(store.clone(), config.clone());
    ready(&server).await;
    let none = rejected(&c, CHECKPOINT_LATEST_SUBJECT, Vec::new()).await;
    assert_eq!(none["code"], "not_found");

    for i in 1..=3 {
        issue(&store, i).await;
    }
    let first = next_note(&mut notes).await;
    assert_eq!(first.checkpoint.size, 3);
    let key = CheckpointKey::load(dir.path())
        .unwrap()
        .expect("the key was created");
    first.verify(key.verifier()).unwrap();
    assert_eq!(first.checkpoint.origin, key.origin());
    let (latest, _) = request(&c, CHECKPOINT_LATEST_SUBJECT, Vec::new()).await;
    assert_eq!(latest["result"]["note"], json!(first.note));
    assert_eq!(latest["result"]["size"], json!(3));
    assert_eq!(latest["result"]["root"], json!(first.checkpoint.root_hex()));

    // Two more: below the count; shutdown signs them.
    for i in 4..=5 {
        issue(&store, i).await;
    }
    server.stop().await.unwrap();
    let last = next_note(&mut notes).await;
    assert_eq!(last.checkpoint.size, 5);
    last.verify(key.verifier()).unwrap();
    assert_eq!(
        stored(dir.path()),
        [
            "00000000000000000003.note".to_owned(),
            "00000000000000000005.note".to_owned()
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("checkpoints/00000000000000000005.note")).unwrap(),
        last.note
    );

    // A restart with nothing new answers with the stored note and signs nothing more.
    drop(store);
    let store = open_store(dir.path(), &master);
    let server = Server::spawn(store.clone(), config);
    ready(&server).await;
    assert!(
        ledger_testkit::wait_for_async(DEADLINE, || async {
            let (latest, _) = request(&c, CHECKPOINT_LATEST_SUBJECT, Vec::new()).await;
            latest["result"]["note"] == json!(last.note)
        })
        .await,
        "the stored checkpoint is not answered after a restart"
    );
    server.stop().await.unwrap();
    assert_eq!(stored(dir.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_checkpoints_a_log_that_grew() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &ledger_crypto::MasterKey::generate());
    let c = client(&nats.url()).await;
    let mut notes = c.subscribe(CHECKPOINT_SUBJECT).await.unwrap();
    c.flush().await.unwrap();
    let config = ServeConfig {
        checkpoint_every_events: 0,
        checkpoint_every: Duration::from_millis(100),
        ..ServeConfig::new(vec![nats.url()])
    };
    let server = Server::spawn(store.clone(), config);
    ready(&server).await;
    issue(&store, 1).await;
    assert_eq!(next_note(&mut notes).await.checkpoint.size, 1);
    issue(&store, 2).await;
    assert_eq!(next_note(&mut notes).await.checkpoint.size, 2);
    server.stop().await.unwrap();
    assert_eq!(
        stored(dir.path()).len(),
        2,
        "nothing new to sign at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_covers_events_the_stream_does_not_hold() {
    let nats = nats_server().await;
    let dir = tempfile::tempdir().unwrap();
    let master = ledger_crypto::MasterKey::generate();
    let store = open_store(dir.path(), &master);
    let c = client(&nats.url()).await;
    let mut notes = c.subscribe(CHECKPOINT_SUBJECT).await.unwrap();
    c.flush().await.unwrap();
    let config = ServeConfig {
        checkpoint_every_events: 1,
        checkpoint_every: Duration::ZERO,
        drain_timeout: Duration::from_millis(300),
        ..ServeConfig::new(vec![nats.url()])
    };
    let server = Server::spawn(store.clone(), config.clone());
    ready(&server).await;
    issue(&store, 1).await;
    assert_eq!(next_note(&mut notes).await.checkpoint.size, 1);

    // The stream refuses more: events 2 and 3 are durable here only. Were
    // they signed, a disk lost now would leave a signed root that the
    // recovered ledger (rebuilt from the stream) could never match.
    ledger_testkit::cap_tokens_stream(&nats.url(), Some(1), true).await;
    issue(&store, 2).await;
    issue(&store, 3).await;
    server.stop().await.unwrap();
    assert_eq!(store.head_position(), 3);
    assert_eq!(
        stored(dir.path()),
        ["00000000000000000001.note".to_owned()],
        "no note, not even the last one, covers events the stream refused"
    );

    // Once the stream takes them, the next server signs them.
    ledger_testkit::cap_tokens_stream(&nats.url(), None, true).await;
    drop(store);
    let store = open_store(dir.path(), &master);
    let server = Server::spawn(store.clone(), config);
    let next = next_note(&mut notes).await;
    assert_eq!(next.checkpoint.size, 3);
    server.wait_published(&store).await;
    server.stop().await.unwrap();
}
