//! The log against a real sled database on disk.

use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::{CommandName, ErrorCode};
use ledger_crypto::MasterKey;
use ledger_store::{keys, Store, StoreConfig, StoreError};
use serde_json::{json, Value};
use std::path::Path;
use uuid::Uuid;

fn config(master: &MasterKey) -> StoreConfig {
    StoreConfig {
        master_key: Some(master.clone()),
        ..StoreConfig::default()
    }
}

fn cmd(name: CommandName, mut body: Value) -> ParsedCommand {
    let obj = body.as_object_mut().unwrap();
    obj.entry("commandId")
        .or_insert_with(|| json!(Uuid::new_v4().to_string()));
    obj.entry("workspaceId").or_insert_with(|| json!("acme"));
    obj.entry("actor")
        .or_insert_with(|| json!({"agentId": "alice", "agentType": "user"}));
    parse_value(name, body).expect("valid command")
}

fn open(dir: &Path, master: &MasterKey) -> Store {
    Store::open(dir, config(master)).expect("open store")
}

fn register(store: &Store, account: &str, secret: &str) -> Uuid {
    store
        .execute_blocking(cmd(
            CommandName::RegisterAccessToken,
            json!({
                "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"},
                "provider": "google",
                "accountName": account,
                "accessToken": secret,
                "refreshToken": format!("{secret}-refresh"),
            }),
        ))
        .expect("register")
        .token_id
}

#[test]
fn positions_are_gap_free_across_concurrent_writers_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        store
                            .execute_blocking(cmd(
                                CommandName::IssueClientToken,
                                json!({"name": format!("t{t}-{i}")}),
                            ))
                            .expect("issue")
                            .positions[0]
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut positions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=400).collect::<Vec<u64>>());
    assert_eq!(store.head_position(), 400);
    store.shutdown().unwrap();
    drop(store);

    let store = open(dir.path(), &master);
    let head = store.head().unwrap();
    assert_eq!(head.position, 400);
    let events = store.read_from(1, 1000).unwrap();
    assert_eq!(events.len(), 400);
    let mut prev = ledger_core::event::GENESIS_HASH.to_owned();
    for (i, ev) in events.iter().enumerate() {
        let env = ev.check(i as u64 + 1, &prev).expect("chain holds");
        prev = env.hash;
    }
    assert_eq!(prev, head.hash);
}

#[test]
fn same_command_id_returns_first_result_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let first = cmd(CommandName::IssueClientToken, json!({"name": "once"}));
    let a = store.execute_blocking(first.clone()).unwrap();
    let b = store.execute_blocking(first.clone()).unwrap();
    assert!(!a.replayed);
    assert!(b.replayed);
    assert_eq!(a.token_id, b.token_id);
    assert_eq!(a.positions, b.positions);
    assert_eq!(a.view, b.view);
    assert_eq!(store.head_position(), 1);

    // Still the first result after later changes and a restart.
    store
        .execute_blocking(cmd(
            CommandName::UpdateClientToken,
            json!({"tokenId": a.token_id.to_string(), "name": "renamed"}),
        ))
        .unwrap();
    store.shutdown().unwrap();
    drop(store);
    let store = open(dir.path(), &master);
    let c = store.execute_blocking(first.clone()).unwrap();
    assert_eq!(c.view, a.view, "the retry answers with the view as it was");
    assert_eq!(store.head_position(), 2);

    // The same id for another command is refused.
    let mut other = cmd(
        CommandName::TrashToken,
        json!({"tokenId": a.token_id.to_string()}),
    );
    other.command_id = first.command_id;
    let err = store.execute_blocking(other).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert_eq!(store.head_position(), 2);
}

