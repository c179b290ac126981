//! `cargo bench -p ledger-audit --bench nats`: `audit verify --nats` on a
//! stream of `AUDIT_NATS_BENCH_EVENTS` (default 200,000) legal events.
//!
//! Starts a nats-server (ledger-testkit), creates the stream `TOKENS` as the
//! server does, publishes a chain of client tokens (each issued, renamed and
//! rotated, interleaved) in its published form, then times: the bare read
//! of the stream through the ordered consumer (`nats::stream_records`), and
//! the full verification (`nats::verify_stream`, every check, one core for
//! the verifier), with a signed root checked at the end. Prints one line each.

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_nats::jetstream;
use futures_util::StreamExt;
use ledger_audit::merkle::{leaf_hash, Accumulator};
use ledger_audit::nats::{stream_records, verify_stream, ReadRange, StreamPlan};
use ledger_audit::verify::{ExpectedRoot, NoObserver, VerifyOptions};
use ledger_core::event::{
    ClientTokenIssued, ClientTokenRotated, ClientTokenUpdated, JwtRef, StampMeta, GENESIS_HASH,
};
use ledger_core::{Agent, AgentType, EventData, EventDraft, Timestamp, TokenKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use uuid::Uuid;

const INTERLEAVE: usize = 64;

fn main() {
    let events: u64 = std::env::var("AUDIT_NATS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let nats = ledger_testkit::NatsServer::start().expect("nats-server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        jetstream::new(client)
    });
    let t = Instant::now();
    let (root, bytes) = runtime.block_on(publish(&js, events));
    println!(
        "publish: {events} events ({:.0} B each) in {:.1} s",
        bytes as f64 / events as f64,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let read = runtime.block_on(async {
        let range = ReadRange {
            from: 1,
            last: events,
            until: events,
            idle_timeout: Duration::from_secs(10),
        };
        let mut n = 0u64;
        let mut records = std::pin::pin!(stream_records(js.clone(), range));
        while let Some(r) = records.next().await {
            r.unwrap();
            n += 1;
        }
        n
    });
    assert_eq!(read, events);
    report("read the stream (ordered consumer), no checks", events, t);

    for (label, threads) in [
        ("verify --nats, all checks, verifier on 1 core", 0),
        ("verify --nats, all checks, 2 workers", 2),
    ] {
        let plan = StreamPlan {
            roots: vec![ExpectedRoot {
                size: events,
                root,
                label: "bench".into(),
            }],
            ..StreamPlan::whole_stream()
        };
        let options = VerifyOptions {
            schema: true,
            threads,
        };
        let t = Instant::now();
        let out = verify_stream(
            runtime.handle(),
            &js,
            plan,
            &options,
            &mut NoObserver,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(out.report.finding, None);
        assert_eq!(out.report.summary.events, events);
        report(label, events, t);
    }
}

fn report(label: &str, events: u64, t: Instant) {
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{label}: {secs:.2} s ({:.0} events/s)",
        events as f64 / secs
    );
}

/// Creates `TOKENS` and publishes `events` chained events; returns the
/// Merkle root over them and the bytes published.
async fn publish(js: &jetstream::Context, events: u64) -> (ledger_audit::Hash, u64) {
    js.create_stream(ledger_nats::StreamSettings::default().config())
        .await
        .unwrap();
    let actor = Agent {
        agent_id: "bench".into(),
        agent_type: AgentType::Service,
    };
    let t0 = Timestamp::parse("2026-01-01T00:00:00.000Z").unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut acc = Accumulator::new();
    let mut window = VecDeque::new();
    let mut bytes = 0u64;
    let mut position = 0u64;
    let mut group = 0u64;
    'outer: loop {
        let ids: Vec<Uuid> = (0..INTERLEAVE).map(|_| Uuid::new_v4()).collect();
        for step in 1..=3u64 {
            for (i, id) in ids.iter().enumerate() {
                if position == events {
                    break 'outer;
                }
                position += 1;
                let at = Timestamp::from_millis(t0.millis() + position as i64).unwrap();
                let n = group * INTERLEAVE as u64 + i as u64;
                let data = match step {
                    1 => EventData::ClientTokenIssued(ClientTokenIssued {
                        expires: None,
                        import: None,
                        issued_at: at,
                        jwt: jwt(at),
                        name: Some(format!("token-{n}")),
                        permission_groups: vec![],
                        provided_resource_id: Some(format!("user-{n}")),
                    }),
                    2 => EventData::ClientTokenUpdated(ClientTokenUpdated {
                        name: Some(Some(format!("renamed-{n}"))),
                        ..Default::default()
                    }),
                    _ => EventData::ClientTokenRotated(ClientTokenRotated {
                        issued_at: at,
                        jwt: jwt(at),
                    }),
                };
                let (env, _) = EventDraft {
                    token_id: *id,
                    token_kind: TokenKind::Client,
                    workspace_id: format!("ws{}", n % 16),
                    version: step,
                    data,
                }
                .stamp(StampMeta {
                    event_id: Uuid::now_v7(),
                    position,
                    occurred_at: at,
                    actor: actor.clone(),
                    command_id: Uuid::new_v4(),
                    correlation_id: None,
                    prev_hash: std::mem::take(&mut prev),
                });
                acc.push_leaf_hash(leaf_hash(
                    &ledger_audit::merkle::parse_hash(&env.hash).unwrap(),
                ));
                let payload = env.to_json_bytes();
                bytes += payload.len() as u64;
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(env.event_id.to_string());
                window.push_back(js.send_publish(env.subject(), message).await.unwrap());
                if window.len() >= 1024 {
                    window.pop_front().unwrap().await.unwrap();
                }
                prev = env.hash;
            }
        }
        group += 1;
    }
    for ack in window {
        ack.await.unwrap();
    }
    (acc.root(), bytes)
}

fn jwt(at: Timestamp) -> JwtRef {
    JwtRef {
        exp: None,
        iat: at.secs(),
        jti: Uuid::now_v7().to_string(),
        kid: "3f9a1c0b5e7d2a64".into(),
    }
}
