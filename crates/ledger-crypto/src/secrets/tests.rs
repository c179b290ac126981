use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use uuid::Uuid;

const AAD: &[u8] = b"token 0190c0de-0000-7000-8000-000000000001 accessToken";

fn sealed_fixture() -> (MasterKey, DataKey, SealedSecret) {
    let master = MasterKey::generate();
    let key = DataKey::generate();
    let sealed = seal(
        &master,
        &key,
        "k1",
        AAD,
        &Secret::new("ya29.secret-access-token"),
    );
    (master, key, sealed)
}

/// Flips one bit of a base64url field, keeping it valid base64url.
fn flip_bit(field: &str) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(field).unwrap();
    bytes[0] ^= 1;
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn seal_open_round_trip() {
    let (_, key, sealed) = sealed_fixture();
    assert_eq!(sealed.alg, "xchacha20poly1305");
    assert_eq!(sealed.key_id, "k1");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&sealed.nonce).unwrap().len(),
        NONCE_LEN
    );
    assert!(!sealed.ciphertext.contains("secret"));
    let opened = open(&key, AAD, &sealed).unwrap();
    assert_eq!(opened.expose(), "ya29.secret-access-token");
}

#[test]
fn seal_round_trips_empty_and_unicode() {
    let master = MasterKey::generate();
    let key = DataKey::generate();
    for text in ["", "pässwörd ✓", &"x".repeat(10_000)] {
        let sealed = seal(&master, &key, "k", b"", &Secret::new(text));
        assert_eq!(open(&key, b"", &sealed).unwrap().expose(), text);
    }
}

#[test]
fn seal_uses_a_fresh_nonce_each_time() {
    let master = MasterKey::generate();
    let key = DataKey::generate();
    let a = seal(&master, &key, "k", AAD, &Secret::new("same"));
    let b = seal(&master, &key, "k", AAD, &Secret::new("same"));
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_eq!(a.fingerprint, b.fingerprint);
}

#[test]
fn open_with_wrong_key_fails() {
    let (_, _, sealed) = sealed_fixture();
    let err = open(&DataKey::generate(), AAD, &sealed).unwrap_err();
    assert_eq!(err.code(), "decrypt_failed");
}

#[test]
fn open_with_wrong_aad_fails() {
    let (_, key, sealed) = sealed_fixture();
    let err = open(&key, b"token other refreshToken", &sealed).unwrap_err();
    assert_eq!(err.code(), "decrypt_failed");
}

#[test]
fn open_tampered_ciphertext_or_nonce_fails() {
    let (_, key, sealed) = sealed_fixture();
    let mut tampered = sealed.clone();
    tampered.ciphertext = flip_bit(&sealed.ciphertext);
    assert_eq!(
        open(&key, AAD, &tampered).unwrap_err().code(),
        "decrypt_failed"
    );

    let mut tampered = sealed.clone();
    tampered.nonce = flip_bit(&sealed.nonce);
    assert_eq!(
        open(&key, AAD, &tampered).unwrap_err().code(),
        "decrypt_failed"
    );

    let mut truncated = sealed.clone();
    let ct = URL_SAFE_NO_PAD.decode(&sealed.ciphertext).unwrap();
    truncated.ciphertext = URL_SAFE_NO_PAD.encode(&ct[..ct.len() - 1]);
    assert_eq!(
        open(&key, AAD, &truncated).unwrap_err().code(),
        "decrypt_failed"
    );
}