/// A commandId answers only in its own workspace: a retry from another
/// tenant would otherwise be handed the first tenant's token (and its string).
#[test]
fn a_command_id_from_another_workspace_is_refused_and_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let first = cmd(CommandName::IssueClientToken, json!({"name": "mine"}));
    let mut foreign = cmd(
        CommandName::IssueClientToken,
        json!({"name": "theirs", "workspaceId": "beta"}),
    );
    foreign.command_id = first.command_id;
    let refused = |store: &Store| {
        let err = store.execute_blocking(foreign.clone()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert_eq!(err.field.as_deref(), Some("commandId"));
        assert_eq!(err.current_version, None);
        assert_eq!(store.head_position(), 1);
    };
    let store = open(dir.path(), &master);
    store.execute_blocking(first.clone()).unwrap();
    refused(&store);
    store.shutdown().unwrap();
    drop(store);
    // After a restart: the answer comes from the replayed log.
    let store = open(dir.path(), &master);
    refused(&store);
    drop(store);

    // Sent together, 16 at once (retries within one group, and while the
    // first run's group flushes): the workspace that ran first owns the id,
    // its retries are answered, every run from the other is refused.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &master);
    let results: Vec<(bool, Result<ledger_store::Committed, _>)> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..16)
            .map(|i| {
                let (home, c) = if i % 2 == 0 {
                    (true, first.clone())
                } else {
                    (false, foreign.clone())
                };
                let store = &store;
                s.spawn(move || (home, store.execute_blocking(c)))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winner = results
        .iter()
        .find(|(_, r)| r.as_ref().is_ok_and(|c| !c.replayed))
        .map(|(home, _)| *home)
        .expect("one run appended");
    for (home, r) in &results {
        match r {
            Ok(c) => assert!(*home == winner && (c.replayed || c.positions == vec![1])),
            Err(e) => {
                assert_ne!(*home, winner, "{e}");
                assert_eq!(e.field.as_deref(), Some("commandId"));
            }
        }
    }
    assert_eq!(store.head_position(), 1);
}

/// A retry that names another token than its first run is a reused id:
/// refused, rather than answered with the first token's result as if the
/// token it names had changed.
#[test]
fn a_command_id_reused_for_another_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let issue = |name: &str| {
        store
            .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": name})))
            .unwrap()
            .token_id
    };
    let (a, b) = (issue("a"), issue("b"));
    let revoke = |token: Uuid| {
        cmd(
            CommandName::RevokeToken,
            json!({"tokenId": token.to_string(), "commandId": "4f0c6a9e-3b1d-4c2e-8f7a-5d6e7f8a9b0c"}),
        )
    };
    store.execute_blocking(revoke(b)).unwrap();
    let err = store.execute_blocking(revoke(a)).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert_eq!(store.head_position(), 3);
    // The same token: a retry, answered as before.
    assert!(store.execute_blocking(revoke(b)).unwrap().replayed);
    store.shutdown().unwrap();
    drop(store);
    let store = open(dir.path(), &master);
    let err = store.execute_blocking(revoke(a)).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert_eq!(store.head_position(), 3);
}

/// The same command from 16 threads at once, so copies share a group or
/// meet one still in the pipeline; the answers in thread order.
fn at_once(
    store: &Store,
    c: &ParsedCommand,
) -> Vec<Result<ledger_store::Committed, ledger_core::Rejection>> {
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let c = c.clone();
            std::thread::spawn(move || store.execute_blocking(c))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn same_command_id_twice_in_one_group_appends_once() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let c = cmd(CommandName::IssueClientToken, json!({"name": "dup"}));
    let results: Vec<_> = at_once(&store, &c)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    assert!(results.iter().all(|r| r.positions == vec![1]));
    assert_eq!(store.head_position(), 1);
}

#[test]
fn rejections_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "Taken"})))
        .unwrap();
    let err = store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "TAKEN"})))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NameTaken);
    let err = store
        .execute_blocking(cmd(
            CommandName::TrashToken,
            json!({"tokenId": Uuid::new_v4().to_string()}),
        ))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(store.head_position(), 1);
    assert_eq!(store.read_from(1, 10).unwrap().len(), 1);
}

#[test]
fn secrets_are_sealed_and_shredded_by_purge() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let secret = "ya29.super-secret-access-token";
    let id = register(&store, "jsmith@gmail.com", secret);
    for ev in store.read_from(1, 10).unwrap() {
        let text = String::from_utf8(ev.bytes.clone()).unwrap();
        assert!(!text.contains(secret), "plaintext secret in the log");
        let published = String::from_utf8(ev.published_bytes().unwrap()).unwrap();
        assert!(!published.contains(secret));
    }
    let events = store.token_events(&id, None).unwrap();
    let ledger_core::EventData::AccessTokenRegistered(reg) = &events[0].data else {
        panic!("expected a registration");
    };
    let opened = store
        .open_secret(&id, "accessToken", &reg.access_token)
        .unwrap();
    assert_eq!(opened.expose(), secret);
    // Bound to its field: the refresh token's ciphertext does not open as the access token.
    assert!(store
        .open_secret(&id, "accessToken", reg.refresh_token.as_ref().unwrap())
        .is_err());

    store
        .execute_blocking(cmd(
            CommandName::PurgeToken,
            json!({"tokenId": id.to_string(), "force": true}),
        ))
        .unwrap();
    assert!(store.data_key(&id).unwrap().is_none());
    assert!(store
        .open_secret(&id, "accessToken", &reg.access_token)
        .is_err());
    store.shutdown().unwrap();
    drop(store);
    // The chain still verifies on reopen: it covers the sealed form.
    let store = open(dir.path(), &master);
    assert_eq!(store.head_position(), 2);
    assert!(store
        .open_secret(&id, "accessToken", &reg.access_token)
        .is_err());
}

