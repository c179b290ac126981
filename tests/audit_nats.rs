//! `tokenledger audit verify --nats URL` and the server's signed checkpoints,
//! against a real nats-server (JetStream).
//!
//! * A served ledger: after some commands its stream verifies without the
//!   data dir, with the data dir's head hash and Merkle root; a subscriber
//!   on `tokens.checkpoint` gets a note after N events and another at
//!   SIGTERM, each stored as `checkpoints/<size>.note`, each checking out
//!   against the stream (`--checkpoint FILE`, `--checkpoint latest`).
//! * Hand-made streams `TOKENS` on a fresh nats-server (the real one denies
//!   deletes, so it cannot be tampered with through NATS): one bad hash is
//!   named at its position; a suffix rewritten with recomputed hashes passes
//!   alone but fails a signed checkpoint of the honest history; a stream
//!   shorter than a checkpoint is truncated.
//!
//! Nothing waits by sleeping: a test waits for a message, a process, or a
//! condition polled with a deadline.

use async_nats::jetstream;
use futures_util::StreamExt;
use ledger_audit::merkle::{leaf_hash, parse_hash, Accumulator};
use ledger_audit::{Checkpoint, CheckpointKey, SignedCheckpoint};
use ledger_core::{Envelope, EventData, Timestamp};
use ledger_testkit::{renamed_chain, wait_for_async, NatsServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

mod common;

use common::{Reaped, Run, BIN};
const MASTER_HEX: &str = "5f1d8a0c2b7e4f6a9c3d2e1f0a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";
const DEADLINE: Duration = Duration::from_secs(60);
const EXIT_FINDING: i32 = 5;
/// The server signs a checkpoint after this many new events.
const EVERY: u64 = 4;
/// Commands (one event each) sent to the server: more than EVERY, fewer
/// than twice as many.
const COMMANDS: u64 = 6;

impl Run {
    /// The finding of a failed `--json` verify: (position, kind, until).
    fn finding(&self) -> (u64, String, Option<u64>) {
        assert_eq!(
            self.code, EXIT_FINDING,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let f = &self.report()["finding"];
        (
            f["position"].as_u64().unwrap(),
            f["kind"].as_str().unwrap().to_owned(),
            f["until"].as_u64(),
        )
    }
}

/// Runs the binary with a clean environment (no data dir, NATS or workspace from outside).
fn run(data: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TOKENLEDGER_WORKSPACE")
        .env_remove("TOKENLEDGER_DATA_DIR")
        .env_remove("TOKENLEDGER_NATS")
        .output()
        .expect("run tokenledger");
    Run::from(out)
}

/// `--nats URL ARGS...` with a data dir that must stay absent.
fn over_nats(url: &str, args: &[&str]) -> Run {
    let nowhere = tempfile::tempdir().unwrap();
    let data = nowhere.path().join("no-data-dir");
    let mut all = vec!["--nats", url];
    all.extend_from_slice(args);
    let r = run(&data, &all);
    assert!(!data.exists(), "{args:?} over --nats created a data dir");
    r
}

/// `audit verify --nats URL --json ...` with a data dir that must stay absent.
fn verify_stream(url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--json", "audit", "verify"];
    args.extend_from_slice(extra);
    over_nats(url, &args)
}

fn serve(data: &Path, url: &str) -> Reaped {
    Reaped::new(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--nats", url])
            .args(["--checkpoint-every-events", &EVERY.to_string()])
            .args(["--checkpoint-every-secs", "3600"])
            .env("TOKENLEDGER_MASTER_KEY", MASTER_HEX)
            .env_remove("TOKENLEDGER_NATS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tokenledger serve"),
    )
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

async fn issue(client: &async_nats::Client, i: u64) -> u64 {
    let body = json!({
        "commandId": Uuid::new_v4().to_string(),
        "workspaceId": "acme",
        "actor": {"agentId": "auditor-test", "agentType": "service"},
        "name": format!("token-{i}"),
    });
    let reply = client
        .request(
            "tokens.cmd.acme.issue_client_token",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .expect("reply");
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["ok"], json!(true), "{v}");
    v["result"]["positions"][0].as_u64().unwrap()
}

/// The next note on `sub`, parsed.
async fn next_note(sub: &mut async_nats::Subscriber) -> SignedCheckpoint {
    let m = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a checkpoint note in time")
        .expect("subscription open");
    SignedCheckpoint::parse(std::str::from_utf8(&m.payload).unwrap()).expect("a signed note")
}

async fn stream_last(js: &jetstream::Context) -> u64 {
    match js.get_stream("TOKENS").await {
        Ok(s) => s.cached_info().state.last_sequence,
        Err(_) => 0,
    }
}

fn note_file(data: &Path, size: u64) -> PathBuf {
    data.join("checkpoints").join(format!("{size:020}.note"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_ledger_verifies_from_its_stream_and_publishes_checkpoints() {
    let nats = NatsServer::start().unwrap();
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut notes = client.subscribe("tokens.checkpoint").await.unwrap();
    client.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let mut server = serve(&data, &url);
    assert!(ready(&client).await, "the server did not become ready");
    for i in 1..=EVERY {
        assert_eq!(issue(&client, i).await, i);
    }
    // A note once EVERY events are in, and of exactly those: nothing else
    // is sent until it arrives. (Sending all the commands first let the
    // note cover all of them now and then, and then no note was due at
    // SIGTERM, which the end of this test waits for.)
    let first = next_note(&mut notes).await;
    let size = first.checkpoint.size;
    assert_eq!(size, EVERY, "first checkpoint of {size} events");
    // Fewer than EVERY more: the next note is the one made at SIGTERM.
    for i in EVERY + 1..=COMMANDS {
        assert_eq!(issue(&client, i).await, i);
    }
    assert_eq!(
        std::fs::read_to_string(note_file(&data, size)).unwrap(),
        first.note,
        "the published note is the stored one"
    );
    // The newest one is asked for on tokens.checkpoint.latest.
    let latest = client
        .request("tokens.checkpoint.latest", "".into())
        .await
        .unwrap();
    let latest: Value = serde_json::from_slice(&latest.payload).unwrap();
    assert_eq!(latest["ok"], json!(true), "{latest}");
    assert_eq!(latest["result"]["note"], json!(first.note));
    assert_eq!(latest["result"]["size"], json!(size));

    // The key an auditor is handed (the server created it; no lock needed).
    let key = run(&data, &["audit", "key"]).ok().stdout.trim().to_owned();
    first
        .verify(&ledger_audit::VerifierKey::parse(&key).unwrap())
        .unwrap();

    // The stream, once published, verifies without the data dir.
    assert!(
        wait_for_async(DEADLINE, || async { stream_last(&js).await == COMMANDS }).await,
        "publication did not catch up"
    );
    let live = verify_stream(&url, &[]).ok().report();
    assert_eq!(live["summary"]["events"], json!(COMMANDS));
    assert_eq!(live["summary"]["headPosition"], json!(COMMANDS));
    assert_eq!(live["stream"]["state"]["lastSequence"], json!(COMMANDS));
    let r = verify_stream(&url, &["--checkpoint", "latest", "--key", &key])
        .ok()
        .report();
    assert_eq!(
        r["summary"]["checkpoints"],
        json!([{"size": size, "label": "tokens.checkpoint.latest", "outcome": "matches"}])
    );
    let from = verify_stream(&url, &["--from", "3"]).ok().report();
    assert_eq!(from["summary"]["firstPosition"], json!(3));
    assert_eq!(from["summary"]["events"], json!(COMMANDS - 2));
    assert_eq!(from["summary"]["headHash"], live["summary"]["headHash"]);

    // SIGTERM: one more note, of the whole log.
    common::sigterm(&server);
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit cleanly: {status}");
    let last = next_note(&mut notes).await;
    assert_eq!(last.checkpoint.size, COMMANDS);
    let last_file = note_file(&data, COMMANDS);
    assert_eq!(std::fs::read_to_string(&last_file).unwrap(), last.note);

    // The data dir agrees with the stream, and both checkpoints hold on it.
    let local = run(&data, &["--json", "audit", "verify"]).ok().report();
    assert_eq!(local["summary"]["headHash"], live["summary"]["headHash"]);
    assert_eq!(
        local["summary"]["merkleRoot"],
        live["summary"]["merkleRoot"]
    );
    let outcomes: Vec<&Value> = local["summary"]["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("matches"), &json!("matches")]);

    // The note received at SIGTERM, as a file, proves the stream unchanged.
    let received = dir.path().join("received.note");
    std::fs::write(&received, &last.note).unwrap();
    let r = verify_stream(
        &url,
        &["--checkpoint", received.to_str().unwrap(), "--key", &key],
    )
    .ok()
    .report();
    assert_eq!(r["summary"]["checkpoints"][0]["outcome"], json!("matches"));
    assert_eq!(r["summary"]["headHash"], live["summary"]["headHash"]);
    // A wrong key is a finding (exit 5), before anything is read.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = CheckpointKey::load_or_create(&other_dir).unwrap();
    let r = verify_stream(
        &url,
        &[
            "--checkpoint",
            received.to_str().unwrap(),
            "--key",
            &other.verifier().to_string(),
        ],
    );
    assert_eq!(r.code, EXIT_FINDING, "stderr: {}", r.stderr);
}

/// The same chain from position `from` on, rewritten: other names, every
/// hash and link recomputed (positions, versions and the token unchanged).
fn rewrite_from(events: &[Envelope], from: u64) -> Vec<Envelope> {
    let mut out: Vec<Envelope> = Vec::with_capacity(events.len());
    for env in events {
        let mut env = env.clone();
        if env.position >= from {
            if let EventData::ClientTokenUpdated(u) = &mut env.data {
                u.name = Some(Some(format!("rewritten-{}", env.position)));
            }
            env.prev_hash = out.last().unwrap().hash.clone();
            env.hash = env.computed_hash();
        }
        out.push(env);
    }
    out
}

/// Creates `TOKENS` with the server's own config and publishes `bodies` as sequences 1, 2, ...
async fn publish(js: &jetstream::Context, events: &[Envelope], bodies: Vec<Vec<u8>>) {
    let settings = ledger_nats::StreamSettings {
        replicas: 1,
        duplicate_window: Duration::from_secs(120),
    };
    js.create_stream(settings.config()).await.unwrap();
    for (env, body) in events.iter().zip(bodies) {
        // As the server publishes: the event's subject, its id as Nats-Msg-Id.
        let message = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(env.event_id.to_string());
        let ack = js
            .send_publish(env.subject(), message)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, env.position);
    }
}

/// A checkpoint of `events` signed with a key made in `dir`; returns (note file, verifier key).
fn sign(dir: &Path, events: &[Envelope]) -> (PathBuf, String) {
    let key = CheckpointKey::load_or_create(dir).unwrap();
    let mut acc = Accumulator::new();
    for env in events {
        acc.push_leaf_hash(leaf_hash(&parse_hash(&env.hash).unwrap()));
    }
    let signed = SignedCheckpoint::sign(
        Checkpoint {
            origin: key.origin().to_owned(),
            size: events.len() as u64,
            root: acc.root(),
            time: Some(Timestamp::parse("2026-03-02T00:00:00Z").unwrap()),
        },
        key.signer(),
    );
    let file = dir.join("honest.note");
    std::fs::write(&file, &signed.note).unwrap();
    (file, key.verifier().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_hash_in_the_stream_is_named_at_its_position() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let events = renamed_chain(10, "crafted");
    let mut bodies: Vec<Vec<u8>> = events.iter().map(|e| e.to_json_bytes()).collect();
    // Event 6 renamed after it was hashed: its recorded hash no longer matches.
    let mut tampered: Value = serde_json::from_slice(&bodies[5]).unwrap();
    tampered["data"]["name"] = json!("forged");
    bodies[5] = serde_json::to_vec(&tampered).unwrap();
    publish(&js, &events, bodies).await;

    let url = nats.url();
    let r = verify_stream(&url, &[]);
    assert_eq!(r.finding(), (6, "hash_mismatch".to_owned(), None));
    assert_eq!(
        r.report()["summary"]["headPosition"],
        json!(5),
        "verified up to the finding"
    );
    // A range after the bad event links to event 7, checked alone, and passes.
    let tail = verify_stream(&url, &["--from", "8"]).ok().report();
    assert_eq!(tail["summary"]["firstPosition"], json!(8));
    assert_eq!(tail["summary"]["headHash"], json!(events[9].hash));
    // A range that would link to the bad event cannot start there.
    let r = verify_stream(&url, &["--from", "7"]);
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_stream_fails_the_checkpoint_of_the_honest_one() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let honest = renamed_chain(10, "honest");
    let dir = tempfile::tempdir().unwrap();
    let (note, key) = sign(dir.path(), &honest);
    let rewritten = rewrite_from(&honest, 6);
    let bodies = rewritten.iter().map(|e| e.to_json_bytes()).collect();
    publish(&js, &rewritten, bodies).await;

    let url = nats.url();
    // Every hash and link recomputes: alone, the stream passes.
    let alone = verify_stream(&url, &[]).ok().report();
    assert_eq!(alone["summary"]["headHash"], json!(rewritten[9].hash));
    // The honest checkpoint does not.
    let r = verify_stream(
        &url,
        &["--checkpoint", note.to_str().unwrap(), "--key", &key],
    );
    assert_eq!(
        r.finding(),
        (1, "checkpoint_mismatch".to_owned(), Some(10)),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shorter_than_a_checkpoint_is_truncated() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let events = renamed_chain(8, "short");
    let dir = tempfile::tempdir().unwrap();
    let (note, key) = sign(dir.path(), &events);
    let kept = &events[..6];
    publish(&js, kept, kept.iter().map(|e| e.to_json_bytes()).collect()).await;

    // The reader waits (--wait) for the two events the checkpoint vouches for.
    let r = verify_stream(
        &nats.url(),
        &[
            "--checkpoint",
            note.to_str().unwrap(),
            "--key",
            &key,
            "--wait",
            "1",
        ],
    );
    assert_eq!(
        r.finding(),
        (7, "truncated".to_owned(), Some(8)),
        "{}",
        r.stdout
    );
}

/// The replays and histories compared over the stream and from the data dir
/// (the first history is `tokens[0]`'s, at index 5).
fn view_questions(tokens: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = [
        &["audit", "replay", "--position", "2"][..],
        &["audit", "replay", "--position", "5"],
        &["audit", "replay", "--diff", "1", "5"],
        &["audit", "replay", "--as-of", "2999-01-01T00:00:00Z"],
        &["--workspace", "acme", "audit", "replay", "--diff", "2", "4"],
    ]
    .iter()
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .collect();
    for t in tokens {
        out.push(vec!["audit".into(), "history".into(), t.clone()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_history_read_the_stream_of_a_running_server() {
    let nats = NatsServer::start().unwrap();
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data, &url);
    assert!(ready(&client).await, "the server did not become ready");

    // Five events through the CLI over NATS: three tokens, a rename, a trash.
    let command = |args: &[&str]| {
        let mut all = vec!["--json", "--workspace", "acme"];
        all.extend_from_slice(args);
        over_nats(&url, &all).json()
    };
    let tokens: Vec<String> = (1..=3)
        .map(|i| {
            command(&["issue", "--name", &format!("t{i}")])["token"]["resourceId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    command(&["update", &tokens[0], "--name", "t1-renamed"]);
    command(&["trash", &tokens[1]]);
    assert!(
        wait_for_async(DEADLINE, || async { stream_last(&js).await == 5 }).await,
        "publication did not catch up"
    );

    // The server holds the data dir; the stream answers.
    let locked = run(&data, &["--json", "audit", "replay", "--position", "2"]);
    assert_eq!(locked.code, 4, "{}", locked.stderr);
    let questions = view_questions(&tokens);
    let mut live = Vec::new();
    for q in &questions {
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        let mut json = vec!["--json"];
        json.extend_from_slice(&q);
        live.push((
            over_nats(&url, &json).json(),
            over_nats(&url, &q).ok().stdout,
        ));
    }
    let h = &live[5].0;
    assert_eq!(
        h["entries"][1]["changes"][0]["to"],
        json!("t1-renamed"),
        "{h}"
    );
    assert_eq!(live[0].0["tokens"].as_array().unwrap().len(), 2);

    // Stopped, the data dir gives the same answers.
    common::sigterm(&server);
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit cleanly: {status}");
    for (q, (json, text)) in questions.iter().zip(&live) {
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        let mut j = vec!["--json"];
        j.extend_from_slice(&q);
        assert_eq!(&run(&data, &j).json(), json, "{q:?}");
        assert_eq!(&run(&data, &q).ok().stdout, text, "{q:?}");
    }
}

/// A replay over the stream stops reading at its point: a bad event after
/// it is never verified, while a replay past it, or a history, fails there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reads_the_stream_only_up_to_its_point() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let events = renamed_chain(10, "crafted");
    let mut bodies: Vec<Vec<u8>> = events.iter().map(|e| e.to_json_bytes()).collect();
    let mut tampered: Value = serde_json::from_slice(&bodies[7]).unwrap();
    tampered["data"]["name"] = json!("forged");
    bodies[7] = serde_json::to_vec(&tampered).unwrap();
    publish(&js, &events, bodies).await;
    let url = nats.url();

    let at3 = over_nats(&url, &["--json", "audit", "replay", "--position", "3"]).json();
    assert_eq!(at3["position"], json!(3));
    assert_eq!(at3["tokens"][0]["name"], json!("crafted-3"));
    let t3 = events[2].occurred_at.to_string();
    let asof = over_nats(&url, &["--json", "audit", "replay", "--as-of", &t3]).json();
    assert_eq!(asof["tokens"][0]["name"], json!("crafted-3"));

    let token = events[0].token_id.to_string();
    for args in [
        &["--json", "audit", "replay", "--position", "9"][..],
        &["--json", "audit", "replay", "--diff", "2", "8"],
        &["--json", "audit", "history", &token],
    ] {
        let r = over_nats(&url, args);
        assert_eq!(r.code, EXIT_FINDING, "{args:?}: {}", r.stderr);
        let e = r.error();
        assert_eq!(e["code"], json!("hash_mismatch"), "{e}");
        assert!(
            e["message"].as_str().unwrap().starts_with("position 8:"),
            "{e}"
        );
    }
}
