//! The envelope's canonical bytes, its JSON round trip and its hash, for an
//! event of every type: once with every optional field set, once with none.

use ledger_core::event::{
    hash_hex, AccessTokenRefreshed, AccessTokenRegistered, AccessTokenUpdated,
    AssignedPermissionGroup, ClientTokenIssued, ClientTokenRotated, ClientTokenUpdated,
    DecodeError, Envelope, EventData, EventDraft, EventType, ImportOrigin, JwtRef,
    PermissionGroupsAssigned, PermissionGroupsUnassigned, StampMeta, TokenPurged, TokenRestored,
    TokenRevoked, TokenTrashed, UserRef, GENESIS_HASH, SCHEMA_VERSION,
};
use ledger_core::{Agent, AgentType, SealedSecret, Timestamp, TokenKind};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("valid timestamp")
}

fn agent(id: &str, ty: AgentType) -> Agent {
    Agent {
        agent_id: id.into(),
        agent_type: ty,
    }
}

fn sealed(tag: &str) -> SealedSecret {
    SealedSecret {
        alg: "xchacha20poly1305".into(),
        ciphertext: format!("Y2lwaGVy{tag}"),
        fingerprint: format!("hmac-sha256:0123456789abcde{}", tag.len() % 10),
        key_id: format!("dk-{tag}"),
        nonce: "bm9uY2U".into(),
    }
}

fn origin(full: bool) -> ImportOrigin {
    ImportOrigin {
        created_at: ts("2019-03-04T05:06:07.089Z"),
        created_by: full.then(|| agent("legacy-admin", AgentType::User)),
        source: "primaerp".into(),
        source_version: full.then_some(7),
        updated_at: full.then(|| ts("2020-01-02T03:04:05.006Z")),
    }
}

fn group(id: &str) -> AssignedPermissionGroup {
    AssignedPermissionGroup {
        assigned_at: ts("2024-01-01T00:00:01.500Z"),
        assigned_by: agent("svc-\"quoted\"-ü", AgentType::Service),
        permission_group_id: id.into(),
    }
}

fn jwt(full: bool) -> JwtRef {
    JwtRef {
        exp: full.then_some(1_735_689_600),
        iat: 1_704_067_201,
        jti: "jti-1".into(),
        kid: "k-2024".into(),
    }
}

/// A realistic payload of type `ty`; `full` sets every optional field.
fn data(ty: EventType, full: bool) -> EventData {
    match ty {
        EventType::ClientTokenIssued => EventData::ClientTokenIssued(ClientTokenIssued {
            expires: full.then_some(1_735_689_600_000),
            import: full.then(|| origin(true)),
            issued_at: ts("2024-01-01T00:00:01.000Z"),
            jwt: jwt(full),
            name: full.then(|| "Straße Token".into()),
            permission_groups: if full {
                vec![group("pg-1"), group("pg-2")]
            } else {
                Vec::new()
            },
            provided_resource_id: full.then(|| "user-42".into()),
        }),
        EventType::ClientTokenUpdated => EventData::ClientTokenUpdated(if full {
            ClientTokenUpdated {
                expires: Some(Some(1_800_000_000_000)),
                name: Some(Some("renamed".into())),
                permission_groups: Some(vec![group("pg-3")]),
            }
        } else {
            // "Cleared" is the other shape an update can take.
            ClientTokenUpdated {
                expires: Some(None),
                name: Some(None),
                permission_groups: None,
            }
        }),
        EventType::PermissionGroupsAssigned => {
            EventData::PermissionGroupsAssigned(PermissionGroupsAssigned {
                permission_groups: if full {
                    vec![group("pg-4"), group("pg-5")]
                } else {
                    vec![group("pg-4")]
                },
            })
        }
        EventType::PermissionGroupsUnassigned => {
            EventData::PermissionGroupsUnassigned(PermissionGroupsUnassigned {
                permission_group_ids: if full {
                    vec!["pg-1".into(), "pg-2".into()]
                } else {
                    vec!["pg-1".into()]
                },
            })
        }
        EventType::ClientTokenRotated => EventData::ClientTokenRotated(ClientTokenRotated {
            issued_at: ts("2024-02-01T00:00:00.000Z"),
            jwt: jwt(full),
        }),
        EventType::AccessTokenRegistered => {
            EventData::AccessTokenRegistered(AccessTokenRegistered {
                access_token: sealed("at"),
                account_name: "me@example.com".into(),
                import: full.then(|| origin(false)),
                provider: "google".into(),
                refresh_token: full.then(|| sealed("rt")),
                user: UserRef {
                    id: Uuid::from_u128(0x5555_0000_0000_4000_8000_0000_0000_0001),
                },
            })
        }
        EventType::AccessTokenRefreshed => EventData::AccessTokenRefreshed(AccessTokenRefreshed {
            access_token: sealed("at2"),
            refresh_token: full.then(|| sealed("rt2")),
        }),
        EventType::AccessTokenUpdated => EventData::AccessTokenUpdated(if full {
            AccessTokenUpdated {
                account_name: Some("you@example.com".into()),
                provider: Some("github".into()),
            }
        } else {
            AccessTokenUpdated {
                account_name: Some("you@example.com".into()),
                provider: None,
            }
        }),
        EventType::TokenTrashed => EventData::TokenTrashed(TokenTrashed {
            reason: full.then(|| "no longer needed\nline two".into()),
        }),
        EventType::TokenRestored => EventData::TokenRestored(TokenRestored {}),
        EventType::TokenRevoked => EventData::TokenRevoked(TokenRevoked {
            reason: full.then(|| "leaked".into()),
        }),
        EventType::TokenPurged => EventData::TokenPurged(TokenPurged { forced: full }),
    }
}