#[test]
fn refresh_reseals_with_the_same_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let id = register(&store, "a@example.com", "old");
    store
        .execute_blocking(cmd(
            CommandName::RefreshAccessToken,
            json!({"tokenId": id.to_string(), "accessToken": "new-secret"}),
        ))
        .unwrap();
    let events = store.token_events(&id, None).unwrap();
    let ledger_core::EventData::AccessTokenRefreshed(r) = &events[1].data else {
        panic!("expected a refresh");
    };
    assert_eq!(
        store
            .open_secret(&id, "accessToken", &r.access_token)
            .unwrap()
            .expose(),
        "new-secret"
    );
}

/// A refresh sealed before its token's register stored the data key (both
/// sent at once, the refresh queued second) was sealed with a throwaway key.
/// It must not be accepted: its secrets could never be opened. It is refused
/// as a retryable race, and once sent again it is sealed with the stored key.
#[test]
fn a_refresh_racing_its_register_is_never_kept_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut races = 0;
    for round in 0..10 {
        let id = Uuid::new_v4();
        let register = cmd(
            CommandName::RegisterAccessToken,
            json!({"id": id.to_string(), "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"},
                   "provider": "google", "accountName": format!("r{round}@example.com"),
                   "accessToken": "first"}),
        );
        let refresh = cmd(
            CommandName::RefreshAccessToken,
            json!({"tokenId": id.to_string(), "accessToken": "second"}),
        );
        // `join` polls the register first, so it is sealed and queued first.
        let (registered, refreshed) = rt.block_on(async {
            tokio::join!(store.execute(register), store.execute(refresh.clone()))
        });
        registered.unwrap();
        let refreshed = match refreshed {
            Ok(r) => r,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                races += 1;
                store.execute_blocking(refresh).unwrap()
            }
        };
        assert!(!refreshed.replayed);
        let events = store.token_events(&id, None).unwrap();
        let ledger_core::EventData::AccessTokenRefreshed(r) = &events[1].data else {
            panic!("expected a refresh");
        };
        let opened = store
            .open_secret(&id, "accessToken", &r.access_token)
            .unwrap();
        assert_eq!(opened.expose(), "second");
    }
    // Sealing and queueing both take microseconds, a group's flush takes
    // more: the race this test is about happens in nearly every round.
    assert!(races > 0, "the refresh never raced its register");
}

/// The append gate (the NATS server's writer lease) is asked before each
/// group: while it says no, every command is refused with its answer and
/// nothing is appended or remembered; once it says yes, the same command
/// (same id) goes through.
#[test]
fn a_closed_append_gate_refuses_commands_and_remembers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let open_gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open_gate.clone();
    store.set_append_gate(Some(std::sync::Arc::new(move || {
        if gate.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ledger_core::Rejection::new(
                ErrorCode::Unavailable,
                "lease lost",
            ))
        }
    })));
    let issue = cmd(CommandName::IssueClientToken, json!({"name": "gated"}));
    let refused = store.execute_blocking(issue.clone()).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (ErrorCode::Unavailable, "lease lost")
    );
    assert_eq!(store.head_position(), 0);
    open_gate.store(true, std::sync::atomic::Ordering::SeqCst);
    let accepted = store.execute_blocking(issue.clone()).unwrap();
    assert_eq!(accepted.positions, [1]);
    assert!(!accepted.replayed, "the refusal was not remembered");
    store.set_append_gate(None);
    open_gate.store(false, std::sync::atomic::Ordering::SeqCst);
    store
        .execute_blocking(cmd(
            CommandName::IssueClientToken,
            json!({"name": "ungated"}),
        ))
        .unwrap();
    assert_eq!(store.head_position(), 2);
}

/// A new data dir is 0700, and a key file found with a looser mode is made
/// 0600 (it holds the wrapped data keys).
#[test]
fn a_new_data_dir_is_private_and_the_key_file_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let fresh = parent.path().join("new").join("ledger");
    drop(open(&fresh, &master));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);

    let existing = parent.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let keys = existing.join("datakeys.bin");
    std::fs::write(&keys, b"").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(&existing, &master);
    register(&store, "a@example.com", "s");
    assert_eq!(mode(&keys), 0o600);

    // A data dir rebuilt by `recover` is as private as a new one.
    let recovered = parent.path().join("recovered").join("ledger");
    let import = ledger_store::LogImport::create(&recovered).unwrap();
    assert_eq!(import.finish().unwrap(), 0);
    assert_eq!(mode(&recovered), 0o700);
}

