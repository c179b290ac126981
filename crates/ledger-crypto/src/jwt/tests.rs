use super::*;
use chrono::TimeZone;
use ed25519_dalek::{Signature, VerifyingKey};
use std::fs;
use std::os::unix::fs::PermissionsExt;

const NOW: i64 = 1_790_000_000;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).unwrap()
}

fn ring(alg: SigningAlg) -> (tempfile::TempDir, KeyRing) {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path(), alg, now()).unwrap();
    (dir, ring)
}

fn claims(exp: Option<i64>) -> JwtClaims {
    JwtClaims {
        sub: "0190c0de-0000-7000-8000-000000000001".into(),
        iat: NOW,
        exp,
        jti: "0190c0de-0000-7000-8000-0000000000aa".into(),
        ws: "acme".into(),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn split(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

fn header_of(token: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(split(token)[0]).unwrap()).unwrap()
}

/// A compact JWS from raw parts, for tokens our minting code would never produce.
fn compact(header: serde_json::Value, claims: &JwtClaims, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes()),
        b64(signature)
    )
}

fn ring_file(dir: &Path) -> PathBuf {
    dir.join("jwt-keys.json")
}

#[test]
fn creates_a_private_file_with_one_active_key_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().join("keys");
    let ring = KeyRing::load_or_create(&ring_dir, SigningAlg::EdDSA, now()).unwrap();
    let mode = fs::metadata(ring_file(&ring_dir))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fs::read_dir(&ring_dir).unwrap().count(),
        1,
        "no temp file left"
    );
    let keys = ring.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, ring.active_kid());
    assert_eq!(keys[0].alg, SigningAlg::EdDSA);
    assert_eq!(keys[0].created_at, now());
    assert_eq!(keys[0].retired_at, None);
    assert!(is_kid(ring.active_kid()));

    let token = ring.mint(&claims(None)).unwrap();
    // The default algorithm only matters on creation.
    let again = KeyRing::load_or_create(&ring_dir, SigningAlg::HS256, now()).unwrap();
    assert_eq!(again.keys(), keys);
    assert_eq!(again.mint(&claims(None)).unwrap(), token);
    assert_eq!(again.verify(&token, NOW).unwrap().1, claims(None));
}

#[test]
fn ring_file_has_the_documented_shape() {
    let (dir, ring) = ring(SigningAlg::EdDSA);
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(ring_file(dir.path())).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    let key = &file["keys"][0];
    assert_eq!(key["kid"], ring.active_kid());
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["createdAt"], "2026-09-21T14:13:20Z");
    assert!(key.get("retiredAt").is_none());
    let seed = URL_SAFE_NO_PAD
        .decode(key["privateKey"].as_str().unwrap())
        .unwrap();
    assert_eq!(seed.len(), 32);
    // kid = first 16 hex of SHA-256 of the public key.
    let public = SigningKey::from_bytes(&seed.try_into().unwrap()).verifying_key();
    assert_eq!(
        ring.active_kid(),
        hex::encode(&Sha256::digest(public.as_bytes())[..8])
    );
}

#[test]
fn ring_file_readable_by_others_is_refused() {
    let (dir, _) = ring(SigningAlg::EdDSA);
    let path = ring_file(dir.path());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).unwrap_err();
    assert_eq!(err.code(), "key_file_permissions");
}

