//! Where replay time goes: decoding, hashing and folding stored events.

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ledger_bench::{issue, rate, timed};

use ledger_core::LedgerState;
use ledger_crypto::MasterKey;
use ledger_store::{Store, StoreConfig};

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let total: u64 = if quick { 2_000 } else { 200_000 };
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig {
        master_key: Some(MasterKey::generate()),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..total {
            let s = store.clone();
            pending.push(tokio::spawn(
                async move { s.execute(issue(i)).await.unwrap() },
            ));
            if pending.len() == 1024 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap();
        }
    });
    let (events, d) = timed(|| store.iter_from(1).map(|e| e.unwrap()).collect::<Vec<_>>());
    println!("| sled scan | {:.0} events/s |", rate(total, d));
    let (_, d) = timed(|| {
        for e in &events {
            std::hint::black_box(ledger_core::event::hash_hex(&e.bytes));
        }
    });
    println!("| sha-256 hex | {:.0} events/s |", rate(total, d));
    let (envs, d) = timed(|| {
        events
            .iter()
            .map(|e| e.envelope().unwrap())
            .collect::<Vec<_>>()
    });
    println!("| decode envelope | {:.0} events/s |", rate(total, d));
    // The same decode without keeping the results, as a replay does: the
    // row above also pays first-touch page faults for 200k kept envelopes.
    let (_, d) = timed(|| {
        for e in &events {
            std::hint::black_box(e.envelope().unwrap());
        }
    });
    println!(
        "| decode envelope, each dropped | {:.0} events/s |",
        rate(total, d)
    );
    let (_, d) = timed(|| {
        let mut state = LedgerState::new();
        for e in &envs {
            state.evolve(e);
        }
        state
    });
    println!("| evolve | {:.0} events/s |", rate(total, d));
    store.shutdown().unwrap();
}
