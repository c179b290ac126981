//! `tokenledger serve` as a process against a real nats-server: kill -9 under
//! concurrent load and restart loses no acknowledged command and leaves the
//! stream exactly the log; SIGTERM exits cleanly after draining; a second
//! server on the same data dir refuses.

use async_nats::jetstream;
use futures_util::StreamExt;
use ledger_crypto::MasterKey;
use ledger_store::{Store, StoreConfig};
use ledger_testkit::{wait_for_async, NatsServer};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

mod common;
use common::Reaped;

const DEADLINE: Duration = Duration::from_secs(60);
const MASTER_HEX: &str = "5f1d8a0c2b7e4f6a9c3d2e1f0a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";

/// The writer lease of these servers: a restart after kill -9 waits it out.
const LEASE_SECS: &str = "2";
/// For the test that starts a successor inside a crashed server's lease.
const LONG_LEASE_SECS: &str = "10";

fn serve(data: &Path, url: &str) -> Reaped {
    serve_leased(data, url, LEASE_SECS)
}

fn serve_leased(data: &Path, url: &str, lease_secs: &str) -> Reaped {
    Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--nats", url, "--writer-lease-secs", lease_secs])
            .env("TOKENLEDGER_MASTER_KEY", MASTER_HEX)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenledger serve"),
    )
}

/// The data dir a stopped server left, opened with its master key.
fn open_store(data: &Path) -> Store {
    Store::open(
        data,
        StoreConfig {
            master_key: Some(MasterKey::from_hex(MASTER_HEX).unwrap()),
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

async fn ready(client: &async_nats::Client) -> bool {
    wait_for_async(DEADLINE, || async {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(500),
                client.request("tokens.query.acme.list", "{}".into())
            )
            .await,
            Ok(Ok(_))
        )
    })
    .await
}

fn issue_body(i: u64) -> Value {
    json!({
        "commandId": Uuid::new_v4().to_string(),
        "workspaceId": "acme",
        "actor": {"agentId": "load", "agentType": "service"},
        "name": format!("token-{i}-{}", Uuid::new_v4()),
    })
}

/// Sends commands with 32 in flight until `stop` acks are in; returns the acks
/// (commandId -> positions). Requests cut off by a kill simply fail.
async fn load(client: &async_nats::Client, acks_wanted: usize) -> HashMap<String, Vec<u64>> {
    let mut acked = HashMap::new();
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let mut i = 0u64;
    let deadline = std::time::Instant::now() + DEADLINE;
    while acked.len() < acks_wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {acks_wanted} commands acknowledged within {DEADLINE:?}",
            acked.len()
        );
        while inflight.len() < 32 {
            i += 1;
            let body = issue_body(i);
            let id = body["commandId"].as_str().unwrap().to_owned();
            let c = client.clone();
            inflight.push(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.request(
                        "tokens.cmd.acme.issue_client_token",
                        serde_json::to_vec(&body).unwrap().into(),
                    ),
                )
                .await;
                (id, r)
            });
        }
        let (id, r) = inflight.next().await.unwrap();
        if let Ok(Ok(msg)) = r {
            let v: Value = serde_json::from_slice(&msg.payload).unwrap();
            assert_eq!(v["ok"], json!(true), "{v}");
            let positions = v["result"]["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
            acked.insert(id, positions);
        }
    }
    acked
}

