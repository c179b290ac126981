//! `tokenledger serve`: the ledger on NATS until SIGTERM or SIGINT.
//!
//! The data dir is opened once and held for the life of the process (sled's
//! lock makes a second server on the same dir refuse with exit code 4).
//! SIGTERM stops taking requests, lets in-flight ones finish, signs a last
//! checkpoint (if the log grew), drains the publisher, flushes the store, and
//! exits 0.
//!
//! Checkpoints: every `--checkpoint-every-events` events, every
//! `--checkpoint-every-secs` when the log grew, and at shutdown, a signed
//! note in `DATA_DIR/checkpoints/`, published on `tokens.checkpoint`.

use crate::app::Ctx;
use crate::failure::Failure;
use clap::Args;
use ledger_core::{ErrorCode, Rejection};
use ledger_nats::{NatsError, ServeConfig};
use ledger_store::Store;
use std::time::Duration;

/// Where `serve` listens when `--nats` (global) is not given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Flags of `serve`; the NATS URLs are the global `--nats` (default [`DEFAULT_NATS_URL`]).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Replicas of the JetStream stream TOKENS.
    #[arg(long, default_value_t = 1)]
    pub stream_replicas: usize,
    /// JetStream duplicate window, in seconds.
    #[arg(long, default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(..=ledger_nats::DURATION_MAX.as_secs()))]
    pub duplicate_window_secs: u64,
    /// Publish acks kept in flight.
    #[arg(long, default_value_t = 512)]
    pub ack_window: usize,
    /// Sign a checkpoint after this many new events (0: no count trigger).
    #[arg(long, value_name = "N", default_value_t = ledger_nats::checkpoints::EVERY_EVENTS_DEFAULT)]
    pub checkpoint_every_events: u64,
    /// Sign a checkpoint this often, in seconds, when the log grew (0: no timer).
    #[arg(long, value_name = "SECS", default_value_t = ledger_nats::checkpoints::EVERY_DEFAULT.as_secs(),
          value_parser = clap::value_parser!(u64).range(..=ledger_nats::DURATION_MAX.as_secs()))]
    pub checkpoint_every_secs: u64,
    /// Seconds the writer lease outlives its last renewal: after a crash,
    /// the next server waits this long before serving (a clean stop frees
    /// it at once). Fixed when the lease bucket is first made.
    #[arg(long, value_name = "SECS", default_value_t = ledger_nats::lease::TTL_DEFAULT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=ledger_nats::DURATION_MAX.as_secs()))]
    pub writer_lease_secs: u64,
}

/// Runs the server until a termination signal.
pub fn run(args: ServeArgs, ctx: &Ctx) -> Result<(), Failure> {
    let store = Store::open(&ctx.data_dir, ctx.store_config())?;
    let config = ServeConfig {
        nats_urls: ctx
            .nats
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_NATS_URL.to_owned()]),
        access: ctx.nats_access.clone(),
        stream_replicas: args.stream_replicas,
        duplicate_window: Duration::from_secs(args.duplicate_window_secs),
        ack_window: args.ack_window,
        checkpoint_every_events: args.checkpoint_every_events,
        checkpoint_every: Duration::from_secs(args.checkpoint_every_secs),
        writer_lease: Duration::from_secs(args.writer_lease_secs),
        ..ServeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("tokio runtime: {e}")))?;
    // Said once the service answers, not before the stream is checked: a
    // server that then refuses (another log's stream) never claims to serve.
    let announce = format!(
        "tokenledger: serving the NATS service {:?} on {} (data dir {}, head position {})",
        config.service_name,
        ledger_nats::access::shown(&config.nats_urls),
        ctx.data_dir.display(),
        store.head_position()
    );
    let metrics = config.metrics.clone();
    runtime.spawn(async move {
        while !metrics.is_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{announce}");
    });
    runtime
        .block_on(ledger_nats::run(store, config, termination()))
        .map_err(|e| match e {
            NatsError::Access(e) => Failure::invalid(e.field, e.message),
            e @ NatsError::Refused { .. } => Failure::from(Rejection::new(
                ErrorCode::Unauthorized,
                format!("{e} (check --nats-creds, --nats-nkey, the URL's user and password, or --nats-tls-*)"),
            )),
            // The NATS layer's own code (stream_ahead, lease_lost, …), as
            // the README names them; every such end is exit 3.
            e => Failure {
                code: e.code(),
                message: e.to_string(),
                field: None,
                current_version: None,
                exit: crate::failure::EXIT_UNAVAILABLE,
            },
        })?;
    eprintln!("tokenledger stopped cleanly");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