fn kind_of(ty: EventType) -> TokenKind {
    match ty {
        EventType::ClientTokenIssued
        | EventType::ClientTokenUpdated
        | EventType::PermissionGroupsAssigned
        | EventType::PermissionGroupsUnassigned
        | EventType::ClientTokenRotated => TokenKind::Client,
        EventType::AccessTokenRegistered
        | EventType::AccessTokenRefreshed
        | EventType::AccessTokenUpdated => TokenKind::Access,
        EventType::TokenTrashed
        | EventType::TokenRestored
        | EventType::TokenRevoked
        | EventType::TokenPurged => TokenKind::Client,
    }
}

/// A stamped envelope of type `ty`.
fn envelope(ty: EventType, full: bool, position: u64) -> Envelope {
    let draft = EventDraft {
        token_id: Uuid::from_u128(0x7000_0000_0000_4000_8000_0000_0000_0001),
        token_kind: kind_of(ty),
        workspace_id: "acme".into(),
        version: position,
        data: data(ty, full),
    };
    let prev_hash = if position == 1 {
        GENESIS_HASH.to_owned()
    } else {
        hash_hex(format!("previous {position}").as_bytes())
    };
    let meta = StampMeta {
        event_id: Uuid::from_u128(0x018c_c251_f400_7000_8000_0000_0000_0000 + u128::from(position)),
        position,
        occurred_at: ts("2024-01-01T00:00:01.234+02:00"),
        actor: agent("user-1", AgentType::User),
        command_id: Uuid::from_u128(
            0xc000_0000_0000_4000_8000_0000_0000_0000 + u128::from(position),
        ),
        correlation_id: full.then(|| "req-\u{1F600}".into()),
        prev_hash,
    };
    let (env, bytes) = draft.stamp(meta);
    assert_eq!(
        bytes,
        env.canonical_bytes(),
        "stamp returns the canonical bytes"
    );
    env
}

/// One envelope per type and shape.
fn all_envelopes() -> Vec<Envelope> {
    let mut out = Vec::new();
    for (i, ty) in EventType::ALL.iter().enumerate() {
        for full in [true, false] {
            out.push(envelope(*ty, full, i as u64 * 2 + u64::from(full) + 1));
        }
    }
    out
}

/// Rebuilds every object with its keys inserted in sorted order, so the
/// serialization is sorted whether or not serde_json preserves order.
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, sort_keys(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[test]
fn every_event_type_is_covered() {
    assert_eq!(EventType::ALL.len(), 12);
    for ty in EventType::ALL {
        assert_eq!(EventType::parse(ty.as_str()), Some(*ty));
        assert_eq!(serde_json::to_value(ty).unwrap(), json!(ty.as_str()));
        for full in [true, false] {
            assert_eq!(data(*ty, full).event_type(), *ty);
        }
    }
    assert_eq!(EventType::parse("token_deleted"), None);
}

#[test]
fn canonical_bytes_are_the_sorted_key_json_without_hash() {
    for env in all_envelopes() {
        let mut value = serde_json::to_value(&env).unwrap();
        let removed = value.as_object_mut().unwrap().remove("hash");
        assert_eq!(removed, Some(json!(env.hash)));
        let sorted = serde_json::to_vec(&sort_keys(value)).unwrap();
        assert_eq!(
            String::from_utf8(env.canonical_bytes()).unwrap(),
            String::from_utf8(sorted).unwrap(),
            "{}",
            env.event_type()
        );
    }
}

#[test]
fn the_published_form_is_canonical_too_and_includes_the_hash() {
    for env in all_envelopes() {
        let bytes = env.to_json_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value, env.to_json_value());
        assert_eq!(bytes, serde_json::to_vec(&env).unwrap());
        assert_eq!(
            bytes,
            serde_json::to_vec(&sort_keys(value.clone())).unwrap()
        );
        assert_eq!(value["hash"], json!(env.hash));
        assert_eq!(value["type"], json!(env.event_type().as_str()));
        assert_eq!(value["schemaVersion"], json!(SCHEMA_VERSION));
        // Timestamps are normalised to UTC milliseconds with `Z`.
        assert_eq!(value["occurredAt"], json!("2023-12-31T22:00:01.234Z"));
    }
}

