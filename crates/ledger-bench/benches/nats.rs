//! `cargo bench -p ledger-bench --bench nats`: durable commands over NATS with
//! 256 in flight, side by side with the transport's own ceilings on the same
//! nats-server: a trivial request/reply echo and raw JetStream publish-with-ack.
//!
//! Three commands: `issue_client_token` (the reply carries a freshly signed
//! JWT), `update_client_token` (a rename of each issued token: neither a
//! signature nor a secret) and `register_access_token` (a sealed secret).
//! Update and issue run a second time offered at 25k/s (open loop), for
//! the latency a service sees at that rate rather than at saturation.
//! Each row also gives the CPU time per command of nats-server and of this
//! process (the ledger plus the load generator): on two cores, their sum
//! bounds the rate at 2 s / (sum) whatever the ledger's latency.
//!
//! `NATS_BENCH_ONLY=<text>` runs only the rows whose key contains the text
//! (`echo`, `jetstream`, `issue`, `update`, `offered`, `register`), for
//! profiling one of them; the update and offered rows need tokens, so they
//! run the issue row too.

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_nats::jetstream;
use futures_util::StreamExt;
use ledger_bench::{rate, requests, requests_at_rate, Served, IN_FLIGHT};
use ledger_testkit::{wait_for_async, NatsServer};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The rate of the open-loop rows: the target of issue 3, in commands/s.
const OFFERED: f64 = 25_000.0;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = if quick { 2_000 } else { 100_000 };
    let nats = NatsServer::start().expect("nats-server (run scripts/install-nats.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(30)))
            .connect(nats.url())
            .await
            .unwrap();
        println!("| measurement ({n} operations, {IN_FLIGHT} in flight) | figure |");
        println!("| --- | --- |");

        // Ceiling 1: a trivial echo responder.
        let cpu = Cpu::new(nats.pid().expect("nats-server runs"));
        if wanted("echo") {
            let mut echo = client.subscribe("bench.echo").await.unwrap();
            let responder = client.clone();
            let echo_task = tokio::spawn(async move {
                while let Some(m) = echo.next().await {
                    if let Some(reply) = m.reply {
                        responder.publish(reply, m.payload).await.unwrap();
                    }
                }
            });
            let at = cpu.now();
            let m = requests(&client, "bench.echo", (0..n).map(|_| b"{}".to_vec())).await;
            println!(
                "| core NATS request/reply echo | {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms; {} |",
                m.rate,
                m.p50_ms,
                m.p99_ms,
                cpu.per_op(at, n)
            );
            echo_task.abort();
        }
        if wanted("jetstream") {
            // Ceiling 2: JetStream publish with ack, message id, window of 512.
            let js = jetstream::new(client.clone());
            js.create_stream(jetstream::stream::Config {
                name: "BENCH".into(),
                subjects: vec!["bench.js".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            let body = vec![b'x'; 700];
            let at = cpu.now();
            let start = Instant::now();
            publish_windowed(&js, n, |i| {
                let msg = jetstream::message::PublishMessage::build()
                    .payload(body.clone().into())
                    .message_id(i.to_string());
                ("bench.js".to_owned(), msg)
            })
            .await;
            println!(
                "| JetStream publish with ack + Nats-Msg-Id, window 512, 700 B | {:.0} msg/s; {} |",
                rate(n as u64, start.elapsed()),
                cpu.per_op(at, n)
            );

            // Ceiling 3: the same, published as the ledger does: a subject per
            // token (`tokens.evt.{ws}.{token}.{type}`: every message a new
            // subject the stream indexes) and the expected last sequence.
            js.create_stream(jetstream::stream::Config {
                name: "BENCH_SUBJECTS".into(),
                subjects: vec!["bench.evt.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            let at = cpu.now();
            let start = Instant::now();
            publish_windowed(&js, n, |i| {
                let msg = jetstream::message::PublishMessage::build()
                    .payload(body.clone().into())
                    .message_id(Uuid::now_v7().to_string())
                    .expected_last_sequence(i as u64);
                let subject = format!("bench.evt.bench.{}.client_token_issued", Uuid::new_v4());
                (subject, msg)
            })
            .await;
            println!(
                "| JetStream publish as the ledger does: a new subject per message, expected last sequence, window 512, 700 B | {:.0} msg/s; {} |",
                rate(n as u64, start.elapsed()),
                cpu.per_op(at, n)
            );
        }

        // The ledger: durable commands over NATS. Each row also gives the
        // CPU time per command of nats-server and of this process (the
        // ledger plus the load generator), which together bound the rate
        // on two cores.
        let served = Served::start(nats.url()).await;
        if wanted("issue") || wanted("update") || wanted("offered") {
            // Bodies are built before the clock starts, as a load generator's
            // payloads are: building one costs a few µs of the cores the ledger
            // is measured on.
            let bodies: Vec<_> = (0..n).map(|i| issue_body(format!("token-{i}"))).collect();
            let at = cpu.now();
            let m = requests(&client, "tokens.cmd.bench.issue_client_token", bodies).await;
            println!("| tokenledger issue_client_token over NATS (durable; each reply carries a freshly signed EdDSA tokenStr) | {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms; {} |", m.rate, m.p50_ms, m.p99_ms, cpu.per_op(at, n));
            // The tokens just issued, for the update row.
            let issued: Vec<Uuid> = served
                .store
                .read_from(1, n)
                .unwrap()
                .iter()
                .map(|e| e.envelope().unwrap().token_id)
                .collect();
            if wanted("update") {
                let bodies = issued
                    .iter()
                    .enumerate()
                    .map(|(i, token)| rename_body(token, format!("renamed-{i}")))
                    .collect::<Vec<_>>();
                let at = cpu.now();
                let m = requests(&client, "tokens.cmd.bench.update_client_token", bodies).await;
                println!("| tokenledger update_client_token over NATS (durable; a rename: no signature, no secret) | {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms; {} |", m.rate, m.p50_ms, m.p99_ms, cpu.per_op(at, n));
            }
            if wanted("offered") {
                // The same two commands offered at the target rate instead of
                // as fast as 256 in flight allow: the latency a service sees at
                // 25k/s, counted from each request's scheduled time. A rate the
                // machine cannot sustain shows as a latency that grows with the
                // run.
                let bodies = issued
                    .iter()
                    .enumerate()
                    .map(|(i, token)| rename_body(token, format!("offered-{i}")))
                    .collect::<Vec<_>>();
                let at = cpu.now();
                let m = requests_at_rate(&client, "tokens.cmd.bench.update_client_token", bodies, OFFERED).await;
                println!("| tokenledger update_client_token over NATS, offered {OFFERED:.0}/s (open loop, at most {IN_FLIGHT} in flight; latency from the scheduled send) | {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms; {} |", m.rate, m.p50_ms, m.p99_ms, cpu.per_op(at, n));
                let bodies: Vec<_> = (0..n)
                    .map(|i| issue_body(format!("issued-at-rate-{i}")))
                    .collect();
                let at = cpu.now();
                let m = requests_at_rate(&client, "tokens.cmd.bench.issue_client_token", bodies, OFFERED).await;
                println!("| tokenledger issue_client_token over NATS, offered {OFFERED:.0}/s (open loop, as above) | {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms; {} |", m.rate, m.p50_ms, m.p99_ms, cpu.per_op(at, n));
            }
        }
        if wanted("register") {
            let bodies: Vec<_> = (0..n)
                .map(|i| {
                    serde_json::to_vec(&json!({
                        "commandId": Uuid::new_v4().to_string(),
                        "workspaceId": "bench",
                        "actor": {"agentId": "bench", "agentType": "service"},
                        "user": {"id": Uuid::new_v4().to_string()},
                        "provider": "google",
                        "accountName": format!("user-{i}@example.com"),
                        "accessToken": format!("ya29.secret-{i}"),
                    }))
                    .unwrap()
                })
                .collect();
            let at = cpu.now();
            let m = requests(&client, "tokens.cmd.bench.register_access_token", bodies).await;
            println!("| tokenledger register_access_token over NATS (durable; secret sealed, no signature) | {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms; {} |", m.rate, m.p50_ms, m.p99_ms, cpu.per_op(at, n));
        }
        let start = Instant::now();
        let head = served.store.head_position();
        assert!(
            wait_for_async(Duration::from_secs(120), || async {
                served.metrics.published_position() == head
            })
            .await
        );
        println!(
            "| publication caught up {:.0} ms after the last reply | |",
            start.elapsed().as_secs_f64() * 1000.0
        );
        served.stop().await;
    });
}

/// Whether `NATS_BENCH_ONLY` (unset: everything) selects the row `key`.
fn wanted(key: &str) -> bool {
    std::env::var("NATS_BENCH_ONLY").map_or(true, |only| key.contains(&only))
}

/// An `issue_client_token` request body for a token named `name`.
fn issue_body(name: String) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "commandId": Uuid::new_v4().to_string(),
        "workspaceId": "bench",
        "actor": {"agentId": "bench", "agentType": "service"},
        "name": name,
    }))
    .unwrap()
}

