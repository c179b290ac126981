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
//! * `audit export --nats` of a running server: the whole log, ranges and a
//!   workspace verify alone (`audit verify --file`) and equal the data dir's
//!   exports once it stops; a tampered stream fails the export at the bad
//!   position and leaves no file; a stream without sequence 1 is refused.
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

/// A nats-server, a client on it (subscribed to `tokens.checkpoint` before
/// the ledger starts, so no note is missed), and `tokenledger serve` on a
/// fresh data dir, answering.
struct Served {
    nats: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    notes: async_nats::Subscriber,
    dir: tempfile::TempDir,
    data: PathBuf,
    server: Reaped,
}

impl Served {
    async fn start() -> Served {
        let nats = NatsServer::start().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let notes = client.subscribe("tokens.checkpoint").await.unwrap();
        client.flush().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = serve(&data, &nats.url());
        assert!(ready(&client).await, "the server did not become ready");
        Served {
            nats,
            client,
            js,
            notes,
            dir,
            data,
            server,
        }
    }
}

/// SIGTERM, and the clean exit it must give.
fn stop(server: &mut Reaped) {
    common::sigterm(server);
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit cleanly: {status}");
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
    issue_in(client, "acme", &format!("token-{i}")).await
}

/// Issues a client token named `name` in `workspace`; returns its position.
async fn issue_in(client: &async_nats::Client, workspace: &str, name: &str) -> u64 {
    let body = json!({
        "commandId": Uuid::new_v4().to_string(),
        "workspaceId": workspace,
        "actor": {"agentId": "auditor-test", "agentType": "service"},
        "name": name,
    });
    let reply = client
        .request(
            format!("tokens.cmd.{workspace}.issue_client_token"),
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
    let Served {
        nats,
        client,
        js,
        mut notes,
        dir,
        data,
        mut server,
    } = Served::start().await;
    let url = nats.url();
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
    stop(&mut server);
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

/// The server's own config of `TOKENS`.
fn stream_config() -> jetstream::stream::Config {
    let settings = ledger_nats::StreamSettings {
        replicas: 1,
        duplicate_window: Duration::from_secs(120),
    };
    settings.config()
}

/// Creates `TOKENS` with the server's own config and publishes `bodies` as sequences 1, 2, ...
async fn publish(js: &jetstream::Context, events: &[Envelope], bodies: Vec<Vec<u8>>) {
    publish_with(js, stream_config(), events, bodies).await;
}

/// Creates `TOKENS` with `config` and publishes `bodies` as sequences 1, 2, ...
async fn publish_with(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
    events: &[Envelope],
    bodies: Vec<Vec<u8>>,
) {
    js.create_stream(config).await.unwrap();
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

/// A nats-server whose stream holds a chain of `len` renames of one token,
/// the event at `position` renamed "forged" after it was hashed (its
/// recorded hash no longer matches); the events as they were chained.
async fn tampered_stream(len: u64, position: usize) -> (NatsServer, Vec<Envelope>) {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let events = renamed_chain(len, "crafted");
    let mut bodies: Vec<Vec<u8>> = events.iter().map(|e| e.to_json_bytes()).collect();
    let mut tampered: Value = serde_json::from_slice(&bodies[position - 1]).unwrap();
    tampered["data"]["name"] = json!("forged");
    bodies[position - 1] = serde_json::to_vec(&tampered).unwrap();
    publish(&js, &events, bodies).await;
    (nats, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_hash_in_the_stream_is_named_at_its_position() {
    let (nats, events) = tampered_stream(10, 6).await;

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
    let Served {
        nats,
        js,
        dir: _dir,
        data,
        mut server,
        ..
    } = Served::start().await;
    let url = nats.url();

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
    stop(&mut server);
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
    let (nats, events) = tampered_stream(10, 8).await;
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

/// `[GLOBAL...] --json audit export --out OUT [EXTRA...]` over `--nats URL`,
/// with a data dir that must stay absent.
fn export_stream(url: &str, global: &[&str], out: &Path, extra: &[&str]) -> Run {
    let mut args = global.to_vec();
    args.extend_from_slice(&["--json", "audit", "export", "--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    over_nats(url, &args)
}

/// `audit verify --file FILE --key KEY --json`, away from any data dir.
fn verify_file(file: &Path, key: &str) -> Value {
    let nowhere = tempfile::tempdir().unwrap();
    let data = nowhere.path().join("no-data-dir");
    let args = [
        "--json",
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--key",
        key,
    ];
    let v = run(&data, &args).ok().report();
    assert_eq!(v["ok"], json!(true), "{v}");
    v
}

/// An export's lines.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An export's event lines: after the header, before the proofs and the manifest.
fn event_lines(file: &Path) -> Vec<String> {
    lines(file)
        .into_iter()
        .skip(1)
        .filter(|l| !l.starts_with("{\"inclusionProof\":") && !l.starts_with("{\"manifest\":"))
        .collect()
}

/// One export of the stream, and what it must hold.
struct Case {
    name: &'static str,
    /// Flags before `audit` (`--workspace W`).
    global: &'static [&'static str],
    /// Flags of `audit export`.
    flags: &'static [&'static str],
    events: u64,
    proofs: u64,
}

impl Case {
    fn new(
        name: &'static str,
        global: &'static [&'static str],
        flags: &'static [&'static str],
        events: u64,
        proofs: u64,
    ) -> Case {
        Case {
            name,
            global,
            flags,
            events,
            proofs,
        }
    }
}

/// `audit export --nats` of a running server (which holds the data dir):
/// the whole log, ranges and a workspace, each verifying on its own with the
/// server's checkpoint when it falls in the range; once the server stops,
/// the data dir's exports hold the same event lines, and with the same
/// checkpoint the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_exports_its_stream_as_its_data_dir_would() {
    let Served {
        nats,
        client,
        js,
        mut notes,
        dir,
        data,
        mut server,
    } = Served::start().await;
    let url = nats.url();
    let file = |name: &str| dir.path().join(name);
    // Two checkpoints' worth of events, acme's at odd positions and
    // globex's at even ones, each round's note awaited before the next (see
    // the first test): the newest checkpoint then covers the whole log, and
    // the one made at shutdown is that one again.
    let size = 2 * EVERY;
    for round in 0..2 {
        for i in 1..=EVERY {
            let p = round * EVERY + i;
            let ws = if p % 2 == 1 { "acme" } else { "globex" };
            assert_eq!(issue_in(&client, ws, &format!("token-{p}")).await, p);
        }
        let note = next_note(&mut notes).await;
        assert_eq!(note.checkpoint.size, (round + 1) * EVERY);
    }
    assert!(
        wait_for_async(DEADLINE, || async { stream_last(&js).await == size }).await,
        "publication did not catch up"
    );
    let key = run(&data, &["audit", "key"]).ok().stdout.trim().to_owned();
    let locked = run(
        &data,
        &[
            "--json",
            "audit",
            "export",
            "--out",
            file("locked.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(
        locked.code, 4,
        "the server holds its data dir: {}",
        locked.stderr
    );

    let cases = [
        Case::new("whole.jsonl", &[], &[], size, 1),
        Case::new("later.jsonl", &[], &["--from", "3"], size - 2, 1),
        Case::new("early.jsonl", &[], &["--from", "2", "--to", "5"], 4, 0),
        Case::new(
            "acme.jsonl",
            &["--workspace", "acme"],
            &[],
            size / 2,
            size / 2,
        ),
    ];
    let latest = client
        .request("tokens.checkpoint.latest", "".into())
        .await
        .unwrap();
    let latest: Value = serde_json::from_slice(&latest.payload).unwrap();
    assert_eq!(latest["result"]["size"], json!(size), "{latest}");
    for &Case {
        name,
        global,
        flags,
        events,
        proofs,
    } in &cases
    {
        let mut extra = flags.to_vec();
        extra.extend_from_slice(&["--key", &key]);
        let out = export_stream(&url, global, &file(name), &extra).json();
        let h = &out["header"];
        assert_eq!(out["events"], json!(events), "{name}: {out}");
        assert_eq!(out["inclusionProofs"], json!(proofs), "{name}: {out}");
        assert_eq!(h["head"]["position"], json!(size), "{name}: {out}");
        let embedded = proofs > 0;
        assert_eq!(h["checkpoint"].is_string(), embedded, "{name}: {out}");
        if embedded {
            assert_eq!(h["checkpoint"], latest["result"]["note"], "{name}");
            assert_eq!(out["stream"]["checkpointSignatureChecked"], json!(true));
        }
        let v = verify_file(&file(name), &key);
        assert_eq!(v["summary"]["events"], json!(events), "{name}: {v}");
        assert_eq!(v["proofsVerified"], json!(proofs), "{name}: {v}");
    }
    // Without --json, why a range has no checkpoint.
    let text = over_nats(
        &url,
        &[
            "audit",
            "export",
            "--from",
            "2",
            "--to",
            "5",
            "--out",
            file("early-text.jsonl").to_str().unwrap(),
        ],
    )
    .ok();
    assert!(
        text.stdout.contains(&format!(
            "the server's newest checkpoint, of size {size}, is not inside positions 2..=5"
        )),
        "{}",
        text.stdout
    );
    // Without a key the signature is not checked, and that is said.
    let unchecked = export_stream(&url, &[], &file("unchecked.jsonl"), &[]);
    assert_eq!(
        unchecked.json()["stream"]["checkpointSignatureChecked"],
        json!(false)
    );
    assert!(
        unchecked.stderr.contains("signature NOT checked"),
        "{}",
        unchecked.stderr
    );
    // Another key: a finding (exit 5) before anything is written.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = CheckpointKey::load_or_create(&other_dir).unwrap();
    let forged = file("other-key.jsonl");
    let r = export_stream(
        &url,
        &[],
        &forged,
        &["--key", &other.verifier().to_string()],
    );
    assert_eq!(r.code, EXIT_FINDING, "stderr: {}", r.stderr);
    assert_eq!(r.error()["code"], json!("bad_signature"), "{}", r.stderr);
    assert!(!forged.exists(), "a refused export left a file");

    // Stopped: the data dir's exports. No checkpoint was added at shutdown
    // (the newest covered the whole log), so those that embed one embed the
    // same, and the files are equal; the early range embeds the stored
    // checkpoint of size EVERY, which the server no longer offers: the same
    // events, byte for byte.
    stop(&mut server);
    let stored: Vec<_> = std::fs::read_dir(data.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for &Case {
        name,
        global,
        flags,
        proofs,
        ..
    } in &cases
    {
        let local = file(&format!("local-{name}"));
        let mut args = global.to_vec();
        args.extend_from_slice(&[
            "--json",
            "audit",
            "export",
            "--out",
            local.to_str().unwrap(),
        ]);
        args.extend_from_slice(flags);
        run(&data, &args).ok();
        assert_eq!(event_lines(&local), event_lines(&file(name)), "{name}");
        if proofs > 0 {
            assert_eq!(lines(&local), lines(&file(name)), "{name}");
        }
    }
    assert_eq!(event_lines(&file("whole.jsonl")).len() as u64, size);
}

/// An export from the stream verifies it from position 1 as it writes: a
/// tampered event fails the export at its position, with no file left, even
/// for a range after it; a range before it exports and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_tampered_stream_fails_at_the_bad_event_and_leaves_no_file() {
    let (nats, events) = tampered_stream(10, 6).await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();

    for (name, flags) in [("whole.jsonl", &[][..]), ("after.jsonl", &["--from", "8"])] {
        let out = dir.path().join(name);
        let r = export_stream(&url, &[], &out, flags);
        assert_eq!(r.code, EXIT_FINDING, "{name}: {}", r.stderr);
        let e = r.error();
        assert_eq!(e["code"], json!("hash_mismatch"), "{name}: {e}");
        assert!(
            e["message"].as_str().unwrap().starts_with("position 6:"),
            "{name}: {e}"
        );
        assert!(
            !out.exists(),
            "{name}: a failed export left its partial file"
        );
    }

    // Before the bad event: exported (no server answers for a checkpoint:
    // said, and none embedded), and it verifies on its own.
    let out = dir.path().join("before.jsonl");
    let r = export_stream(&url, &[], &out, &["--to", "5"]);
    let v = r.json();
    assert_eq!(v["events"], json!(5));
    assert_eq!(v["header"]["head"]["position"], json!(10));
    assert_eq!(v["header"]["head"]["hash"], json!(events[9].hash));
    assert!(v["header"]["checkpoint"].is_null(), "{v}");
    assert!(
        r.stderr.contains("no checkpoint from the server"),
        "{}",
        r.stderr
    );
    let nowhere = dir.path().join("no-data-dir");
    let verified = run(
        &nowhere,
        &["--json", "audit", "verify", "--file", out.to_str().unwrap()],
    )
    .ok()
    .report();
    assert_eq!(verified["summary"]["headPosition"], json!(5));
    assert_eq!(
        event_lines(&out),
        events[..5]
            .iter()
            .map(|e| String::from_utf8(e.to_json_bytes()).unwrap())
            .collect::<Vec<_>>()
    );
}

/// A tampered last event: the export that ends there fails at it, as a
/// finding; one that ends before it refuses to state it as the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_head_fails_the_export() {
    let (nats, _) = tampered_stream(6, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");

    let r = export_stream(&nats.url(), &[], &out, &[]);
    assert_eq!(r.code, EXIT_FINDING, "{}", r.stderr);
    let e = r.error();
    assert_eq!(e["code"], json!("hash_mismatch"), "{e}");
    assert!(
        e["message"].as_str().unwrap().starts_with("position 6:"),
        "{e}"
    );
    assert!(!out.exists());
    let r = export_stream(&nats.url(), &[], &out, &["--to", "5"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap()
            .contains("at sequence 6"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

/// A stream that no longer holds sequence 1 cannot be verified from the
/// start: its export is refused (exit 2), and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_its_first_events_is_not_exported() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let events = renamed_chain(5, "short");
    let config = jetstream::stream::Config {
        deny_delete: false,
        deny_purge: false,
        ..stream_config()
    };
    let bodies = events.iter().map(|e| e.to_json_bytes()).collect();
    publish_with(&js, config, &events, bodies).await;
    let stream = js.get_stream("TOKENS").await.unwrap();
    assert!(stream.delete_message(1).await.unwrap());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    let r = export_stream(&nats.url(), &[], &out, &["--from", "3"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let e = r.error();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("starts at sequence 2"),
        "{e}"
    );
    assert!(!out.exists());
}