#[test]
fn optional_fields_are_omitted_not_null() {
    for ty in EventType::ALL {
        let env = envelope(*ty, false, 1);
        let value = env.to_json_value();
        assert!(value.get("correlationId").is_none());
        let data = &value["data"];
        for key in [
            "import",
            "name",
            "expires",
            "providedResourceId",
            "refreshToken",
            "reason",
        ] {
            if *ty != EventType::ClientTokenUpdated {
                assert!(data.get(key).is_none(), "{ty}: {key} in {data}");
            }
        }
    }
    // In an update, null means "cleared" and is kept.
    let env = envelope(EventType::ClientTokenUpdated, false, 1);
    assert_eq!(
        env.to_json_value()["data"],
        json!({ "expires": null, "name": null })
    );
}

#[test]
fn envelopes_round_trip_through_json() {
    for env in all_envelopes() {
        let back = Envelope::from_json(&env.to_json_bytes()).unwrap();
        assert_eq!(back, env, "{}", env.event_type());
        // Without the hash: decodes, with the hash left empty.
        let back = Envelope::from_json(&env.canonical_bytes()).unwrap();
        assert_eq!(back.hash, "");
        assert_eq!(back.computed_hash(), env.hash);
    }
}

#[test]
fn the_hash_is_the_sha256_of_the_canonical_bytes() {
    for env in all_envelopes() {
        assert_eq!(env.computed_hash(), env.hash);
        assert_eq!(env.hash, hex::encode(Sha256::digest(env.canonical_bytes())));
        assert_eq!(env.hash.len(), 64);
        // The hash does not cover itself.
        let mut other = env.clone();
        other.hash = "tampered".into();
        assert_eq!(other.computed_hash(), env.hash);
    }
}

#[test]
fn every_envelope_is_distinct() {
    let hashes: std::collections::HashSet<String> =
        all_envelopes().into_iter().map(|e| e.hash).collect();
    assert_eq!(hashes.len(), EventType::ALL.len() * 2);
}

/// Type-preserving variants of a JSON string leaf, most specific first.
fn string_variants(s: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(t) = Timestamp::parse(s) {
        let later = Timestamp::from_millis(t.millis() + 1).unwrap();
        out.push(json!(later.to_string()));
    }
    let swap_last = |s: &str| {
        let mut chars: Vec<char> = s.chars().collect();
        let last = chars.last_mut().unwrap();
        *last = if *last == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };
    if !s.is_empty() {
        out.push(json!(swap_last(s)));
    }
    for (a, b) in [
        ("client", "access"),
        ("access", "client"),
        ("user", "service"),
        ("service", "system"),
        ("system", "client_token"),
        ("client_token", "user"),
    ] {
        if s == a {
            out.push(json!(b));
        }
    }
    out.push(json!(format!("{s}x")));
    out
}

fn variants(v: &Value) -> Vec<Value> {
    match v {
        Value::String(s) => string_variants(s),
        Value::Number(n) => {
            let n = n.as_i64().expect("integers only");
            vec![json!(n + 1), json!(n - 1)]
        }
        Value::Bool(b) => vec![json!(!b)],
        Value::Null => vec![json!("x"), json!(1)],
        Value::Array(_) | Value::Object(_) => Vec::new(),
    }
}

/// Every JSON pointer to a leaf or to an object member, in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

