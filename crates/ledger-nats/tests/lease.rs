//! The writer lease against a real nats-server: a second instance with its
//! own log serves nothing while the first holds the lease (no command is
//! acknowledged into a log the stream will never hold); a clean stop hands
//! the lease over at once; a lease taken over stops the holder; a NATS
//! outage longer than the lease does not; a bucket without expiry is refused.

mod common;

use async_nats::jetstream::{self, kv};
use common::*;
use ledger_crypto::MasterKey;
use ledger_nats::lease::BUCKET;
use ledger_nats::{NatsError, ServeConfig};
use ledger_testkit::wait_for_async;
use serde_json::{json, Value};
use std::time::Duration;

/// Short, so that the tests that wait for an expiry wait little.
const TTL: Duration = Duration::from_secs(2);

fn config(url: &str) -> ServeConfig {
    ServeConfig {
        writer_lease: TTL,
        ..ServeConfig::new(vec![url.to_owned()])
    }
}

/// Issues a token over NATS; the reply body, if one came.
async fn try_issue(nats: &async_nats::Client, name: &str) -> Option<Value> {
    let reply = nats
        .request(
            format!("tokens.cmd.{WS}.issue_client_token"),
            serde_json::to_vec(&body(json!({ "name": name })))
                .unwrap()
                .into(),
        )
        .await
        .ok()?;
    Some(serde_json::from_slice(&reply.payload).unwrap())
}

async fn issue(nats: &async_nats::Client, name: &str) -> Value {
    try_issue(nats, name).await.expect("a reply")
}

/// A server on a fresh store, ready, after one acknowledged command; the
/// temporary dir, the store, the server and a client.
async fn serving_one_command(
    url: &str,
) -> (
    tempfile::TempDir,
    ledger_store::Store,
    Server,
    async_nats::Client,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::spawn(store.clone(), config(url));
    assert!(wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await);
    let caller = client(url).await;
    assert_eq!(issue(&caller, "before").await["ok"], true);
    (dir, store, server, caller)
}

async fn lease_entry(url: &str) -> Option<kv::Entry> {
    let js = jetstream::new(client(url).await);
    let kv = js.get_key_value(BUCKET).await.expect("the lease bucket");
    kv.entry("writer").await.expect("the lease entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_serves_nothing_while_the_first_holds_the_lease() {
    let nats = nats_server().await;
    let url = nats.url();
    let master = MasterKey::generate();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (
        open_store(dir_a.path(), &master),
        open_store(dir_b.path(), &master),
    );
    let a = Server::spawn(store_a.clone(), config(&url));
    assert!(wait_for_async(DEADLINE, || async { a.metrics.is_ready() }).await);
    // Both logs are empty, like the stream: the stream check alone would
    // let the second one serve, in the same queue group.
    let b = Server::spawn(store_b.clone(), config(&url));
    assert!(
        wait_for_async(DEADLINE, || async { b.metrics.is_waiting_for_lease() }).await,
        "the second instance never waited for the lease"
    );

    let caller = client(&url).await;
    for i in 0..40 {
        let reply = issue(&caller, &format!("t-{i}")).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    assert_eq!(
        store_a.head_position(),
        40,
        "every command is in the holder's log"
    );
    assert_eq!(
        store_b.head_position(),
        0,
        "none went to the waiting instance"
    );
    assert!(!b.metrics.is_ready());
    assert!(!b.metrics.holds_writer_lease());
    let held = lease_entry(&url).await.expect("held");
    let holder: Value = serde_json::from_slice(&held.value).unwrap();
    let canonical = std::fs::canonicalize(dir_a.path()).unwrap();
    assert_eq!(holder["dataDir"], canonical.display().to_string());

    // A clean stop releases the lease: the second instance takes it at
    // once, then refuses a stream that holds another log.
    a.stop().await.unwrap();
    match b.join().await {
        Err(NatsError::StreamAhead {
            stream_last: 40,
            log_head: 0,
        }) => {}
        other => panic!("expected stream_ahead, got {other:?}"),
    }
    // It released the lease on its way out, too.
    let left = lease_entry(&url).await;
    assert!(
        left.as_ref()
            .is_none_or(|e| e.operation != kv::Operation::Put),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_lease_is_taken_over_stops_appending() {
    let nats = nats_server().await;
    let url = nats.url();
    let (_dir, store, server, _caller) = serving_one_command(&url).await;

    // Someone else writes the lease, as a second instance would after
    // this one had stalled past the TTL.
    let js = jetstream::new(client(&url).await);
    let kv = js.get_key_value(BUCKET).await.unwrap();
    kv.put(
        "writer",
        r#"{"instance":"intruder","dataDir":"/elsewhere","pid":1,"since":"now"}"#.into(),
    )
    .await
    .unwrap();

    match server.join().await {
        Err(NatsError::LeaseLost { holder }) => {
            assert!(holder.contains("intruder"), "{holder}");
        }
        other => panic!("expected lease_lost, got {other:?}"),
    }
    assert_eq!(store.head_position(), 1);
    // The other holder's lease stays: a lost lease is not released.
    let entry = lease_entry(&url).await.expect("still held");
    assert!(String::from_utf8_lossy(&entry.value).contains("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_lease_does_not_stop_the_ledger() {
    let mut nats = nats_server().await;
    let url = nats.url();
    let (_dir, store, server, caller) = serving_one_command(&url).await;

    nats.kill().unwrap();
    assert!(
        wait_for_async(DEADLINE, || async { !server.metrics.holds_writer_lease() }).await,
        "the lease is still counted as held with NATS gone"
    );
    // The outage under test (not a synchronisation): longer than the TTL,
    // so that the lease has expired when the server comes back.
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    let nats = tokio::task::spawn_blocking(move || {
        nats.restart().unwrap();
        nats
    })
    .await
    .unwrap();

    assert!(
        wait_for_async(DEADLINE, || async {
            server.metrics.holds_writer_lease()
                && try_issue(&caller, &format!("after-{}", uuid::Uuid::new_v4()))
                    .await
                    .is_some_and(|r| r["ok"] == true)
        })
        .await,
        "the ledger never served again"
    );
    server.wait_published(&store).await;
    server.stop().await.unwrap();
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_bucket_without_expiry_is_refused_until_it_is_made_again() {
    let nats = nats_server().await;
    let url = nats.url();
    // An operator made the bucket by hand, without max_age: a crashed
    // holder's lease would never end.
    let js = jetstream::new(client(&url).await);
    js.create_key_value(kv::Config {
        bucket: BUCKET.to_owned(),
        history: 1,
        ..kv::Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &MasterKey::generate());
    let server = Server::spawn(store.clone(), config(&url));
    assert!(
        wait_for_async(DEADLINE, || async { server.metrics.is_waiting_for_lease() }).await,
        "the server did not wait"
    );
    assert!(!server.metrics.is_ready());

    js.delete_key_value(BUCKET).await.unwrap();
    assert!(
        wait_for_async(DEADLINE, || async { server.metrics.is_ready() }).await,
        "the server never served once the bucket was gone"
    );
    let status = js
        .get_key_value(BUCKET)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(status.max_age(), TTL, "made again with the configured TTL");
    server.stop().await.unwrap();
}
