//! `bench`: how fast this machine runs the ledger, on a throwaway data dir.
//!
//! Durable appends (issue_client_token, each acknowledged after the flush
//! that covers it) with each writer count asked for, then a rebuild of
//! every view from the log. The data dir is a fresh temporary one, never
//! `--data-dir`: a log is immutable, and benchmark tokens do not belong in
//! a real one. The full benchmarks, with baselines measured side by side,
//! are `cargo bench` (BENCHMARKS.md); this is the quick look an operator
//! takes on a new machine.

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use clap::Args;
use ledger_core::command::parse_value;
use ledger_core::CommandName;
use ledger_projector::Projector;
use ledger_store::{Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Writers per row, at most.
pub const WRITERS_MAX: u64 = 1024;

/// `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Writer counts to measure, one row each.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 16, 256],
          value_parser = clap::value_parser!(u64).range(1..=WRITERS_MAX))]
    pub writers: Vec<u64>,
    /// Commands per row.
    #[arg(long, default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub commands: u64,
}

/// One row: `commands` durable issues by `writers` threads.
struct Row {
    writers: u64,
    commands: u64,
    elapsed: Duration,
    /// Every command's latency, sorted.
    latencies: Vec<Duration>,
}

impl Row {
    fn quantile_ms(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "writers": self.writers,
            "commands": self.commands,
            "seconds": self.elapsed.as_secs_f64(),
            "commandsPerSecond": rate(self.commands, self.elapsed),
            "p50Ms": self.quantile_ms(0.5),
            "p99Ms": self.quantile_ms(0.99),
        })
    }
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Runs `bench`.
pub fn run(args: BenchArgs, ctx: &Ctx) -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("tokenledger-bench-")
        .tempdir()
        .map_err(|e| Failure::internal(format!("a temporary data dir: {e}")))?;
    let actor = ctx.actor_json()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let mut rows = Vec::with_capacity(args.writers.len());
    let mut failed = None;
    for &writers in &args.writers {
        match row(&store, &actor, writers, args.commands) {
            Ok(row) => {
                if !ctx.json {
                    eprintln!(
                        "{writers} writers: {:.0} commands/s",
                        rate(row.commands, row.elapsed)
                    );
                }
                rows.push(row);
            }
            Err(f) => {
                failed = Some(f);
                break;
            }
        }
    }
    let rebuilt = match failed {
        Some(f) => Err(f),
        None => rebuild(&store),
    };
    let closed = store.shutdown();
    let (events, elapsed) = rebuilt?;
    closed?;
    if ctx.json {
        return print_json(&json!({
            "appends": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "rebuild": {
                "events": events,
                "seconds": elapsed.as_secs_f64(),
                "eventsPerSecond": rate(events, elapsed),
            },
        }));
    }
    let mut text = String::from("durable issue_client_token, on a fresh temporary data dir\n");
    text.push_str("writers  commands  commands/s   p50 ms   p99 ms\n");
    for r in &rows {
        text.push_str(&format!(
            "{:>7}  {:>8}  {:>10.0}  {:>7.2}  {:>7.2}\n",
            r.writers,
            r.commands,
            rate(r.commands, r.elapsed),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99)
        ));
    }
    text.push_str(&format!(
        "rebuild of every view from the log: {events} events in {:.2} s, {:.0} events/s",
        elapsed.as_secs_f64(),
        rate(events, elapsed)
    ));
    print_text(&text)
}

fn row(store: &Store, actor: &Value, writers: u64, commands: u64) -> Result<Row, Failure> {
    let claimed = AtomicU64::new(0);
    let started = Instant::now();
    let per_thread: Vec<Result<Vec<Duration>, Failure>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::new();
                    while claimed.fetch_add(1, Ordering::Relaxed) < commands {
                        let command_id = Uuid::new_v4();
                        // Built before the clock starts: a load generator's
                        // payloads are ready when it sends them.
                        let parsed = parse_value(
                            CommandName::IssueClientToken,
                            json!({
                                "commandId": command_id.to_string(),
                                "workspaceId": "bench",
                                "actor": actor,
                                "name": format!("bench-{command_id}"),
                            }),
                        )?;
                        let sent = Instant::now();
                        store.execute_blocking(parsed)?;
                        latencies.push(sent.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Failure::internal("a writer thread panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(usize::try_from(commands).unwrap_or(0));
    for part in per_thread {
        latencies.extend(part?);
    }
    latencies.sort_unstable();
    Ok(Row {
        writers,
        commands,
        elapsed,
        latencies,
    })
}

/// Rebuilds every view into a fresh tree; returns the events folded and the time taken.
fn rebuild(store: &Store) -> Result<(u64, Duration), Failure> {
    let tree = store
        .db()
        .open_tree("bench-views")
        .map_err(|e| Failure::internal(format!("a views tree: {e}")))?;
    let started = Instant::now();
    let projector = Projector::rebuild(store, tree)?;
    let elapsed = started.elapsed();
    Ok((projector.checkpoint(), elapsed))
}
