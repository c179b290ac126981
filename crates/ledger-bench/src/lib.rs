//! Shared helpers of the benchmarks: command builders and timing.

use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::CommandName;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An `issue_client_token` command with a unique name, about 400 bytes once evented.
pub fn issue(i: u64) -> ParsedCommand {
    parse_value(
        CommandName::IssueClientToken,
        json!({
            "commandId": Uuid::new_v4().to_string(),
            "workspaceId": format!("ws{}", i % 16),
            "actor": {"agentId": "bench", "agentType": "service"},
            "name": format!("token-{i}"),
            "permissionGroups": [{"permissionGroupId": "readers"}],
        }),
    )
    .expect("valid command")
}

/// The `round`-th change to an existing client token, cycling through the
/// kinds of change a long-lived token sees: a group assigned, the same group
/// unassigned, a rotation, a rename. Every one appends an event, provided
/// each token's rounds run in order.
pub fn change(workspace: &str, token: Uuid, round: u64) -> ParsedCommand {
    let id = token.to_string();
    // Rounds 4k and 4k + 1 assign and unassign the group `g{4k}`.
    let group = format!("g{}", round - round % 4);
    let (name, body) = match round % 4 {
        0 => (
            CommandName::AssignPermissionGroups,
            json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": group}]}),
        ),
        1 => (
            CommandName::UnassignPermissionGroups,
            json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": group}]}),
        ),
        2 => (CommandName::RotateClientToken, json!({"tokenId": id})),
        _ => (
            CommandName::UpdateClientToken,
            json!({"tokenId": id, "name": format!("renamed-{token}-{round}")}),
        ),
    };
    let mut body = body;
    body["commandId"] = json!(Uuid::new_v4().to_string());
    body["workspaceId"] = json!(workspace);
    body["actor"] = json!({"agentId": "bench", "agentType": "service"});
    parse_value(name, body).expect("valid command")
}

/// Runs `f` and returns its result with the elapsed time.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Operations per second.
pub fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Requests kept in flight by [`requests`].
pub const IN_FLIGHT: usize = 256;

/// The `p`-th quantile of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// What [`requests`] measured.
pub struct Measured {
    /// With [`requests_keeping_results`]: each reply's `result` (or the whole
    /// reply when it has none), in body order; empty otherwise.
    pub results: Vec<serde_json::Value>,
    /// Requests per second.
    pub rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Sends one request per body on `subject` with [`IN_FLIGHT`] outstanding;
/// a reply saying `"ok": false` fails the benchmark.
pub async fn requests(
    client: &async_nats::Client,
    subject: &'static str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
) -> Measured {
    drive(client, subject, bodies, false, None).await
}

/// [`requests`], keeping every reply's result (memory: one JSON value each).
pub async fn requests_keeping_results(
    client: &async_nats::Client,
    subject: &'static str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
) -> Measured {
    drive(client, subject, bodies, true, None).await
}

/// Sends the requests on a fixed schedule, `per_sec` a second, with at most
/// [`IN_FLIGHT`] outstanding: an open loop, where [`requests`] is a closed
/// one. Each latency counts from the request's scheduled time, not from when
/// it went out, so a stall delays the clock of every request behind it
/// (no coordinated omission); the rate is of replies.
pub async fn requests_at_rate(
    client: &async_nats::Client,
    subject: &'static str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
    per_sec: f64,
) -> Measured {
    drive(client, subject, bodies, false, Some(per_sec)).await
}

/// Whether a reply is one of the ledger's failure replies.
fn is_failure(reply: &async_nats::Message) -> bool {
    let flagged = reply.headers.as_ref().is_some_and(|h| {
        h.get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .is_some()
    });
    flagged || reply.payload.starts_with(br#"{"ok":false"#)
}

async fn drive(
    client: &async_nats::Client,
    subject: &'static str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
    keep: bool,
    per_sec: Option<f64>,
) -> Measured {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut results = Vec::new();
    let mut latencies = Vec::new();
    let mut inflight = FuturesUnordered::new();
    let mut bodies = bodies.into_iter().enumerate().peekable();
    let start = Instant::now();
    let due = |i: usize| per_sec.map(|r| start + Duration::from_secs_f64(i as f64 / r));
    loop {
        while inflight.len() < IN_FLIGHT {
            let Some(&(i, _)) = bodies.peek() else {
                break;
            };
            let scheduled = due(i);
            if scheduled.is_some_and(|at| at > Instant::now()) {
                break;
            }
            let (i, body) = bodies.next().expect("peeked");
            let c = client.clone();
            inflight.push(async move {
                let t = scheduled.unwrap_or_else(Instant::now);
                let reply = c.request(subject, body.into()).await.expect("reply");
                if !keep {
                    // The load generator shares the cores with the server,
                    // so it only tells a failure: the ledger's failure
                    // replies carry the `Nats-Service-Error-Code` header and
                    // begin `{"ok":false` (`ledger_nats::reply`). Parsing
                    // each ~1 KB reply cost about 2 µs of those cores.
                    assert!(
                        !is_failure(&reply),
                        "{}",
                        String::from_utf8_lossy(&reply.payload)
                    );
                    return (i, serde_json::Value::Null, t.elapsed());
                }
                let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                assert_ne!(v["ok"], json!(false), "{v}");
                let result = match v.get("result") {
                    Some(r) => r.clone(),
                    None => v,
                };
                (i, result, t.elapsed())
            });
        }
        let next_due = bodies.peek().and_then(|&(i, _)| due(i));
        let done = match next_due {
            // Not yet due, or held back by the cap: wake for whichever
            // comes first, a reply or the next send.
            Some(at) if inflight.is_empty() => {
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
            Some(at) if inflight.len() < IN_FLIGHT => tokio::select! {
                done = inflight.next() => done,
                () = tokio::time::sleep_until(at.into()) => continue,
            },
            _ => inflight.next().await,
        };
        let Some((i, result, latency)) = done else {
            break;
        };
        if keep {
            if results.len() <= i {
                results.resize(i + 1, serde_json::Value::Null);
            }
            results[i] = result;
        }
        latencies.push(latency);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Measured {
        rate: rate(latencies.len() as u64, elapsed),
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        results,
    }
}

/// A ledger served in this process on a temporary data dir.
pub struct Served {
    /// The store behind the server.
    pub store: ledger_store::Store,
    /// The server's counters.
    pub metrics: ledger_nats::Metrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ledger_nats::NatsError>>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `ledger_nats::run` on `nats_url` and waits until it answers.
    pub async fn start(nats_url: String) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store = ledger_store::Store::open(
            dir.path(),
            ledger_store::StoreConfig {
                master_key: Some(ledger_crypto::MasterKey::generate()),
                ..ledger_store::StoreConfig::default()
            },
        )
        .unwrap();
        let config = ledger_nats::ServeConfig::new(vec![nats_url]);
        let metrics = config.metrics.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ledger_nats::run(store.clone(), config, async move {
            let _ = stopped.await;
        }));
        let ready = ledger_testkit::wait_for_async(Duration::from_secs(30), || async {
            metrics.is_ready()
        })
        .await;
        assert!(ready, "the ledger server did not become ready");
        Served {
            store,
            metrics,
            stop,
            task,
            _dir: dir,
        }
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
