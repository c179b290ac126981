//! Verifying token strings against a real store: every path to inactive,
//! each with its logged reason and the caller's exact `{"active": false}`;
//! key rotation and its recorded history.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use ledger_core::command::parse_value;
use ledger_core::{Agent, AgentType, CommandName, TokenView};
use ledger_crypto::jwt::{JwtClaims, KeyRing, SigningAlg};
use ledger_crypto::MasterKey;
use ledger_store::{KeyEventType, Store, StoreConfig, Verifier};
use ledger_verify::{Introspection, Reason};
use serde_json::{json, Value};
use uuid::Uuid;

struct Env {
    store: Store,
    verifier: Verifier,
    _dir: tempfile::TempDir,
}

fn env_with(alg: SigningAlg) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            master_key: Some(MasterKey::generate()),
            signing_alg: alg,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    Env {
        verifier: Verifier::new(store.clone()),
        store,
        _dir: dir,
    }
}

fn env() -> Env {
    env_with(SigningAlg::EdDSA)
}

impl Env {
    fn run(&self, name: CommandName, mut body: Value) -> Option<TokenView> {
        let obj = body.as_object_mut().unwrap();
        obj.insert("commandId".into(), json!(Uuid::new_v4().to_string()));
        obj.entry("workspaceId").or_insert_with(|| json!("acme"));
        obj.insert(
            "actor".into(),
            json!({"agentId": "alice", "agentType": "user"}),
        );
        self.store
            .execute_blocking(parse_value(name, body).unwrap())
            .unwrap()
            .view
    }

    /// Issues a client token; returns its id and string.
    fn issue(&self, body: Value) -> (Uuid, String) {
        let view = self.run(CommandName::IssueClientToken, body).unwrap();
        let s = self.store.token_str(&view).unwrap().unwrap();
        (view.token_id(), s)
    }

    fn on(&self, name: CommandName, id: Uuid, mut extra: Value) -> Option<TokenView> {
        extra["tokenId"] = json!(id.to_string());
        self.run(name, extra)
    }

    /// The reason, after checking that the caller sees exactly `{"active": false}`.
    fn refused(&self, token: &str, now: DateTime<Utc>) -> Reason {
        let answer = serde_json::to_string(&self.verifier.introspect(token, now)).unwrap();
        assert_eq!(answer, r#"{"active":false}"#);
        self.verifier.verify(token, now).unwrap_err()
    }

    fn active(&self, token: &str) -> ledger_verify::Active {
        match self.verifier.introspect(token, Utc::now()) {
            Introspection::Active(a) => *a,
            Introspection::Inactive => panic!(
                "inactive: {:?}",
                self.verifier.verify(token, Utc::now()).unwrap_err()
            ),
        }
    }

    fn active_kid(&self) -> String {
        self.store
            .key_ring()
            .read()
            .unwrap()
            .active_kid()
            .to_owned()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[0]).unwrap()).unwrap()
}

fn claims(token: &str) -> JwtClaims {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[1]).unwrap()).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[test]
fn a_fresh_string_is_active_with_its_claims() {
    let e = env();
    let (id, s) =
        e.issue(json!({"name": "ci", "permissionGroups": [{"permissionGroupId": "readers"}]}));
    let a = e.active(&s);
    assert_eq!(a.token_id, id);
    assert_eq!(a.sub, id.to_string());
    assert_eq!(a.workspace_id, "acme");
    assert_eq!(a.name.as_deref(), Some("ci"));
    assert_eq!(a.permission_groups, ["readers"]);
    assert_eq!(a.kid, e.active_kid());
    let wire = serde_json::to_value(e.verifier.introspect(&s, now())).unwrap();
    assert_eq!(wire["active"], true);
    assert_eq!(wire["jti"], claims(&s).jti);
    // Cached paths give the same answer.
    assert_eq!(e.active(&s), a);
}

