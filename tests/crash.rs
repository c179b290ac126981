//! Crash test: a child `tokenledger debug-load` appends under concurrent load
//! and is killed with SIGKILL at random moments. After every kill the data
//! dir must reopen with every acknowledged command present, the hash chain
//! intact, no half-written command, and views equal to a rebuild. Each check
//! stops the store cleanly, which writes a state snapshot: the next child
//! opens from it, and the next check from it plus the tail the child wrote.
//!
//! The seed is printed; rerun one with `CRASH_SEED=<n>`.

use ledger_crypto::MasterKey;
use ledger_projector::Projector;
use ledger_store::{Store, StoreConfig};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const ROUNDS: u64 = 20;
/// One master key for every round, given to the child through the environment.
const MASTER_HEX: &str = "0b30557a9fc4e9134e6388adf2173c61860baff4193e6d82a7cc11f65b80a5ca";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ack {
    command_id: Uuid,
    token_id: Uuid,
    positions: Vec<u64>,
}

/// xorshift: deterministic from the printed seed, no dependency needed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let mut seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<Uuid, Ack> = HashMap::new();
    let mut checked = 0;

    for round in 0..ROUNDS {
        let kill_after_acks = 1 + next(&mut seed) % 300;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["--data-dir"])
            .arg(dir.path())
            .args([
                "--workspace",
                "crash",
                "debug-load",
                "--writers",
                "16",
                "--count",
                "0",
            ])
            .env("TOKENLEDGER_MASTER_KEY", MASTER_HEX)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tokenledger");
        // Read on a thread, so that a child that goes silent fails the
        // round at the deadline instead of hanging the test.
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < kill_after_acks {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                break;
            };
            let ack: Ack = serde_json::from_str(&line).expect("ack line");
            acked.insert(ack.command_id, ack);
            seen += 1;
        }
        assert_eq!(
            seen, kill_after_acks,
            "round {round}: child stopped acknowledging"
        );
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        // Acks already written to the pipe before the kill are acknowledged
        // too; the reader ends at the pipe's end.
        for line in lines.iter() {
            if let Ok(ack) = serde_json::from_str::<Ack>(&line) {
                acked.insert(ack.command_id, ack);
            }
        }
        checked = check(dir.path(), &acked, round, checked);
    }
}

/// Checks the data dir after a kill; `snapshot` is the head the previous
/// check left its state snapshot at. Returns this check's head.
fn check(dir: &std::path::Path, acked: &HashMap<Uuid, Ack>, round: u64, snapshot: u64) -> u64 {
    let master = MasterKey::from_hex(MASTER_HEX).unwrap();
    let store = Store::open(
        dir,
        StoreConfig {
            master_key: Some(master),
            snapshot_min_events: Some(0),
            ..StoreConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
    let head = store.head().unwrap();
    assert_eq!(
        store.opened().snapshot,
        snapshot,
        "round {round}: opened from the last clean stop's snapshot"
    );

    // The chain verifies from genesis to head; collect what each command wrote.
    let mut prev = ledger_core::event::GENESIS_HASH.to_owned();
    let mut count = 0u64;
    let mut by_command: HashMap<Uuid, (Uuid, Vec<u64>)> = HashMap::new();
    for ev in store.iter_from(1) {
        let ev = ev.unwrap();
        count += 1;
        let env = ev.check(count, &prev).expect("chain holds");
        let entry = by_command
            .entry(env.command_id)
            .or_insert_with(|| (env.token_id, Vec::new()));
        assert_eq!(
            entry.0, env.token_id,
            "round {round}: one command, one token"
        );
        entry.1.push(env.position);
        prev = env.hash;
    }
    assert_eq!(count, head.position);
    assert_eq!(prev, head.hash);

    // Every acknowledged command is present, whole, at the positions it was told.
    for ack in acked.values() {
        let Some((token, positions)) = by_command.get(&ack.command_id) else {
            panic!(
                "round {round}: acknowledged command {} lost",
                ack.command_id
            );
        };
        assert_eq!(*token, ack.token_id, "round {round}");
        assert_eq!(
            *positions, ack.positions,
            "round {round}: command {} changed",
            ack.command_id
        );
    }

    // Views: the incremental projector, resumed from its checkpoint, equals a rebuild.
    let mut projector = Projector::open(store.db()).unwrap();
    projector.catch_up(&store).unwrap();
    assert_eq!(projector.checkpoint(), head.position);
    let scratch = store.db().open_tree("views.crash-check").unwrap();
    let rebuilt = Projector::rebuild(&store, scratch).unwrap();
    assert!(
        projector.dump().unwrap() == rebuilt.dump().unwrap(),
        "round {round}: incremental views differ from a rebuild"
    );
    store.db().drop_tree("views.crash-check").unwrap();
    store.shutdown().unwrap();
    head.position
}