/// Every message of stream TOKENS: (sequence, Nats-Msg-Id, body).
async fn stream_messages(js: &jetstream::Context) -> Vec<(u64, String, Value)> {
    let stream = js.get_stream("TOKENS").await.expect("stream");
    let last = stream.cached_info().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((seq, id, serde_json::from_slice(&m.payload).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_loses_nothing_and_publishes_once() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let mut all_acked: HashMap<String, Vec<u64>> = HashMap::new();

    for round in 0..3 {
        let mut child = serve(&data, &nats.url());
        assert!(ready(&client).await, "round {round}: server not ready");
        let acked = load(&client, 200 + round * 150).await;
        child.kill().unwrap(); // SIGKILL, mid-load
        child.wait().unwrap();
        all_acked.extend(acked);
    }

    // Restart; publication catches up; then stop cleanly and compare.
    let mut child = serve(&data, &nats.url());
    assert!(ready(&client).await);
    let head: u64 = all_acked.values().flatten().copied().max().unwrap();
    assert!(
        wait_for_async(DEADLINE, || async {
            js.get_stream("TOKENS")
                .await
                .map(|s| s.cached_info().state.last_sequence >= head)
                .unwrap_or(false)
        })
        .await,
        "publication did not catch up"
    );
    common::sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit cleanly: {status}");

    let log = tokio::task::spawn_blocking(move || {
        let store = open_store(&data);
        let log: Vec<_> = store.iter_from(1).map(|e| e.unwrap()).collect();
        store.shutdown().unwrap();
        log
    })
    .await
    .unwrap();
    let mut by_command: HashMap<String, Vec<u64>> = HashMap::new();
    for ev in &log {
        let env = ev.envelope().unwrap();
        by_command
            .entry(env.command_id.to_string())
            .or_default()
            .push(env.position);
    }
    for (id, positions) in &all_acked {
        assert_eq!(
            by_command.get(id),
            Some(positions),
            "acknowledged {id} lost"
        );
    }

    let messages = stream_messages(&js).await;
    assert_eq!(messages.len(), log.len(), "stream holds exactly the log");
    let mut ids = HashSet::new();
    for ((seq, msg_id, body), ev) in messages.iter().zip(&log) {
        let env = ev.envelope().unwrap();
        assert_eq!(*seq, env.position, "sequence == position");
        assert_eq!(*msg_id, env.event_id.to_string());
        assert!(ids.insert(msg_id.clone()), "duplicate eventId {msg_id}");
        assert_eq!(body["hash"], json!(env.hash));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_refuses() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let mut first = serve(&data, &nats.url());
    assert!(ready(&client).await);
    let second = serve(&data, &nats.url()).wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(4), "exit code 4: locked");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    common::sigterm(&first);
    assert!(first.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_next_server_waits_out_the_writer_lease_and_after_sigterm_not() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");

    // A lease long enough that the successor starts inside it even on a
    // loaded machine (renewed every fifth of it, so at least 8 s remain).
    let mut crashed = serve_leased(&data, &nats.url(), LONG_LEASE_SECS);
    assert!(ready(&client).await);
    crashed.kill().unwrap();
    crashed.wait().unwrap();

    // The crashed server's lease is still in the bucket: its successor
    // says so, waits for the expiry, then serves.
    let successor = serve_leased(&data, &nats.url(), LONG_LEASE_SECS);
    assert!(ready(&client).await, "the successor never served");
    common::sigterm(&successor);
    let out = successor.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("not serving until this instance holds the writer lease"),
        "{log}"
    );

    // A clean stop released it: the next one does not wait.
    let next = serve_leased(&data, &nats.url(), LONG_LEASE_SECS);
    assert!(ready(&client).await);
    common::sigterm(&next);
    let out = next.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("writer lease"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_only_event_subjects_and_a_stalled_publication_is_reported() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    // An operator made TOKENS with a second subject: the server's own
    // checkpoint notes would land in it and take a log position's sequence.
    js.create_stream(jetstream::stream::Config {
        name: "TOKENS".into(),
        subjects: vec!["tokens.evt.>".into(), "tokens.checkpoint".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(&dir.path().join("ledger"), &nats.url());
    let lines = stderr_lines(&mut server);
    assert!(ready(&client).await);
    let info = |js: jetstream::Context| async move {
        js.get_stream("TOKENS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone()
    };
    assert_eq!(info(js.clone()).await.config.subjects, ["tokens.evt.>"]);

    // Then a limit that refuses new messages: commands are still acknowledged
    // (the log is the outbox), and the server says publication is stuck.
    ledger_testkit::cap_tokens_stream(&nats.url(), Some(1), true).await;
    for i in 0..3 {
        let reply = client
            .request(
                "tokens.cmd.acme.issue_client_token",
                issue_body(i).to_string().into(),
            )
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    let warned = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("not progressing") => break line,
            Ok(_) => {}
            Err(_) => panic!("no warning about the stalled publication"),
        }
    };
    // The warning may come before the last command is committed, so it
    // counts one or two events behind, never none (nor the one published).
    let unpublished: u64 = warned
        .split("unpublished=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no unpublished count: {warned}"));
    assert!((1..=2).contains(&unpublished), "{warned}");

    // Lifted, the stream catches up with the log.
    ledger_testkit::cap_tokens_stream(&nats.url(), None, true).await;
    let caught_up = wait_for_async(DEADLINE, || async {
        info(js.clone()).await.state.last_sequence == 3
    })
    .await;
    assert!(caught_up, "publication did not resume");
    common::sigterm(&server);
    assert!(server.wait().unwrap().success());
}

/// The lines a child writes to its piped stderr, as they come.
fn stderr_lines(child: &mut Reaped) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// SIGTERM while NATS is gone: the server skips what needs NATS (the
/// unsubscribe confirmations, the checkpoint's flush, the lease's release,
/// the publisher's last drain) instead of waiting out a timeout at each
/// step, which took about 37 s, past the grace supervisors give; it stops
/// cleanly, and what it had appended is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_gone_stops_at_once_and_keeps_the_log() {
    let mut nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let mut child = serve(&data, &nats.url());
    assert!(ready(&client).await, "server not ready");
    let acked = load(&client, 20).await;
    nats.stop().unwrap();
    common::sigterm(&child);
    // Well under one of the waits it used to make (the drain timeout, 10 s).
    let (stopped, mut child) = tokio::task::spawn_blocking(move || {
        let stopped = ledger_testkit::wait_for(Duration::from_secs(8), || {
            child.try_wait().unwrap().is_some()
        });
        (stopped, child)
    })
    .await
    .unwrap();
    if !stopped {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        stopped,
        "serve still running 8 s after SIGTERM with NATS gone: {log}"
    );
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(log.contains("NATS is unreachable"), "{log}");
    let head: u64 = acked.values().flatten().copied().max().unwrap();
    let on_disk = tokio::task::spawn_blocking(move || {
        let store = open_store(&data);
        let head = store.head_position();
        store.shutdown().unwrap();
        head
    })
    .await
    .unwrap();
    assert!(on_disk >= head, "acknowledged commands are on disk");
}

/// A fatal end of `serve` carries the NATS layer's own code (as the README
/// names them), not `internal`, and exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ahead_of_the_log_ends_serve_with_its_own_code() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut first = serve(&dir.path().join("first"), &nats.url());
    assert!(ready(&client).await);
    let reply = client
        .request(
            "tokens.cmd.acme.issue_client_token",
            issue_body(1).to_string().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    common::sigterm(&first);
    assert!(first.wait().unwrap().success());

    // Another, empty data dir on the same stream: the stream is ahead.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .arg("--json")
        .arg("--data-dir")
        .arg(dir.path().join("second"))
        .args(["serve", "--nats", &nats.url()])
        .env("TOKENLEDGER_MASTER_KEY", MASTER_HEX)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error: Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON error in {stderr}"));
    assert_eq!(error["error"]["code"], "stream_ahead", "{stderr}");
}
