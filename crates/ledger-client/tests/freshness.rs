//! The local verifier's freshness over a real nats-server: it proves it
//! holds every event while idle and while events it has no status for go
//! by; it goes stale, and with a bound refuses every string, when a
//! revocation is acknowledged but not on the stream or when NATS is gone;
//! a ledger that is down does not make it stale.

mod common;

use common::*;
use ledger_client::{
    Client, IssueClientToken, LocalVerifier, Reason, RegisterAccessToken, RevokeToken, TrashToken,
    VerifierOptions,
};
use ledger_testkit::{cap_tokens_stream, wait_for_async};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Probes often, so that the tests wait little.
const PROBE: Duration = Duration::from_millis(50);
/// The bound of the fail-closed verifiers: long enough that a loaded
/// machine's pauses do not make a fresh verifier look stale.
const MAX_STALENESS: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn issue(c: &Client, ws: &str) -> (Uuid, String) {
    let t = c
        .issue_client_token(ws, IssueClientToken::default())
        .await
        .unwrap()
        .token
        .unwrap();
    (t.token_id(), t.token_str.unwrap())
}

async fn verifier(c: &Client, max_staleness: Option<Duration>) -> LocalVerifier {
    let options = VerifierOptions {
        probe_every: PROBE,
        max_staleness,
        ..VerifierOptions::default()
    };
    LocalVerifier::start_with(c.clone(), Some(WS), options)
        .await
        .unwrap()
}

async fn revoke(c: &Client, token: Uuid) {
    c.revoke_token(
        WS,
        RevokeToken {
            token_id: token,
            reason: None,
        },
    )
    .await
    .unwrap();
}

/// The stream refuses new messages, then `token` is revoked: the ledger
/// acknowledges the revocation, and no subscriber can hear of it.
async fn revoke_unpublished(env: &Env, token: Uuid) {
    let head = env.store.head_position();
    cap_tokens_stream(&env.nats.url(), Some(i64::try_from(head).unwrap()), true).await;
    revoke(&env.client, token).await;
}

/// Waits until `v` accepts `s` (it may need a proof first).
async fn accepts(v: &LocalVerifier, s: &str) -> bool {
    wait_for_async(DEADLINE, || async { v.check(s).is_ok() }).await
}

