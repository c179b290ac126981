//! `cargo bench -p ledger-bench --bench nats`: durable commands over NATS with
//! 256 in flight, side by side with the transport's own ceilings on the same
//! nats-server: a trivial request/reply echo and raw JetStream publish-with-ack.

use async_nats::jetstream;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use ledger_bench::rate;
use ledger_crypto::MasterKey;
use ledger_nats::ServeConfig;
use ledger_store::{Store, StoreConfig};
use ledger_testkit::{wait_for_async, NatsServer};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

const IN_FLIGHT: usize = 256;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Sends `n` requests with `IN_FLIGHT` outstanding; returns (req/s, p50 ms, p99 ms).
async fn requests(
    client: &async_nats::Client,
    n: usize,
    subject: &'static str,
    body: impl Fn(usize) -> Vec<u8>,
) -> (f64, f64, f64) {
    let mut latencies = Vec::with_capacity(n);
    let mut inflight = FuturesUnordered::new();
    let start = Instant::now();
    let mut sent = 0;
    while latencies.len() < n {
        while sent < n && inflight.len() < IN_FLIGHT {
            let c = client.clone();
            let payload = body(sent);
            inflight.push(async move {
                let t = Instant::now();
                let reply = c.request(subject, payload.into()).await.expect("reply");
                assert!(
                    !reply.payload.starts_with(b"{\"ok\":false"),
                    "{}",
                    String::from_utf8_lossy(&reply.payload)
                );
                t.elapsed()
            });
            sent += 1;
        }
        latencies.push(inflight.next().await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    (
        rate(n as u64, elapsed),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

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
        let mut echo = client.subscribe("bench.echo").await.unwrap();
        let responder = client.clone();
        let echo_task = tokio::spawn(async move {
            while let Some(m) = echo.next().await {
                if let Some(reply) = m.reply {
                    responder.publish(reply, m.payload).await.unwrap();
                }
            }
        });
        let (r, p50, p99) = requests(&client, n, "bench.echo", |_| b"{}".to_vec()).await;
        println!("| core NATS request/reply echo | {r:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms |");
        echo_task.abort();

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
        let start = Instant::now();
        let mut acks = std::collections::VecDeque::new();
        for i in 0..n {
            if acks.len() >= 512 {
                let ack: jetstream::context::PublishAckFuture = acks.pop_front().unwrap();
                ack.await.unwrap();
            }
            let msg = jetstream::message::PublishMessage::build()
                .payload(body.clone().into())
                .message_id(i.to_string());
            acks.push_back(js.send_publish("bench.js", msg).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        println!(
            "| JetStream publish with ack + Nats-Msg-Id, window 512, 700 B | {:.0} msg/s |",
            rate(n as u64, start.elapsed())
        );

        // The ledger: durable issue_client_token over NATS.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreConfig {
                master_key: Some(MasterKey::generate()),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let config = ServeConfig::new(vec![nats.url()]);
        let metrics = config.metrics.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ledger_nats::run(store.clone(), config, async move {
            let _ = stop_rx.await;
        }));
        assert!(wait_for_async(Duration::from_secs(30), || async { metrics.is_ready() }).await);
        let (r, p50, p99) = requests(&client, n, "tokens.cmd.bench.issue_client_token", |i| {
            serde_json::to_vec(&json!({
                "commandId": Uuid::new_v4().to_string(),
                "workspaceId": "bench",
                "actor": {"agentId": "bench", "agentType": "service"},
                "name": format!("token-{i}"),
            }))
            .unwrap()
        })
        .await;
        println!("| tokenledger issue_client_token over NATS (durable; each reply carries a freshly signed EdDSA tokenStr) | {r:.0} commands/s, p50 {p50:.1} ms, p99 {p99:.1} ms |");
        let (r, p50, p99) = requests(&client, n, "tokens.cmd.bench.register_access_token", |i| {
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
        .await;
        println!("| tokenledger register_access_token over NATS (durable; secret sealed, no signature) | {r:.0} commands/s, p50 {p50:.1} ms, p99 {p99:.1} ms |");
        let start = Instant::now();
        let head = store.head_position();
        assert!(
            wait_for_async(Duration::from_secs(120), || async {
                metrics.published_position() == head
            })
            .await
        );
        println!(
            "| publication caught up {:.0} ms after the last reply | |",
            start.elapsed().as_secs_f64() * 1000.0
        );
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}
