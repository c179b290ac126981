use super::jwks::KeySet;
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use ledger_core::event::JwtRef;
use serde_json::json;

const NOW_MS: i64 = 1_790_000_000_000;
const TOKEN: &str = "0190c0de-0000-7000-8000-000000000001";

fn status() -> TokenStatus {
    TokenStatus {
        token_id: Uuid::parse_str(TOKEN).unwrap(),
        workspace_id: "acme".into(),
        version: 3,
        name: Some("ci".into()),
        permission_groups: vec!["readers".into()],
        expires: Some(NOW_MS + 60_000),
        jwt: JwtRef {
            exp: Some(NOW_MS / 1000 + 60),
            iat: NOW_MS / 1000 - 10,
            jti: "jti-1".into(),
            kid: "k1".into(),
        },
        trashed: false,
        revoked: false,
    }
}

fn jwt() -> VerifiedJwt {
    let s = status();
    VerifiedJwt {
        kid: "k1".into(),
        claims: Claims {
            sub: TOKEN.into(),
            iat: s.jwt.iat,
            exp: s.jwt.exp,
            jti: "jti-1".into(),
            ws: "acme".into(),
        },
    }
}

/// Every ledger-side path to inactive, each from one change to a good pair.
#[test]
fn each_ledger_rule_has_its_reason() {
    let active = decide(&jwt(), &status(), NOW_MS).unwrap();
    assert_eq!(active.token_id, status().token_id);
    assert_eq!(active.permission_groups, ["readers"]);
    assert_eq!(active.version, 3);

    type Case = (&'static str, fn(&mut VerifiedJwt, &mut TokenStatus), Reason);
    let cases: [Case; 10] = [
        ("revoked", |_, s| s.revoked = true, Reason::Revoked),
        ("trashed", |_, s| s.trashed = true, Reason::Trashed),
        (
            "rotated",
            |_, s| s.jwt.jti = "jti-2".into(),
            Reason::Rotated,
        ),
        (
            "other workspace",
            |j, _| j.claims.ws = "other".into(),
            Reason::OtherWorkspace,
        ),
        (
            "other subject",
            |j, _| j.claims.sub = Uuid::nil().to_string(),
            Reason::ClaimsMismatch,
        ),
        (
            "other key",
            |j, _| j.kid = "k2".into(),
            Reason::ClaimsMismatch,
        ),
        (
            "other iat",
            |j, _| j.claims.iat += 1,
            Reason::ClaimsMismatch,
        ),
        (
            "exp dropped",
            |j, _| j.claims.exp = None,
            Reason::ClaimsMismatch,
        ),
        (
            "ledger expires shortened",
            |_, s| s.expires = Some(NOW_MS),
            Reason::Expired,
        ),
        (
            "jwt exp passed",
            |j, s| {
                j.claims.exp = Some(NOW_MS / 1000);
                s.jwt.exp = Some(NOW_MS / 1000);
            },
            Reason::JwtExpired,
        ),
    ];
    for (what, change, reason) in cases {
        let (mut j, mut s) = (jwt(), status());
        change(&mut j, &mut s);
        assert_eq!(decide(&j, &s, NOW_MS), Err(reason), "{what}");
    }
    // No expiry at all is fine.
    let mut s = status();
    s.expires = None;
    s.jwt.exp = None;
    let mut j = jwt();
    j.claims.exp = None;
    assert!(decide(&j, &s, i64::MAX).is_ok());
}

#[test]
fn inactive_is_exactly_active_false_and_active_carries_the_claims() {
    let inactive = Introspection::from_outcome(Err(Reason::Revoked));
    assert_eq!(
        serde_json::to_string(&inactive).unwrap(),
        r#"{"active":false}"#
    );
    let active = Introspection::from_outcome(decide(&jwt(), &status(), NOW_MS));
    let v = serde_json::to_value(&active).unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], TOKEN);
    assert_eq!(v["tokenId"], TOKEN);
    assert_eq!(v["ws"], "acme");
    assert_eq!(v["kind"], "client");
    assert_eq!(v["kid"], "k1");
    assert_eq!(v["permissionGroups"], json!(["readers"]));
    // Both round-trip; an inactive answer with extra fields is refused.
    for i in [inactive, active] {
        let back: Introspection =
            serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
        assert_eq!(back, i);
    }
    assert!(serde_json::from_value::<Introspection>(json!({"active": false, "x": 1})).is_err());
    assert!(serde_json::from_value::<Introspection>(json!({"active": "yes"})).is_err());
}