#[test]
fn reservations_are_rebuilt_from_the_log_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let (a, b) = {
        let store = open(dir.path(), &master);
        let a = register(&store, "a@example.com", "s1");
        store
            .execute_blocking(cmd(
                CommandName::TrashToken,
                json!({"tokenId": a.to_string()}),
            ))
            .unwrap();
        // A trashed access token is not live: its account is free.
        let b = register(&store, "A@example.com", "s2");
        store
            .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "Keep"})))
            .unwrap();
        store.shutdown().unwrap();
        (a, b)
    };
    let store = open(dir.path(), &master);
    let err = store
        .execute_blocking(cmd(
            CommandName::RestoreToken,
            json!({"tokenId": a.to_string()}),
        ))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AccountTaken, "held by {b}");
    let err = store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "keep"})))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NameTaken);
    assert_eq!(store.head_position(), 4);
}

#[test]
fn one_record_per_command_so_a_group_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    long_log(dir.path(), &master, 10);
    let db = ledger_store::open_db(dir.path()).unwrap();
    let log = db.open_tree("log").unwrap();
    assert_eq!(log.len(), 10, "one event record per command, nothing else");
}

#[test]
fn a_flipped_byte_is_detected_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    long_log(dir.path(), &master, 5);
    tamper(dir.path(), |log| flip(log, 3));
    match Store::open(dir.path(), config(&master)) {
        Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, 3),
        Err(other) => panic!("expected corruption at 3, got {other}"),
        Ok(_) => panic!("a tampered log must not open"),
    }
}

#[test]
fn retries_after_a_restart_answer_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let issue = cmd(
        CommandName::IssueClientToken,
        json!({"name": "kept", "providedResourceId": "user-9"}),
    );
    // A re-issue by provided id with nothing to change appends nothing, but
    // its answer is still recorded.
    let reuse = cmd(
        CommandName::IssueClientToken,
        json!({"providedResourceId": "user-9"}),
    );
    let (first, reused) = {
        let store = open(dir.path(), &master);
        let first = store.execute_blocking(issue.clone()).unwrap();
        let reused = store.execute_blocking(reuse.clone()).unwrap();
        assert!(reused.positions.is_empty());
        assert_eq!(reused.token_id, first.token_id);
        store.shutdown().unwrap();
        (first, reused)
    };
    let store = open(dir.path(), &master);
    let again = store.execute_blocking(issue.clone()).unwrap();
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    let again = store.execute_blocking(reuse.clone()).unwrap();
    assert!(again.replayed);
    assert_eq!(again.token_id, reused.token_id);
    assert_eq!(store.head_position(), 1);

    // After a restart the command name is inferred from the event: another
    // command under the same id is still refused.
    let mut other = cmd(
        CommandName::TrashToken,
        json!({"tokenId": first.token_id.to_string()}),
    );
    other.command_id = issue.command_id;
    let err = store.execute_blocking(other).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    let mut other = cmd(
        CommandName::TrashToken,
        json!({"tokenId": first.token_id.to_string()}),
    );
    other.command_id = reuse.command_id;
    let err = store.execute_blocking(other).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert_eq!(store.head_position(), 1);
}

#[test]
fn a_retry_answers_the_token_as_its_first_run_left_it_even_within_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..20 {
        let issue = cmd(
            CommandName::IssueClientToken,
            json!({"name": format!("first-{i}"), "providedResourceId": format!("p-{i}")}),
        );
        // A re-issue by provided id renames the same token, so it needs no id.
        let rename = cmd(
            CommandName::IssueClientToken,
            json!({"name": format!("second-{i}"), "providedResourceId": format!("p-{i}")}),
        );
        // Submitted together, the three often share one group commit.
        let (a, b, retry) = rt.block_on(async {
            tokio::join!(
                store.execute(issue.clone()),
                store.execute(rename),
                store.execute(issue.clone())
            )
        });
        let (a, b, retry) = (a.unwrap(), b.unwrap(), retry.unwrap());
        assert_eq!(
            b.view.as_ref().unwrap().name.as_deref(),
            Some(format!("second-{i}").as_str())
        );
        assert!(retry.replayed);
        assert_eq!(retry.positions, a.positions);
        assert_eq!(retry.view, a.view, "the retry shows the first run's result");
    }
}

