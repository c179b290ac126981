//! Verification over a real nats-server: `tokens.verify` answers exactly
//! `{"active": false}` on every path to inactive; the JWKS lets a standard
//! JWT library check a fresh string; key rotation while serving; the local
//! verifier follows revocations (propagation measured) and misses nothing
//! between its snapshot and the stream.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use futures_util::future::join_all;
use ledger_client::{
    Client, Introspection, IssueClientToken, LocalVerifier, Patch, PurgeToken, Reason,
    RestoreToken, RevokeToken, RotateClientToken, TrashToken, UpdateClientToken,
};
use ledger_crypto::jwt::{JwtClaims, KeyRing, SigningAlg};
use ledger_testkit::wait_for_async;
use serde_json::{json, Value};
use uuid::Uuid;

async fn issue(c: &Client, ws: &str, cmd: IssueClientToken) -> (Uuid, String) {
    let t = c.issue_client_token(ws, cmd).await.unwrap().token.unwrap();
    (t.token_id(), t.token_str.unwrap())
}

/// The raw reply body of `tokens.verify`.
async fn raw_verify(c: &Client, token: &str) -> String {
    let reply = c
        .nats()
        .request(
            "tokens.verify",
            serde_json::to_vec(&json!({ "tokenStr": token }))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    String::from_utf8(reply.payload.to_vec()).unwrap()
}

const INACTIVE: &str = r#"{"ok":true,"result":{"active":false}}"#;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn claims(token: &str) -> JwtClaims {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[1]).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[0]).unwrap()).unwrap()
}