#[test]
fn malformed_ring_files_are_refused() {
    let (dir, _) = ring(SigningAlg::EdDSA);
    let path = ring_file(dir.path());
    let good: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let hs_key = serde_json::json!({
        "kid": "0123456789abcdef", "alg": "HS256",
        "createdAt": "2026-01-01T00:00:00Z", "privateKey": b64(&[1u8; 32]),
    });
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{".to_vec()),
        ("empty", Vec::new()),
        ("version", edit(&|v| v["version"] = 2.into())),
        ("no keys", edit(&|v| v["keys"] = serde_json::json!([]))),
        ("unknown field", edit(&|v| v["keys"][0]["extra"] = 1.into())),
        (
            "unknown alg",
            edit(&|v| v["keys"][0]["alg"] = "RS256".into()),
        ),
        (
            "short key",
            edit(&|v| v["keys"][0]["privateKey"] = b64(&[1u8; 31]).into()),
        ),
        (
            "not base64",
            edit(&|v| v["keys"][0]["privateKey"] = "***".into()),
        ),
        (
            "kid mismatch",
            edit(&|v| v["keys"][0]["kid"] = "0000000000000000".into()),
        ),
        (
            "no active",
            edit(&|v| v["keys"][0]["retiredAt"] = "2026-01-01T00:00:00Z".into()),
        ),
        (
            "two active",
            edit(&|v| v["keys"].as_array_mut().unwrap().push(hs_key.clone())),
        ),
        (
            "duplicate kid",
            edit(&|v| {
                let first = v["keys"][0].clone();
                v["keys"][0]["retiredAt"] = "2026-01-01T00:00:00Z".into();
                v["keys"].as_array_mut().unwrap().push(first);
            }),
        ),
        (
            "bad hs kid",
            edit(&|v| {
                v["keys"][0]["retiredAt"] = "2026-01-01T00:00:00Z".into();
                let mut k = hs_key.clone();
                k["kid"] = "XYZ".into();
                v["keys"].as_array_mut().unwrap().push(k);
            }),
        ),
    ];
    for (name, bytes) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).expect_err(name);
        assert_eq!(err.code(), "malformed_key_ring", "{name}: {err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{name}: refused file is left alone"
        );
    }
    // An HS256 key with a well-formed random kid is fine.
    fs::write(
        &path,
        serde_json::json!({"version": 1, "keys": [hs_key]}).to_string(),
    )
    .unwrap();
    let ring = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).unwrap();
    assert_eq!(ring.active_kid(), "0123456789abcdef");
}

#[test]
fn mint_and_verify_round_trip_for_both_algorithms() {
    for alg in [SigningAlg::EdDSA, SigningAlg::HS256] {
        let (_dir, ring) = ring(alg);
        let token = ring.mint(&claims(Some(NOW + 3600))).unwrap();
        let header = header_of(&token);
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["kid"], ring.active_kid());
        let (kid, got) = ring.verify(&token, NOW).unwrap();
        assert_eq!(kid, ring.active_kid());
        assert_eq!(got, claims(Some(NOW + 3600)));
    }
}

#[test]
fn claims_without_exp_omit_it_and_never_expire() {
    let (_dir, ring) = ring(SigningAlg::EdDSA);
    let token = ring.mint(&claims(None)).unwrap();
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(split(&token)[1]).unwrap()).unwrap();
    assert!(payload.get("exp").is_none());
    assert_eq!(payload["sub"], claims(None).sub);
    assert_eq!(payload["iat"], NOW);
    assert_eq!(payload["ws"], "acme");
    assert_eq!(ring.verify(&token, i64::MAX).unwrap().1.exp, None);
}

#[test]
fn expired_tokens_are_rejected_without_leeway() {
    for alg in [SigningAlg::EdDSA, SigningAlg::HS256] {
        let (_dir, ring) = ring(alg);
        let token = ring.mint(&claims(Some(NOW + 10))).unwrap();
        assert!(ring.verify(&token, NOW + 9).is_ok());
        assert_eq!(
            ring.verify(&token, NOW + 10).unwrap_err().code(),
            "jwt_expired"
        );
        assert_eq!(
            ring.verify(&token, NOW + 11).unwrap_err().code(),
            "jwt_expired"
        );
        // The check uses the time passed in, not the system clock.
        let old = ring.mint(&claims(Some(1_000))).unwrap();
        assert!(ring.verify(&old, 999).is_ok());
        assert_eq!(ring.verify(&old, NOW).unwrap_err().code(), "jwt_expired");
    }
}

#[test]
fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_kid() {
    let (dir, mut ring) = ring(SigningAlg::EdDSA);
    let old_kid = ring.active_kid().to_owned();
    let old_token = ring.mint(&claims(None)).unwrap();

    let later = now() + chrono::Duration::days(30);
    let new_kid = ring.rotate(SigningAlg::EdDSA, later).unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(ring.active_kid(), new_kid);
    let new_token = ring.mint(&claims(None)).unwrap();
    assert_eq!(header_of(&new_token)["kid"], new_kid.as_str());
    assert_eq!(ring.verify(&old_token, NOW).unwrap().0, old_kid);
    assert_eq!(ring.verify(&new_token, NOW).unwrap().0, new_kid);

    let keys = ring.keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].kid.as_str(), keys[0].retired_at),
        (old_kid.as_str(), Some(later))
    );
    assert_eq!(
        (keys[1].kid.as_str(), keys[1].retired_at),
        (new_kid.as_str(), None)
    );
    assert_eq!(keys[1].created_at, later);

    // Persisted: a fresh load sees the same ring.
    let reloaded = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).unwrap();
    assert_eq!(reloaded.keys(), keys);
    assert_eq!(reloaded.active_kid(), new_kid);
    assert!(reloaded.verify(&old_token, NOW).is_ok());
    let mode = fs::metadata(ring_file(dir.path()))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