#[test]
fn strings_that_are_not_ours_are_inactive() {
    let e = env();
    let (_, s) = e.issue(json!({}));
    let p = parts(&s);
    let kid = e.active_kid();

    for garbage in [
        "",
        "abc",
        "a.b.c",
        "a.b",
        &format!("{}.{}", p[0], p[1]),
        &"x".repeat(10_000),
    ] {
        assert_eq!(
            e.refused(garbage, now()),
            Reason::Malformed,
            "{garbage:.30}"
        );
    }
    // Forged: the payload changed under the old signature.
    let mut c = claims(&s);
    c.jti = Uuid::now_v7().to_string();
    let forged = format!(
        "{}.{}.{}",
        p[0],
        b64(&serde_json::to_vec(&c).unwrap()),
        p[2]
    );
    assert_eq!(e.refused(&forged, now()), Reason::BadSignature);
    // Forged: a flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    sig[0] ^= 1;
    assert_eq!(
        e.refused(&format!("{}.{}.{}", p[0], p[1], b64(&sig)), now()),
        Reason::BadSignature
    );
    // alg: none, with and without a signature.
    let none = b64(json!({"alg": "none", "kid": kid, "typ": "JWT"})
        .to_string()
        .as_bytes());
    assert_eq!(
        e.refused(&format!("{none}.{}.", p[1]), now()),
        Reason::Algorithm
    );
    assert_eq!(
        e.refused(&format!("{none}.{}.{}", p[1], p[2]), now()),
        Reason::Algorithm
    );
    // HS/EdDSA confusion: HS256 "signed" with the published public key as the secret.
    let jwks = e.store.key_ring().read().unwrap().jwks();
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.clone());
    let confused =
        jsonwebtoken::encode(&h, &claims(&s), &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap();
    assert_eq!(e.refused(&confused, now()), Reason::Algorithm);
    // A key the ring does not hold (another ledger's), and no kid at all.
    let other_dir = tempfile::tempdir().unwrap();
    let other = KeyRing::load_or_create(other_dir.path(), SigningAlg::EdDSA, now()).unwrap();
    assert_eq!(
        e.refused(&other.mint(&claims(&s)).unwrap(), now()),
        Reason::UnknownKid
    );
    let no_kid = b64(json!({"alg": "EdDSA"}).to_string().as_bytes());
    assert_eq!(
        e.refused(&format!("{no_kid}.{}.{}", p[1], p[2]), now()),
        Reason::UnknownKid
    );
    // Signed by our key, but for no token of the ledger.
    let ring = e.store.key_ring().read().unwrap();
    let mut c = claims(&s);
    c.sub = Uuid::new_v4().to_string();
    let unknown = ring.mint(&c).unwrap();
    let mut c = claims(&s);
    c.ws = "other".into();
    let other_ws = ring.mint(&c).unwrap();
    let mut c = claims(&s);
    c.sub = "not-a-uuid".into();
    let bad_sub = ring.mint(&c).unwrap();
    drop(ring);
    assert_eq!(e.refused(&unknown, now()), Reason::NotFound);
    assert_eq!(e.refused(&other_ws, now()), Reason::OtherWorkspace);
    assert_eq!(e.refused(&bad_sub, now()), Reason::Malformed);
    // The genuine one still verifies.
    e.active(&s);
}

#[test]
fn an_access_token_id_has_no_string() {
    let e = env();
    let access = e
        .run(
            CommandName::RegisterAccessToken,
            json!({"user": {"id": Uuid::new_v4()}, "provider": "google", "accountName": "a@x.io", "accessToken": "t"}),
        )
        .unwrap()
        .token_id();
    let (_, s) = e.issue(json!({}));
    let mut c = claims(&s);
    c.sub = access.to_string();
    let forged = e.store.key_ring().read().unwrap().mint(&c).unwrap();
    assert_eq!(e.refused(&forged, now()), Reason::NotClient);
}

#[test]
fn expiry_by_the_jwt_and_by_the_ledger() {
    let e = env();
    let in_an_hour = now() + Duration::hours(1);
    let (id, s) = e.issue(json!({"expires": in_an_hour.timestamp_millis()}));
    e.active(&s);
    assert!(claims(&s).exp.is_some());
    // Past the JWT's exp (which is the ledger's expiry, rounded up to seconds).
    assert_eq!(
        e.refused(&s, in_an_hour + Duration::seconds(2)),
        Reason::JwtExpired
    );
    // Shortening `expires` takes effect at once, whatever the JWT says.
    let soon = now() + Duration::seconds(30);
    e.on(
        CommandName::UpdateClientToken,
        id,
        json!({"expires": soon.timestamp_millis()}),
    );
    e.active(&s);
    assert_eq!(e.refused(&s, soon), Reason::Expired);
    assert_eq!(e.refused(&s, soon + Duration::seconds(1)), Reason::Expired);
}

#[test]
fn trash_revoke_rotate_and_purge_end_a_string_at_once() {
    let e = env();
    let (id, s) = e.issue(json!({}));
    e.active(&s); // now cached
    e.on(CommandName::TrashToken, id, json!({}));
    assert_eq!(e.refused(&s, now()), Reason::Trashed);
    e.on(CommandName::RestoreToken, id, json!({}));
    e.active(&s);

    let rotated = e.on(CommandName::RotateClientToken, id, json!({})).unwrap();
    let s2 = e.store.token_str(&rotated).unwrap().unwrap();
    assert_ne!(s, s2);
    assert_eq!(e.refused(&s, now()), Reason::Rotated);
    e.active(&s2);

    e.on(CommandName::RevokeToken, id, json!({}));
    assert_eq!(e.refused(&s2, now()), Reason::Revoked);
    assert_eq!(e.refused(&s, now()), Reason::Revoked);

    let (id, s) = e.issue(json!({}));
    e.active(&s);
    e.on(CommandName::TrashToken, id, json!({}));
    e.on(CommandName::PurgeToken, id, json!({}));
    assert_eq!(e.refused(&s, now()), Reason::Purged);
}

