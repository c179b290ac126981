//! Golden examples of the event catalogue: `events/examples/*.json`.
//!
//! The examples are one hash-chained log (positions 1..N) telling four token
//! stories, built through [`EventDraft::stamp`] with fixed ids and times so the
//! bytes are reproducible. Two tests:
//!
//! - [`golden_examples_match_the_generator`] compares the files with what the
//!   generator builds now; with `UPDATE_GOLDEN=1` it writes them instead:
//!   `UPDATE_GOLDEN=1 cargo test -p ledger-catalogue --test golden`.
//! - [`golden_examples_stay_readable`] is the compatibility promise: every file
//!   on disk, generated or not, decodes with [`Envelope::from_json`],
//!   re-serializes to the very same bytes, and its `hash` recomputes.
//!
//! Once published, an example must not change. A diff to an existing file
//! under `events/examples/` means the wire format changed; that needs a new
//! `schemaVersion` and an upcaster, not a refreshed fixture (events/README.md).

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ledger_core::event::{
    AccessTokenRefreshed, AccessTokenRegistered, AccessTokenUpdated, AssignedPermissionGroup,
    ClientTokenIssued, ClientTokenRotated, ClientTokenUpdated, ImportOrigin, JwtRef,
    PermissionGroupsAssigned, PermissionGroupsUnassigned, TokenPurged, TokenRestored, TokenRevoked,
    TokenTrashed, UserRef, GENESIS_HASH,
};
use ledger_core::{
    Agent, AgentType, Envelope, EventData, EventDraft, SealedSecret, StampMeta, Timestamp,
    TokenKind,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use uuid::{Builder, Uuid};

/// The workspace of every example.
const WS: &str = "acme";
/// 2026-01-15T09:00:00.000Z: the log's first event; each next one is 7 minutes and 123 ms later.
const T0_MS: i64 = 1_768_467_600_000;
/// Signing key id (a 16-hex-digit kid as the key ring makes them).
const KID: &str = "3f9a1c0b5e7d2a64";

/// One example before it is stamped: its file stem, the draft and the command that made it.
struct Example {
    file: &'static str,
    token: Uuid,
    kind: TokenKind,
    version: u64,
    actor: Agent,
    correlation_id: Option<&'static str>,
    data: EventData,
}

fn at(position: u64) -> Timestamp {
    let ms = T0_MS + (position as i64 - 1) * (7 * 60_000 + 123);
    Timestamp::from_millis(ms).expect("in range")
}

fn time(rfc3339: &str) -> Timestamp {
    Timestamp::parse(rfc3339).expect("valid literal")
}

/// A UUID v7 for the given instant, its random bits derived from `label`.
fn uuid_v7(ms: i64, label: &str) -> Uuid {
    let digest = Sha256::digest(label.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    Builder::from_unix_timestamp_millis(ms as u64, &random).into_uuid()
}

/// A UUID v4 whose random bits are derived from `label`.
fn uuid_v4(label: &str) -> Uuid {
    let digest = Sha256::digest(label.as_bytes());
    let mut random = [0u8; 16];
    random.copy_from_slice(&digest[..16]);
    Builder::from_random_bytes(random).into_uuid()
}

/// `n` deterministic bytes derived from `label`.
fn bytes(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut block = 0u32;
    while out.len() < n {
        out.extend_from_slice(&Sha256::digest(format!("{label}/{block}").as_bytes()));
        block += 1;
    }
    out.truncate(n);
    out
}

/// A sealed secret shaped like ledger-crypto's: XChaCha20-Poly1305, a 24-byte
/// nonce, ciphertext = plaintext length + 16-byte tag, keyed by the token id.
/// The bytes are stand-ins: no plaintext exists for them.
fn sealed(token: Uuid, label: &str, plaintext_len: usize) -> SealedSecret {
    SealedSecret {
        alg: "xchacha20poly1305".into(),
        ciphertext: URL_SAFE_NO_PAD.encode(bytes(&format!("ct:{label}"), plaintext_len + 16)),
        fingerprint: format!(
            "hmac-sha256:{}",
            hex::encode(bytes(&format!("fp:{label}"), 8))
        ),
        key_id: token.to_string(),
        nonce: URL_SAFE_NO_PAD.encode(bytes(&format!("nonce:{label}"), 24)),
    }
}

fn jwt(issued_at: Timestamp, expires_ms: Option<i64>, label: &str) -> JwtRef {
    JwtRef {
        exp: expires_ms.map(|ms| ms.div_euclid(1000)),
        iat: issued_at.secs(),
        jti: uuid_v7(issued_at.millis(), &format!("jti:{label}")).to_string(),
        kid: KID.into(),
    }
}

fn agent(id: &str, agent_type: AgentType) -> Agent {
    Agent {
        agent_id: id.into(),
        agent_type,
    }
}

fn group(id: &str, at: Timestamp, by: &Agent) -> AssignedPermissionGroup {
    AssignedPermissionGroup {
        assigned_at: at,
        assigned_by: by.clone(),
        permission_group_id: id.into(),
    }
}

/// The stories, in log order. Append new examples at the end: inserting one
/// would change the position and hash of every later example.
fn stories() -> Vec<Example> {
    let alice = agent("usr_alice", AgentType::User);
    let signin = agent("signin-service", AgentType::Service);
    let system = Agent::system();
    let mut out = Vec::new();
    let mut push = |file, token, kind, version, actor: &Agent, correlation_id, data| {
        out.push(Example {
            file,
            token,
            kind,
            version,
            actor: actor.clone(),
            correlation_id,
            data,
        });
    };

    // A: a client token issued with no optional field, taken through every
    // client-token change, then trashed, restored, revoked and force-purged.
    let a = uuid_v7(at(1).millis(), "token:a");
    let client = TokenKind::Client;
    push(
        "client_token_issued",
        a,
        client,
        1,
        &alice,
        None,
        EventData::ClientTokenIssued(ClientTokenIssued {
            expires: None,
            import: None,
            issued_at: at(1),
            jwt: jwt(at(1), None, "a1"),
            name: None,
            permission_groups: vec![group("pg_readers", at(1), &alice)],
            provided_resource_id: None,
        }),
    );
    push(
        "client_token_updated",
        a,
        client,
        2,
        &alice,
        None,
        EventData::ClientTokenUpdated(ClientTokenUpdated {
            name: Some(Some("ci-deploy".into())),
            ..ClientTokenUpdated::default()
        }),
    );
    push(
        "permission_groups_assigned",
        a,
        client,
        3,
        &alice,
        None,
        EventData::PermissionGroupsAssigned(PermissionGroupsAssigned {
            permission_groups: vec![
                group("pg_writers", at(3), &alice),
                group("pg_deployers", at(3), &alice),
            ],
        }),
    );
    push(
        "permission_groups_unassigned",
        a,
        client,
        4,
        &alice,
        None,
        EventData::PermissionGroupsUnassigned(PermissionGroupsUnassigned {
            permission_group_ids: vec!["pg_readers".into()],
        }),
    );
    push(
        "client_token_rotated",
        a,
        client,
        5,
        &alice,
        None,
        EventData::ClientTokenRotated(ClientTokenRotated {
            issued_at: at(5),
            jwt: jwt(at(5), None, "a5"),
        }),
    );
    push(
        "token_trashed",
        a,
        client,
        6,
        &alice,
        None,
        EventData::TokenTrashed(TokenTrashed::default()),
    );
    push(
        "token_restored",
        a,
        client,
        7,
        &alice,
        None,
        EventData::TokenRestored(TokenRestored {}),
    );
    push(
        "token_revoked",
        a,
        client,
        8,
        &alice,
        None,
        EventData::TokenRevoked(TokenRevoked::default()),
    );
    push(
        "token_purged",
        a,
        client,
        9,
        &alice,
        None,
        EventData::TokenPurged(TokenPurged { forced: true }),
    );

    // B: a client token imported from fimidara with every optional field, then
    // updated with every field, cleared, and trashed with a reason.
    let b = uuid_v4("token:b");
    let b_expires = time("2027-01-01T00:00:00.000Z").millis();
    let b_issued = time("2025-03-02T10:11:12.345Z");
    push(
        "client_token_issued.full",
        b,
        client,
        1,
        &system,
        Some("import-2026-01-15"),
        EventData::ClientTokenIssued(ClientTokenIssued {
            expires: Some(b_expires),
            import: Some(ImportOrigin {
                created_at: b_issued,
                created_by: Some(alice.clone()),
                source: "fimidara".into(),
                source_version: Some(3),
                updated_at: Some(time("2025-06-30T08:00:00.000Z")),
            }),
            issued_at: b_issued,
            jwt: jwt(b_issued, Some(b_expires), "b1"),
            name: Some("nightly-export".into()),
            permission_groups: vec![
                group("pg_readers", b_issued, &alice),
                group("pg_exporters", time("2025-04-01T12:00:00.000Z"), &alice),
            ],
            provided_resource_id: Some("export-job-42".into()),
        }),
    );
    push(
        "client_token_updated.full",
        b,
        client,
        2,
        &alice,
        Some("req-7c1f"),
        EventData::ClientTokenUpdated(ClientTokenUpdated {
            expires: Some(Some(time("2026-07-01T00:00:00.000Z").millis())),
            name: Some(Some("nightly-export-v2".into())),
            permission_groups: Some(vec![group("pg_exporters", at(11), &alice)]),
        }),
    );
    push(
        "client_token_updated.cleared",
        b,
        client,
        3,
        &alice,
        None,
        EventData::ClientTokenUpdated(ClientTokenUpdated {
            expires: Some(None),
            name: Some(None),
            permission_groups: None,
        }),
    );
    push(
        "token_trashed.full",
        b,
        client,
        4,
        &alice,
        Some("req-80aa"),
        EventData::TokenTrashed(TokenTrashed {
            reason: Some("replaced by per-job tokens".into()),
        }),
    );

    // C: a Google token registered by the sign-in flow with no optional field,
    // refreshed, updated, and revoked with a reason.
    let c = uuid_v7(at(14).millis(), "token:c");
    let access = TokenKind::Access;
    let user = UserRef {
        id: uuid_v4("user:alice"),
    };
    push(
        "access_token_registered",
        c,
        access,
        1,
        &signin,
        None,
        EventData::AccessTokenRegistered(AccessTokenRegistered {
            access_token: sealed(c, "c-access-1", 180),
            account_name: "alice@example.com".into(),
            import: None,
            provider: "google".into(),
            refresh_token: None,
            user: user.clone(),
        }),
    );
    push(
        "access_token_refreshed",
        c,
        access,
        2,
        &signin,
        None,
        EventData::AccessTokenRefreshed(AccessTokenRefreshed {
            access_token: sealed(c, "c-access-2", 180),
            refresh_token: None,
        }),
    );
    push(
        "access_token_updated",
        c,
        access,
        3,
        &alice,
        None,
        EventData::AccessTokenUpdated(AccessTokenUpdated {
            account_name: Some("alice.smith@example.com".into()),
            provider: None,
        }),
    );
    push(
        "access_token_updated.full",
        c,
        access,
        4,
        &alice,
        Some("req-91d0"),
        EventData::AccessTokenUpdated(AccessTokenUpdated {
            account_name: Some("alice@example.org".into()),
            provider: Some("google-workspace".into()),
        }),
    );
    push(
        "token_revoked.full",
        c,
        access,
        5,
        &alice,
        Some("req-a3b4"),
        EventData::TokenRevoked(TokenRevoked {
            reason: Some("user signed out everywhere".into()),
        }),
    );

    // D: a primaERP token imported with every optional field, then refreshed
    // with both secrets.
    let d = uuid_v4("token:d");
    push(
        "access_token_registered.full",
        d,
        access,
        1,
        &system,
        Some("import-2026-01-15"),
        EventData::AccessTokenRegistered(AccessTokenRegistered {
            access_token: sealed(d, "d-access-1", 40),
            account_name: "bob@example.com".into(),
            import: Some(ImportOrigin {
                created_at: time("2024-11-05T16:20:00.000Z"),
                created_by: Some(agent("primaerp-user-1187", AgentType::User)),
                source: "primaerp".into(),
                source_version: Some(7),
                updated_at: Some(time("2025-09-12T07:45:30.500Z")),
            }),
            provider: "google".into(),
            refresh_token: Some(sealed(d, "d-refresh-1", 100)),
            user: UserRef {
                id: uuid_v4("user:bob"),
            },
        }),
    );
    push(
        "access_token_refreshed.full",
        d,
        access,
        2,
        &signin,
        Some("req-b7e2"),
        EventData::AccessTokenRefreshed(AccessTokenRefreshed {
            access_token: sealed(d, "d-access-2", 40),
            refresh_token: Some(sealed(d, "d-refresh-2", 100)),
        }),
    );
    out
}

/// Stamps the stories into one chain: `(file name, published bytes)`.
fn generate() -> Vec<(String, Vec<u8>)> {
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut out = Vec::new();
    for (i, ex) in stories().into_iter().enumerate() {
        let position = i as u64 + 1;
        let occurred_at = at(position);
        let draft = EventDraft {
            token_id: ex.token,
            token_kind: ex.kind,
            workspace_id: WS.into(),
            version: ex.version,
            data: ex.data,
        };
        let meta = StampMeta {
            event_id: uuid_v7(occurred_at.millis(), &format!("event:{position}")),
            position,
            occurred_at,
            actor: ex.actor,
            command_id: uuid_v4(&format!("command:{position}")),
            correlation_id: ex.correlation_id.map(str::to_owned),
            prev_hash: prev_hash.clone(),
        };
        let (envelope, _canonical) = draft.stamp(meta);
        prev_hash = envelope.hash.clone();
        out.push((format!("{}.json", ex.file), envelope.to_json_bytes()));
    }
    out
}

/// Brings `events/examples/` in line with the generator, once per test run:
/// with `UPDATE_GOLDEN=1` it writes what differs, otherwise it only compares.
/// Returns the files that differ (always empty after an update).
///
/// Every test here calls it first, so the readers never see a half-written file.
fn sync_with_generator() -> &'static [String] {
    static STALE: OnceLock<Vec<String>> = OnceLock::new();
    STALE.get_or_init(|| {
        let dir = support::examples_dir();
        let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
        let generated = generate();
        let mut names: Vec<&str> = generated.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            generated.len(),
            "two examples share a file name"
        );
        let mut stale = Vec::new();
        for (name, bytes) in generated {
            let path = dir.join(&name);
            let on_disk = std::fs::read(&path).ok();
            if on_disk.as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            if !update {
                stale.push(name);
                continue;
            }
            if on_disk.is_some() {
                eprintln!(
                    "warning: rewrote events/examples/{name}: a published example changed, \
                     which breaks the compatibility promise unless it was never published"
                );
            }
            std::fs::create_dir_all(&dir).expect("create events/examples");
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        stale
    })
}

#[test]
fn golden_examples_match_the_generator() {
    let stale = sync_with_generator();
    assert!(
        stale.is_empty(),
        "golden examples differ from the generator: {stale:?}\n\
         For a new example, run `UPDATE_GOLDEN=1 cargo test -p ledger-catalogue --test golden`; \
         if an existing example changed, the wire format changed (see events/README.md)."
    );
}

#[test]
fn golden_examples_stay_readable() {
    sync_with_generator();
    let files = support::golden_files();
    assert!(!files.is_empty(), "no golden examples in events/examples/");
    for (name, bytes) in &files {
        let envelope = Envelope::from_json(bytes)
            .unwrap_or_else(|e| panic!("events/examples/{name} no longer decodes: {e}"));
        assert_eq!(
            envelope.event_type().as_str(),
            support::type_of_file(name),
            "events/examples/{name}: type does not match the file name"
        );
        assert!(
            envelope.to_json_bytes() == *bytes,
            "events/examples/{name} does not re-serialize byte-identically:\n\
             on disk: {}\n   now: {}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&envelope.to_json_bytes()),
        );
        assert_eq!(
            envelope.computed_hash(),
            envelope.hash,
            "events/examples/{name}: hash does not recompute"
        );
    }
}

#[test]
fn golden_examples_form_one_chain() {
    sync_with_generator();
    let mut by_position = BTreeMap::new();
    for (name, bytes) in support::golden_files() {
        let envelope = Envelope::from_json(&bytes).expect("decodes (see stay_readable)");
        let previous = by_position.insert(envelope.position, (name.clone(), envelope));
        assert!(previous.is_none(), "{name}: position used twice");
    }
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut versions: BTreeMap<Uuid, u64> = BTreeMap::new();
    for (expected, (position, (name, envelope))) in (1u64..).zip(&by_position) {
        assert_eq!(
            *position, expected,
            "{name}: positions must be gap-free from 1"
        );
        assert_eq!(
            envelope.prev_hash, prev_hash,
            "{name}: prevHash breaks the chain"
        );
        let version = versions.entry(envelope.token_id).or_insert(0);
        *version += 1;
        assert_eq!(
            envelope.version, *version,
            "{name}: token versions must be gap-free"
        );
        prev_hash = envelope.hash.clone();
    }
}