#[test]
fn rotation_can_change_the_algorithm() {
    let (dir, mut ring) = ring(SigningAlg::EdDSA);
    let ed_token = ring.mint(&claims(None)).unwrap();
    let hs_kid = ring.rotate(SigningAlg::HS256, now()).unwrap();
    let hs_token = ring.mint(&claims(None)).unwrap();
    assert_eq!(header_of(&hs_token)["alg"], "HS256");
    let ed_kid = ring.rotate(SigningAlg::EdDSA, now()).unwrap();
    let reloaded = KeyRing::load_or_create(dir.path(), SigningAlg::EdDSA, now()).unwrap();
    assert!(reloaded.verify(&ed_token, NOW).is_ok());
    assert_eq!(reloaded.verify(&hs_token, NOW).unwrap().0, hs_kid);
    assert_eq!(reloaded.active_kid(), ed_kid);
}

#[test]
fn failed_rotation_changes_nothing() {
    let (dir, mut ring) = ring(SigningAlg::EdDSA);
    let before = ring.keys();
    let token = ring.mint(&claims(None)).unwrap();
    let gone = dir.path().to_path_buf();
    drop(dir);
    assert!(!gone.exists());
    let err = ring.rotate(SigningAlg::EdDSA, now()).unwrap_err();
    assert_eq!(err.code(), "io");
    assert_eq!(ring.keys(), before);
    assert_eq!(ring.mint(&claims(None)).unwrap(), token);
}

#[test]
fn remint_is_deterministic_even_with_a_retired_key() {
    for alg in [SigningAlg::EdDSA, SigningAlg::HS256] {
        let (_dir, mut ring) = ring(alg);
        let first_kid = ring.active_kid().to_owned();
        let token = ring.mint(&claims(Some(NOW + 60))).unwrap();
        assert_eq!(ring.mint(&claims(Some(NOW + 60))).unwrap(), token);
        assert_eq!(
            ring.mint_with(&first_kid, &claims(Some(NOW + 60))).unwrap(),
            token
        );
        ring.rotate(alg, now()).unwrap();
        assert_ne!(ring.mint(&claims(Some(NOW + 60))).unwrap(), token);
        assert_eq!(
            ring.mint_with(&first_kid, &claims(Some(NOW + 60))).unwrap(),
            token
        );
        let err = ring
            .mint_with("0000000000000000", &claims(None))
            .unwrap_err();
        assert_eq!(err.code(), "jwt_unknown_kid");
    }
}

#[test]
fn token_from_a_key_not_in_the_ring_is_rejected() {
    let (_a, ring) = ring(SigningAlg::EdDSA);
    let (_b, other) = self::ring(SigningAlg::EdDSA);
    let foreign = other.mint(&claims(None)).unwrap();
    assert_eq!(
        ring.verify(&foreign, NOW).unwrap_err().code(),
        "jwt_unknown_kid"
    );

    // Same kid, different key: the signature decides.
    let seed = [42u8; 32];
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(ring.active_kid().to_owned());
    let forged =
        jsonwebtoken::encode(&header, &claims(None), &EncodingKey::from_ed_der(&der)).unwrap();
    assert_eq!(
        ring.verify(&forged, NOW).unwrap_err().code(),
        "jwt_signature"
    );

    // Same for HMAC keys.
    let (_c, hs) = self::ring(SigningAlg::HS256);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(hs.active_kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(None),
        &EncodingKey::from_secret(&[0u8; 32]),
    )
    .unwrap();
    assert_eq!(hs.verify(&forged, NOW).unwrap_err().code(), "jwt_signature");
}