/// A log of `n` issues, written by 16 threads (several replay chunks long).
fn long_log(dir: &Path, master: &MasterKey, n: usize) {
    let store = open(dir, master);
    std::thread::scope(|scope| {
        for t in 0..16 {
            let store = &store;
            scope.spawn(move || {
                for i in (t..n).step_by(16) {
                    store
                        .execute_blocking(cmd(
                            CommandName::IssueClientToken,
                            json!({"name": format!("n{i}")}),
                        ))
                        .unwrap();
                }
            });
        }
    });
    store.shutdown().unwrap();
}

/// Rewrites the log tree of a closed data dir (through `open_db`, which
/// waits for sled's threads of the store just closed to let go of its lock).
fn tamper(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
    let db = ledger_store::open_db(dir).unwrap();
    let log = db.open_tree("log").unwrap();
    edit(&log);
    db.flush().unwrap();
}

fn flip(log: &sled::Tree, position: u64) {
    let key = keys::event(position);
    let mut value = log.get(key).unwrap().unwrap().to_vec();
    let last = value.len() - 3;
    value[last] ^= 0x01;
    log.insert(key, value).unwrap();
}

/// Writes a crafted, well-chained log into a fresh data dir, as the stored
/// records (hash, then canonical bytes).
fn write_log(dir: &Path, events: &[ledger_core::Envelope]) {
    let db = ledger_store::open_db(dir).unwrap();
    let log = db.open_tree("log").unwrap();
    for env in events {
        let mut value = hex::decode(&env.hash).unwrap();
        value.extend_from_slice(&env.canonical_bytes());
        log.insert(keys::event(env.position), value).unwrap();
    }
    db.flush().unwrap();
}

fn corrupt_at(dir: &Path, master: &MasterKey) -> (u64, String) {
    // Crafted logs come without the key files of a ledger that wrote them.
    let no_snapshot = StoreConfig {
        snapshot_min_events: None,
        new_keys_for_existing_data: true,
        ..config(master)
    };
    match Store::open(dir, no_snapshot) {
        Err(StoreError::Corrupt { position, reason }) => (position, reason),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a tampered log must not open"),
    }
}

#[test]
fn a_replay_over_many_chunks_reports_the_lowest_bad_position() {
    // Long enough for the replay's worker threads (2048 events a chunk).
    const N: usize = 7_000;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    long_log(dir.path(), &master, N);
    {
        let store = Store::open(
            dir.path(),
            StoreConfig {
                snapshot_min_events: None,
                ..config(&master)
            },
        )
        .unwrap();
        assert_eq!(store.opened().snapshot, 0);
        assert_eq!(store.head_position(), N as u64);
        // The replayed state holds every name.
        let taken = store
            .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "N6999"})))
            .unwrap_err();
        assert_eq!(taken.code, ErrorCode::NameTaken);
        store.shutdown().unwrap();
    }
    // Two flipped bytes in different chunks (so different workers): the
    // lower one is reported, whichever worker finishes first.
    tamper(dir.path(), |log| {
        flip(log, 5_000);
        flip(log, 2_500);
    });
    let (position, reason) = corrupt_at(dir.path(), &master);
    assert_eq!(position, 2_500, "{reason}");
    assert!(reason.contains("hash does not match"), "{reason}");

    // A record missing from a later chunk: the event after the gap no
    // longer links.
    let dir = tempfile::tempdir().unwrap();
    long_log(dir.path(), &master, N);
    tamper(dir.path(), |log| {
        log.remove(keys::event(4_200)).unwrap();
    });
    let (position, reason) = corrupt_at(dir.path(), &master);
    assert_eq!(position, 4_201, "{reason}");
    assert!(reason.contains("does not link"), "{reason}");
}

#[test]
fn a_bad_event_under_the_snapshot_is_found_even_by_processes_that_stop_at_once() {
    // Long enough that checking the prefix outlasts an open and a stop.
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    long_log(dir.path(), &master, N);
    tamper(dir.path(), |log| flip(log, 3));
    // As the CLI does: open from the snapshot, stop right away. The check
    // of the log under the snapshot still finishes, finds event 3, and
    // deletes the snapshot rather than trust it, or write a new one, again.
    let store = Store::open(dir.path(), config(&master)).unwrap();
    assert_eq!(store.opened().snapshot, N as u64);
    store.shutdown().unwrap();
    drop(store);
    let (position, reason) = corrupt_at(dir.path(), &master);
    assert_eq!(position, 3, "{reason}");
    match Store::open(dir.path(), config(&master)) {
        Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, 3),
        Err(other) => panic!("expected corruption at 3, got {other}"),
        Ok(_) => panic!("the snapshot still stands in for a tampered prefix"),
    }
}