#[test]
fn rotation_keeps_old_strings_and_signs_new_ones_with_the_new_key() {
    let e = env();
    let first_kid = e.active_kid();
    let (old_id, old) = e.issue(json!({}));
    let bob = Agent {
        agent_id: "bob".into(),
        agent_type: AgentType::User,
    };
    let rotated = e.store.rotate_key(SigningAlg::EdDSA, bob.clone()).unwrap();
    assert_eq!(rotated.event_type, KeyEventType::KeyRotated);
    assert_eq!(rotated.previous_kid.as_deref(), Some(first_kid.as_str()));
    assert_eq!(rotated.actor, bob);
    let new_kid = e.active_kid();
    assert_eq!(rotated.kid, new_kid);
    assert_ne!(new_kid, first_kid);

    // The old string (retired key) still verifies; a new one carries the new kid.
    assert_eq!(e.active(&old).kid, first_kid);
    let (_, fresh) = e.issue(json!({}));
    assert_eq!(header(&fresh)["kid"], new_kid);
    assert_eq!(e.active(&fresh).kid, new_kid);
    // Re-minting the old token's string still gives the same string (its recorded kid).
    let view = e
        .on(
            CommandName::AssignPermissionGroups,
            old_id,
            json!({"permissionGroups": [{"permissionGroupId": "g"}]}),
        )
        .unwrap();
    assert_eq!(e.store.token_str(&view).unwrap().unwrap(), old);
    // Rotating the old token moves it to the new key.
    let view = e
        .on(CommandName::RotateClientToken, old_id, json!({}))
        .unwrap();
    let s = e.store.token_str(&view).unwrap().unwrap();
    assert_eq!(header(&s)["kid"], new_kid);
    assert_eq!(e.refused(&old, now()), Reason::Rotated);

    // An HS256 key can be rotated in; its strings verify on the server, and it is never published.
    e.store
        .rotate_key(SigningAlg::HS256, Agent::system())
        .unwrap();
    let (_, hs) = e.issue(json!({}));
    assert_eq!(header(&hs)["alg"], "HS256");
    e.active(&hs);
    e.active(&fresh);
    let jwks = e.store.key_ring().read().unwrap().jwks();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");

    // The history: the first key (created by the system), then both rotations, chained.
    let history = e.store.key_history().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].event_type, KeyEventType::KeyCreated);
    assert_eq!(history[0].kid, first_kid);
    assert!(!history[0].recovered);
    assert_eq!(history[1], rotated);
    assert_eq!(history[2].alg, SigningAlg::HS256);
    assert_eq!(history[2].prev_hash, history[1].hash);
}

#[test]
fn the_key_history_survives_a_reopen_and_records_unrecorded_keys() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let config = || StoreConfig {
        master_key: Some(master.clone()),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    store
        .rotate_key(SigningAlg::EdDSA, Agent::system())
        .unwrap();
    let before = store.key_history().unwrap();
    store.shutdown().unwrap();
    drop(store);

    // A rotation of the ring file that the history never saw (a crash between the two).
    let mut ring = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).unwrap();
    let stray = ring.rotate(SigningAlg::EdDSA, now()).unwrap();
    drop(ring);

    let store = Store::open(dir.path(), config()).unwrap();
    let after = store.key_history().unwrap();
    assert_eq!(after[..2], before[..]);
    assert_eq!(after.len(), 3);
    assert_eq!(after[2].kid, stray);
    assert!(after[2].recovered);
    assert_eq!(after[2].actor, Agent::system());
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(
        store.key_history().unwrap(),
        after,
        "nothing new at a clean reopen"
    );
}

#[test]
fn an_hs256_ring_verifies_its_own_strings_and_publishes_nothing() {
    let e = env_with(SigningAlg::HS256);
    let (_, s) = e.issue(json!({}));
    assert_eq!(header(&s)["alg"], "HS256");
    e.active(&s);
    // EdDSA claimed for an HMAC kid is refused.
    let p = parts(&s);
    let h = b64(json!({"alg": "EdDSA", "kid": e.active_kid()})
        .to_string()
        .as_bytes());
    assert_eq!(
        e.refused(&format!("{h}.{}.{}", p[1], p[2]), now()),
        Reason::Algorithm
    );
    let jwks = e.store.key_ring().read().unwrap().jwks();
    assert_eq!(jwks, json!({"keys": []}));
}