#[test]
fn tampered_tokens_are_rejected() {
    for alg in [SigningAlg::EdDSA, SigningAlg::HS256] {
        let (_dir, ring) = ring(alg);
        let token = ring.mint(&claims(Some(NOW + 60))).unwrap();
        let parts = split(&token);
        let mut evil = claims(Some(NOW + 60));
        evil.ws = "other".into();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            b64(serde_json::to_string(&evil).unwrap().as_bytes()),
            parts[2]
        );
        assert_eq!(
            ring.verify(&swapped, NOW).unwrap_err().code(),
            "jwt_signature"
        );
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(
            ring.verify(&flipped, NOW).unwrap_err().code(),
            "jwt_signature"
        );
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert!(ring.verify(&stripped, NOW).is_err());
    }
}

#[test]
fn alg_none_and_other_algorithms_are_rejected() {
    let (_dir, ring) = ring(SigningAlg::EdDSA);
    let kid = ring.active_kid();
    for alg in [
        "none", "None", "HS384", "HS512", "RS256", "ES256", "eddsa", "",
    ] {
        for sig in [&b""[..], b"sig"] {
            let token = compact(
                serde_json::json!({"alg": alg, "kid": kid}),
                &claims(None),
                sig,
            );
            assert_eq!(
                ring.verify(&token, NOW).unwrap_err().code(),
                "jwt_algorithm",
                "{alg}"
            );
        }
    }
    let no_alg = compact(serde_json::json!({"kid": kid}), &claims(None), b"");
    assert_eq!(
        ring.verify(&no_alg, NOW).unwrap_err().code(),
        "jwt_malformed"
    );
}

#[test]
fn hs256_keyed_with_the_eddsa_public_key_is_rejected() {
    let (_dir, ring) = ring(SigningAlg::EdDSA);
    let kid = ring.active_kid().to_owned();
    let jwks = ring.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.clone());
    for hmac_key in [public.as_slice(), x.as_bytes(), jwks.to_string().as_bytes()] {
        let token =
            jsonwebtoken::encode(&header, &claims(None), &EncodingKey::from_secret(hmac_key))
                .unwrap();
        assert_eq!(
            ring.verify(&token, NOW).unwrap_err().code(),
            "jwt_algorithm"
        );
    }
}

#[test]
fn eddsa_header_on_an_hs256_kid_is_rejected() {
    let (_dir, ring) = ring(SigningAlg::HS256);
    let token = ring.mint(&claims(None)).unwrap();
    let parts = split(&token);
    let header = serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": ring.active_kid()});
    let relabeled = format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    assert_eq!(
        ring.verify(&relabeled, NOW).unwrap_err().code(),
        "jwt_algorithm"
    );
}

#[test]
fn malformed_tokens_are_errors_not_panics() {
    let (_dir, ring) = ring(SigningAlg::EdDSA);
    let token = ring.mint(&claims(None)).unwrap();
    let parts = split(&token);
    let kid = ring.active_kid();
    let long = "a".repeat(MAX_TOKEN_LEN_BYTES + 1);
    let bad_header = format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]);
    let four = format!("{token}.x");
    let garbage_payload = format!("{}.{}.{}", parts[0], b64(b"[1,2"), parts[2]);
    let cases: Vec<&str> = vec![
        "",
        ".",
        "..",
        "a.b",
        "a.b.c",
        &four,
        &long,
        &bad_header,
        "%%%.e30.e30",
        &garbage_payload,
    ];
    for case in cases {
        let err = ring.verify(case, NOW).expect_err(case);
        assert!(
            matches!(err.code(), "jwt_malformed" | "jwt_signature"),
            "{case}: {err:?}"
        );
    }
    let no_kid = compact(serde_json::json!({"alg": "EdDSA"}), &claims(None), b"s");
    assert_eq!(
        ring.verify(&no_kid, NOW).unwrap_err().code(),
        "jwt_unknown_kid"
    );
    let crit = compact(
        serde_json::json!({"alg": "EdDSA", "kid": kid, "crit": ["b64"], "b64": false}),
        &claims(None),
        b"s",
    );
    assert_eq!(ring.verify(&crit, NOW).unwrap_err().code(), "jwt_malformed");
    let dup = format!(
        "{}.{}.{}",
        b64(format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"other"}}"#).as_bytes()),
        parts[1],
        parts[2]
    );
    assert_eq!(ring.verify(&dup, NOW).unwrap_err().code(), "jwt_malformed");
}