#[test]
fn changing_any_field_changes_the_hash() {
    for env in all_envelopes() {
        let value = env.to_json_value();
        let mut ptrs = Vec::new();
        pointers(&value, String::new(), &mut ptrs);
        for ptr in ptrs {
            if ptr == "/hash" || ptr == "/type" || ptr == "/schemaVersion" {
                continue; // Checked below: not hashed, derived, or not decodable.
            }
            let original = value.pointer(&ptr).unwrap().clone();
            let mut changed = 0;
            for variant in variants(&original) {
                let mut mutated = value.clone();
                *mutated.pointer_mut(&ptr).unwrap() = variant.clone();
                let Ok(decoded) = Envelope::from_json(&serde_json::to_vec(&mutated).unwrap())
                else {
                    continue;
                };
                if decoded == env {
                    continue; // A variant that means the same (e.g. a time zone).
                }
                assert_ne!(
                    decoded.computed_hash(),
                    env.hash,
                    "{}: {ptr} = {variant} left the hash unchanged",
                    env.event_type()
                );
                changed += 1;
            }
            // Removing the member, where that still decodes, changes it too.
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let mut removed = value.clone();
            let holder = removed.pointer_mut(parent).unwrap();
            let gone = match holder {
                Value::Object(map) => map.remove(key).is_some(),
                Value::Array(items) => {
                    items.remove(key.parse::<usize>().unwrap());
                    true
                }
                _ => false,
            };
            if gone {
                if let Ok(decoded) = Envelope::from_json(&serde_json::to_vec(&removed).unwrap()) {
                    assert_ne!(
                        decoded.computed_hash(),
                        env.hash,
                        "{}: without {ptr}",
                        env.event_type()
                    );
                    changed += 1;
                }
            }
            if !matches!(original, Value::Object(_) | Value::Array(_)) {
                assert!(
                    changed > 0,
                    "{}: no decodable change for {ptr}",
                    env.event_type()
                );
            }
        }
        // Fields outside the generic walk.
        let mut other = env.clone();
        other.schema_version += 1;
        assert_ne!(other.computed_hash(), env.hash);
        let mut other = env.clone();
        other.correlation_id = match &env.correlation_id {
            Some(_) => None,
            None => Some("req-new".into()),
        };
        assert_ne!(other.computed_hash(), env.hash);
        let mut other = env.clone();
        other.data = data(env.event_type(), env.correlation_id.is_none());
        if other.data != env.data {
            assert_ne!(other.computed_hash(), env.hash);
        }
    }
}

#[test]
fn decoding_refuses_unknown_fields_types_and_schema_versions() {
    let env = envelope(EventType::TokenTrashed, true, 1);
    let value = env.to_json_value();

    let mut extra = value.clone();
    extra["extra"] = json!(1);
    assert!(matches!(
        Envelope::from_json(&serde_json::to_vec(&extra).unwrap()),
        Err(DecodeError::Malformed(_))
    ));

    let mut extra_in_data = value.clone();
    extra_in_data["data"]["extra"] = json!(1);
    assert!(Envelope::from_json(&serde_json::to_vec(&extra_in_data).unwrap()).is_err());

    let mut unknown_type = value.clone();
    unknown_type["type"] = json!("token_deleted");
    assert!(Envelope::from_json(&serde_json::to_vec(&unknown_type).unwrap()).is_err());

    // Data that does not fit its type.
    let mut wrong = value.clone();
    wrong["type"] = json!("token_purged");
    assert!(Envelope::from_json(&serde_json::to_vec(&wrong).unwrap()).is_err());

    let mut future = value.clone();
    future["schemaVersion"] = json!(SCHEMA_VERSION + 1);
    assert!(matches!(
        Envelope::from_json(&serde_json::to_vec(&future).unwrap()),
        Err(DecodeError::SchemaVersion(v)) if v == SCHEMA_VERSION + 1
    ));

    for garbage in [&b""[..], b"[]", b"{}", b"null", b"{\"actor\":"] {
        assert!(Envelope::from_json(garbage).is_err());
    }
}

#[test]
fn a_golden_envelope_keeps_its_bytes_and_hash() {
    // Pinned: a change here means old logs no longer verify.
    let env = envelope(EventType::TokenRevoked, true, 1);
    let expected = concat!(
        r#"{"actor":{"agentId":"user-1","agentType":"user"},"#,
        r#""commandId":"c0000000-0000-4000-8000-000000000001","#,
        r#""correlationId":"req-😀","#,
        r#""data":{"reason":"leaked"},"#,
        r#""eventId":"018cc251-f400-7000-8000-000000000001","#,
        r#""occurredAt":"2023-12-31T22:00:01.234Z","#,
        r#""position":1,"#,
        r#""prevHash":"0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""schemaVersion":1,"#,
        r#""tokenId":"70000000-0000-4000-8000-000000000001","#,
        r#""tokenKind":"client","#,
        r#""type":"token_revoked","#,
        r#""version":1,"#,
        r#""workspaceId":"acme"}"#,
    );
    assert_eq!(String::from_utf8(env.canonical_bytes()).unwrap(), expected);
    assert_eq!(env.hash, hex::encode(Sha256::digest(expected.as_bytes())));
}
