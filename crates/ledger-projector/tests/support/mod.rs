//! Shared helpers: a real store on a temp dir, commands from JSON.
#![allow(dead_code)]

use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::{CommandName, Timestamp};
use ledger_crypto::MasterKey;
use ledger_projector::Projector;
use ledger_store::{Committed, Store, StoreConfig};
use serde_json::{json, Value};
use std::path::Path;
use uuid::Uuid;

pub const WS: &str = "acme";
pub const USER: &str = "71c84cd2-91ac-4e6b-a74e-393c87d5f97d";
pub const OTHER_USER: &str = "0b6a1f54-7d3c-4d1e-9a55-2f0f3c8e0a11";

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

/// A clock that moves only when the test moves it.
#[derive(Clone)]
pub struct TestClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl TestClock {
    /// Moves the clock `ms` milliseconds on.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A store on a fresh temp dir whose clock starts at 2026-01-15T09:00:00Z
/// and moves only by [`TestClock::advance`].
pub fn fresh_on_clock() -> (tempfile::TempDir, MasterKey, Store, TestClock) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let clock = TestClock(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
        1_768_467_600_000,
    )));
    let at = clock.clone();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            master_key: Some(master.clone()),
            clock: std::sync::Arc::new(move || {
                let ms = at.0.load(std::sync::atomic::Ordering::SeqCst);
                chrono::DateTime::from_timestamp_millis(ms).expect("a valid instant")
            }),
            ..StoreConfig::default()
        },
    )
    .expect("open store");
    (dir, master, store, clock)
}

/// A store on a fresh temp dir; keep the dir alive as long as the store.
pub fn fresh() -> (tempfile::TempDir, MasterKey, Store) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = open_store(dir.path(), &master);
    (dir, master, store)
}

pub fn cmd(name: CommandName, mut body: Value) -> ParsedCommand {
    let obj = body.as_object_mut().expect("a command body is an object");
    obj.entry("commandId")
        .or_insert_with(|| json!(Uuid::new_v4().to_string()));
    obj.entry("workspaceId").or_insert_with(|| json!(WS));
    obj.entry("actor")
        .or_insert_with(|| json!({"agentId": "alice", "agentType": "user"}));
    parse_value(name, body).expect("valid command")
}

/// Executes a command that must be accepted.
pub fn exec(store: &Store, name: CommandName, body: Value) -> Committed {
    store
        .execute_blocking(cmd(name, body.clone()))
        .unwrap_or_else(|r| panic!("{name} {body} refused: {r:?}"))
}

/// Executes a command on `token`.
pub fn on(store: &Store, name: CommandName, token: Uuid, mut body: Value) -> Committed {
    body.as_object_mut()
        .unwrap()
        .insert("tokenId".into(), json!(token.to_string()));
    exec(store, name, body)
}

pub fn issue(store: &Store, body: Value) -> Uuid {
    exec(store, CommandName::IssueClientToken, body).token_id
}

pub fn register(store: &Store, user: &str, provider: &str, account: &str) -> Uuid {
    exec(
        store,
        CommandName::RegisterAccessToken,
        json!({
            "user": {"id": user},
            "provider": provider,
            "accountName": account,
            "accessToken": format!("secret-{account}"),
            "refreshToken": format!("refresh-{account}"),
        }),
    )
    .token_id
}

pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_millis(i64::try_from(ms).unwrap()).unwrap()
}

/// A projector on the store's `views` tree, caught up.
pub fn projector(store: &Store) -> Projector {
    let mut p = Projector::open(store.db()).expect("open projector");
    p.catch_up(store).expect("catch up");
    p
}

/// Every key of `dump` that mentions `needle`.
pub fn keys_containing(dump: &[(Vec<u8>, Vec<u8>)], needle: &[u8]) -> Vec<Vec<u8>> {
    dump.iter()
        .filter(|(k, v)| {
            k.windows(needle.len()).any(|w| w == needle)
                || v.windows(needle.len()).any(|w| w == needle)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The same views, rebuilt from scratch in a scratch tree.
pub fn rebuilt_dump(store: &Store, scratch: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tree = store.db().open_tree(scratch).unwrap();
    let rebuilt = Projector::rebuild(store, tree).expect("rebuild");
    let dump = rebuilt.dump().unwrap();
    drop(rebuilt);
    store.db().drop_tree(scratch).unwrap();
    dump
}