#[test]
fn a_well_chained_event_the_rules_forbid_is_refused_by_position_not_a_panic() {
    use ledger_core::{EventDraft, Timestamp, TokenKind};
    // Two tokens issued under one name: every hash and link holds (the
    // chain is not keyed), but the ledger could never have written it.
    let dir = tempfile::tempdir().unwrap();
    let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let events = ledger_testkit::stamp_chain((0..3).map(|i| {
        let draft = EventDraft {
            token_id: Uuid::new_v4(),
            token_kind: TokenKind::Client,
            workspace_id: "acme".into(),
            version: 1,
            data: ledger_testkit::issued(if i == 0 { "first" } else { "same" }, at),
        };
        (draft, Uuid::new_v4())
    }));
    write_log(dir.path(), &events);
    let (position, reason) = corrupt_at(dir.path(), &MasterKey::generate());
    assert_eq!(position, 3, "{reason}");
    assert!(reason.contains("could not have produced"), "{reason}");
}

#[test]
fn a_command_whose_events_lie_apart_is_refused_on_open() {
    use ledger_core::{EventDraft, Timestamp, TokenKind};
    // A well-chained log whose events 1 and 3 carry one commandId: the
    // writer never appends that (a command's events go in together), so
    // the idempotency record open would derive from it means nothing.
    let dir = tempfile::tempdir().unwrap();
    let shared_command = Uuid::new_v4();
    let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let events = ledger_testkit::stamp_chain(
        [shared_command, Uuid::new_v4(), shared_command]
            .into_iter()
            .enumerate()
            .map(|(i, command)| {
                let draft = EventDraft {
                    token_id: Uuid::new_v4(),
                    token_kind: TokenKind::Client,
                    workspace_id: "acme".into(),
                    version: 1,
                    data: ledger_testkit::issued(&format!("n{i}"), at),
                };
                (draft, command)
            }),
    );
    write_log(dir.path(), &events);
    let (position, reason) = corrupt_at(dir.path(), &MasterKey::generate());
    assert_eq!(position, 3, "{reason}");
    assert!(reason.contains("apart"), "{reason}");
}

/// An issue retried with another `providedResourceId` than its first run
/// names another token: refused, not answered with the first token.
#[test]
fn a_command_id_reused_for_another_provided_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let first = cmd(
        CommandName::IssueClientToken,
        json!({"providedResourceId": "user-1"}),
    );
    store.execute_blocking(first.clone()).unwrap();
    assert!(store.execute_blocking(first.clone()).unwrap().replayed);
    let mut other = cmd(
        CommandName::IssueClientToken,
        json!({"providedResourceId": "user-2"}),
    );
    other.command_id = first.command_id;
    let err = store.execute_blocking(other).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert_eq!(store.head_position(), 1);
}

/// After a purge no path re-mints the token's string: not the retry of the
/// command that issued it, not a view of an earlier version.
#[test]
fn a_purged_token_string_is_never_minted_again() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let issue = cmd(CommandName::IssueClientToken, json!({"name": "gone"}));
    let issued = store.execute_blocking(issue.clone()).unwrap();
    let view = issued.view.clone().expect("a view");
    assert!(store.token_str(&view).unwrap().is_some());
    store
        .execute_blocking(cmd(
            CommandName::PurgeToken,
            json!({"tokenId": issued.token_id.to_string(), "force": true}),
        ))
        .unwrap();
    assert!(store.purged(&issued.token_id).unwrap());
    assert_eq!(store.token_str(&view).unwrap(), None);
    let retried = store.execute_blocking(issue).unwrap();
    assert!(retried.replayed);
    assert_eq!(
        store
            .token_str(&retried.view.expect("the first answer's view"))
            .unwrap(),
        None
    );
}