/// An `update_client_token` request body renaming `token` to `name`.
fn rename_body(token: &Uuid, name: String) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "commandId": Uuid::new_v4().to_string(),
        "workspaceId": "bench",
        "actor": {"agentId": "bench", "agentType": "service"},
        "tokenId": token.to_string(),
        "name": name,
    }))
    .unwrap()
}

/// Publishes `n` messages made by `message(i)` through JetStream, with at
/// most 512 acks awaited at a time, and waits for every ack.
async fn publish_windowed(
    js: &jetstream::Context,
    n: usize,
    message: impl Fn(usize) -> (String, jetstream::message::PublishMessage),
) {
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        if acks.len() >= 512 {
            let ack: jetstream::context::PublishAckFuture = acks.pop_front().unwrap();
            ack.await.unwrap();
        }
        let (subject, msg) = message(i);
        acks.push_back(js.send_publish(subject, msg).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// CPU time of nats-server and of this process, from `/proc`.
struct Cpu {
    nats: u32,
}

/// (nats-server, this process) CPU seconds at one moment.
struct CpuAt(f64, f64);

impl Cpu {
    fn new(nats: u32) -> Cpu {
        Cpu { nats }
    }

    fn now(&self) -> CpuAt {
        CpuAt(
            cpu_secs(&format!("/proc/{}/stat", self.nats)),
            cpu_secs("/proc/self/stat"),
        )
    }

    /// CPU per operation since `at`, as a table cell fragment.
    fn per_op(&self, at: CpuAt, ops: usize) -> String {
        let end = self.now();
        let us = |a: f64, b: f64| (b - a) * 1e6 / ops as f64;
        format!(
            "CPU per op: nats-server {:.0} µs, this process {:.0} µs",
            us(at.0, end.0),
            us(at.1, end.1)
        )
    }
}

/// utime + stime of a `/proc/.../stat` file, in seconds (100 ticks/s).
fn cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("readable /proc stat");
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat has a comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}