/// Waits until `v` proves itself in sync at or after `at_ms`.
async fn confirmed_after(v: &LocalVerifier, at_ms: i64) -> bool {
    wait_for_async(DEADLINE, || async { v.confirmed_at_ms() >= at_ms }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_verifier_proves_itself_in_sync_and_other_events_do_not_hold_it_back() {
    let env = Env::start().await;
    let c = &env.client;
    let (_, s) = issue(c, WS).await;
    let v = verifier(c, Some(MAX_STALENESS)).await;

    // Nothing happens: the probes still move the proof forward.
    let idle = now_ms();
    assert!(
        confirmed_after(&v, idle).await,
        "no proof while idle: confirmed at {}",
        v.confirmed_at_ms()
    );
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));

    // Events that change no status (an access token in the workspace) and
    // events of another workspace: the proof covers them too.
    let registered = c
        .register_access_token(
            WS,
            RegisterAccessToken {
                id: None,
                user_id: Uuid::new_v4(),
                provider: "google".into(),
                account_name: "a@example.com".into(),
                access_token: "ya29.secret".into(),
                refresh_token: None,
            },
        )
        .await
        .unwrap();
    issue(c, "globex").await;
    let after = now_ms();
    assert!(
        confirmed_after(&v, after).await,
        "no proof after events outside the statuses: confirmed at {}, position {}",
        v.confirmed_at_ms(),
        v.position()
    );
    assert!(v.position() >= registered.positions[0]);
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_not_on_the_stream_makes_the_verifier_stale_and_a_bounded_one_refuses() {
    let env = Env::start().await;
    let c = &env.client;
    let (revoked, s) = issue(c, WS).await;
    let (_, other) = issue(c, WS).await;
    let (trashed, t) = issue(c, WS).await;
    c.trash_token(
        WS,
        TrashToken {
            token_id: trashed,
            reason: None,
        },
    )
    .await
    .unwrap();
    let closed = verifier(c, Some(MAX_STALENESS)).await;
    let open = verifier(c, None).await;
    env.wait_published().await;
    assert!(accepts(&closed, &s).await, "{:?}", closed.check(&s));

    revoke_unpublished(&env, revoked).await;
    assert!(!c.verify(&s).await.unwrap().is_active(), "the ledger knows");

    assert!(
        wait_for_async(DEADLINE, || async {
            closed.check(&s) == Err(Reason::Stale)
        })
        .await,
        "the bounded verifier still answers {:?} for a revoked string",
        closed.check(&s)
    );
    assert!(closed.staleness() > MAX_STALENESS);
    assert_eq!(
        closed.check(&other).unwrap_err(),
        Reason::Stale,
        "every string it would accept is refused, not only the revoked one"
    );
    assert_eq!(
        closed.check(&t).unwrap_err(),
        Reason::Trashed,
        "a refusal it knows keeps its own reason"
    );
    // Without a bound the verifier answers from what it has; its staleness
    // is the signal.
    assert!(
        wait_for_async(DEADLINE, || async { open.staleness() > MAX_STALENESS }).await,
        "staleness {:?}",
        open.staleness()
    );
    assert!(open.check(&other).is_ok());

    // The limit is lifted: the stream catches up, the revocation arrives,
    // and the proof resumes.
    cap_tokens_stream(&env.nats.url(), None, true).await;
    assert!(
        wait_for_async(DEADLINE, || async {
            closed.check(&s) == Err(Reason::Revoked) && closed.check(&other).is_ok()
        })
        .await,
        "after the catch-up: {:?} / {:?}",
        closed.check(&s),
        closed.check(&other)
    );
    assert_eq!(open.check(&s).unwrap_err(), Reason::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_is_down_does_not_make_the_verifier_stale() {
    let mut env = Env::start().await;
    let (_, s) = issue(&env.client, WS).await;
    let v = verifier(&env.client, Some(MAX_STALENESS)).await;
    env.wait_published().await;
    env.stop_server().await;

    // The stream's end stands in for the ledger's head: nothing can be
    // revoked while the ledger is down, so strings stay active.
    let down = now_ms();
    assert!(
        confirmed_after(
            &v,
            down + 2 * i64::try_from(MAX_STALENESS.as_millis()).unwrap()
        )
        .await,
        "no proof with the ledger down: confirmed at {}",
        v.confirmed_at_ms()
    );
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));
}

/// A ledger that is there but does not say its head (overloaded, stuck)
/// proves nothing: publication lags most then, so an acknowledged
/// revocation may not be in the stream yet. The verifier goes stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_does_not_answer_in_time_makes_the_verifier_stale() {
    let mut env = Env::start().await;
    let (_, s) = issue(&env.client, WS).await;
    let v = verifier(&env.client, Some(MAX_STALENESS)).await;
    env.wait_published().await;
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));
    env.stop_server().await;
    // Something takes the head requests and never answers them.
    let raw = async_nats::connect(env.nats.url()).await.unwrap();
    let _silent = raw.subscribe("tokens.snapshot").await.unwrap();
    raw.flush().await.unwrap();
    assert!(
        wait_for_async(DEADLINE, || async { v.check(&s) == Err(Reason::Stale) }).await,
        "still {:?} with the ledger silent",
        v.check(&s)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_cut_off_from_nats_goes_stale_and_recovers() {
    let mut env = Env::start().await;
    let (_, s) = issue(&env.client, WS).await;
    let v = verifier(&env.client, Some(MAX_STALENESS)).await;
    env.wait_published().await;
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));

    env.nats.kill().unwrap();
    assert!(
        wait_for_async(DEADLINE, || async { v.check(&s) == Err(Reason::Stale) }).await,
        "still {:?} with NATS gone",
        v.check(&s)
    );

    let env = tokio::task::spawn_blocking(move || {
        env.nats.restart().unwrap();
        env
    })
    .await
    .unwrap();
    let back = now_ms();
    assert!(
        confirmed_after(&v, back).await,
        "no proof after NATS came back: confirmed at {}",
        v.confirmed_at_ms()
    );
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));
    drop(env);
}