#[test]
fn reveal_hands_out_a_live_tokens_current_secrets_only() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let id = register(&store, "jsmith@gmail.com", "ya29.first");
    let view = store.reveal("acme", &id).unwrap();
    assert_eq!(view.access_token.as_deref(), Some("ya29.first"));
    assert_eq!(view.refresh_token.as_deref(), Some("ya29.first-refresh"));
    assert_eq!(view.version, 1);
    // A refresh without a refresh token keeps the old one.
    store
        .execute_blocking(cmd(
            CommandName::RefreshAccessToken,
            json!({"tokenId": id.to_string(), "accessToken": "ya29.second"}),
        ))
        .unwrap();
    let view = store.reveal("acme", &id).unwrap();
    assert_eq!(
        (view.access_token.as_deref(), view.refresh_token.as_deref()),
        (Some("ya29.second"), Some("ya29.first-refresh"))
    );
    assert_eq!(view.version, 2);
    // Never across workspaces, and not for an unknown token.
    let other = store.reveal("globex", &id).unwrap_err();
    assert_eq!(other.code, ErrorCode::NotFound);
    assert_eq!(
        store.reveal("acme", &Uuid::new_v4()).unwrap_err().code,
        ErrorCode::NotFound
    );

    // A client token reveals the string its issue reply carried, which verifies.
    let issued = store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "svc"})))
        .unwrap();
    let minted = store
        .token_str(issued.view.as_ref().unwrap())
        .unwrap()
        .unwrap();
    let view = store.reveal("acme", &issued.token_id).unwrap();
    assert_eq!(view.token_str.as_deref(), Some(minted.as_str()));
    assert_eq!((view.access_token, view.refresh_token), (None, None));
    let verifier = ledger_store::Verifier::new(store.clone());
    assert!(verifier.introspect(&minted, chrono::Utc::now()).is_active());

    // Trashed, revoked and purged tokens reveal nothing.
    let on = |name: CommandName, token: Uuid, extra: Value| {
        let mut body = extra;
        body["tokenId"] = json!(token.to_string());
        store.execute_blocking(cmd(name, body)).unwrap();
    };
    on(CommandName::TrashToken, id, json!({}));
    assert_eq!(
        store.reveal("acme", &id).unwrap_err().code,
        ErrorCode::Trashed
    );
    on(CommandName::RevokeToken, issued.token_id, json!({}));
    assert_eq!(
        store.reveal("acme", &issued.token_id).unwrap_err().code,
        ErrorCode::Revoked
    );
    on(CommandName::PurgeToken, id, json!({}));
    assert_eq!(
        store.reveal("acme", &id).unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[test]
fn times_along_the_log_never_run_backwards_across_a_restart() {
    use chrono::{TimeZone, Utc};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let at = |hour| {
        let instant = Utc.with_ymd_and_hms(2030, 1, 1, hour, 0, 0).unwrap();
        StoreConfig {
            clock: Arc::new(move || instant),
            ..config(&master)
        }
    };
    let first = {
        let store = Store::open(dir.path(), at(12)).unwrap();
        let first = store
            .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "a"})))
            .unwrap();
        store.shutdown().unwrap();
        first
    };
    // Restarted with the clock an hour behind (a correction, a restored VM).
    let store = Store::open(dir.path(), at(11)).unwrap();
    store
        .execute_blocking(cmd(
            CommandName::TrashToken,
            json!({"tokenId": first.token_id.to_string()}),
        ))
        .unwrap();
    let time = |position| {
        store
            .event(position)
            .unwrap()
            .unwrap()
            .envelope()
            .unwrap()
            .occurred_at
    };
    assert_eq!(store.head_position(), 2);
    assert_eq!(
        time(2),
        time(1),
        "the later event keeps the head's time, not the clock's earlier one"
    );
}

#[test]
fn a_refused_command_id_answers_its_refusal_again_even_once_the_state_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    let holder = store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "dup"})))
        .unwrap()
        .token_id;
    let refused = cmd(CommandName::IssueClientToken, json!({"name": "DUP"}));
    let first = store.execute_blocking(refused.clone()).unwrap_err();
    assert_eq!(first.code, ErrorCode::NameTaken);
    // The name is free now: a new id would be accepted, this one is not.
    store
        .execute_blocking(cmd(
            CommandName::UpdateClientToken,
            json!({"tokenId": holder.to_string(), "name": "other"}),
        ))
        .unwrap();
    assert_eq!(store.execute_blocking(refused.clone()).unwrap_err(), first);
    assert_eq!(store.head_position(), 2);
    // The id stays bound to what it was first used for.
    let mut other = cmd(
        CommandName::TrashToken,
        json!({"tokenId": holder.to_string()}),
    );
    other.command_id = refused.command_id;
    let err = store.execute_blocking(other).unwrap_err();
    assert_eq!(
        (err.code, err.field.as_deref()),
        (ErrorCode::InvalidInput, Some("commandId"))
    );
    let mut another_provided_id = cmd(
        CommandName::IssueClientToken,
        json!({"name": "DUP", "providedResourceId": "p-1"}),
    );
    another_provided_id.command_id = refused.command_id;
    let err = store.execute_blocking(another_provided_id).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"), "{err:?}");
    let mut elsewhere = refused.clone();
    elsewhere.workspace_id = "globex".into();
    let err = store.execute_blocking(elsewhere).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("commandId"));
    assert!(!err.message.contains("acme"), "{}", err.message);
    store.shutdown().unwrap();
    drop(store);

    // Durable: after a restart the refusal still answers, and appends nothing.
    let store = open(dir.path(), &master);
    assert_eq!(store.execute_blocking(refused.clone()).unwrap_err(), first);
    assert_eq!(store.head_position(), 2);
    let fresh = cmd(CommandName::IssueClientToken, json!({"name": "DUP"}));
    store.execute_blocking(fresh).unwrap();
    assert_eq!(store.head_position(), 3);
}