#[test]
fn open_malformed_fields_is_an_error_not_a_panic() {
    let (_, key, sealed) = sealed_fixture();
    type Mutation = fn(&mut SealedSecret);
    let cases: [(&str, Mutation); 7] = [
        ("alg", |s| s.alg = "aes-256-gcm".into()),
        ("nonce base64", |s| s.nonce = "!!!".into()),
        ("nonce short", |s| {
            s.nonce = URL_SAFE_NO_PAD.encode([0u8; 12])
        }),
        ("nonce empty", |s| s.nonce = String::new()),
        ("ciphertext base64", |s| s.ciphertext = "a+b/".into()),
        ("ciphertext empty", |s| s.ciphertext = String::new()),
        ("padding", |s| s.ciphertext.push('=')),
    ];
    for (name, mutate) in cases {
        let mut bad = sealed.clone();
        mutate(&mut bad);
        let err = open(&key, AAD, &bad).expect_err(name);
        assert!(
            matches!(err.code(), "malformed_sealed" | "decrypt_failed"),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn open_rejects_authentic_non_utf8_plaintext() {
    let key = DataKey::generate();
    let nonce = [7u8; NONCE_LEN];
    let ct = aead_encrypt(&key.0, &nonce, &[0xff, 0xfe], b"");
    let sealed = SealedSecret {
        alg: SEAL_ALG.into(),
        key_id: "k".into(),
        nonce: URL_SAFE_NO_PAD.encode(nonce),
        ciphertext: URL_SAFE_NO_PAD.encode(ct),
        fingerprint: String::new(),
    };
    assert_eq!(
        open(&key, b"", &sealed).unwrap_err().code(),
        "malformed_sealed"
    );
}

#[test]
fn fingerprint_format_and_stability() {
    let master = MasterKey::generate();
    let fp = fingerprint(&master, b"x", "refresh-1");
    let hex_part = fp.strip_prefix("hmac-sha256:").unwrap();
    assert_eq!(hex_part.len(), 16);
    assert!(hex_part
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(fp, fingerprint(&master, b"x", "refresh-1"));
    // Stable across data keys and seals of the same secret (token and field).
    let a = seal(
        &master,
        &DataKey::generate(),
        "a",
        b"x",
        &Secret::new("refresh-1"),
    );
    let b = seal(
        &master,
        &DataKey::generate(),
        "b",
        b"x",
        &Secret::new("refresh-1"),
    );
    assert_eq!(a.fingerprint, fp);
    assert_eq!(b.fingerprint, fp);
}

#[test]
fn fingerprint_differs_by_plaintext_by_secret_and_by_master_key() {
    let master = MasterKey::generate();
    assert_ne!(
        fingerprint(&master, b"x", "refresh-1"),
        fingerprint(&master, b"x", "refresh-2")
    );
    assert_ne!(
        fingerprint(&master, b"x", "refresh-1"),
        fingerprint(&MasterKey::generate(), b"x", "refresh-1")
    );
    // Another token's (or field's) equal value: no oracle for a guess.
    let other = seal(
        &master,
        &DataKey::generate(),
        "b",
        b"y",
        &Secret::new("refresh-1"),
    );
    assert_ne!(other.fingerprint, fingerprint(&master, b"x", "refresh-1"));
    // The boundary between the two parts counts.
    assert_ne!(
        fingerprint(&master, b"ab", "c"),
        fingerprint(&master, b"a", "bc")
    );
}

#[test]
fn fingerprint_is_keyed_not_a_plain_hash() {
    use sha2::Digest;
    let master = MasterKey::from_hex(&"00".repeat(32)).unwrap();
    let plain = hex::encode(&Sha256::digest(b"refresh-1")[..8]);
    assert!(!fingerprint(&master, b"", "refresh-1").ends_with(&plain));
}

#[test]
fn wrap_unwrap_round_trip() {
    let master = MasterKey::generate();
    let key = DataKey::generate();
    let token = Uuid::new_v4();
    let wrapped = master.wrap(&key, &token);
    assert_eq!(wrapped.len(), WRAPPED_LEN);
    let unwrapped = master.unwrap(&token, &wrapped).unwrap();
    assert_eq!(*unwrapped.0, *key.0);
    // A secret sealed with the original opens with the unwrapped key.
    let sealed = seal(&master, &key, "k", AAD, &Secret::new("s"));
    assert_eq!(open(&unwrapped, AAD, &sealed).unwrap().expose(), "s");
}

#[test]
fn unwrap_fails_for_other_token_master_or_tampering() {
    let master = MasterKey::generate();
    let token = Uuid::new_v4();
    let wrapped = master.wrap(&DataKey::generate(), &token);

    let err = master.unwrap(&Uuid::new_v4(), &wrapped).unwrap_err();
    assert_eq!(err.code(), "decrypt_failed");
    let err = MasterKey::generate().unwrap(&token, &wrapped).unwrap_err();
    assert_eq!(err.code(), "decrypt_failed");
    for i in [0, NONCE_LEN, WRAPPED_LEN - 1] {
        let mut tampered = wrapped.clone();
        tampered[i] ^= 0x80;
        assert_eq!(
            master.unwrap(&token, &tampered).unwrap_err().code(),
            "decrypt_failed"
        );
    }
    for len in [0, 1, NONCE_LEN, WRAPPED_LEN - 1, WRAPPED_LEN + 1] {
        let mut resized = wrapped.clone();
        resized.resize(len, 0);
        assert_eq!(
            master.unwrap(&token, &resized).unwrap_err().code(),
            "malformed_sealed"
        );
    }
}

#[test]
fn from_hex_accepts_64_hex_and_rejects_the_rest() {
    let hex_key = "0123456789abcdef".repeat(4);
    let a = MasterKey::from_hex(&hex_key).unwrap();
    let b = MasterKey::from_hex(&format!("  {}\n", hex_key.to_uppercase())).unwrap();
    assert_eq!(fingerprint(&a, b"", "x"), fingerprint(&b, b"", "x"));
    for bad in [
        "",
        "00",
        &"0".repeat(63),
        &"0".repeat(65),
        &"g".repeat(64),
        &"é".repeat(32),
    ] {
        let err = MasterKey::from_hex(bad).unwrap_err();
        assert_eq!(err.code(), "malformed_master_key", "{bad:?}");
    }
}

#[test]
fn master_key_file_is_created_0600_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let master = MasterKey::load_or_create(&data_dir).unwrap();
    let path = data_dir.join("master.key");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let content = fs::read_to_string(&path).unwrap();
    assert_eq!(content.trim_end().len(), 64);
    assert!(content.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1);

    let again = MasterKey::load_or_create(&data_dir).unwrap();
    assert_eq!(
        fingerprint(&master, b"", "x"),
        fingerprint(&again, b"", "x")
    );
    let from_env = MasterKey::from_hex(&content).unwrap();
    assert_eq!(
        fingerprint(&master, b"", "x"),
        fingerprint(&from_env, b"", "x")
    );
    let token = Uuid::new_v4();
    let wrapped = master.wrap(&DataKey::generate(), &token);
    again.unwrap(&token, &wrapped).unwrap();
}

#[test]
fn master_key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    MasterKey::load_or_create(dir.path()).unwrap();
    let path = dir.path().join("master.key");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = MasterKey::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.code(), "key_file_permissions", "{mode:o}");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    MasterKey::load_or_create(dir.path()).unwrap();
}

#[test]
fn malformed_master_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    for content in [&b""[..], b"abc", &[b'z'; 64], &[0xff; 64], &[b'0'; 300]] {
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = MasterKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err.code(), "malformed_master_key" | "io"),
            "{content:?}: {err:?}"
        );
        // The refused file is left as it was, for the operator to inspect.
        assert_eq!(fs::read(&path).unwrap(), content);
    }
}

#[test]
fn master_key_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("master.key")).unwrap();
    assert!(MasterKey::load_or_create(dir.path()).is_err());
}

#[test]
fn debug_never_shows_key_material() {
    let hex_key = "ab".repeat(32);
    let master = MasterKey::from_hex(&hex_key).unwrap();
    let shown = format!("{master:?} {:?} {:#?}", DataKey::generate(), master);
    assert_eq!(format!("{master:?}"), "MasterKey(***)");
    assert!(!shown.contains("ab"));
    assert_eq!(format!("{:?}", DataKey::generate()), "DataKey(***)");
    let (_, _, sealed) = sealed_fixture();
    assert!(!format!("{sealed:?}").contains("ya29"));
}