fn event(version: u64, data: ledger_core::EventData) -> ledger_core::Envelope {
    let (env, _) = ledger_core::EventDraft {
        token_id: status().token_id,
        token_kind: TokenKind::Client,
        workspace_id: "acme".into(),
        version,
        data,
    }
    .stamp(ledger_core::StampMeta {
        event_id: Uuid::now_v7(),
        position: version,
        occurred_at: ledger_core::Timestamp::from_millis(NOW_MS).unwrap(),
        actor: ledger_core::Agent::system(),
        command_id: Uuid::new_v4(),
        correlation_id: None,
        prev_hash: ledger_core::event::GENESIS_HASH.into(),
    });
    env
}

#[test]
fn statuses_follow_events_and_refuse_gaps() {
    use ledger_core::event::{ClientTokenRotated, TokenRestored, TokenRevoked, TokenTrashed};
    use ledger_core::EventData;
    let mut s = status();
    assert_eq!(
        s.apply(&event(3, EventData::TokenTrashed(TokenTrashed::default()))),
        Applied::AlreadySeen
    );
    assert_eq!(
        s.apply(&event(4, EventData::TokenTrashed(TokenTrashed::default()))),
        Applied::Applied
    );
    assert!(s.trashed);
    assert_eq!(
        s.apply(&event(5, EventData::TokenRestored(TokenRestored {}))),
        Applied::Applied
    );
    assert!(!s.trashed);
    let rotated = ClientTokenRotated {
        issued_at: ledger_core::Timestamp::from_millis(NOW_MS).unwrap(),
        jwt: JwtRef {
            exp: None,
            iat: NOW_MS / 1000,
            jti: "jti-2".into(),
            kid: "k2".into(),
        },
    };
    assert_eq!(
        s.apply(&event(6, EventData::ClientTokenRotated(rotated))),
        Applied::Applied
    );
    assert_eq!(s.jwt.jti, "jti-2");
    assert_eq!(
        s.apply(&event(8, EventData::TokenRevoked(TokenRevoked::default()))),
        Applied::Gap
    );
    assert_eq!(s.version, 6);
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signed(key: &SigningKey, header: serde_json::Value, claims: &Claims) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes())
    );
    let signature = key.sign(message.as_bytes());
    format!("{message}.{}", b64(&signature.to_bytes()))
}

#[test]
fn a_key_set_checks_header_and_signature() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    let jwks = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes()), "kid": "k1", "alg": "EdDSA", "use": "sig"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h1"},
    ]});
    let set = KeySet::from_jwks(&jwks).unwrap();
    assert_eq!(set.kids(), ["k1"]);
    let claims = jwt().claims;
    let good = signed(&key, json!({"alg": "EdDSA", "kid": "k1"}), &claims);
    let verified = set.verify(&good).unwrap();
    assert_eq!(verified, jwt());
    assert_eq!(jwks::peek_kid(&good).as_deref(), Some("k1"));

    let forged = signed(&other, json!({"alg": "EdDSA", "kid": "k1"}), &claims);
    assert_eq!(set.verify(&forged), Err(Reason::BadSignature));
    let unknown = signed(&key, json!({"alg": "EdDSA", "kid": "k9"}), &claims);
    assert_eq!(set.verify(&unknown), Err(Reason::UnknownKid));
    let no_kid = signed(&key, json!({"alg": "EdDSA"}), &claims);
    assert_eq!(set.verify(&no_kid), Err(Reason::UnknownKid));
    let crit = signed(
        &key,
        json!({"alg": "EdDSA", "kid": "k1", "crit": ["x"]}),
        &claims,
    );
    assert_eq!(set.verify(&crit), Err(Reason::Malformed));
    let parts: Vec<&str> = good.split('.').collect();
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes()),
        parts[1]
    );
    assert_eq!(set.verify(&none), Err(Reason::Algorithm));
    let hs = format!(
        "{}.{}.{}",
        b64(json!({"alg": "HS256", "kid": "k1"}).to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    assert_eq!(set.verify(&hs), Err(Reason::Algorithm));
    for garbage in ["", "a.b", "a.b.c.d", "!!!.x.y", &"x".repeat(9000)] {
        assert_eq!(set.verify(garbage), Err(Reason::Malformed), "{garbage:.20}");
    }
    // A changed payload under the old signature.
    let mut tampered = claims.clone();
    tampered.jti = "jti-9".into();
    let body = b64(serde_json::to_string(&tampered).unwrap().as_bytes());
    let swapped = format!("{}.{body}.{}", parts[0], parts[2]);
    assert_eq!(set.verify(&swapped), Err(Reason::BadSignature));

    assert!(
        KeySet::from_jwks(&json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}))
            .is_err()
    );
    assert!(KeySet::from_jwks(&json!({"nope": 1})).is_err());
}