#[test]
fn a_refused_command_sent_many_times_at_once_gets_one_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open(dir.path(), &master);
    store
        .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "dup"})))
        .unwrap();
    // Concurrent copies land in one group or in groups still in the
    // pipeline: each gets the refusal, none appends.
    let c = cmd(CommandName::IssueClientToken, json!({"name": "Dup"}));
    for result in at_once(&store, &c) {
        assert_eq!(result.unwrap_err().code, ErrorCode::NameTaken);
    }
    assert_eq!(store.head_position(), 1);
}

/// Open makes key files for a new ledger only: for one that holds data, a
/// new master key or signing key ring would not open what the old made.
#[test]
fn a_ledger_is_not_opened_with_keys_other_than_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    {
        let store = open(dir.path(), &master);
        register(&store, "a@example.com", "s");
        store
            .execute_blocking(cmd(CommandName::IssueClientToken, json!({"name": "bot"})))
            .unwrap();
        store.shutdown().unwrap();
    }
    let keys_error = |config: StoreConfig| match Store::open(dir.path(), config) {
        Err(e @ StoreError::Keys { .. }) => e.to_string(),
        Err(other) => panic!("expected a key error, got {other}"),
        Ok(_) => panic!("opened with keys it was not made with"),
    };
    // No master key given, and no master.key file (it came from the
    // environment when the data was made): not a new one. (With the
    // variable set in the caller's shell, its key does not open the data
    // keys: refused too, naming the same file.)
    let e = keys_error(StoreConfig::default());
    assert!(e.contains("master.key"), "{e}");
    assert!(!dir.path().join(ledger_crypto::MASTER_KEY_FILE).exists());
    // Another master key: it does not open the data keys.
    let e = keys_error(config(&MasterKey::generate()));
    assert!(e.contains("does not open"), "{e}");
    // The signing key ring gone: not a new one either.
    std::fs::rename(
        dir.path().join(ledger_crypto::jwt::KEY_RING_FILE),
        dir.path().join("ring.bak"),
    )
    .unwrap();
    let e = keys_error(config(&master));
    assert!(e.contains(ledger_crypto::jwt::KEY_RING_FILE), "{e}");
    // Brought back, the ledger opens as it was.
    std::fs::rename(
        dir.path().join("ring.bak"),
        dir.path().join(ledger_crypto::jwt::KEY_RING_FILE),
    )
    .unwrap();
    let store = open(dir.path(), &master);
    assert_eq!(store.head_position(), 2);
    store.shutdown().unwrap();
}

/// Data keys wrapped under two master keys (as an older build could leave
/// them) are refused at every open, not at random: the oldest and the
/// newest key are the ones checked.
#[test]
fn data_keys_under_two_master_keys_are_refused_at_every_open() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let newest = {
        let store = open(dir.path(), &master);
        register(&store, "a@example.com", "s");
        let b = register(&store, "b@example.com", "t");
        store.shutdown().unwrap();
        b
    };
    // The newest slot (the second, 128 bytes each) rewrapped under another key.
    let path = dir.path().join("datakeys.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[128..144], newest.as_bytes());
    let other = MasterKey::generate().wrap(&ledger_crypto::DataKey::generate(), &newest);
    bytes[144] = u8::try_from(other.len()).unwrap();
    bytes[145..145 + other.len()].copy_from_slice(&other);
    std::fs::write(&path, &bytes).unwrap();
    for _ in 0..5 {
        match Store::open(dir.path(), config(&master)) {
            Err(StoreError::Keys { reason, .. }) => {
                assert!(reason.contains(&newest.to_string()), "{reason}")
            }
            Err(other) => panic!("expected a key error, got {other}"),
            Ok(_) => panic!("opened with a data key its master key does not open"),
        }
    }
}
