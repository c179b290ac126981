//! `cargo bench -p ledger-bench --bench verify`: token string verification.
//!
//! * `tokens.verify` over NATS with 256 requests in flight, first on strings
//!   the server has not seen (every request pays the Ed25519 check), then on
//!   strings it has (the signature cache);
//! * the local verifier of `ledger-client` on one core (the benchmark's own
//!   thread), cold (jsonwebtoken's EdDSA check per call, no cache) and hot
//!   (signature cache), beside raw ed25519-dalek for reference;
//! * revocation propagation: from the `revoke_token` reply to the local
//!   verifier refusing the string.
//!
//! Without `--bench` (as `cargo test` runs benches) it runs a small quick pass.

/// The allocator the `tokenledger` binary uses, so figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ledger_bench::{percentile_ms, rate, requests_keeping_results, Served, IN_FLIGHT};
use ledger_client::{Client, LocalVerifier, RevokeToken, VerifierOptions};
use ledger_testkit::NatsServer;
use ledger_verify::jwks::KeySet;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WS: &str = "bench";

/// Runs `f` `n` times on this thread; calls per second.
fn per_second(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    rate(n as u64, start.elapsed())
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (tokens, verifies, local_n, revocations) = if quick {
        (500, 2_000, 20_000, 50)
    } else {
        (20_000, 200_000, 2_000_000, 1_000)
    };
    let nats = NatsServer::start().expect("nats-server (run scripts/install-nats.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let raw = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(30)))
            .connect(nats.url())
            .await
            .unwrap();
        let served = Served::start(nats.url()).await;

        // Issue the tokens; keep their strings.
        let bodies = (0..tokens)
            .map(|i| {
                serde_json::to_vec(&json!({
                    "commandId": Uuid::new_v4().to_string(),
                    "workspaceId": WS,
                    "actor": {"agentId": "bench", "agentType": "service"},
                    "name": format!("token-{i}"),
                    "permissionGroups": [{"permissionGroupId": "readers"}],
                }))
                .unwrap()
            })
            .collect::<Vec<_>>();
        let issued = requests_keeping_results(&raw, "tokens.cmd.bench.issue_client_token", bodies)
            .await
            .results;
        let strings: Vec<String> = issued
            .iter()
            .map(|r| r["token"]["tokenStr"].as_str().unwrap().to_owned())
            .collect();
        let ids: Vec<Uuid> = issued
            .iter()
            .map(|r| r["token"]["resourceId"].as_str().unwrap().parse().unwrap())
            .collect();

        println!("| measurement | figure |");
        println!("| --- | --- |");
        let verify_bodies = |n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|i| serde_json::to_vec(&json!({"tokenStr": strings[i % strings.len()]})).unwrap())
                .collect()
        };
        let m = requests_keeping_results(&raw, "tokens.verify", verify_bodies(strings.len())).await;
        assert!(m.results.iter().all(|v| v["active"] == true));
        let (r, p50, p99) = (m.rate, m.p50_ms, m.p99_ms);
        println!(
            "| tokens.verify over NATS, {} strings each verified once (Ed25519 per request), {IN_FLIGHT} in flight | {r:.0} verifies/s, p50 {p50:.1} ms, p99 {p99:.1} ms |",
            strings.len()
        );
        let m = requests_keeping_results(&raw, "tokens.verify", verify_bodies(verifies)).await;
        assert!(m.results.iter().all(|v| v["active"] == true));
        let (r, p50, p99) = (m.rate, m.p50_ms, m.p99_ms);
        println!(
            "| tokens.verify over NATS, {verifies} requests over those strings (signature cache), {IN_FLIGHT} in flight | {r:.0} verifies/s, p50 {p50:.1} ms, p99 {p99:.1} ms |"
        );

        // The local verifier, on this one thread.
        let client = Client::new(raw.clone());
        let start = Instant::now();
        let verifier = LocalVerifier::start(client.clone(), Some(WS)).await.unwrap();
        println!(
            "| local verifier start: JWKS + snapshot of {} tokens + subscribe | {:.0} ms |",
            verifier.token_count(),
            start.elapsed().as_secs_f64() * 1000.0
        );
        let keys = KeySet::from_jwks(&client.jwks().await.unwrap()).unwrap();
        let cold_n = (local_n / 20).max(1000);
        let r = per_second(cold_n, |i| {
            black_box(keys.verify(&strings[i % strings.len()]).unwrap());
        });
        println!("| jsonwebtoken EdDSA decode+verify (KeySet::verify, no cache), one core | {r:.0} /s |");
        let dalek = ed25519_reference(&strings[0], &client.jwks().await.unwrap());
        let r = per_second(cold_n, |_| assert!(black_box(dalek())));
        println!("| ed25519-dalek verify alone, pre-parsed key (reference), one core | {r:.0} /s |");
        // Warm the signature cache, then measure the steady state.
        for s in &strings {
            assert!(verifier.verify(s).is_active());
        }
        let r = per_second(local_n, |i| {
            black_box(verifier.verify(&strings[i % strings.len()]));
        });
        println!(
            "| LocalVerifier::verify, EdDSA, {} strings, signature cache warm, one core | {r:.0} verifies/s |",
            strings.len()
        );
        // The same with a staleness bound (fail closed): one more load and compare.
        let bounded = LocalVerifier::start_with(
            client.clone(),
            Some(WS),
            VerifierOptions {
                max_staleness: Some(Duration::from_secs(30)),
                ..VerifierOptions::default()
            },
        )
        .await
        .unwrap();
        for s in &strings {
            assert!(bounded.verify(s).is_active());
        }
        let r = per_second(local_n, |i| {
            black_box(bounded.verify(&strings[i % strings.len()]));
        });
        println!(
            "| LocalVerifier::verify with max_staleness set, signature cache warm, one core | {r:.0} verifies/s |"
        );
        drop(bounded);

        // Revocation propagation.
        let mut latencies = Vec::with_capacity(revocations);
        for (id, s) in ids.iter().zip(&strings).take(revocations) {
            let mut position = verifier.watch_position();
            client
                .revoke_token(WS, RevokeToken { token_id: *id, reason: None })
                .await
                .unwrap();
            let t0 = Instant::now();
            while verifier.verify(s).is_active() {
                position.changed().await.unwrap();
            }
            latencies.push(t0.elapsed());
        }
        latencies.sort_unstable();
        println!(
            "| revocation propagation, revoke_token reply -> local verifier refuses ({revocations} revocations) | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms |",
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99),
            latencies.last().unwrap().as_secs_f64() * 1000.0
        );

        drop(verifier);
        served.stop().await;
    });
}

/// A closure verifying one string's signature with ed25519-dalek directly.
fn ed25519_reference(token: &str, jwks: &Value) -> impl Fn() -> bool {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    let (message, signature) = token.rsplit_once('.').unwrap();
    let signature =
        ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    let message = message.as_bytes().to_vec();
    move || key.verify_strict(&message, &signature).is_ok()
}