/// The ledger restored from a backup (and its stream recreated from it) is
/// behind what a running verifier applied. The verifier must notice and
/// start over, or it would wait for positions the new history reaches much
/// later, and miss every revocation until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_ahead_of_a_restored_ledger_starts_over() {
    let mut env = Env::start().await;
    for _ in 0..3 {
        issue(&env.client, WS).await;
    }
    env.wait_published().await;
    // The backup: the data dir of a cleanly stopped ledger at position 3.
    env.stop_server().await;
    tokio::task::block_in_place(|| env.store.shutdown()).unwrap();
    let (live, backup) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_dir(env.dir.path(), live.path());
    copy_dir(env.dir.path(), backup.path());
    let master = env.master.clone();
    let reopen = |dir: &std::path::Path| {
        ledger_store::Store::open(
            dir,
            ledger_store::StoreConfig {
                master_key: Some(master.clone()),
                ..ledger_store::StoreConfig::default()
            },
        )
        .unwrap()
    };
    let store = reopen(live.path());
    let server = Server::start(store.clone(), env.nats.url()).await;
    let v = verifier(&env.client, None).await;
    for _ in 0..4 {
        issue(&env.client, WS).await;
    }
    assert!(
        wait_for_async(DEADLINE, || async { v.position() == 7 }).await,
        "applied {}",
        v.position()
    );

    // Disaster: the ledger comes back from the backup, the stream is
    // recreated from it, and the new history goes on from position 4.
    server.stop().await.unwrap();
    tokio::task::block_in_place(|| store.shutdown()).unwrap();
    drop(store);
    let js = async_nats::jetstream::new(async_nats::connect(env.nats.url()).await.unwrap());
    js.delete_stream("TOKENS").await.unwrap();
    let restored = reopen(backup.path());
    let server = Server::start(restored.clone(), env.nats.url()).await;
    let (revoked, s) = issue(&env.client, WS).await;
    revoke(&env.client, revoked).await;
    assert_eq!(restored.head_position(), 5);
    assert!(
        wait_for_async(DEADLINE, || async { v.check(&s) == Err(Reason::Revoked) }).await,
        "the revocation of the new history is {:?} at the verifier (applied {})",
        v.check(&s),
        v.position()
    );
    server.stop().await.unwrap();
    tokio::task::block_in_place(|| restored.shutdown()).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The ledger acknowledged a revocation the stream refused, then went down.
/// The stream's end no longer stands in for its head: the verifier knows of
/// a higher one, so it stays stale and a bounded one keeps refusing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_goes_down_with_events_unpublished_leaves_the_verifier_stale() {
    // A quick stop: the stream will not take what is left to publish.
    let mut env = Env::start_configured(|c| c.drain_timeout = Duration::from_millis(200)).await;
    let c = &env.client;
    let (revoked, s) = issue(c, WS).await;
    let v = verifier(c, Some(MAX_STALENESS)).await;
    env.wait_published().await;
    assert!(accepts(&v, &s).await, "{:?}", v.check(&s));

    revoke_unpublished(&env, revoked).await;
    assert!(
        wait_for_async(DEADLINE, || async { v.check(&s) == Err(Reason::Stale) }).await,
        "{:?}",
        v.check(&s)
    );
    env.stop_server().await;
    // With the ledger gone, probe after probe (every 50 ms) must not prove
    // the verifier in sync again: the revocation is still not applied.
    let down = now_ms();
    assert!(
        !wait_for_async(Duration::from_secs(2), || async {
            v.confirmed_at_ms() >= down || v.check(&s).is_ok()
        })
        .await,
        "the verifier took the stream's end for the head: {:?}",
        v.check(&s)
    );
    assert_eq!(v.check(&s), Err(Reason::Stale));
}

/// Under a steady stream of writes, events applied while a probe's head
/// request travels are past that head: not a log gone back. The verifier
/// must not take a snapshot for them (a snapshot is any `tokens.snapshot`
/// request for more than the one status a head request asks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_probe_do_not_look_like_a_reset() {
    use futures_util::StreamExt;
    let env = Env::start().await;
    let c = &env.client;
    let options = VerifierOptions {
        probe_every: Duration::from_millis(20),
        ..VerifierOptions::default()
    };
    let v = LocalVerifier::start_with(c.clone(), Some(WS), options)
        .await
        .unwrap();
    let spy = async_nats::connect(env.nats.url()).await.unwrap();
    let mut requests = spy.subscribe("tokens.snapshot").await.unwrap();
    spy.flush().await.unwrap();
    for _ in 0..300 {
        issue(c, WS).await;
    }
    let head = env.store.head_position();
    assert!(
        wait_for_async(DEADLINE, || async { v.position() == head }).await,
        "applied {} of {head}",
        v.position()
    );
    drop(v);
    spy.flush().await.unwrap();
    let mut snapshots = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), requests.next()).await
    {
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        if body["limit"] != 1 {
            snapshots += 1;
        }
    }
    assert_eq!(snapshots, 0, "the verifier started over under load");
}