#[test]
fn signature_verifies_with_ed25519_dalek_from_the_jwks() {
    let (_dir, ring) = ring(SigningAlg::EdDSA);
    let token = ring.mint(&claims(Some(NOW + 60))).unwrap();
    let jwks = ring.jwks();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], ring.active_kid());

    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let public = VerifyingKey::from_bytes(&x).unwrap();
    let (signing_input, sig_b64) = token.rsplit_once('.').unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig_b64).unwrap()).unwrap();
    public
        .verify_strict(signing_input.as_bytes(), &signature)
        .unwrap();
    assert!(public.verify_strict(b"other input", &signature).is_err());
}

#[test]
fn jwks_lists_every_eddsa_key_and_no_hmac_key() {
    let (_dir, mut ring) = ring(SigningAlg::EdDSA);
    let first = ring.active_kid().to_owned();
    let hs = ring.rotate(SigningAlg::HS256, now()).unwrap();
    let second = ring.rotate(SigningAlg::EdDSA, now()).unwrap();
    let jwks = ring.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [first.as_str(), second.as_str()]);
    assert!(!jwks.to_string().contains(&hs));
    for key in jwks["keys"].as_array().unwrap() {
        let fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields.len(),
            6,
            "no private member (d) or extra: {fields:?}"
        );
    }

    let (_d, hs_only) = self::ring(SigningAlg::HS256);
    assert_eq!(hs_only.jwks(), serde_json::json!({"keys": []}));
}

#[test]
fn debug_and_key_listing_never_show_key_material() {
    for alg in [SigningAlg::EdDSA, SigningAlg::HS256] {
        let (dir, ring) = ring(alg);
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(ring_file(dir.path())).unwrap()).unwrap();
        let private = file["keys"][0]["privateKey"].as_str().unwrap().to_owned();
        let private_hex = hex::encode(URL_SAFE_NO_PAD.decode(&private).unwrap());
        let shown = format!(
            "{ring:?} {ring:#?} {} {}",
            serde_json::to_string(&ring.keys()).unwrap(),
            ring.jwks()
        );
        assert!(shown.contains(ring.active_kid()));
        assert!(!shown.contains(&private));
        assert!(!shown.contains(&private_hex));
        assert!(!shown.contains("privateKey"));
    }
}

#[test]
fn key_info_serializes_in_camel_case() {
    let (_dir, mut ring) = ring(SigningAlg::EdDSA);
    ring.rotate(SigningAlg::HS256, now()).unwrap();
    let v = serde_json::to_value(ring.keys()).unwrap();
    assert_eq!(v[0]["alg"], "EdDSA");
    assert_eq!(v[0]["createdAt"], "2026-09-21T14:13:20Z");
    assert_eq!(v[0]["retiredAt"], "2026-09-21T14:13:20Z");
    assert_eq!(v[1]["alg"], "HS256");
    assert!(v[1].get("retiredAt").is_none());
}

#[test]
fn signing_alg_names() {
    for (alg, name) in [(SigningAlg::EdDSA, "EdDSA"), (SigningAlg::HS256, "HS256")] {
        assert_eq!(serde_json::to_value(alg).unwrap(), name);
        assert_eq!(
            serde_json::from_value::<SigningAlg>(name.into()).unwrap(),
            alg
        );
        assert_eq!(name.parse::<SigningAlg>().unwrap(), alg);
        assert_eq!(alg.to_string(), name);
    }
    assert!("none".parse::<SigningAlg>().is_err());
    assert!(serde_json::from_value::<SigningAlg>("hs256".into()).is_err());
}

#[test]
fn cached_eddsa_signing_matches_jsonwebtoken_byte_for_byte() {
    // The ring signs with AWS-LC, jsonwebtoken with ed25519-dalek: strings
    // minted before and after the switch must re-mint identically, for
    // every key, not just one.
    for _ in 0..8 {
        let (_dir, ring) = ring(SigningAlg::EdDSA);
        let key = ring.find(ring.active_kid()).unwrap();
        for exp in [None, Some(NOW + 3600)] {
            let ours = ring.mint(&claims(exp)).unwrap();
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(key.info.kid.clone());
            let reference = jsonwebtoken::encode(&header, &claims(exp), &key.encoding).unwrap();
            assert_eq!(ours, reference);
        }
    }
}