/// Signs `claims` with the server's own active key (as only the ledger could).
fn mint(env: &Env, claims: &JwtClaims) -> String {
    env.store.key_ring().read().unwrap().mint(claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inactive_string_gets_exactly_active_false() {
    let env = Env::start().await;
    let c = &env.client;
    let (id, s) = issue(c, WS, IssueClientToken::default()).await;
    let active = c.verify(&s).await.unwrap();
    let a = active.active().expect("a fresh string is active");
    assert_eq!(a.token_id, id);
    assert_eq!(a.workspace_id, WS);
    assert!(raw_verify(c, &s)
        .await
        .starts_with(r#"{"ok":true,"result":{"active":true,"#));

    let p = parts(&s);
    let kid = header(&s)["kid"].as_str().unwrap().to_owned();
    let mut cases: Vec<(&str, String)> = Vec::new();
    // Unknown, malformed, forged.
    let mut c1 = claims(&s);
    c1.sub = Uuid::new_v4().to_string();
    cases.push(("unknown token", mint(&env, &c1)));
    cases.push(("malformed", "not.a.jwt".into()));
    cases.push(("empty", String::new()));
    let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    sig[5] ^= 0x40;
    cases.push((
        "forged signature",
        format!("{}.{}.{}", p[0], p[1], b64(&sig)),
    ));
    // alg: none and HS/EdDSA confusion with the published key.
    let none = b64(json!({"alg": "none", "kid": kid}).to_string().as_bytes());
    cases.push(("alg none", format!("{none}.{}.", p[1])));
    let jwks = c.jwks().await.unwrap();
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.clone());
    cases.push((
        "HS256 with the public key as secret",
        jsonwebtoken::encode(&h, &claims(&s), &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap(),
    ));
    // A key not in the ring.
    let other = tempfile::tempdir().unwrap();
    let other =
        KeyRing::load_or_create(other.path(), SigningAlg::EdDSA, chrono::Utc::now()).unwrap();
    cases.push(("unknown kid", other.mint(&claims(&s)).unwrap()));
    // The JWT's own exp has passed (same claims otherwise).
    let mut c2 = claims(&s);
    c2.exp = Some(chrono::Utc::now().timestamp() - 1);
    cases.push(("jwt exp passed", mint(&env, &c2)));
    // Another workspace than the token's.
    let mut c3 = claims(&s);
    c3.ws = "other".into();
    cases.push(("other workspace", mint(&env, &c3)));

    // Ledger states.
    let (t, trashed) = issue(c, WS, IssueClientToken::default()).await;
    c.trash_token(
        WS,
        TrashToken {
            token_id: t,
            reason: None,
        },
    )
    .await
    .unwrap();
    cases.push(("trashed", trashed));
    let (t, revoked) = issue(c, WS, IssueClientToken::default()).await;
    c.revoke_token(
        WS,
        RevokeToken {
            token_id: t,
            reason: None,
        },
    )
    .await
    .unwrap();
    cases.push(("revoked", revoked));
    let (t, rotated_out) = issue(c, WS, IssueClientToken::default()).await;
    let fresh = c
        .rotate_client_token(WS, RotateClientToken { token_id: t })
        .await
        .unwrap()
        .token
        .unwrap()
        .token_str
        .unwrap();
    cases.push(("rotated out", rotated_out));
    let (t, purged) = issue(c, WS, IssueClientToken::default()).await;
    c.trash_token(
        WS,
        TrashToken {
            token_id: t,
            reason: None,
        },
    )
    .await
    .unwrap();
    c.purge_token(
        WS,
        PurgeToken {
            token_id: t,
            force: false,
        },
    )
    .await
    .unwrap();
    cases.push(("purged", purged));

    for (what, token) in &cases {
        assert_eq!(raw_verify(c, token).await, INACTIVE, "{what}");
        assert_eq!(
            c.verify(token).await.unwrap(),
            Introspection::Inactive,
            "{what}"
        );
    }
    assert!(c.verify(&fresh).await.unwrap().is_active());

    // Shortening `expires` takes effect at once: the string dies when the
    // new expiry passes, long before its JWT's exp.
    let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let (t, s) = issue(
        c,
        WS,
        IssueClientToken {
            expires: Some(far),
            ..Default::default()
        },
    )
    .await;
    assert!(c.verify(&s).await.unwrap().is_active());
    let soon = chrono::Utc::now().timestamp_millis() + 300;
    c.update_client_token(
        WS,
        UpdateClientToken {
            expires: Patch::Set(soon),
            ..UpdateClientToken::new(t)
        },
    )
    .await
    .unwrap();
    assert!(
        wait_for_async(DEADLINE, || async { raw_verify(c, &s).await == INACTIVE }).await,
        "the shortened expiry never took effect"
    );
    assert!(chrono::Utc::now().timestamp_millis() >= soon);

    // A body that is not {"tokenStr": string} is a bad request, not an inactive string.
    let reply = c
        .nats()
        .request("tokens.verify", br#"{"token": "x"}"#.to_vec().into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["error"]["code"], "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_jwt_library_verifies_a_fresh_string_from_the_jwks_alone() {
    let env = Env::start().await;
    let (id, s) = issue(&env.client, WS, IssueClientToken::default()).await;
    // Only the JWKS, as any gateway would fetch it, and jsonwebtoken's own JWK support.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(env.client.jwks().await.unwrap()).unwrap();
    let kid = jsonwebtoken::decode_header(&s).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the string's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(&s, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], id.to_string());
    assert_eq!(data.claims["ws"], WS);
    // And a changed payload fails it.
    let p = parts(&s);
    let mut c = claims(&s);
    c.ws = "other".into();
    let tampered = format!(
        "{}.{}.{}",
        p[0],
        b64(&serde_json::to_vec(&c).unwrap()),
        p[2]
    );
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_while_serving() {
    let env = Env::start().await;
    let c = &env.client;
    let (_, old) = issue(c, WS, IssueClientToken::default()).await;
    let old_kid = header(&old)["kid"].as_str().unwrap().to_owned();
    let verifier = LocalVerifier::start(c.clone(), Some(WS)).await.unwrap();

    let rotated = c.rotate_key(None).await.unwrap();
    let new_kid = rotated["event"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["event"]["previousKid"], old_kid);
    assert_eq!(rotated["event"]["actor"]["agentId"], "alice");
    let (_, fresh) = issue(c, WS, IssueClientToken::default()).await;
    assert_eq!(header(&fresh)["kid"], new_kid);
    assert!(
        c.verify(&old).await.unwrap().is_active(),
        "retired keys still verify"
    );
    assert!(c.verify(&fresh).await.unwrap().is_active());
    let jwks = c.jwks().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let keys = c.keys().await.unwrap();
    assert_eq!(keys["activeKid"], new_kid);
    assert_eq!(keys["history"].as_array().unwrap().len(), 2);

    // The local verifier meets the new kid in the issue event and refreshes its JWKS.
    assert!(verifier.check(&old).is_ok());
    assert!(
        wait_for_async(DEADLINE, || async { verifier.check(&fresh).is_ok() }).await,
        "the local verifier never learnt the new key: {:?}",
        verifier.check(&fresh)
    );
    assert!(verifier.kids().contains(&new_kid));
    // An unknown alg is refused.
    let bad = c.rotate_key(Some("RS256")).await.unwrap_err();
    assert_eq!(bad.code(), "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_verifier_agrees_with_the_ledger_on_every_path() {
    let env = Env::start().await;
    let c = &env.client;
    let (a, sa) = issue(
        c,
        WS,
        IssueClientToken {
            name: Some("a".into()),
            permission_groups: vec!["g".into()],
            ..Default::default()
        },
    )
    .await;
    let (other_id, other_ws) = issue(c, "beta", IssueClientToken::default()).await;
    let _ = other_id;
    let v = LocalVerifier::start(c.clone(), Some(WS)).await.unwrap();
    // Pages of one status: the all-workspaces snapshot follows its cursor.
    let all = LocalVerifier::start_paged(c.clone(), None, 1)
        .await
        .unwrap();
    assert_eq!(all.token_count(), 2);
    let page = c.snapshot(Some(WS), None, Some(1)).await.unwrap();
    assert_eq!(page.tokens.len(), 1);
    assert_eq!(page.tokens[0].token_id, a);
    assert!(
        page.next_cursor.is_none() && page.position > 0,
        "one token in {WS}"
    );
    let err = c.snapshot(None, None, Some(0)).await.unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert_eq!(v.verify(&sa), c.verify(&sa).await.unwrap());
    assert!(v.verify(&sa).is_active());
    assert_eq!(v.check(&other_ws).unwrap_err(), Reason::OtherWorkspace);
    assert!(all.verify(&other_ws).is_active());
    assert_eq!(v.check("x.y.z").unwrap_err(), Reason::Malformed);
    let p = parts(&sa);
    let none = b64(json!({"alg": "none", "kid": header(&sa)["kid"]})
        .to_string()
        .as_bytes());
    assert_eq!(
        v.check(&format!("{none}.{}.", p[1])).unwrap_err(),
        Reason::Algorithm
    );
    let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    sig[0] ^= 1;
    assert_eq!(
        v.check(&format!("{}.{}.{}", p[0], p[1], b64(&sig)))
            .unwrap_err(),
        Reason::BadSignature
    );

    // Each change arrives through the stream; wait for its position, then compare.
    let step = |r: ledger_client::CommandResult| *r.positions.last().unwrap();
    let check = |what: &'static str, s: String, want: Option<Reason>| {
        let (v, c) = (&v, c);
        async move {
            let local = v.check(&s);
            assert_eq!(local.as_ref().err(), want.as_ref(), "{what}");
            assert_eq!(
                Introspection::from_outcome(local),
                c.verify(&s).await.unwrap(),
                "{what}"
            );
        }
    };
    let p = step(
        c.trash_token(
            WS,
            TrashToken {
                token_id: a,
                reason: None,
            },
        )
        .await
        .unwrap(),
    );
    v.wait_for(p).await;
    check("trashed", sa.clone(), Some(Reason::Trashed)).await;
    let p = step(
        c.restore_token(WS, RestoreToken { token_id: a })
            .await
            .unwrap(),
    );
    v.wait_for(p).await;
    check("restored", sa.clone(), None).await;
    let r = c
        .rotate_client_token(WS, RotateClientToken { token_id: a })
        .await
        .unwrap();
    let sa2 = r.token.clone().unwrap().token_str.unwrap();
    v.wait_for(step(r)).await;
    check("rotated out", sa.clone(), Some(Reason::Rotated)).await;
    check("rotated in", sa2.clone(), None).await;
    let soon = chrono::Utc::now().timestamp_millis() + 60_000;
    let p = step(
        c.update_client_token(
            WS,
            UpdateClientToken {
                expires: Patch::Set(soon),
                ..UpdateClientToken::new(a)
            },
        )
        .await
        .unwrap(),
    );
    v.wait_for(p).await;
    assert_eq!(v.check(&sa2).unwrap().expires, Some(soon));
    assert_eq!(v.check_at(&sa2, soon).unwrap_err(), Reason::Expired);
    let p = step(
        c.revoke_token(
            WS,
            RevokeToken {
                token_id: a,
                reason: None,
            },
        )
        .await
        .unwrap(),
    );
    v.wait_for(p).await;
    check("revoked", sa2.clone(), Some(Reason::Revoked)).await;
    let (b, sb) = issue(c, WS, IssueClientToken::default()).await;
    c.trash_token(
        WS,
        TrashToken {
            token_id: b,
            reason: None,
        },
    )
    .await
    .unwrap();
    let p = step(
        c.purge_token(
            WS,
            PurgeToken {
                token_id: b,
                force: false,
            },
        )
        .await
        .unwrap(),
    );
    v.wait_for(p).await;
    check("purged", sb, Some(Reason::NotFound)).await;
    // HS256 strings are never verifiable from the JWKS.
    c.rotate_key(Some("HS256")).await.unwrap();
    let (_, hs) = issue(c, WS, IssueClientToken::default()).await;
    assert!(c.verify(&hs).await.unwrap().is_active());
    assert_eq!(v.check(&hs).unwrap_err(), Reason::Algorithm);
}

/// From the `revoke_token` reply, the local verifier refuses each string as
/// revoked, woken by the event rather than by polling. How fast is
/// `cargo bench -p ledger-bench --bench verify`'s question (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_reaches_the_local_verifier() {
    const N: usize = 200;
    let env = Env::start().await;
    let c = &env.client;
    let mut tokens = Vec::with_capacity(N);
    for _ in 0..N {
        tokens.push(issue(c, WS, IssueClientToken::default()).await);
    }
    let v = LocalVerifier::start(c.clone(), Some(WS)).await.unwrap();
    for (id, s) in &tokens {
        assert!(v.verify(s).is_active());
        let mut position = v.watch_position();
        c.revoke_token(
            WS,
            RevokeToken {
                token_id: *id,
                reason: None,
            },
        )
        .await
        .unwrap();
        // Wake at every applied event until the string is refused.
        while v.verify(s).is_active() {
            within("the revocation", position.changed()).await.unwrap();
        }
        assert_eq!(v.check(s).unwrap_err(), Reason::Revoked);
    }
}

/// Tokens issued, revoked and rotated WHILE the verifier takes its
/// (multi-page) snapshot and subscribes: afterwards it agrees with the ledger
/// on every string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_verifier_misses_nothing_between_snapshot_and_stream() {
    let env = Env::start().await;
    let c = env.client.clone();
    let mut seed = Vec::new();
    for _ in 0..60 {
        seed.push(issue(&c, WS, IssueClientToken::default()).await);
    }
    let writer = {
        let c = c.clone();
        let seed = seed.clone();
        tokio::spawn(async move {
            let mut strings = Vec::new();
            for (i, (id, s)) in seed.into_iter().enumerate() {
                strings.push(s);
                match i % 3 {
                    0 => {
                        c.revoke_token(
                            WS,
                            RevokeToken {
                                token_id: id,
                                reason: None,
                            },
                        )
                        .await
                        .unwrap();
                    }
                    1 => {
                        let r = c
                            .rotate_client_token(WS, RotateClientToken { token_id: id })
                            .await
                            .unwrap();
                        strings.push(r.token.unwrap().token_str.unwrap());
                    }
                    _ => strings.push(issue(&c, WS, IssueClientToken::default()).await.1),
                }
            }
            strings
        })
    };
    // Pages of 7 make the snapshot span many requests while the writer runs.
    let before = env.store.head_position();
    let v = LocalVerifier::start_paged(c.clone(), Some(WS), 7)
        .await
        .unwrap();
    assert!(
        env.store.head_position() > before,
        "no command committed while the verifier started: nothing was raced"
    );
    let strings = writer.await.unwrap();
    // A marker event after everything; once it is applied, so is all before it.
    let marker = c
        .issue_client_token(WS, IssueClientToken::default())
        .await
        .unwrap();
    v.wait_for(marker.positions[0]).await;
    let answers = join_all(strings.iter().map(|s| c.verify(s))).await;
    let mut active = 0;
    for (s, remote) in strings.iter().zip(answers) {
        let remote = remote.unwrap();
        active += usize::from(remote.is_active());
        assert_eq!(v.verify(s), remote, "{:?}", v.check(s));
    }
    assert!(
        active > 0 && active < strings.len(),
        "{active} of {}",
        strings.len()
    );
}
