//! `cargo bench -p ledger-bench`: durable appends with 1, 16 and 256 writers,
//! a raw sled baseline measured in the same run, and a full log replay.
//!
//! Set `BENCH_COMMANDS` to change the number of commands per run (default 100k).

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ledger_bench::{issue, rate, timed};

use ledger_crypto::MasterKey;
use ledger_store::{Store, StoreConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One master key for the whole run: a reopened store must find its state
/// snapshot sealed under the key it opens with.
fn config() -> StoreConfig {
    static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
    StoreConfig {
        master_key: Some(KEY.get_or_init(MasterKey::generate).clone()),
        // Every clean stop writes one, also in the quick (2k events) run.
        snapshot_min_events: Some(1),
        ..StoreConfig::default()
    }
}

/// Raw sled: batches of `batch` 400-byte records, one flush per batch.
fn sled_baseline(total: u64, batch: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .mode(sled::Mode::HighThroughput)
        .open()
        .unwrap();
    let tree = db.open_tree("log").unwrap();
    let value = vec![7u8; 400];
    let ((), d) = timed(|| {
        let mut i = 0u64;
        while i < total {
            let mut b = sled::Batch::default();
            for _ in 0..batch {
                i += 1;
                b.insert(&i.to_be_bytes(), value.as_slice());
            }
            tree.apply_batch(b).unwrap();
            db.flush().unwrap();
        }
    });
    rate(total, d)
}

fn durable_appends(writers: u64, total: u64) -> (f64, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let commands: Vec<_> = (0..total).map(issue).collect();
    let commands = Arc::new(std::sync::Mutex::new(commands));
    let done = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ((), d) = timed(|| {
        rt.block_on(async {
            let tasks: Vec<_> = (0..writers)
                .map(|_| {
                    let store = store.clone();
                    let commands = commands.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        loop {
                            let next = commands.lock().unwrap().pop();
                            let Some(cmd) = next else { break };
                            store.execute(cmd).await.expect("accepted");
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    });
    assert_eq!(done.load(Ordering::Relaxed), total);
    assert_eq!(store.head_position(), total);
    (rate(total, d), store, dir)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let total: u64 = std::env::var("BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 100_000 });

    // `BENCH_ONLY=rebuild` skips the append rows (for profiling the rebuild).
    let appends = std::env::var("BENCH_ONLY").map_or(true, |v| v != "rebuild");

    println!("| measurement | figure |");
    println!("| --- | --- |");
    if appends {
        let base = sled_baseline(total * 4, 1024);
        println!("| raw sled apply_batch(1024 x 400 B) + flush | {base:.0} records/s |");
        for writers in [1u64, 16, 256] {
            let n = if writers == 1 { total / 20 } else { total };
            let (r, store, _dir) = durable_appends(writers, n.max(100));
            println!("| durable issue_client_token, {writers} writers | {r:.0} commands/s |");
            store.shutdown().unwrap();
        }
    }
    let (_, store, dir) = durable_appends(256, total);
    let tree = store.db().open_tree("views.bench").unwrap();
    let (_, d) = timed(|| ledger_projector::Projector::rebuild(&store, tree.clone()).unwrap());
    println!(
        "| projection rebuild from scratch, {total} events ({total} tokens) | {:.0} events/s |",
        rate(total, d)
    );
    // What a freshly opened projector pays on its first query by name or
    // listing: building the in-memory index from the stored views.
    let (found, d) = timed(|| {
        let p = ledger_projector::Projector::open_tree(tree).unwrap();
        let now = ledger_core::Timestamp::from_millis(0).unwrap();
        p.get("ws0", ledger_projector::Lookup::Name("token-0".into()), now)
            .unwrap()
    });
    assert!(found.is_some());
    println!(
        "| first query after open: index built from {total} views | {:.0} ms |",
        d.as_secs_f64() * 1000.0
    );
    open_rows(store, dir.path(), total, &format!("{total} events"));

    // A longer-lived history: tokens change after issue (groups, rotations, renames).
    let tokens = (total / 10).max(10);
    let total = tokens * 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ids: Vec<uuid::Uuid> = futures_join((0..tokens).map(|i| {
            let s = store.clone();
            async move { s.execute(issue(i)).await.unwrap().token_id }
        }))
        .await;
        // Round by round, so that each token's changes run in order and
        // every one of them appends (an unassign follows its assign).
        for round in 0..(total - tokens) / tokens {
            let changed = futures_join(ids.iter().enumerate().map(|(k, &id)| {
                let s = store.clone();
                let ws = format!("ws{}", k % 16);
                async move {
                    s.execute(ledger_bench::change(&ws, id, round))
                        .await
                        .unwrap()
                }
            }))
            .await;
            assert!(changed.iter().all(|c| c.positions.len() == 1));
        }
    });
    // The rates below count events: every command above appended one.
    assert_eq!(store.head_position(), total);
    let tree = store.db().open_tree("views.bench").unwrap();
    let (_, d) = timed(|| ledger_projector::Projector::rebuild(&store, tree).unwrap());
    println!(
        "| projection rebuild from scratch, {total} events ({tokens} tokens, 10 events each) | {:.0} events/s |",
        rate(total, d)
    );
    open_rows(
        store,
        dir.path(),
        total,
        &format!("{total} events ({tokens} tokens)"),
    );
}

/// Stops `store` (which writes the state snapshot), then times an open from
/// the snapshot and an open that replays the whole log.
fn open_rows(store: Store, dir: &std::path::Path, total: u64, label: &str) {
    let ((), d) = timed(|| store.shutdown().unwrap());
    drop(store);
    assert_eq!(ledger_store::snapshot::position(dir), Some(total));
    println!(
        "| clean stop, writing the state snapshot, {label} | {:.0} ms |",
        d.as_secs_f64() * 1000.0
    );
    let (store, d) = timed(|| Store::open(dir, config()).unwrap());
    assert_eq!(store.opened().snapshot, total);
    println!(
        "| open from the state snapshot, {label} | {:.0} ms ({:.0} events/s) |",
        d.as_secs_f64() * 1000.0,
        rate(total, d)
    );
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.join(ledger_store::snapshot::FILE)).unwrap();
    let whole = StoreConfig {
        snapshot_min_events: None,
        ..config()
    };
    let (store, d) = timed(|| Store::open(dir, whole).unwrap());
    assert_eq!(store.opened().snapshot, 0);
    println!(
        "| open without a snapshot: replay + verify every hash and link, {label} | {:.0} ms ({:.0} events/s) |",
        d.as_secs_f64() * 1000.0,
        rate(total, d)
    );
    store.shutdown().unwrap();
}

/// Runs futures 256 at a time, keeping their outputs in order.
async fn futures_join<T: Send + 'static>(
    futs: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    for f in futs {
        batch.push(tokio::spawn(f));
        if batch.len() == 256 {
            for h in batch.drain(..) {
                out.push(h.await.unwrap());
            }
        }
    }
    for h in batch {
        out.push(h.await.unwrap());
    }
    out
}
